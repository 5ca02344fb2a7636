/**
 * Orphan cleanup at node start (cluster mode). A copy on disk (DATA/volumes/<uuid>.vol)
 * whose uuid is in no volume record is either:
 *
 * - the copy of a group deleted by force while this node was down: a tombstone names this
 *   node for its uuid (_tombstones.ts). The operator deleted the volume, so the copy is
 *   removed at once (as the other members removed theirs), and the node takes itself off
 *   the tombstone;
 * - anything else (an undone create, a record lost): uuids are never reused, so it can never
 *   belong to a volume again; it is moved out of the way to DATA/orphaned/ with a warning,
 *   never deleted: if the records were lost (etcd restored from an old backup), the data is
 *   still there. `node get` and /metrics show what DATA/orphaned/ holds.
 *
 * Safety:
 * - a tombstone is written only when the record of its uuid is removed, so a tombstoned copy
 *   is never one being created;
 * - otherwise the records are listed BEFORE the directory is read, and a record is always written
 *   before its files are made: a file whose record appeared after the listing is newer
 *   than the listing, and a file is only removed when it is older than a margin
 *   (default 10 minutes; `BALLAST_ORPHAN_MIN_AGE_MS` in the environment changes it, for
 *   tests), so an in-flight create is never hit;
 * - a uuid in any record, whatever its state, is never touched, nor is an exported one;
 * - nothing is removed unless this node's own record (`/ballast/nodes/NAME`) is in the
 *   store: a node started on the wrong store or key prefix (which would hold no records
 *   of its volumes) removes nothing.
 * @module
 */

import type { DataPlane } from "../../data/plane.ts";
import type { Logger } from "../common/mod.ts";
import { NODE_PREFIX } from "../nodes/mod.ts";
import type { StateStore } from "../store/mod.ts";
import { parseRecord, VOLUME_PREFIX } from "./_record.ts";
import { clearTombstone, tombstonesOf } from "./_tombstones.ts";

/** How old a file without a record must be before it is removed. */
export const ORPHAN_MIN_AGE_MS = 10 * 60_000;

/** The margin from `BALLAST_ORPHAN_MIN_AGE_MS` (whole ms, >= 0), else the default. */
export function orphanMinAgeMs(env: string | undefined): number {
  if (env === undefined || env.trim() === "") return ORPHAN_MIN_AGE_MS;
  const ms = Number(env);
  if (!Number.isInteger(ms) || ms < 0) {
    throw new Error(
      `invalid BALLAST_ORPHAN_MIN_AGE_MS "${env}": expected a whole number of milliseconds >= 0`,
    );
  }
  return ms;
}

/**
 * Removes this node's copy of volume `name` (uuid `uuid`), deleted by force while the node was
 * down, and takes the node off its tombstone. Returns whether the copy went.
 */
async function removeDeletedCopy(
  ctx: { store: StateStore; plane: DataPlane; log: Logger; node: string },
  name: string,
  uuid: string,
  sizeBytes: number,
  log: Logger,
): Promise<boolean> {
  try {
    await ctx.plane.deleteVolume(name, { force: true, uuid });
  } catch (err) {
    log.warn({ volume: name, err }, "could not remove the copy of a volume deleted while down");
    return false;
  }
  log.info(
    { volume: name, sizeBytes },
    "removed the copy of a volume deleted (--force) while this node was down",
  );
  await clearTombstone(ctx.store, uuid, ctx.node, ctx.log);
  return true;
}

/**
 * Removes the copies of volumes deleted while this node was down and moves other orphaned
 * copies to DATA/orphaned/; returns the uuids of each.
 */
export async function removeOrphans(ctx: {
  store: StateStore;
  plane: DataPlane;
  log: Logger;
  node: string;
  now: () => Date;
  minAgeMs: number;
}): Promise<{ removedDeleted: string[]; movedOrphans: string[] }> {
  const { kvs } = await ctx.store.list(VOLUME_PREFIX);
  const known = new Set(kvs.map((kv) => parseRecord(kv).uuid));
  const deleted = await tombstonesOf(ctx.store, ctx.node);
  const copies = await ctx.plane.listCopies();
  const candidates = copies.filter((c) => !known.has(c.uuid));
  // Tombstones whose copy is gone already (removed before the record went): just clear them.
  for (const uuid of deleted.keys()) {
    if (!candidates.some((c) => c.uuid === uuid)) {
      await clearTombstone(ctx.store, uuid, ctx.node, ctx.log);
    }
  }
  const none = { removedDeleted: [], movedOrphans: [] };
  if (candidates.length === 0) return none;
  if (!await ctx.store.get(NODE_PREFIX + ctx.node)) {
    ctx.log.warn(
      { uuids: candidates.map((c) => c.uuid) },
      "volume copies without a record, but this node is not registered in this store " +
        "(wrong --etcd or --etcd-prefix?): not removing them",
    );
    return none;
  }
  const removedDeleted: string[] = [];
  const movedOrphans: string[] = [];
  const now = ctx.now().getTime();
  for (const c of candidates) {
    const ageMs = now - c.mtime.getTime();
    const log = ctx.log.child({ uuid: c.uuid, file: `volumes/${c.uuid}.vol` });
    const tomb = deleted.get(c.uuid);
    if (tomb) {
      if (await removeDeletedCopy(ctx, tomb.name, c.uuid, c.sizeBytes, log)) {
        removedDeleted.push(c.uuid);
      }
      continue;
    }
    if (ageMs < ctx.minAgeMs) {
      log.info({ ageMs, minAgeMs: ctx.minAgeMs }, "volume copy without a record kept: too new");
      continue;
    }
    try {
      const movedTo = await ctx.plane.quarantineCopy(c.uuid);
      if (movedTo !== undefined) {
        movedOrphans.push(c.uuid);
        log.warn(
          { sizeBytes: c.sizeBytes, mtime: c.mtime.toISOString(), movedTo },
          `moved orphaned volume copy volumes/${c.uuid}.vol to ${movedTo} (no volume record ` +
            `has its uuid); delete it once you are sure it is not needed`,
        );
      }
    } catch (err) {
      log.warn({ err }, "could not move an orphaned volume copy");
    }
  }
  return { removedDeleted, movedOrphans };
}
