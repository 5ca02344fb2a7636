/**
 * The copies of members that join or leave a volume group after its creation (the record
 * changes by _membership.ts): a member that joins makes an empty, sparse copy for its master
 * to seed by Delta Sync (holes stay holes: only blocks that differ from its zeros are sent),
 * and a member that left deletes its copy with the sidecar files (hash list, activity log,
 * epoch). Used by _groups.ts from each node's record watch.
 * @module
 */

import { errorMessage } from "../../mod/errors.ts";
import type { DataPlane } from "../../data/plane.ts";
import type { Logger } from "../common/mod.ts";
import type { StateStore } from "../store/mod.ts";
import { casRecord, specOf, type VolumeRecord } from "./_record.ts";
import { dropDownMembers } from "./_group_transitions.ts";
import { clearTombstone } from "./_tombstones.ts";

/** How long a resync waits for a new member to make its copy (it does on its record watch). */
const NEW_COPY_WAIT_MS = 15_000;
const NEW_COPY_POLL_MS = 250;

/** Whether this node holds a copy of volume `uuid` on disk. */
export function holdsCopy(plane: DataPlane, uuid: string): boolean {
  return plane.copyPath?.(uuid) !== undefined;
}

/**
 * This node joined group `rec` out of sync (a replacement, or a raised replica count) and holds
 * no copy: makes it, sparse and empty (a copy left from an earlier membership is kept by the
 * caller: the resync compares it like any other). Only for a member out of sync, so a lost copy
 * is never recreated under a member the record calls in sync.
 */
export async function makeJoinedCopy(
  plane: DataPlane,
  log: Logger,
  rec: VolumeRecord,
): Promise<void> {
  await plane.createVolume(specOf(rec), { export: false });
  log.info(
    { volume: rec.name, uuid: rec.uuid, sizeBytes: rec.sizeBytes },
    "joined a volume group: local copy created (empty; the master seeds it)",
  );
}

/** Deletes this node's copy of group `rec`, which no longer lists it, and its sidecars. */
export async function deleteLeftCopy(
  plane: DataPlane,
  log: Logger,
  rec: VolumeRecord,
): Promise<void> {
  await plane.deleteVolume(rec.name, { force: true, uuid: rec.uuid });
  log.info(
    { volume: rec.name, uuid: rec.uuid, members: rec.group?.members },
    "left the volume group (no longer a member): local copy deleted",
  );
}

/** What the deletes below need of the node. */
interface CopyContext {
  store: StateStore;
  plane: DataPlane;
  logger: Logger;
  nodeName: string;
}

/**
 * The record of group `rec` is gone: removes this node's copy if one is left (not when the
 * node was left out of a forced delete while down, or a create was undone before it recorded
 * its copy) and takes the node off the volume's tombstone (_tombstones.ts). A failure is left
 * to the orphan cleanup at the next start.
 */
export async function deleteGoneCopy(ctx: CopyContext, rec: VolumeRecord): Promise<void> {
  try {
    await ctx.plane.deleteVolume(rec.name, { force: true, uuid: rec.uuid });
  } catch (err) {
    ctx.logger.warn(
      { volume: rec.name, uuid: rec.uuid, err },
      "could not remove the copy of a deleted volume; the orphan cleanup at the next start will",
    );
    return;
  }
  await clearTombstone(ctx.store, rec.uuid, ctx.nodeName, ctx.logger);
}

/**
 * Group `rec` is being deleted and `remaining` does not list this node (removed already, left
 * out while down, or a copy made by a create it had not recorded): removes the copy, and when
 * the record lists the node left out, takes it off (no tombstone need name it then).
 */
export async function deleteLeftOutCopy(ctx: CopyContext, rec: VolumeRecord): Promise<void> {
  const self = ctx.nodeName;
  await ctx.plane.deleteVolume(rec.name, { force: true, uuid: rec.uuid });
  if (!rec.leftOut?.includes(self)) return;
  await casRecord(
    ctx.store,
    rec.name,
    rec.uuid,
    (cur) =>
      cur.leftOut?.includes(self)
        ? { ...cur, leftOut: cur.leftOut.filter((m) => m !== self) }
        : undefined,
  );
  ctx.logger.info(
    { volume: rec.name, uuid: rec.uuid },
    "removed the copy of a volume deleted (--force) while this node was down",
  );
}

/**
 * Runs a resync, again while the member answers that it has no copy yet (a member that just
 * joined makes it when its record watch delivers the change, maybe after the master's did),
 * 250 ms apart doubling to 2 s, for NEW_COPY_WAIT_MS.
 */
export async function newCopyRetry<T>(fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + NEW_COPY_WAIT_MS;
  for (let wait = NEW_COPY_POLL_MS;; wait = Math.min(2000, wait * 2)) {
    try {
      return await fn();
    } catch (err) {
      if (!errorMessage(err).includes("no copy of volume") || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

/**
 * A forced delete waiting on members that went down while it ran (`down`: the nodes whose
 * lease is gone): takes them off `remaining`, guarded by their liveness keys being absent.
 * True if it did.
 */
export async function leaveOutDown(
  store: StateStore,
  rec: VolumeRecord,
  down: string[],
  log: Logger,
): Promise<boolean> {
  if (!rec.deleteForce || !(rec.remaining ?? []).some((m) => down.includes(m))) return false;
  const next = await casRecord(
    store,
    rec.name,
    rec.uuid,
    (cur, guard) => dropDownMembers(cur, guard),
    { downGuard: (cur) => down.filter((n) => (cur.remaining ?? []).includes(n)) },
  );
  if (next === undefined) return false;
  log.info(
    { volume: rec.name, uuid: rec.uuid, down, removed: next === "delete" },
    "forced delete: members that are down left out (they remove their copies when back)",
  );
  return true;
}
