/**
 * The record of one volume group, as kept in the state store under the group's own
 * key and changed only by compare-and-swap on that key's revision.
 *
 * Pure helpers: the phase derived from a record, plan() that computes the one change a
 * given node would make to a record, and describeRecord() for tests and logs.
 * @module
 */

/** How the group is doing, derived from the record by phaseOf(). */
export type Phase = "healthy" | "degraded" | "failing-over" | "unavailable";

export interface GroupRecord {
  /** Increases with every change of master; the data path fences writes below it. */
  epoch: number;
  /**
   * The node that serves the volume at `epoch`. It stays named while it is down and
   * nobody can replace it (phase "unavailable"): it still holds the newest data.
   */
  master: string;
  /** All nodes hosting the group (master first at creation; sorted afterwards). */
  members: string[];
  /** Members holding every write acknowledged at `epoch`; always includes the master. */
  inSync: string[];
  /** Members whose liveness lease expired, as recorded by some member that saw it. */
  down: string[];
  desired: { replicas: number; spreadBy?: string };
  /**
   * A planned change of master asked for (`ballast node drain`, handover.ts): the master
   * stops serving its epoch, then hands the group to `to` at the next epoch. Absent
   * otherwise.
   */
  handover?: Handover;
  /** Always phaseOf(this); stored so readers need not recompute it. */
  phase: Phase;
}

/** A planned change of master: see GroupRecord.handover and handover.ts. */
export interface Handover {
  /** The in-sync member to become master. */
  to: string;
  /** Why, e.g. "drain of node n1" (shown in the volume's events). */
  reason: string;
}

/** A record together with the revision it was read at (the CAS token). */
export interface Versioned {
  revision: number;
  record: GroupRecord;
}

/** The record of a freshly placed group: everybody in sync, epoch 1. */
export function newRecord(
  master: string,
  replicas: readonly string[],
  desired: GroupRecord["desired"] = { replicas: replicas.length },
): GroupRecord {
  const members = [master, ...replicas].sort();
  return withPhase({ epoch: 1, master, members, inSync: members, down: [], desired });
}

/** The phase a record is in. */
export function phaseOf(r: Omit<GroupRecord, "phase">): Phase {
  if (r.down.includes(r.master)) {
    return candidates(r).length > 0 ? "failing-over" : "unavailable";
  }
  const allGood = r.members.every((m) => r.inSync.includes(m) && !r.down.includes(m));
  return allGood ? "healthy" : "degraded";
}

/** In-sync members that could take over from the master (not the master, not down). */
export function candidates(r: Omit<GroupRecord, "phase">): string[] {
  return r.inSync.filter((m) => m !== r.master && !r.down.includes(m));
}

/** What one node knows besides the record. */
export interface Observations {
  self: string;
  /** Nodes whose lease this node has seen expire (and not come back). */
  leaseDown: readonly string[];
  /** Epoch at which this node serves as master, if it does. */
  serving: number | undefined;
  /** Sync reports from this node's data path (only used while it serves). */
  reports: readonly { replica: string; inSync: boolean; epoch: number }[];
  /**
   * Exports this node is still closing for a handover (handover.ts): the handover is
   * proposed only once none is. Default 0.
   */
  stopping?: number;
}

/**
 * Liveness facts a change depends on. The driver checks them in the same etcd
 * transaction as the revision (the nodes' lease keys absent / present), so a change
 * made on a stale view of the leases cannot apply: `self` is always in `up`.
 */
export interface LeaseGuard {
  down: string[];
  up: string[];
}

/** A change `self` wants made: the next record and the lease facts it relies on. */
export interface Proposal {
  record: GroupRecord;
  guard: LeaseGuard;
}

/**
 * The change `self` wants made to the record, or undefined if it has none.
 *
 * - A node whose own lease is down proposes nothing (the others think it dead).
 * - A node that finds itself in `down` with its lease back takes itself off the list.
 * - A node adds members it saw lose their lease to `down` (guarded: lease absent).
 * - If the master is down, an in-sync member that is up promotes itself: epoch + 1,
 *   and the old master leaves the in-sync set (it must resync when it returns).
 *   Guarded by the old master's lease being absent.
 * - The serving master applies its data path's sync reports for the current epoch.
 * - A master asked to hand over (handover.ts) does so once it no longer serves.
 */
export function plan(r: GroupRecord, o: Observations): Proposal | undefined {
  const { self } = o;
  if (o.leaseDown.includes(self) || !r.members.includes(self)) return undefined;
  const guardDown: string[] = [];
  let down = r.down.filter((m) => m !== self);
  for (const m of o.leaseDown) {
    if (r.members.includes(m) && !down.includes(m)) {
      down.push(m);
      guardDown.push(m);
    }
  }
  down = down.sort();

  let { epoch, master, inSync } = r;
  let handover = r.handover;
  const guardUp = [self];
  if (down.includes(master) && master !== self && inSync.includes(self)) {
    if (!guardDown.includes(master)) guardDown.push(master);
    epoch = r.epoch + 1;
    inSync = inSync.filter((m) => m !== master);
    master = self;
    handover = undefined; // a failover ends any planned one
  } else if (handover !== undefined && master === self) {
    const step = handOver(r, handover, down, o);
    if (step === "abandon") handover = undefined;
    else if (step === "hand-over") {
      epoch = r.epoch + 1;
      master = handover.to;
      guardUp.push(handover.to);
      handover = undefined;
    }
  } else if (master === self && o.serving === r.epoch) {
    for (const rep of o.reports) {
      if (rep.epoch !== r.epoch || rep.replica === self || !r.members.includes(rep.replica)) {
        continue;
      }
      inSync = rep.inSync
        ? [...new Set([...inSync, rep.replica])].sort()
        : inSync.filter((m) => m !== rep.replica);
    }
  }
  const next = withPhase({ ...r, epoch, master, inSync, down, handover });
  if (sameRecord(next, r)) return undefined;
  return { record: next, guard: { down: guardDown.sort(), up: guardUp.sort() } };
}

/**
 * What a master asked to hand over to `h.to` does: "abandon" when `to` can no longer take
 * over (not an in-sync member, or down); "wait" while its own export is still open or
 * closing (the old epoch must serve nothing once the new one may); else "hand-over": the
 * next epoch with `to` as master. The old master stays in sync: it stopped serving with
 * every acknowledged write, and the new master reconciles any write it had applied but
 * not acknowledged.
 */
function handOver(
  r: GroupRecord,
  h: Handover,
  down: readonly string[],
  o: Observations,
): "abandon" | "wait" | "hand-over" {
  const to = h.to;
  if (to === o.self || !r.inSync.includes(to) || down.includes(to)) return "abandon";
  if (o.serving !== undefined || (o.stopping ?? 0) > 0) return "wait";
  return "hand-over";
}

/** `r` asking for the handover `h` (undefined: asking for none). */
export function withHandover(r: GroupRecord, h: Handover | undefined): GroupRecord {
  return withPhase({ ...r, handover: h });
}

/** Whether two records are equal field by field. */
export function sameRecord(a: GroupRecord, b: GroupRecord): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** One line, e.g. "e2 master n2 in-sync [n2,n3] down [n1] failing-over". */
export function describeRecord(r: GroupRecord): string {
  return `e${r.epoch} master ${r.master} in-sync [${r.inSync}]` +
    (r.down.length > 0 ? ` down [${r.down}]` : "") +
    (r.handover ? ` handover-to ${r.handover.to}` : "") + ` ${r.phase}`;
}

function withPhase(r: Omit<GroupRecord, "phase">): GroupRecord {
  // Fixed key order, so that equal records serialize equally.
  const { epoch, master, members, inSync, down, desired, handover } = r;
  const base = { epoch, master, members, inSync, down, desired, ...(handover ? { handover } : {}) };
  return { ...base, phase: phaseOf(base) };
}
