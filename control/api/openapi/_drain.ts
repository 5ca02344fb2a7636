/**
 * `node drain`, `node remove` and `volume events` in the OpenAPI document: POST
 * /v1/nodes/{name}/drain (a stream of progress lines), DELETE /v1/nodes/{name} and GET
 * /v1/volumes/{name}/events, with their schemas.
 * @module
 */

import { STALE_HEADER } from "../../../mod/client.ts";
import { errors, json, listOf, nameParam, ref } from "./_util.ts";

export const DRAIN_PATHS = {
  "/v1/nodes/{name}/drain": {
    post: {
      operationId: "drainNode",
      summary: "Cordon a node and move every master off it (admin)",
      tags: ["nodes"],
      description: "Plans every volume the node masters: a replicated volume goes to an " +
        "in-sync member that is up (a ready node first); a volume that would be left " +
        "without an in-sync copy (no replicas, replicas out of sync or down) is refused with " +
        "the reason. With refusals and without `force` nothing is done (result `refused`). " +
        "Otherwise the node is cordoned and the masters move one group at a time by planned " +
        "handover: the master closes its export (its NBD clients are disconnected), then " +
        "hands the group to the chosen member at the next epoch; refused volumes stay " +
        "(`skipped`). A handover not done within 30 s is withdrawn (`failed`, result " +
        "`incomplete`). `dryRun` only plans. The answer is a stream of JSON lines " +
        "(application/x-ndjson): one `plan`, one `volume` per volume as it is done, and a " +
        "last `summary` (or `error` if the drain stopped on an error).",
      parameters: [nameParam("Node")],
      requestBody: {
        required: false,
        content: json({
          type: "object",
          additionalProperties: false,
          properties: {
            force: {
              type: "boolean",
              default: false,
              description: "Drain even though some volumes cannot move (they stay here)",
            },
            dryRun: { type: "boolean", default: false, description: "Plan only; change nothing" },
          },
        }),
      },
      responses: {
        "200": {
          description: "Progress lines, the last one the summary",
          content: { "application/x-ndjson": { schema: ref("DrainProgress") } },
        },
        ...errors(400, 401, 403, 404, 503),
      },
    },
  },
  "/v1/volumes/{name}/events": {
    get: {
      operationId: "volumeEvents",
      summary: "The recent history of a replicated volume's group",
      tags: ["volumes"],
      description: "Oldest first, the last 100: creation, epochs and masters (promotions, " +
        "drain handovers), members going down and up, leaving and rejoining the in-sync set " +
        "(with the reason), resyncs started and finished. Written with the group changes " +
        "themselves; a volume without replicas has none.",
      parameters: [nameParam("Volume")],
      responses: {
        "200": {
          description: "The events (from the node's cache while etcd is unavailable: see " +
            "the Ballast-Stale header)",
          headers: { [STALE_HEADER]: { $ref: "#/components/headers/BallastStale" } },
          content: json(listOf("VolumeEvent")),
        },
        ...errors(400, 401, 403, 404, 503),
      },
    },
  },
};

const drainVolume = {
  type: "object",
  required: ["volume", "status", "from"],
  properties: {
    volume: { type: "string" },
    status: { type: "string", enum: ["planned", "moved", "refused", "skipped", "failed"] },
    from: { type: "string" },
    to: { type: "string" },
    epoch: { type: "integer", description: "The epoch at which `to` became master" },
    reason: { type: "string" },
    ms: { type: "integer", description: "From the request to the record naming `to`" },
  },
};

/** DELETE /v1/nodes/{name} (`node remove`). */
export const REMOVE_NODE = {
  operationId: "removeNode",
  summary: "Forget a node that is gone for good (admin)",
  tags: ["nodes"],
  description: "Deletes the node's record (and cordon). Refused (412 FAILED_PRECONDITION) " +
    "while the node runs (holds its liveness lease) or while any volume record counts on a " +
    "copy there (master, replica, or a delete under way; `details.volumes` names them). " +
    "Deleted volumes whose copy on it was still to be removed are forgotten with it.",
  parameters: [nameParam("Node")],
  responses: {
    "200": { description: "NodeRemoval", content: json(ref("NodeRemoval")) },
    ...errors(400, 404, 412, 503),
  },
};

export const DRAIN_SCHEMAS = {
  NodeRemoval: {
    type: "object",
    required: ["node", "forgottenCopies"],
    properties: {
      node: ref("Node"),
      forgottenCopies: {
        type: "array",
        items: { type: "string" },
        description: "Deleted volumes whose copy on the node was still to be removed",
      },
    },
  },
  DrainVolume: drainVolume,
  DrainReport: {
    type: "object",
    required: ["node", "dryRun", "force", "result", "cordoned", "volumes", "ms"],
    properties: {
      node: { type: "string" },
      dryRun: { type: "boolean" },
      force: { type: "boolean" },
      result: { type: "string", enum: ["drained", "refused", "incomplete"] },
      cordoned: { type: "boolean" },
      volumes: { type: "array", items: ref("DrainVolume") },
      ms: { type: "integer" },
    },
  },
  DrainProgress: {
    oneOf: [
      {
        type: "object",
        required: ["type", "node", "volumes"],
        properties: {
          type: { const: "plan" },
          node: { type: "string" },
          volumes: { type: "array", items: ref("DrainVolume") },
        },
      },
      {
        type: "object",
        required: ["type", "volume"],
        properties: { type: { const: "volume" }, volume: ref("DrainVolume") },
      },
      {
        type: "object",
        required: ["type", "report"],
        properties: { type: { const: "summary" }, report: ref("DrainReport") },
      },
      {
        type: "object",
        required: ["type", "message"],
        properties: { type: { const: "error" }, message: { type: "string" } },
      },
    ],
  },
  VolumeEvent: {
    type: "object",
    required: ["seq", "at", "type", "epoch", "master", "message"],
    properties: {
      seq: { type: "integer", minimum: 0, description: "0: a pending event" },
      at: { type: "string", format: "date-time" },
      type: {
        type: "string",
        enum: [
          "created",
          "handover-requested",
          "handover-abandoned",
          "handover",
          "promoted",
          "down",
          "up",
          "out-of-sync",
          "resync-started",
          "resync-interrupted",
          "in-sync",
          "member-added",
          "member-removed",
          "deleting",
          "delete-refused",
          "resumed",
        ],
      },
      epoch: { type: "integer", description: "After the change" },
      master: { type: "string", description: "After the change" },
      node: { type: "string", description: "The member the event is about" },
      message: { type: "string" },
      pending: {
        type: "boolean",
        description: "Seen by the answering node, not written yet (seq 0, `at` = now): no " +
          "live member could record it, e.g. every member of the group is down",
      },
    },
  },
};
