/**
 * Why and since when each member of a group is out of sync, noted in the volume record
 * (`outOfSync`, next to the group record) by the node whose compare-and-swap takes the
 * member out of the in-sync set. Pure: the driver's encode calls it with the record before
 * and after the change, so it costs etcd nothing beyond the group changes themselves (no
 * write per I/O or per resync step).
 *
 * The group record (group/record.ts) keeps who is in sync, not why a member left, so the
 * reason is read off the change that took it out:
 *
 * - it was the master and another member took over at a higher epoch: it was replaced
 *   while down and may lack writes acknowledged since;
 * - it is (or was) recorded down: its liveness lease expired;
 * - otherwise the master took it out at the same epoch: a replicated write to it failed
 *   (connection lost, refused, or no answer in time), or, without replication, the master
 *   took a write it never got.
 * @module
 */

import type { GroupRecord } from "../group/mod.ts";

/** Member -> when it left the in-sync set (ISO 8601) and why. */
export type SyncNotes = Record<string, { since: string; reason: string }>;

/** The reasons noted; exported for tests and docs. */
export const SYNC_REASONS = {
  replaced: (epoch: number) =>
    `it was master until epoch ${epoch} and was replaced while down; it may lack writes ` +
    `acknowledged since`,
  down: "its node's liveness lease expired",
  writeFailed: "a replicated write to it failed (connection lost, refused by the member, or " +
    "no answer in time)",
  unreplicated: "the master took a write it did not get (replication is off: cluster mode " +
    "without TLS)",
} as const;

/**
 * The notes after the group changed from `prev` to `next` (at `now`): members still out of
 * sync keep their note, members newly out get one, members back in sync lose theirs.
 * Undefined when no member is out of sync.
 */
export function nextSyncNotes(
  prev: GroupRecord | undefined,
  next: GroupRecord,
  notes: SyncNotes | undefined,
  now: Date,
  replicates: boolean,
): SyncNotes | undefined {
  const out: SyncNotes = {};
  for (const m of next.members) {
    if (next.inSync.includes(m)) continue;
    const kept = notes?.[m];
    if (kept && prev !== undefined && !prev.inSync.includes(m)) {
      out[m] = kept;
      continue;
    }
    if (prev === undefined || !prev.inSync.includes(m)) continue; // out before: reason unknown
    out[m] = { since: now.toISOString(), reason: reasonOf(m, prev, next, replicates) };
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

function reasonOf(m: string, prev: GroupRecord, next: GroupRecord, replicates: boolean): string {
  if (prev.master === m && next.master !== m) return SYNC_REASONS.replaced(prev.epoch);
  if (next.down.includes(m) || prev.down.includes(m)) return SYNC_REASONS.down;
  return replicates ? SYNC_REASONS.writeFailed : SYNC_REASONS.unreplicated;
}
