/**
 * The OpenAPI schemas of the node and system routes: Node (GET /v1/nodes), Health and
 * VersionInfo.
 * @module
 */

import { LABELS } from "./_util.ts";

export const SYSTEM_SCHEMAS = {
  Node: {
    type: "object",
    required: [
      "name",
      "state",
      "reason",
      "apiAddress",
      "nbdAddress",
      "version",
      "labels",
      "capacityBytes",
      "freeBytes",
      "volumes",
      "startedAt",
      "lastSeen",
    ],
    properties: {
      name: { type: "string" },
      state: { type: "string", enum: ["ready", "unreachable", "down", "cordoned"] },
      reason: { type: "string" },
      apiAddress: { type: "string" },
      nbdAddress: { type: "string" },
      peerAddress: {
        type: "string",
        description: "Cluster mode: the node's peer channel (--peer-listen), HOST:PORT",
      },
      version: { type: "string" },
      labels: LABELS,
      capacityBytes: { type: "integer" },
      freeBytes: { type: "integer" },
      volumes: { type: "integer", description: "Volumes the node exports over NBD now" },
      masters: { type: "integer", description: "Volumes mastered here (volume records)" },
      copies: { type: "integer", description: "Copies held here, master or replica" },
      orphaned: {
        type: "object",
        description: "Copies in the node's DATA/orphaned/ and the bytes they take on disk",
        properties: { copies: { type: "integer" }, bytes: { type: "integer" } },
      },
      dataWorkers: {
        type: "object",
        description: "The data worker pool serving NBD, when the node runs one " +
          "(--data-workers): workers now and the pool's bounds.",
        properties: {
          size: { type: "integer" },
          min: { type: "integer" },
          max: { type: "integer" },
        },
      },
      startedAt: { type: "string", format: "date-time" },
      lastSeen: { type: "string", format: "date-time" },
      stoppedAt: {
        type: "string",
        format: "date-time",
        description: "Set by the node's clean stop before it revoked its lease (a down " +
          "node with it stopped; without it, lost its lease); cleared when it starts",
      },
    },
  },
  Health: {
    type: "object",
    required: ["status", "node", "checks"],
    properties: {
      status: { type: "string", enum: ["ok", "degraded"] },
      node: { type: "string" },
      checks: {
        type: "object",
        additionalProperties: {
          type: "object",
          properties: { ok: { type: "boolean" }, message: { type: "string" } },
        },
      },
    },
  },
  VersionInfo: {
    type: "object",
    required: [
      "version",
      "commit",
      "builtAt",
      "build",
      "deno",
      "v8",
      "typescript",
      "apiVersion",
    ],
    properties: {
      version: { type: "string" },
      commit: {
        type: ["string", "null"],
        description: 'Git commit of the build ("-dirty" suffix: uncommitted changes)',
      },
      builtAt: { type: ["string", "null"], format: "date-time" },
      build: {
        type: "string",
        enum: ["source", "deno-compile", "self-extracting"],
        description: 'How the program was built (README, "Building one file")',
      },
      deno: { type: "string" },
      v8: { type: "string" },
      typescript: { type: "string" },
      apiVersion: { type: "string", const: "v1" },
    },
  },
};
