/**
 * The OpenAPI 3.1 document of the Ballast API v1, served at GET /v1/openapi.json.
 * It is a TypeScript object (not a file read at run time) so a `deno compile`d
 * binary serves it with no source tree.
 * @module
 */

import { VERSION } from "../../../mod/version.ts";
import { STALE_HEADER } from "../../../mod/client.ts";

import {
  errorResponse,
  errors,
  json,
  LABELS,
  listOf,
  nameParam,
  ref,
  withCommonErrors,
} from "./_util.ts";
import { CA_PATHS, CA_SCHEMAS } from "./_ca.ts";
import { CLUSTER_PATHS, CLUSTER_SCHEMAS } from "./_cluster.ts";
import { PEER_PATHS, REPLICATION_SCHEMAS, VOLUME_LIVE_PROPERTIES } from "./_replication.ts";
import { VERIFY_PATHS, VERIFY_SCHEMAS } from "./_verify.ts";
import { UPDATE_REPLICAS, VOLUME_MEMBERSHIP_PROPERTIES } from "./_membership.ts";
import { DRAIN_PATHS, DRAIN_SCHEMAS, REMOVE_NODE } from "./_drain.ts";
import { SYSTEM_SCHEMAS } from "./_system.ts";

const labels = LABELS;
const strings = { type: "array", items: { type: "string" } };
const size = {
  oneOf: [
    { type: "integer", minimum: 1048576, maximum: 1125899906842624, multipleOf: 512 },
    { type: "string", examples: ["10GiB", "512MiB", "1TiB", "10G"] },
  ],
  description: "Bytes, or a size with kubectl's units: binary KiB MiB GiB TiB PiB (also Ki Mi " +
    "Gi Ti Pi, any case) are powers of 1024; SI k M G T P (also kB MB GB TB PB, exactly that " +
    "case) are powers of 1000, so 10G is 10^10 bytes. Multiple of 512, from 1 MiB to 1 PiB.",
};

/** The Ballast-Stale response header on reads that may be answered from the cache. */
const stale = { [STALE_HEADER]: { $ref: "#/components/headers/BallastStale" } };

/** The document. */
export const OPENAPI_DOCUMENT = {
  openapi: "3.1.0",
  info: {
    title: "Ballast API",
    version: VERSION,
    description: "Control API of a Ballast node: volumes (exported over NBD under their " +
      "name), nodes, health, version and Prometheus metrics. Errors are JSON bodies " +
      "`{error: {code, message, details?}}` with a stable `code`. Every response carries " +
      "X-Request-Id (echoed when the request sent one). With TLS (the default) every " +
      "request needs a client certificate from the node's CA (mutual TLS): role admin may " +
      "call everything, role node only /v1/peer/*, /v1/health and /v1/version, role " +
      "nbd-client only /v1/health. No or an invalid certificate gives 401 UNAUTHENTICATED " +
      "with the reason; a role that may not call a route gives 403 PERMISSION_DENIED. " +
      "GET /v1/health is served without a certificate only when the operator allows it. " +
      "A method a path does not have gives 405 with an Allow header.",
  },
  servers: [
    { url: "https://127.0.0.1:5705", description: "TLS with client certificates" },
    { url: "http://127.0.0.1:5705", description: "plaintext loopback development mode" },
  ],
  security: [{ mutualTLS: [] }],
  paths: withCommonErrors({
    "/v1/health": {
      get: {
        operationId: "health",
        summary: "Node health",
        description: "Checks store (answers within 1 s), dataPlane (free disk) and volumes " +
          "(none failed on this node); 503 with status degraded when one fails.",
        responses: {
          "200": { description: "Health", content: json(ref("Health")) },
          "503": { description: "A check failed", content: json(ref("Health")) },
        },
      },
    },
    "/v1/version": {
      get: {
        operationId: "version",
        summary: "Server version",
        responses: { "200": { description: "Version", content: json(ref("VersionInfo")) } },
      },
    },
    "/v1/nodes": {
      get: {
        operationId: "listNodes",
        summary: "List nodes",
        responses: {
          "200": { description: "Nodes", content: json(listOf("Node")), headers: stale },
          ...errors(400, 503),
        },
      },
    },
    "/v1/nodes/{name}": {
      get: {
        operationId: "getNode",
        summary: "Get a node",
        parameters: [nameParam("Node")],
        responses: {
          "200": { description: "Node", content: json(ref("Node")), headers: stale },
          ...errors(400, 404, 503),
        },
      },
      delete: REMOVE_NODE,
    },
    "/v1/nodes/{name}/cordon": {
      post: {
        operationId: "cordonNode",
        summary: "Stop new placements on a node (admin); it keeps serving what it holds",
        parameters: [nameParam("Node")],
        requestBody: {
          required: false,
          content: json({
            type: "object",
            additionalProperties: false,
            properties: { reason: { type: "string", maxLength: 1024 } },
          }),
        },
        responses: {
          "200": { description: "Node", content: json(ref("Node")) },
          ...errors(400, 404, 503),
        },
      },
    },
    "/v1/nodes/{name}/uncordon": {
      post: {
        operationId: "uncordonNode",
        summary: "Let a cordoned node take new placements again (admin)",
        parameters: [nameParam("Node")],
        responses: {
          "200": { description: "Node", content: json(ref("Node")) },
          ...errors(400, 404, 503),
        },
      },
    },
    "/v1/volumes": {
      get: {
        operationId: "listVolumes",
        summary: "List volumes",
        responses: {
          "200": { description: "Volumes", content: json(listOf("Volume")), headers: stale },
          ...errors(400, 503),
        },
      },
      post: {
        operationId: "createVolume",
        summary: "Create a thin-provisioned volume",
        requestBody: { required: true, content: json(ref("CreateVolumeRequest")) },
        responses: {
          "201": { description: "Created (state ready)", content: json(ref("Volume")) },
          ...errors(400, 409, 412, 507, 503),
        },
      },
    },
    "/v1/volumes/{name}": {
      get: {
        operationId: "getVolume",
        summary: "Get a volume",
        parameters: [nameParam("Volume")],
        responses: {
          "200": { description: "Volume", content: json(ref("Volume")), headers: stale },
          ...errors(400, 404, 503),
        },
      },
      patch: {
        operationId: "updateVolume",
        summary: "Grow a volume, change its replica count, and/or change its labels " +
          "(replaced whole, or keys set and removed) or description",
        parameters: [nameParam("Volume")],
        requestBody: { required: true, content: json(ref("UpdateVolumeRequest")) },
        responses: {
          "200": { description: "Updated volume", content: json(ref("Volume")) },
          ...errors(400, 404, 409, 412, 507, 503),
        },
      },
      delete: {
        operationId: "deleteVolume",
        summary: "Delete a volume and its data",
        parameters: [
          nameParam("Volume"),
          {
            name: "force",
            in: "query",
            required: false,
            description: "Disconnect NBD clients instead of refusing (412) while connected; " +
              "for a replicated volume, leave out members that are down instead of refusing.",
            schema: { type: "boolean", default: false },
          },
        ],
        responses: {
          "204": { description: "Deleted" },
          "202": {
            description: "Accepted, not finished: a member has not removed its copy yet (one " +
              "that is down does so when it comes back); the volume stays `deleting` until then",
            content: {
              "application/json": {
                schema: {
                  type: "object",
                  required: ["name", "state", "pending"],
                  properties: {
                    name: { type: "string" },
                    state: { type: "string", enum: ["deleting"] },
                    pending: { type: "string", description: "what the delete waits for" },
                  },
                },
              },
            },
          },
          ...errors(400, 404, 412, 503),
        },
      },
    },
    ...CA_PATHS,
    ...CLUSTER_PATHS,
    ...PEER_PATHS,
    ...VERIFY_PATHS,
    ...DRAIN_PATHS,
    "/v1/openapi.json": {
      get: {
        operationId: "openapi",
        summary: "This document",
        responses: { "200": { description: "OpenAPI 3.1 document" } },
      },
    },
    "/metrics": {
      get: {
        operationId: "metrics",
        summary: "Prometheus metrics (text format 0.0.4)",
        responses: {
          "200": {
            description: "Metrics",
            content: { "text/plain": { schema: { type: "string" } } },
          },
        },
      },
    },
  }),
  components: {
    securitySchemes: {
      mutualTLS: {
        type: "mutualTLS",
        description: "A client certificate issued by the node's CA (ballast ca issue); the " +
          "role is the URI subjectAltName ballast:role:<admin|node|nbd-client>.",
      },
    },
    responses: {
      Error401: errorResponse(
        "No or an invalid client certificate (UNAUTHENTICATED; the message says why)",
      ),
      Error403: errorResponse("The certificate's role may not call this (PERMISSION_DENIED)"),
      Error400: errorResponse("Invalid argument (code INVALID_ARGUMENT; details.field names it)"),
      Error404: errorResponse("Not found (NOT_FOUND)"),
      Error409: errorResponse(
        "Already exists or lost a concurrent update (ALREADY_EXISTS, CONFLICT)",
      ),
      Error412: errorResponse(
        "Not allowed in the current state (FAILED_PRECONDITION): shrink, clients connected, " +
          "replicas without cluster mode, a placement the cluster cannot satisfy (reason given)",
      ),
      Error507: errorResponse("Out of disk space (RESOURCE_EXHAUSTED)"),
      Error413: errorResponse("Request body above 64 KiB (INVALID_ARGUMENT)"),
      Error415: errorResponse("Request body not application/json (INVALID_ARGUMENT)"),
      Error503: errorResponse(
        "Cluster mode: the control plane (etcd) cannot be reached (UNAVAILABLE, message " +
          '"control plane unavailable: ..."); changes are refused, retry when it is back',
      ),
    },
    headers: {
      BallastStale: {
        description: "Cluster mode: etcd could not be reached, so this answer comes from the " +
          "node's cache (kept current by the node's watches); the value is the time as of which " +
          "the data is known current (ISO 8601), and the Age header says how many seconds ago " +
          "that was. Absent on fresh answers.",
        schema: { type: "string", format: "date-time" },
      },
    },
    schemas: {
      Error: {
        type: "object",
        required: ["error"],
        properties: {
          error: {
            type: "object",
            required: ["code", "message"],
            properties: {
              code: {
                type: "string",
                enum: [
                  "INVALID_ARGUMENT",
                  "NOT_FOUND",
                  "ALREADY_EXISTS",
                  "FAILED_PRECONDITION",
                  "CONFLICT",
                  "RESOURCE_EXHAUSTED",
                  "UNAUTHENTICATED",
                  "PERMISSION_DENIED",
                  "UNAVAILABLE",
                  "INTERNAL",
                ],
              },
              message: { type: "string" },
              details: { type: "object" },
            },
          },
        },
      },
      Volume: {
        type: "object",
        required: [
          "name",
          "uuid",
          "sizeBytes",
          "replicas",
          "master",
          "epoch",
          "state",
          "labels",
          "description",
          "createdAt",
          "updatedAt",
        ],
        properties: {
          name: { type: "string", description: "Also the NBD export name" },
          uuid: { type: "string", format: "uuid" },
          sizeBytes: { type: "integer" },
          replicas: { type: "integer" },
          master: { type: "string" },
          epoch: { type: "integer" },
          state: { type: "string", enum: ["creating", "ready", "deleting", "failed"] },
          stateReason: {
            type: "string",
            description: "State failed: why (its node could not open its copy at its last start)",
          },
          labels,
          description: { type: "string" },
          createdAt: { type: "string", format: "date-time" },
          updatedAt: { type: "string", format: "date-time" },
          allocatedBytes: {
            type: "integer",
            description: "Bytes allocated on disk on the node serving it; absent if unknown",
          },
          connections: {
            type: "integer",
            description: "Open NBD connections on the node serving it; absent if unknown",
          },
          members: { ...strings, description: "Replicated: every node holding a copy" },
          inSync: { ...strings, description: "Members holding every write acknowledged" },
          down: { ...strings, description: "Members whose liveness lease expired" },
          phase: {
            type: "string",
            enum: ["healthy", "degraded", "failing-over", "unavailable"],
            description: "Replicated: how the group is doing; without replicas only " +
              "`unavailable`, while its node is down",
          },
          phaseReason: {
            type: "string",
            description: "Get of one replicated volume that is not healthy: why, in a line; " +
              "also a volume without replicas whose node is down",
          },
          spreadBy: { type: "string", description: "Failure-domain label of the placement" },
          ...VOLUME_LIVE_PROPERTIES,
          ...VOLUME_MEMBERSHIP_PROPERTIES,
        },
      },
      CreateVolumeRequest: {
        type: "object",
        additionalProperties: false,
        required: ["name", "size"],
        properties: {
          name: { type: "string", pattern: "^[a-z0-9][a-z0-9._-]{0,62}$" },
          size,
          replicas: {
            type: "integer",
            minimum: 0,
            maximum: 8,
            default: 0,
            description: "Copies besides the master, each on a distinct node (failure domain). " +
              "Must be 0 unless the node runs in cluster mode",
          },
          spreadBy: {
            type: "string",
            description: "Node label whose values are the failure domains to spread over " +
              "(e.g. zone); default: every node is its own domain. Needs replicas > 0",
          },
          labels,
          description: { type: "string", maxLength: 1024 },
        },
      },
      UpdateVolumeRequest: {
        type: "object",
        additionalProperties: false,
        minProperties: 1,
        properties: {
          size: { ...size, description: "New size; grow only. " + size.description },
          replicas: UPDATE_REPLICAS,
          labels: { ...labels, description: "The whole set, replacing the volume's. " },
          setLabels: {
            ...labels,
            description: "Labels to set, kept with the others (not with labels); applied to " +
              "the labels as they are when the change is made",
          },
          removeLabels: {
            type: "array",
            items: { type: "string" },
            description: "Label keys to remove (not with labels); absent keys are no error",
          },
          description: { type: "string", maxLength: 1024 },
        },
      },
      ...SYSTEM_SCHEMAS,
      ...CA_SCHEMAS,
      ...CLUSTER_SCHEMAS,
      ...REPLICATION_SCHEMAS,
      ...VERIFY_SCHEMAS,
      ...DRAIN_SCHEMAS,
    },
  },
} as const;
