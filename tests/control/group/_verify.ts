/**
 * `volume verify --deep` and silent corruption, for _replication.ts: as
 * data/replication/master.ts verify() and verify.ts do it.
 *
 * - a copy may be silently corrupted (a disk, a stray write to its file): its content no
 *   longer is what its writes made, and its persisted hash list still describes the old
 *   content, so a resync, which compares hash lists, does not see it (bad 1);
 * - a deep verification by the serving master, with no write in flight (it locks the
 *   region; writes in flight finish on every member first): every copy it compares (the
 *   master's, the alive in-sync members' and those being resynced, until the record lists
 *   them in sync, that accept its epoch)
 *   rehashes the region and marks a corruption for rehashing (bad 2: its hash list now
 *   describes its content). Unless the master's own copy is corrupt (resyncAfterVerify: a
 *   resync would copy its bad data over good copies), each in-sync member whose copy
 *   differs, and each member resynced whose in-sync CAS is pending that holds a corruption,
 *   is reported as a failed member is (#memberFailed: "replicas-failed", not dropped from
 *   the targets), so the record shows it out of sync and its resync starts (again);
 * - a resync copies the region only when the hash lists differ (resync.ts).
 *
 * Invariants: a member the verification found different comes back in sync (at that epoch)
 * only with its copy repaired (not corrupt); the repair never copies a region the master
 * knows corrupt (holdResyncingToo, stricter: nor a member compared while resynced). At most
 * one corruption and
 * one verification per run (the bounds): either happens at any moment.
 * @module
 */

import type { Copy, MasterPath, ReplData, ReplicationFaults } from "./_repl_state.ts";
import type { DataContext, World } from "./_model.ts";

type W = World<ReplData>;

/** What the region's hash list says of a copy: its writes, and a corruption it shows. */
const hashOf = (c: Copy) => `${c.data}${c.bad === 2 ? "!" : ""}`;
/** Whether two copies hold the same content. */
const sameContent = (a: Copy, b: Copy) => a.data === b.data && a.bad === 0 && b.bad === 0;

/** A silent corruption of node i's copy (any node, at any moment, within the bound). */
export function corruptionStep(w: W, i: number, ctx: DataContext<ReplData>): void {
  const c = w.data.copies[i];
  if (c.bad !== 0 || w.data.corruptions >= (ctx.bounds.maxCorruptions ?? 0)) return;
  const x = ctx.clone(w);
  x.data.corruptions++;
  x.data.copies[i] = { ...c, bad: 1 };
  ctx.push(`${ctx.names[i]}'s copy is silently corrupted`, x);
}

/** `volume verify --deep` on serving master i (at most maxVerifies per run). */
export function verifyStep(
  w: W,
  i: number,
  p: MasterPath,
  ctx: DataContext<ReplData>,
  faults: ReplicationFaults,
): void {
  const { names } = ctx;
  if (p.write !== undefined || w.data.verifies >= (ctx.bounds.maxVerifies ?? 0)) return;
  const me = names[i];
  const e = p.epoch;
  const copies = w.data.copies;
  const inSync = w.actors[i]?.known?.record.inSync ?? [];
  // Members asked: the in-sync ones and those being resynced (master.ts keeps a member
  // among them until the record lists it in sync) that answer at this epoch.
  const asked = [...new Set([...inSync, ...p.resyncing, ...p.resynced])].sort().filter((m) => {
    const j = names.indexOf(m);
    return m !== me && w.alive[j] && copies[j].epoch <= e;
  });
  const x = ctx.clone(w);
  x.data.verifies++;
  for (const j of [i, ...asked.map((m) => names.indexOf(m))]) {
    if (copies[j].bad === 1 && !faults.verifyMarksNothing) {
      x.data.copies[j] = { ...copies[j], bad: 2 };
    }
  }
  const masterCorrupt = copies[i].bad !== 0 && !faults.verifyRepairsFromCorruptMaster;
  // The in-sync members that differ, and the members resynced whose in-sync CAS is pending
  // that hold a corruption: their resync copied already and will not copy again
  // (resyncAgainAfterVerify; the model found that gap).
  const resyncedCorrupt = (m: string) =>
    !faults.verifyLeavesResynced && p.resynced.includes(m) && copies[names.indexOf(m)].bad !== 0;
  const differing = masterCorrupt
    ? []
    : asked.filter((m) =>
      inSync.includes(m) ? !sameContent(copies[names.indexOf(m)], copies[i]) : resyncedCorrupt(m)
    );
  let y = x;
  if (faults.holdResyncingToo) {
    // (A stricter check: a member compared while resynced, corrupt, is held to it too.)
    for (const m of asked.filter((m) => !inSync.includes(m) && copies[i].bad === 0)) {
      if (copies[names.indexOf(m)].bad === 0) continue;
      y.data.found |= 1 << names.indexOf(m);
      y.data.foundEpoch = e;
    }
  }
  for (const m of differing) {
    y.data.found |= 1 << names.indexOf(m);
    y.data.foundEpoch = e;
    y = ctx.deliver(y, i, { type: "replicas-failed", epoch: e, replicas: [m] });
  }
  const what = differing.length > 0
    ? `[${differing}] differ: taken out of sync to be resynced`
    : masterCorrupt
    ? "its own copy is corrupt: nothing resynced"
    : "nothing to repair";
  ctx.push(`${me} verifies --deep: ${what}`, y);
}

/**
 * Node i's resync of member j: copies the region when the hash lists differ (else nothing
 * is copied: a corruption that no verification marked stays). `x` is being built.
 */
export function resyncCopy(w: W, x: W, i: number, j: number, epoch: number, name: string): void {
  const from = w.data.copies[i];
  const to = w.data.copies[j];
  if (hashOf(from) === hashOf(to)) {
    x.data.copies[j] = { ...to, epoch };
    return;
  }
  if ((w.data.found & (1 << j)) !== 0) {
    // The verification's own repair: the same master (one per epoch). A member promoted
    // with its corruption before the record showed it out spreads it, as it would.
    if (from.bad === 2 && epoch === w.data.foundEpoch) {
      x.flaw ??= `the deep verification's repair copies ${name}'s corrupt region to another member`;
    }
    x.data.found &= ~(1 << j);
  }
  x.data.copies[j] = { data: from.data, epoch, bad: from.bad === 0 ? 0 : 2 };
}

/**
 * A member the verification found different, back in sync with its copy still corrupt (at
 * the verification's epoch: a later master's resyncs compare with its own copy, whatever
 * it holds). Allowed only through an in-sync CAS the master had sent before the
 * verification reported the member (no request can be called back): its machine then holds
 * the report that takes the member out again, and writes wait until the record shows that,
 * as for an in-sync member found different.
 */
export function verifyTransition(from: W, to: W, names: string[]): string | undefined {
  if (to.data.found === 0 || to.record.record.epoch !== to.data.foundEpoch) return undefined;
  const before = from.record.record.inSync;
  const master = to.actors[names.indexOf(to.record.record.master)];
  const takenOut = (m: string) =>
    master?.reports.some((r) => r.replica === m && !r.inSync && r.epoch === to.data.foundEpoch);
  for (const m of to.record.record.inSync) {
    const j = names.indexOf(m);
    if (before.includes(m) || (to.data.found & (1 << j)) === 0 || takenOut(m)) continue;
    if (to.data.copies[j].bad !== 0) {
      return `${m} back in sync with the copy the deep verification found different, not repaired`;
    }
  }
  return undefined;
}
