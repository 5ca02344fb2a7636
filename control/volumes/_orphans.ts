/**
 * Orphan cleanup at node start (cluster mode): a copy on disk (DATA/volumes/<uuid>.vol)
 * whose uuid is in no volume record is left over from a volume deleted while this node
 * was down (a forced delete of a group leaves down members out) or from an undone
 * create. Uuids are never reused, so such a file can never belong to a volume again; it
 * is moved out of the way to DATA/orphaned/ with a warning, never deleted: if the
 * records were lost instead (etcd restored from an old backup), the data is still there.
 *
 * Safety:
 * - the records are listed BEFORE the directory is read, and a record is always written
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

/** Removes orphaned copies; returns the uuids removed. */
export async function removeOrphans(ctx: {
  store: StateStore;
  plane: DataPlane;
  log: Logger;
  node: string;
  now: () => Date;
  minAgeMs: number;
}): Promise<string[]> {
  const { kvs } = await ctx.store.list(VOLUME_PREFIX);
  const known = new Set(kvs.map((kv) => parseRecord(kv).uuid));
  const copies = await ctx.plane.listCopies();
  const candidates = copies.filter((c) => !known.has(c.uuid));
  if (candidates.length === 0) return [];
  if (!await ctx.store.get(NODE_PREFIX + ctx.node)) {
    ctx.log.warn(
      { uuids: candidates.map((c) => c.uuid) },
      "volume copies without a record, but this node is not registered in this store " +
        "(wrong --etcd or --etcd-prefix?): not removing them",
    );
    return [];
  }
  const removed: string[] = [];
  const now = ctx.now().getTime();
  for (const c of candidates) {
    const ageMs = now - c.mtime.getTime();
    const log = ctx.log.child({ uuid: c.uuid, file: `volumes/${c.uuid}.vol` });
    if (ageMs < ctx.minAgeMs) {
      log.info({ ageMs, minAgeMs: ctx.minAgeMs }, "volume copy without a record kept: too new");
      continue;
    }
    try {
      const movedTo = await ctx.plane.quarantineCopy(c.uuid);
      if (movedTo !== undefined) {
        removed.push(c.uuid);
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
  return removed;
}
