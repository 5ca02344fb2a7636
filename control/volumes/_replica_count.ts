/**
 * `volume update NAME --replicas N` (PATCH /v1/volumes/{name} `replicas`): the requested
 * count is written into the volume record (`replicas`, and the group record's
 * `desired.replicas`) by compare-and-swap; the group's serving master follows it
 * (_membership.ts): raising places new members and seeds them by Delta Sync, lowering
 * removes members. Here: the checks, done before anything is written, so that a change
 * the cluster cannot make is refused with the reason (placement as for a create), and the
 * wait for the master to apply it.
 * @module
 */

import { FailedPreconditionError } from "../../mod/errors.ts";
import type { NodeInfo } from "../../mod/types.ts";
import { abortableSleep } from "../common/mod.ts";
import { phaseOf, placeAdditional } from "../group/mod.ts";
import type { StateStore } from "../store/mod.ts";
import { parseRecord, VOLUME_PREFIX, type VolumeRecord } from "./_record.ts";

/** How long an update waits for the master to change the members. */
export const MEMBERS_WAIT_MS = 5_000;
const POLL_MS = 100;

/**
 * `rec` with `replicas` replicas wanted (unchanged when equal). Refused for a volume that is
 * not a volume group (created with 0 replicas, or on a single node) unless it stays at 0, and
 * for a raise the cluster cannot place now (`nodes`: as last seen), naming what is missing.
 */
export function withReplicas(
  rec: VolumeRecord,
  replicas: number,
  nodes: readonly NodeInfo[] | undefined,
  needBytes?: number,
): VolumeRecord {
  const g = rec.group;
  if (!g) {
    if (replicas === 0) return rec;
    throw new FailedPreconditionError(
      `cannot change the replicas of volume "${rec.name}" to ${replicas}: it was created ` +
        `without replicas (not a volume group); create a volume with --replicas and copy ` +
        `the data over`,
      { field: "replicas", replicas: rec.replicas },
    );
  }
  if (replicas === g.desired.replicas && replicas === rec.replicas) return rec;
  const current = g.members.filter((m) => m !== g.master);
  if (replicas > current.length && nodes !== undefined) {
    const placed = placeAdditional(
      {
        replicas: replicas - current.length,
        sizeBytes: rec.sizeBytes,
        ...(needBytes !== undefined ? { needBytes } : {}),
        ...(g.desired.spreadBy ? { spreadBy: g.desired.spreadBy } : {}),
      },
      nodes.map((n) => ({
        name: n.name,
        labels: n.labels,
        state: n.state,
        freeBytes: n.freeBytes,
      })),
      g.members,
    );
    if (placed.short) {
      throw new FailedPreconditionError(
        `cannot raise volume "${rec.name}" to ${replicas} replica${
          replicas === 1 ? "" : "s"
        }: ${placed.short}`,
        { field: "replicas" },
      );
    }
  }
  const base = { ...g, desired: { ...g.desired, replicas } };
  const { phase: _p, ...rest } = base;
  return { ...rec, replicas, group: { ...rest, phase: phaseOf(rest) } };
}

/**
 * Waits (MEMBERS_WAIT_MS at most) until the group's master has made the members follow
 * `replicas` (or the record changed otherwise); returns the newest record seen.
 */
export async function awaitMembers(
  store: StateStore,
  rec: VolumeRecord,
  replicas: number,
): Promise<VolumeRecord> {
  const deadline = Date.now() + MEMBERS_WAIT_MS;
  let latest = rec;
  while (Date.now() < deadline) {
    const kv = await store.get(VOLUME_PREFIX + rec.name);
    if (!kv) return latest;
    const cur = parseRecord(kv);
    if (cur.uuid !== rec.uuid || !cur.group) return latest;
    latest = cur;
    if (cur.group.desired.replicas !== replicas) return latest; // changed again meanwhile
    if (cur.group.members.length === replicas + 1) return latest;
    await abortableSleep(POLL_MS);
  }
  return latest;
}
