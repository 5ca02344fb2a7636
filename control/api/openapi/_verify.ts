/**
 * `volume verify` in the OpenAPI document: POST /v1/volumes/{name}/verify (any node; the
 * volume's master compares) and its node-to-node form, and the report they answer with.
 * @module
 */

import { errors, json, nameParam, ref } from "./_util.ts";

const deepParam = {
  name: "deep",
  in: "query",
  required: false,
  schema: { type: "boolean", default: false },
  description: "Rehash every region of every copy from its data (reads all of it) instead " +
    "of comparing the hash trees; also finds regions whose persisted hash is not the data's",
};

export const VERIFY_PATHS = {
  "/v1/volumes/{name}/verify": {
    post: {
      operationId: "verifyVolume",
      summary: "Compare every member's copy of a volume with its master's",
      tags: ["volumes"],
      description: "Asked of any node: the volume's master does the work (this node asks it). " +
        "Without `deep` the members' hash-tree roots are compared and, where they differ, the " +
        "differing regions found from the roots down; with `deep` every region is rehashed " +
        "from the data, in small batches during which client writes to them wait. `ok` is " +
        "true when every member answered and holds the master's data.",
      parameters: [nameParam("Volume"), deepParam],
      responses: {
        "200": { description: "The comparison", content: json(ref("VolumeVerifyReport")) },
        ...errors(400, 401, 403, 404, 409, 503),
      },
    },
  },
  "/v1/peer/volumes/{name}/verify": {
    post: {
      operationId: "peerVerifyVolume",
      summary: "Compare the copies of a volume this node serves (node-to-node)",
      tags: ["peer"],
      description: "Roles node and admin. As POST /v1/volumes/{name}/verify, answered only " +
        "by the volume's master (404 elsewhere).",
      parameters: [nameParam("Volume"), deepParam],
      responses: {
        "200": { description: "The comparison", content: json(ref("VolumeVerifyReport")) },
        ...errors(400, 401, 403, 404, 409, 503),
      },
    },
  },
};

const regions = {
  type: "array",
  items: { type: "integer", minimum: 0 },
  description: "Region numbers (of regionBytes each), at most 1000 listed",
};

export const VERIFY_SCHEMAS = {
  VolumeVerifyReport: {
    type: "object",
    required: ["name", "node", "deep", "regionBytes", "regions", "members", "ok", "ms"],
    properties: {
      name: { type: "string" },
      node: { type: "string", description: "The master that compared" },
      epoch: { type: "integer" },
      deep: { type: "boolean" },
      regionBytes: { type: "integer" },
      regions: { type: "integer" },
      members: { type: "array", items: ref("VolumeMemberVerdict") },
      ok: { type: "boolean" },
      ms: { type: "integer" },
    },
  },
  VolumeMemberVerdict: {
    type: "object",
    required: ["node", "role", "differing", "differingCount", "corrupt", "corruptCount"],
    properties: {
      node: { type: "string" },
      role: { type: "string", enum: ["master", "replica"] },
      root: { type: "string", description: "Root hash (hex) of the member's hash tree" },
      equal: { type: "boolean" },
      differing: { ...regions, description: "Regions that differ from the master's" },
      differingCount: { type: "integer" },
      corrupt: {
        ...regions,
        description: "Deep: clean regions whose persisted hash is not the data's",
      },
      corruptCount: { type: "integer" },
      error: { type: "string", description: "Why the member could not be compared" },
      resyncing: {
        type: "boolean",
        description: "A resync of the member is under way (its differences are what it has " +
          "still to copy): it was out of sync, or (deep) its copy differed and the master " +
          "took it out of sync for that (not while the master's copy is suspect)",
      },
      suspect: {
        type: "string",
        description: "The master: why a deep verification found its copy suspect (corrupt, " +
          "or outvoted by every in-sync replica); it resyncs nobody until it moves",
      },
    },
  },
};
