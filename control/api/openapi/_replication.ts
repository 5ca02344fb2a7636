/**
 * Replication in the OpenAPI document: the members of a replicated volume as a get shows
 * them (VolumeMember), and the node-to-node route that gives another node's live status of
 * a volume (/v1/peer/volumes/{name}).
 * @module
 */

import { MEMBERSHIP_BLOCKED } from "./_membership.ts";
import { errors, json, nameParam, ref } from "./_util.ts";

const bytes = { type: "integer", minimum: 0 };
const time = { type: "string", format: "date-time" };

/** The node-to-node endpoints (api/_peer.ts). */
/** A resync's member that has not answered yet. */
const WAITING = {
  type: "boolean",
  description: "The member has not answered yet (a node just back, or one the master " +
    "cannot reach); absent once it has",
};

export const PEER_PATHS = {
  "/v1/peer/volumes/{name}": {
    get: {
      operationId: "peerVolumeStatus",
      summary: "What this node knows first-hand of a volume it serves (node-to-node)",
      tags: ["peer"],
      description: "Roles node and admin. The node serving a volume (the master of a " +
        "replicated one) answers from memory: allocation, connections, resyncs under way " +
        "and the members' root hashes. Other nodes ask it to answer GET /v1/volumes/{name}. " +
        "404 when this node does not export the volume.",
      parameters: [nameParam("Volume")],
      responses: {
        "200": { description: "Live status", content: json(ref("VolumeLiveStatus")) },
        ...errors(400, 401, 403, 404, 503),
      },
    },
  },
};

/** The Volume fields a get of one volume adds. */
export const VOLUME_LIVE_PROPERTIES = {
  memberStatus: {
    type: "array",
    items: ref("VolumeMember"),
    description: "Replicated volumes, get of one volume only: each member's role, state, " +
      "lag, resync progress and root hash, master first",
  },
  live: {
    type: "object",
    required: ["node"],
    description: "Get of one volume in cluster mode, or of a replicated one: the node the " +
      "live fields (allocatedBytes, connections, resyncs, root hashes) came from and when " +
      "it answered, or `error`, why they are missing (the node is down or did not answer)",
    properties: { node: { type: "string" }, observedAt: time, error: { type: "string" } },
  },
};

export const REPLICATION_SCHEMAS = {
  VolumeMember: {
    type: "object",
    required: ["node", "role", "state", "lagBytes"],
    properties: {
      node: { type: "string" },
      role: { type: "string", enum: ["master", "replica"] },
      state: {
        type: "string",
        enum: ["in-sync", "resyncing", "out-of-sync", "down"],
        description: "down: its node's liveness lease is gone (or the group lists it " +
          "down); in-sync: it holds every acknowledged write; resyncing: the master runs a " +
          "Delta Sync of it; out-of-sync: none of these",
      },
      reason: { type: "string", description: "Why it is out of sync or down" },
      outOfSyncSince: { ...time, description: "When it left the in-sync set, if recorded" },
      lagBytes: {
        ...bytes,
        description: "0 in sync; resyncing: bytes the current pass has still to compare; " +
          "otherwise the volume's size",
      },
      lagSeconds: {
        ...bytes,
        description: "Seconds since it was last in sync (0 in sync); absent if not recorded",
      },
      resync: ref("MemberResync"),
      rootHash: {
        type: "string",
        description: "Root hash (hex) of its copy as the master sees it; absent when unknown",
      },
    },
  },
  MemberResync: {
    type: "object",
    required: [
      "pass",
      "percent",
      "comparedBytes",
      "totalBytes",
      "bytesLeft",
      "sentBytes",
      "zeroedBytes",
      "rateBytesPerSecond",
      "sendRateBytesPerSecond",
      "startedAt",
    ],
    properties: {
      pass: {
        type: "integer",
        minimum: 0,
        description: "1 compares the whole volume, later passes catch racing writes; 0 " +
          "until the first batch of regions is compared",
      },
      waiting: WAITING,
      percent: { type: "number", minimum: 0, maximum: 100, description: "Of this pass" },
      comparedBytes: bytes,
      totalBytes: bytes,
      bytesLeft: { ...bytes, description: "Bytes this pass has still to compare" },
      sentBytes: { ...bytes, description: "Sent as data, every pass" },
      zeroedBytes: bytes,
      rateBytesPerSecond: {
        ...bytes,
        description: "Volume bytes compared per second since the resync started",
      },
      sendRateBytesPerSecond: {
        ...bytes,
        description: "Bytes sent (data and zeroed ranges) per second since the resync started",
      },
      rateLimitBytesPerSecond: {
        ...bytes,
        description: "The master's serve --resync-rate, which caps the sending; absent: unlimited",
      },
      regionsToCopy: {
        ...bytes,
        description: "Regions (1 MiB) this pass found different; absent from older masters",
      },
      regionsCopied: { ...bytes, description: "Of regionsToCopy, copied so far" },
      etaSeconds: {
        ...bytes,
        description: "Until this pass ends: the regions left at the rate regions were copied " +
          "since the pass began copying (older masters: bytesLeft at the compare rate); absent " +
          "while estimating (too few regions copied or too short a time)",
      },
      startedAt: time,
      finishedAt: {
        ...time,
        description: "Set when it finished and the master is marking the member in sync",
      },
    },
  },
  VolumeLiveStatus: {
    type: "object",
    required: [
      "name",
      "uuid",
      "node",
      "observedAt",
      "allocatedBytes",
      "connections",
      "resyncs",
      "resyncFailures",
    ],
    properties: {
      name: { type: "string" },
      uuid: { type: "string", format: "uuid" },
      node: { type: "string", description: "The node answering (serving the volume)" },
      observedAt: time,
      allocatedBytes: bytes,
      connections: { type: "integer", minimum: 0 },
      resyncs: { type: "array", items: ref("LiveResync") },
      resyncFailures: {
        type: "array",
        items: {
          type: "object",
          required: ["member", "message", "at"],
          properties: { member: { type: "string" }, message: { type: "string" }, at: time },
        },
      },
      roots: {
        type: "object",
        additionalProperties: { type: ["string", "null"] },
        description: "Root hash (hex) of each member's copy; null: it could not be asked. " +
          "Absent when the data plane does not offer root hashes",
      },
      membershipBlocked: MEMBERSHIP_BLOCKED,
      unrecorded: {
        type: "object",
        required: ["members", "writesHeld"],
        description: "Replicas the record lists in sync that the master found failing and " +
          "has not recorded out of sync yet (etcd unreachable), and whether writes wait for it",
        properties: {
          members: { type: "array", items: { type: "string" } },
          writesHeld: { type: "boolean" },
        },
      },
      fenced: {
        type: "boolean",
        description: "The master is refused by a member that has seen a newer epoch than the " +
          "record's (the record is behind its members): it serves nothing",
      },
      exportFailed: {
        type: "string",
        description: "The master cannot export the volume (a full disk?) and tries again: why",
      },
    },
  },
  LiveResync: {
    type: "object",
    required: [
      "member",
      "startedAt",
      "pass",
      "comparedBytes",
      "totalBytes",
      "sentBytes",
      "zeroedBytes",
      "hashBytes",
    ],
    properties: {
      member: { type: "string" },
      startedAt: time,
      pass: { type: "integer", minimum: 0 },
      waiting: WAITING,
      comparedBytes: bytes,
      totalBytes: bytes,
      sentBytes: bytes,
      zeroedBytes: bytes,
      hashBytes: bytes,
      regionsToCopy: bytes,
      regionsCopied: bytes,
      copyingSince: { ...time, description: "When this pass began copying its regions" },
      rateLimitBytesPerSecond: bytes,
      finishedAt: time,
    },
  },
};
