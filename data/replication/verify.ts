/**
 * `ballast volume verify`: the master compares every member's copy of a group volume with its
 * own. Quick (default): the roots of the hash trees (hash_state.ts; regions changed lately are
 * rehashed from the data, the others come from the persisted hash lists), and for a member
 * whose root differs, the regions that differ (from the roots down, as a resync would), each
 * compared again locked so that writes on their way are not reported (recheck()).
 * Deep: every region of every copy is rehashed from its data, in batches locked on the master
 * (client writes to them wait a moment; those in flight finish on every member first, so a
 * write on its way is never reported as a difference), and each member also reports the
 * regions whose persisted hash is not its data's (silent corruption of a clean region).
 * @module
 */

import type { Logger } from "pino";
import type { HashState } from "./hash_state.ts";
import { REGION_BYTES } from "./regions.ts";
import { type Ask, differingLeaves } from "./resync.ts";
import { F_DEEP, HASH_BYTES, T_HASHES, T_TREE } from "./wire.ts";

/** Regions compared per locked batch in a deep verification. */
const DEEP_BATCH = 16;
/** A quick verification compares again at most this many differing regions (recheck()). */
const RECHECK_MAX = 256;
/** Regions listed per member at most (the count is always given). */
export const MAX_LISTED = 1000;

export interface MemberVerdict {
  node: string;
  role: "master" | "replica";
  /** The member's root hash (hex), when it answered. */
  root?: string;
  /** Whether its copy equals the master's. */
  equal?: boolean;
  /**
   * Regions (REGION_BYTES each) that differ from the master's, at most MAX_LISTED. For the
   * master: those in which every in-sync replica (two or more) differs from it (outvoted()).
   */
  differing: number[];
  differingCount: number;
  /** Deep: clean regions whose persisted hash is not the data's, at most MAX_LISTED. */
  corrupt: number[];
  corruptCount: number;
  /** Why the member could not be compared. */
  error?: string;
  /** Deep: it differed, so the master took it out of sync to resync it (resyncAfterVerify). */
  resyncing?: boolean;
  /** The master: why its copy is suspect (suspectMaster, or an earlier deep verification). */
  suspect?: string;
}

export interface VerifyReport {
  deep: boolean;
  regionBytes: number;
  regions: number;
  members: MemberVerdict[];
  ms: number;
}

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

function verdict(node: string, role: "master" | "replica"): MemberVerdict {
  return { node, role, differing: [], differingCount: 0, corrupt: [], corruptCount: 0 };
}

function note(list: number[], r: number): void {
  if (list.length < MAX_LISTED) list.push(r);
}

/**
 * Compares the master's copy (`hashes`) with each member's (`asks`: node -> ask). A member
 * being resynced (`resyncing`) differs for a reason: a quick verification lists its differing
 * regions as found, without comparing them again locked (recheck()), which would wait for its
 * resync to copy each one (minutes under --resync-rate).
 */
export async function verifyCopies(
  self: string,
  hashes: HashState,
  asks: Map<string, Ask>,
  deep: boolean,
  resyncing: ReadonlySet<string> = new Set(),
): Promise<VerifyReport> {
  const t0 = performance.now();
  const master = verdict(self, "master");
  const members = [...asks.keys()].sort().map((n) => verdict(n, "replica"));
  const top = hashes.levels() - 1;
  const ourRoot = await hashes.nodes(top, 0, 1);
  master.root = hex(ourRoot);
  master.equal = true;
  if (!deep) {
    await Promise.all(members.map(async (m) => {
      const ask = asks.get(m.node)!;
      try {
        const root = await ask({ type: T_TREE, flags: 0, level: top, first: 0, count: 1 });
        m.root = hex(root);
        m.equal = m.root === master.root;
        if (!m.equal) {
          const found = await differingLeaves(hashes, ask, { hashBytes: 0 });
          const regions = resyncing.has(m.node) ? found : await recheck(hashes, ask, found);
          m.differingCount = regions.length;
          m.differing = regions.slice(0, MAX_LISTED);
          m.equal = regions.length === 0;
        }
      } catch (err) {
        m.error = err instanceof Error ? err.message : String(err);
      }
    }));
  } else {
    const n = hashes.regions;
    for (let first = 0; first < n; first += DEEP_BATCH) {
      const count = Math.min(DEEP_BATCH, n - first);
      await lockBatch(hashes, first, count);
      try {
        const ours = await hashes.verify(first, count);
        tally(master, ours, ours, first, count);
        await Promise.all(members.map(async (m) => {
          if (m.error) return;
          try {
            const theirs = await asks.get(m.node)!({
              type: T_HASHES,
              flags: F_DEEP,
              first,
              count,
              regionBytes: REGION_BYTES,
            });
            tally(m, theirs, ours, first, count);
          } catch (err) {
            m.error = err instanceof Error ? err.message : String(err);
          }
        }));
      } finally {
        for (let r = first; r < first + count; r++) hashes.table.unlock(r);
      }
    }
    for (const m of [master, ...members]) {
      if (!m.error) m.equal = m.differingCount === 0;
    }
    // The roots as they stand after the walk.
    master.root = hex(await hashes.nodes(top, 0, 1));
    await Promise.all(
      members.filter((m) => !m.error).map(async (m) => {
        try {
          m.root = hex(
            await asks.get(m.node)!({ type: T_TREE, flags: 0, level: top, first: 0, count: 1 }),
          );
        } catch { /* the comparison stands; the root is just not shown */ }
      }),
    );
  }
  return {
    deep,
    regionBytes: REGION_BYTES,
    regions: hashes.regions,
    members: [master, ...members],
    ms: Math.round(performance.now() - t0),
  };
}

/**
 * Locks regions first..first+count-1 of the master's table, never holding some while waiting
 * for another: a resync holds the region it copies for as long as --resync-rate makes it
 * take, and client writes to the regions already locked would wait that long too (seconds).
 */
async function lockBatch(hashes: HashState, first: number, count: number): Promise<void> {
  const table = hashes.table;
  for (;;) {
    let r = first;
    while (r < first + count && await table.lock(r)) r++;
    if (r === first + count) return;
    for (let k = first; k < r; k++) table.unlock(k);
    await table.wait(r); // its holder lets go (or a moment passes): try the batch again
  }
}

/**
 * The regions of `found` (differing in the trees as read) that still differ when compared
 * again one at a time, locked as a deep verification locks them (client writes to the region
 * wait a moment; those in flight finish on every member first): a region written while the
 * trees were read differs for that moment only, and a quick verification of a busy volume
 * must not report it. Past RECHECK_MAX regions the difference is no such moment: `found` as
 * it is.
 */
async function recheck(hashes: HashState, ask: Ask, found: number[]): Promise<number[]> {
  if (found.length > RECHECK_MAX) return found;
  const still: number[] = [];
  for (const r of found) {
    await hashes.table.lockWaiting(r);
    try {
      const ours = await hashes.leaves(r, 1);
      const theirs = await ask({
        type: T_HASHES,
        flags: 0,
        first: r,
        count: 1,
        regionBytes: REGION_BYTES,
      });
      if (theirs.length !== ours.length || theirs.some((b, i) => b !== ours[i])) still.push(r);
    } finally {
      hashes.table.unlock(r);
    }
  }
  return still;
}

/** Adds one batch of a deep verification (`theirs` against `ours`) to `m`. */
function tally(
  m: MemberVerdict,
  theirs: Uint8Array,
  ours: Uint8Array,
  first: number,
  count: number,
): void {
  if (theirs.length !== count * (HASH_BYTES + 1)) {
    throw new Error(`${m.node} answered ${theirs.length} bytes for ${count} regions`);
  }
  for (let i = 0; i < count; i++) {
    const at = i * HASH_BYTES;
    for (let k = 0; k < HASH_BYTES; k++) {
      if (theirs[at + k] !== ours[at + k]) {
        m.differingCount++;
        note(m.differing, first + i);
        break;
      }
    }
    if (theirs[count * HASH_BYTES + i] === 1) {
      m.corruptCount++;
      note(m.corrupt, first + i);
    }
  }
}

/**
 * The in-sync replicas (`inSync`) that a deep verification found different from the master:
 * the master takes them out of sync, and their resync copies the differing blocks (the
 * member marked its corrupt regions for rehashing, so the hash trees show them). None when
 * the master's own copy is corrupt: a resync would copy its bad data over good copies.
 */
export function resyncAfterVerify(report: VerifyReport, inSync: readonly string[]): string[] {
  if (!report.deep) return [];
  const replica = (m: MemberVerdict) => m.role === "replica" && !m.error && inSync.includes(m.node);
  if (!repairsFromMaster(report)) {
    // The master is suspect: a replica whose own copy is corrupt still leaves the in-sync
    // set, so that no drain or failover makes it the master (its resync waits: the master
    // resyncs nobody while it is suspect, MasterReplication).
    return report.members.filter((m) => replica(m) && m.corruptCount > 0).map((m) => m.node);
  }
  return report.members.filter((m) => replica(m) && m.equal === false).map((m) => m.node);
}

/**
 * Why a deep verification makes the master's copy suspect (its own copy corrupt, or outvoted
 * by every in-sync replica), or undefined: a suspect master resyncs nobody until it moves.
 */
export function suspectMaster(report: VerifyReport): string | undefined {
  const m = report.members.find((x) => x.role === "master");
  if (!report.deep || !m) return undefined;
  if (m.corruptCount > 0) return `its own copy is corrupt in ${m.corruptCount} region(s)`;
  if (m.differingCount > 0) {
    return `every in-sync replica differs from it in ${m.differingCount} region(s)`;
  }
  return undefined;
}

/** Why a suspect master (suspectMaster) refuses a resync. */
export function notFromSuspect(suspect: string, self: string): string {
  return `the master's copy is suspect (${suspect}): it resyncs nobody until the master ` +
    `moves (ballast node drain ${self})`;
}

/** Why a deep verification took a member out of sync (the reason volume get shows). */
export function verifiedOut(suspect: string | undefined): string {
  return suspect
    ? "volume verify --deep found its copy corrupt (resynced once the master moves)"
    : "volume verify --deep found its copy different from the master's (resynced to repair it)";
}

/** The log line of a verification. */
export function logVerified(log: Logger, name: string, report: VerifyReport): void {
  const members = report.members.map((m) => ({
    node: m.node,
    equal: m.equal,
    differing: m.differingCount,
    corrupt: m.corruptCount,
    error: m.error,
  }));
  log.info({ volume: name, deep: report.deep, ms: report.ms, members }, "volume verified");
}

/**
 * The members being resynced (`resyncing`, not in sync) in whose copy a deep verification
 * found a corruption (and marked it for rehashing): their resync may have compared that
 * region already, or finished with its in-sync CAS still pending, and would then not copy
 * it, so the master starts it again (the group model checker found that gap). None when
 * the master's own copy is corrupt.
 */
export function resyncAgainAfterVerify(
  report: VerifyReport,
  resyncing: readonly string[],
): string[] {
  if (!repairsFromMaster(report)) return [];
  return report.members.filter((m) =>
    m.role === "replica" && !m.error && m.corruptCount > 0 && resyncing.includes(m.node)
  ).map((m) => m.node);
}

/**
 * Whether a resync may repair the members after `report`: deep, and the master not suspect
 * (its copy sound and not outvoted now, nor found suspect before: `suspect`).
 */
function repairsFromMaster(report: VerifyReport): boolean {
  const master = report.members.find((m) => m.role === "master");
  return report.deep && master !== undefined &&
    (master.suspect ?? suspectMaster(report)) === undefined;
}

/**
 * Notes on the master's verdict (its `differing`) the regions in which every in-sync replica
 * compared, two or more, differs from the master: there the replicas outvote it. A master's
 * own check cannot always see that its copy went bad: a region written since is rehashed from
 * its data, bad bytes included, and would then be copied over every good copy. So nothing is
 * repaired from it (repairsFromMaster()); the operator moves the master to a replica. A member
 * being resynced (not in `inSync`) differs for a reason and has no vote.
 */
export function outvoted(report: VerifyReport, inSync: readonly string[]): void {
  const voters = report.members.filter((m) =>
    m.role === "replica" && !m.error && inSync.includes(m.node)
  );
  const master = report.members.find((m) => m.role === "master");
  if (voters.length < 2 || !master) return;
  const [first, ...rest] = voters;
  const against = first.differing.filter((r) => rest.every((m) => m.differing.includes(r)));
  master.differing = against;
  master.differingCount = against.length;
  if (against.length > 0) master.equal = false;
}
