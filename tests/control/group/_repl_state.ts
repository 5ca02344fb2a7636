/**
 * The state of the replicated data path (_replication.ts): the copies, the masters' paths,
 * the client's view (writes acknowledged, errors answered), the deliberate faults, and how
 * a state is keyed and shown in traces.
 * @module
 */

import type { World } from "./_model.ts";

/** One node's copy of the region. */
export interface Copy {
  /** Bit k: write k applied (for a write that failed here: its partial change). */
  data: number;
  /** The newest epoch this copy has seen (fencing). */
  epoch: number;
  /**
   * Silent corruption (_verify.ts): 0 none, 1 its hash list still describes the old
   * content, 2 marked for rehashing by a deep verification (its hash list shows it).
   */
  bad: 0 | 1 | 2;
}

interface Write {
  id: number;
  /** Targets that have not answered yet. */
  waiting: string[];
  /** A target failed: acknowledged only after "release-writes". */
  failed: boolean;
  released: boolean;
  /**
   * It failed on the master midway (ENOSPC): what goes to the targets is the master's
   * read back of the range (repairThenFail), and its end is the error reply, not an ack.
   */
  repair: boolean;
}

/** A serving master's replication state. */
export interface MasterPath {
  epoch: number;
  /** Members writes are sent to (T). */
  targets: string[];
  /** Members whose resync was asked for and has not completed. */
  resyncing: string[];
  /** Members this master resynced while its machine had a request unsettled. */
  resynced: string[];
  /** Members whose grant this master holds (valid on its clock). */
  holds: string[];
  write: Write | undefined;
  /** Handed over to (not promoted): serves without waiting out older grants. */
  planned: boolean;
  /**
   * Its export closes for a handover and waits for the repair of a failed write in flight
   * (a graceful close answers every request it received): nothing else is served.
   */
  closing: boolean;
}

export interface ReplData {
  copies: Copy[];
  paths: (MasterPath | undefined)[];
  /** Client writes issued so far (the next id). */
  issued: number;
  /** Bit k: write k acknowledged. */
  acked: number;
  /** The newest epoch at which a write was acknowledged (0: none yet). */
  ackEpoch: number;
  /** Writes that failed on the master midway so far. */
  failedWrites: number;
  /** Per write id: the epoch at which its error was answered (absent: none). */
  errored: number[];
  /** Silent corruptions and deep verifications so far (_verify.ts). */
  corruptions: number;
  verifies: number;
  /** Bit j: node j was found different by a deep verification, not repaired since. */
  found: number;
  /** The epoch of the verification that found them. */
  foundEpoch: number;
}

/** Deliberate faults, to show the checker catching them. */
export interface ReplicationFaults {
  /** Acknowledge once every target answered, without waiting for the out-of-sync CAS. */
  ackBeforeCas?: boolean;
  /** A master acknowledges a write without checking its grants again (only at its start). */
  ackWithoutGuard?: boolean;
  /** A master reads from its copy without checking its grants. */
  readWithoutGuard?: boolean;
  /** A new master serves without waiting for its grants to older epochs to lapse. */
  serveBeforeGrantsLapse?: boolean;
  /**
   * G leaves out resynced members whose in-sync CAS may have applied unseen: the master
   * neither needs their grants nor reports them when a write does not reach them.
   */
  guardKnownInSyncOnly?: boolean;
  /**
   * A write that does not reach a member dropped by an earlier failure is acknowledged
   * without waiting for the record to show that member out of sync (what the NBD request
   * path, data/nbd/_execute.ts, does today).
   */
  skipDroppedMembers?: boolean;
  /**
   * A master handing over confirms its export closed while it still serves (its threads
   * have not dropped it): the new master, handed over to, does not wait out its grants.
   */
  confirmBeforeClosed?: boolean;
  /**
   * A write that fails on the master midway is answered with its error at once, without
   * sending the replicas what the master's copy now holds (no repairThenFail).
   */
  errorWithoutRepair?: boolean;
  /** The error of a failed write is answered before the record shows a failed member out. */
  errorBeforeCas?: boolean;
  /** A deep verification does not mark corrupt regions for rehashing (_verify.ts). */
  verifyMarksNothing?: boolean;
  /** A deep verification resyncs differing members even when the master's copy is corrupt. */
  verifyRepairsFromCorruptMaster?: boolean;
  /** A resync reports the member in sync without copying anything to it. */
  resyncWithoutCopy?: boolean;
  /**
   * A deep verification takes out only in-sync members: a member resynced whose in-sync CAS
   * is pending, found corrupt, is left to that CAS (the product before the model found it).
   */
  verifyLeavesResynced?: boolean;
  /**
   * Not a fault: a stricter check. A member a deep verification compared while it was being
   * resynced, its copy corrupt, must not come back in sync corrupt either (_verify.ts).
   */
  holdResyncingToo?: boolean;
}

type W = World<ReplData>;

export const bit = (id: number) => 1 << id;

/** The flags of node i's copy and path, for traces (DataModel.describeNode). */
export function describeNode(w: W, i: number): string[] {
  const c = w.data.copies[i];
  const p = w.data.paths[i];
  const data = `data[${
    [0, 1, 2, 3].filter((k) => c.data & bit(k)).map((k) => `w${k}`)
  }]@e${c.epoch}`;
  const flags = [data];
  if (c.bad !== 0) flags.push(c.bad === 1 ? "corrupt(unseen)" : "corrupt(marked)");
  if (w.data.found & (1 << i)) flags.push("found-different");
  if (p) {
    if (p.closing) flags.push("export closing");
    flags.push(`T [${p.targets}]`);
    if (p.holds.length > 0) flags.push(`holds [${p.holds}]`);
    if (p.resyncing.length > 0) flags.push(`resyncing [${p.resyncing}]`);
    if (p.resynced.length > 0) flags.push(`resynced [${p.resynced}]`);
    const wr = p.write;
    if (wr) {
      const st = wr.failed ? (wr.released ? " released" : " held") : "";
      flags.push(`${wr.repair ? "repair of " : ""}w${wr.id} waits [${wr.waiting}]${st}`);
    }
  }
  return flags;
}

/** What the client saw, for the end of a trace line (DataModel.summary). */
export function summary(w: W): string {
  const acked = [0, 1, 2, 3].filter((k) => w.data.acked & bit(k)).map((k) => `w${k}`);
  const errs = w.data.errored.flatMap((e, k) => e === undefined ? [] : [`w${k}@e${e}`]);
  return (acked.length > 0 ? ` | acked [${acked}] (last at e${w.data.ackEpoch})` : "") +
    (errs.length > 0 ? ` | error answered [${errs}]` : "");
}

/**
 * A write whose error was answered at the record's epoch: the copies the record lists in
 * sync hold the same there (what the master's copy holds). A later epoch's master compares
 * the copies itself (master.ts #reconcile, not modelled), so older errors are not checked.
 */
export function copiesDiffer(w: W, names: string[]): string | undefined {
  const r = w.record.record;
  const ref = w.data.copies[names.indexOf(r.master)].data;
  for (let id = 0; id < w.data.errored.length; id++) {
    if (w.data.errored[id] !== r.epoch) continue;
    for (const m of r.inSync) {
      if ((w.data.copies[names.indexOf(m)].data ^ ref) & bit(id)) {
        return `copies listed in sync differ after w${id}'s error was answered: ${r.master} ` +
          `${ref & bit(id) ? "holds" : "lacks"} its partial change, ${m} does not`;
      }
    }
  }
  return undefined;
}

/** A string that identifies `d` (DataModel.key). */
export function key(d: ReplData): string {
  let k = `${d.issued}${d.acked}${d.ackEpoch}/${d.failedWrites}${d.errored}/` +
    `${d.corruptions}${d.verifies}${d.found}.${d.foundEpoch}`;
  for (const c of d.copies) k += `|${c.data}.${c.epoch}.${c.bad}`;
  for (const p of d.paths) {
    if (p === undefined) {
      k += "|-";
      continue;
    }
    k += `|${p.epoch}:${p.targets}:${p.resyncing}:${p.resynced}:${p.holds}:${+p.planned}` +
      `${+p.closing}:`;
    const wr = p.write;
    if (wr) k += `${wr.id}${wr.waiting}${+wr.failed}${+wr.released}${+wr.repair}`;
  }
  return k;
}
