/**
 * Membership changes in the OpenAPI document: the `replicas` field of a volume update
 * (raising adds members placed like a create and seeded by Delta Sync, lowering removes
 * members) and the change a master cannot make now (`membershipBlocked`).
 * @module
 */

/** A membership change the master wants but cannot make now. */
export const MEMBERSHIP_BLOCKED = {
  type: "object",
  required: ["reason", "since"],
  description: "Replicated volumes, from the master: a member to replace or a replica to add " +
    "that cannot be placed now (no eligible node), why, and since when; nothing changed for it",
  properties: {
    reason: { type: "string" },
    since: { type: "string", format: "date-time" },
  },
};

/** The Volume fields of membership changes. */
export const VOLUME_MEMBERSHIP_PROPERTIES = { membershipBlocked: MEMBERSHIP_BLOCKED };

/** `replicas` in UpdateVolumeRequest. */
export const UPDATE_REPLICAS = {
  type: "integer",
  minimum: 0,
  maximum: 8,
  description: "Replicated volumes (created with replicas > 0): the new number of copies " +
    "besides the master. Raising places new members by the create rules (412 with the " +
    "reason when the cluster cannot) and seeds them by Delta Sync; lowering removes members " +
    "(down and out-of-sync ones first, never the master), which delete their copies. The " +
    "answer comes once the master changed the members (or after 5 s); follow the seeding " +
    "with GET /v1/volumes/{name}",
};
