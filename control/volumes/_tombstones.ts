/**
 * Tombstones of forced deletes (docs/CLUSTER.md, "Deleting a group with a member down"). A
 * forced delete leaves out the members that are down: the record notes them in `leftOut`
 * while it is "deleting", and when it goes, casRecord() (_record.ts) writes in the same
 * transaction `/ballast/volume-tombstones/<uuid>` naming those that may still hold a copy. A
 * member back at its next start (_orphans.ts), or back without a restart (the record's
 * removal reaches its watch, _groups.ts), removes its copy and takes itself off the
 * tombstone; the last one removes the key. Uuids are never reused, so a tombstone can only
 * ever name the copies of that deleted volume.
 * @module
 */

import type { Logger } from "../common/mod.ts";
import { freshGet, type StateStore } from "../store/mod.ts";

export const TOMBSTONE_PREFIX = "/ballast/volume-tombstones/";

/** The value of a tombstone key. */
export interface Tombstone {
  name: string;
  uuid: string;
  /** Members left out of the delete that have not removed their copy yet. */
  members: string[];
  deletedAt: string;
}

/** The parts of a volume record leftOutOf() reads (structural: no import of _record.ts). */
export interface Holding {
  state: string;
  remaining?: string[];
  leftOut?: string[];
  group?: { members: string[] };
}

/** Members that hold a copy to remove: `remaining` while deleting, else every member. */
function holders(r: Holding): readonly string[] {
  if (r.state === "deleting") return r.remaining ?? r.group?.members ?? [];
  return r.group?.members ?? [];
}

/**
 * The members a forced delete has left out while they were down, after the change `prev` ->
 * `next` made with the liveness guard `down` (casRecord): those of `next.leftOut` (of
 * `prev.leftOut` when the record goes), plus the down members the change took off the
 * members whose copy is to be removed. Sorted; empty for every change but a forced delete's.
 */
export function leftOutOf(
  prev: Holding,
  next: Holding | "delete",
  down: readonly string[],
): string[] {
  const still = next === "delete" ? [] : holders(next);
  const dropped = down.filter((m) => holders(prev).includes(m) && !still.includes(m));
  const kept = next === "delete" ? prev.leftOut ?? [] : next.leftOut ?? [];
  return [...new Set([...kept, ...dropped])].sort();
}

/** The tombstones that name `node`, by uuid. */
export async function tombstonesOf(
  store: StateStore,
  node: string,
): Promise<Map<string, Tombstone>> {
  const { kvs } = await store.list(TOMBSTONE_PREFIX);
  const out = new Map<string, Tombstone>();
  for (const kv of kvs) {
    const t = JSON.parse(kv.value) as Tombstone;
    if (t.members.includes(node)) out.set(t.uuid, t);
  }
  return out;
}

/**
 * Takes `node` off the tombstone of `uuid` (its copy is gone); the last member removes the
 * key. A compare-and-swap on the key, retried on a race; a failure is logged and left for the
 * next start (the copy is gone either way).
 */
export async function clearTombstone(
  store: StateStore,
  uuid: string,
  node: string,
  log: Logger,
): Promise<void> {
  const key = TOMBSTONE_PREFIX + uuid;
  try {
    for (let attempt = 0; attempt < 10; attempt++) {
      const kv = await freshGet(store, key);
      if (!kv) return;
      const t = JSON.parse(kv.value) as Tombstone;
      if (!t.members.includes(node)) return;
      const members = t.members.filter((m) => m !== node);
      const res = await store.txn(
        [{ key, target: "modRevision", op: "==", value: kv.modRevision }],
        [
          members.length === 0
            ? { type: "delete", key }
            : { type: "put", key, value: JSON.stringify({ ...t, members }) },
        ],
      );
      if (res.succeeded) return;
    }
  } catch (err) {
    log.warn({ uuid, err }, "could not update the tombstone of a deleted volume; next start will");
  }
}
