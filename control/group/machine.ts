/**
 * The state machine one node runs for one volume group it hosts:
 * `step(state, event) -> { state, effects }`, in the style of etcd-io/raft's Step.
 *
 * Every hosting node runs its own copy (an "actor") against the one shared record
 * (record.ts). Nothing here does I/O: a driver performs the effects (a read or a
 * compare-and-swap of the record, a timer, a notice to the local data path) and feeds
 * the outcomes back as events. Time enters only as "timer-fired".
 *
 * Rules:
 * - at most one request (read or CAS) is outstanding; the actor is otherwise level
 *   triggered: after every outcome it recomputes plan() from the newest record it
 *   knows and what it has observed, and CASes that if it differs;
 * - a lost CAS comes with the fresh record and is simply re-planned from it;
 * - a lost response (the driver does not know whether the CAS applied) is followed,
 *   after a retry timer, by a read: the record says what happened;
 * - records older than the one known are ignored, so epochs never go backwards;
 * - a planned handover (record.ts, `handover`): the master closes its export, and once the
 *   driver confirms it closed ("serving-stopped") hands the group over by CAS at the next
 *   epoch; it does not serve again while the record asks for a handover;
 * - the actor serves (notice "serve") only at an epoch where a record it has seen
 *   names it master, and stops as soon as it sees a newer epoch or another master;
 * - writes: data is not replicated yet, so once the master's copy changes ("data-changed")
 *   every other in-sync member is reported out of sync, and a data-changing request held
 *   at the write gate is released ("release-writes") only when a record at the serving
 *   epoch lists no other member in sync (else a stale replica could be promoted and an
 *   acknowledged write lost); it is refused ("refuse-writes") if serving ends first.
 * @module
 */

import { type GroupRecord, type LeaseGuard, plan, type Versioned } from "./record.ts";

export const RETRY_TIMER = "retry";
export const RETRY_MS = 500;

export type Report = { replica: string; inSync: boolean; epoch: number };

export interface ActorState {
  self: string;
  /** The newest record this actor has seen. */
  known: Versioned | undefined;
  /** The outstanding request, or "retry-wait" while the retry timer runs. */
  op:
    | { kind: "read" }
    | { kind: "cas"; expectedRevision: number; record: GroupRecord; guard: LeaseGuard }
    | { kind: "retry-wait" }
    | undefined;
  /** Nodes whose lease this actor has seen expire, sorted. */
  leaseDown: string[];
  /** Epoch at which this node serves as master, if it does. */
  serving: number | undefined;
  /** Sync reports of this node's data path not yet reflected in the record. */
  reports: Report[];
  /** Epoch at which data-changing requests wait at the write gate, if any do. */
  holding: number | undefined;
  /**
   * What the held requests wait for: every other member out of sync ("all": data is not
   * replicated), or these replicas out of sync (they failed to apply a replicated request).
   */
  holdFor: "all" | string[];
  /** Exports closed for a handover whose closing the driver has not confirmed yet. */
  stopping: number;
}

export type GroupEvent =
  | { type: "lease-expired"; node: string }
  | { type: "lease-restored"; node: string }
  | { type: "replica-in-sync"; replica: string; epoch: number }
  | { type: "replica-out-of-sync"; replica: string; epoch: number }
  /**
   * The serving master's copy changed, or a data-changing request waits at its write
   * gate (`waiting`): the other in-sync members no longer hold the same data.
   */
  | { type: "data-changed"; epoch: number; waiting: boolean }
  /**
   * Replicas failed to apply a replicated request at `epoch`: it (and later ones) may be
   * acknowledged only once the record shows them out of sync.
   */
  | { type: "replicas-failed"; epoch: number; replicas: string[] }
  /** The record changed (the driver's watch), independent of any request. */
  | { type: "record-changed"; current: Versioned }
  | { type: "read-result"; current: Versioned }
  | { type: "cas-won"; revision: number }
  /**
   * The CAS did not apply: the revision moved or a lease fact of the guard was false.
   * `leases` are the guarded nodes' lease states read in the same transaction.
   */
  | { type: "cas-lost"; current: Versioned; leases: { node: string; up: boolean }[] }
  /** The outstanding request timed out or failed: it may or may not have applied. */
  | { type: "response-lost" }
  | { type: "timer-fired"; name: string }
  /** A stop-serving notice marked `handover` was carried out: the export is closed. */
  | { type: "serving-stopped" };

export type Notice =
  /**
   * This node is master at `epoch`: serve, fencing writes below it. `handedOver`: the
   * previous master handed the group over to this node (a planned handover), having closed
   * its export first, so there is no read lease of it to wait out.
   */
  | { kind: "serve"; epoch: number; handedOver?: true }
  /**
   * Stop serving: the group moved past `epoch` or to another master, or (`handover`) it is
   * to be handed over: the driver feeds "serving-stopped" once the export is closed.
   */
  | { kind: "stop-serving"; epoch: number; handover?: true }
  /** `node` must not serve below `epoch` (replicas refuse its older-epoch writes). */
  | { kind: "fence"; node: string; epoch: number }
  /** As master at `epoch`, bring `replica` back in sync. */
  | { kind: "resync"; replica: string; epoch: number }
  /** Requests held at the write gate at `epoch` may now run. */
  | { kind: "release-writes"; epoch: number }
  /** Requests held at the write gate at `epoch` must fail: this node no longer serves it. */
  | { kind: "refuse-writes"; epoch: number };

export type Effect =
  | { type: "read" }
  /** Write `record` if the revision is still `expectedRevision` and the guard holds. */
  | { type: "cas"; expectedRevision: number; record: GroupRecord; guard: LeaseGuard }
  | { type: "set-timer"; name: string; ms: number }
  | { type: "notify"; notice: Notice };

export interface StepResult {
  state: ActorState;
  effects: Effect[];
}

/** A started actor: it knows nothing yet and reads the record. */
export function initActor(self: string): StepResult {
  return {
    state: {
      self,
      known: undefined,
      op: { kind: "read" },
      leaseDown: [],
      serving: undefined,
      reports: [],
      holding: undefined,
      holdFor: [],
      stopping: 0,
    },
    effects: [{ type: "read" }],
  };
}

/** Applies one event; never mutates `state`. */
export function step(state: ActorState, event: GroupEvent): StepResult {
  let s: ActorState = { ...state };
  const effects: Effect[] = [];
  switch (event.type) {
    case "lease-expired":
      if (!s.leaseDown.includes(event.node)) s.leaseDown = [...s.leaseDown, event.node].sort();
      break;
    case "lease-restored":
      s.leaseDown = s.leaseDown.filter((n) => n !== event.node);
      break;
    case "replica-in-sync":
    case "replica-out-of-sync":
      // While a write waits at the gate of a master that does not replicate, no replica can
      // be in sync with it: such a report would cancel the out-of-sync one the write waits
      // for, and the write would wait for good (the model checker found that).
      if (event.type === "replica-in-sync" && s.holding === event.epoch && s.holdFor === "all") {
        break;
      }
      if (s.serving === event.epoch && event.replica !== s.self) {
        s.reports = [
          ...s.reports.filter((r) => r.replica !== event.replica),
          { replica: event.replica, inSync: event.type === "replica-in-sync", epoch: event.epoch },
        ].sort((a, b) => a.replica < b.replica ? -1 : 1);
        // Resynced after it failed, a replica holds every write this node applied, those
        // held for it too: they need not wait for the record to show it out of sync, which
        // may never happen once it is back in (the model checker found that).
        if (event.type === "replica-in-sync" && s.holdFor !== "all") {
          s.holdFor = s.holdFor.filter((m) => m !== event.replica);
        }
      }
      break;
    case "data-changed": {
      if (s.serving !== event.epoch || s.known === undefined) {
        // Not (or no longer) master at that epoch: whatever waits must fail.
        if (event.waiting) {
          effects.push({ type: "notify", notice: { kind: "refuse-writes", epoch: event.epoch } });
        }
        break;
      }
      const reported = s.reports.filter((r) => !r.inSync).map((r) => r.replica);
      const others = s.known.record.inSync.filter((m) => m !== s.self && !reported.includes(m));
      s.reports = [
        ...s.reports.filter((r) => !others.includes(r.replica)),
        ...others.map((replica) => ({ replica, inSync: false, epoch: event.epoch })),
      ].sort((a, b) => a.replica < b.replica ? -1 : 1);
      if (event.waiting) {
        s.holding = event.epoch;
        s.holdFor = "all";
      }
      break;
    }
    case "replicas-failed": {
      if (s.serving !== event.epoch || s.known === undefined) {
        effects.push({ type: "notify", notice: { kind: "refuse-writes", epoch: event.epoch } });
        break;
      }
      const failed = event.replicas.filter((m) => m !== s.self);
      s.reports = [
        ...s.reports.filter((r) => !failed.includes(r.replica)),
        ...failed.filter((m) => s.known!.record.members.includes(m))
          .map((replica) => ({ replica, inSync: false, epoch: event.epoch })),
      ].sort((a, b) => a.replica < b.replica ? -1 : 1);
      s.holding = event.epoch;
      s.holdFor = s.holdFor === "all" ? "all" : [...new Set([...s.holdFor, ...failed])].sort();
      // A failed member the record already shows lagging (its resync had ended, or was under
      // way) needs another resync, and no record change will ask for it (the model checker
      // found that).
      for (const m of failed.filter((m) => lags(s.known!.record, m))) {
        effects.push({
          type: "notify",
          notice: { kind: "resync", replica: m, epoch: event.epoch },
        });
      }
      break;
    }
    case "record-changed":
      s = learn(s, event.current, effects);
      break;
    case "read-result":
      if (s.op?.kind !== "read") return { state, effects: [] }; // stale: not asked for
      s.op = undefined;
      s = learn(s, event.current, effects);
      break;
    case "cas-won": {
      if (s.op?.kind !== "cas") return { state, effects: [] };
      const { record } = s.op;
      s.op = undefined;
      s = learn(s, { revision: event.revision, record }, effects);
      break;
    }
    case "cas-lost": {
      if (s.op?.kind !== "cas") return { state, effects: [] };
      const { expectedRevision } = s.op;
      s.op = undefined;
      for (const { node, up } of event.leases) {
        const others = s.leaseDown.filter((n) => n !== node);
        s.leaseDown = up ? others : [...others, node].sort();
      }
      // A record older than the one the CAS expected: the store's history went back (etcd
      // restored from a snapshot). Take it as a restarted node would; kept, the newer one
      // would make every CAS expect a revision the store no longer has, and lose at once.
      s = learn(s, event.current, effects, event.current.revision < expectedRevision);
      break;
    }
    case "response-lost":
      if (s.op === undefined || s.op.kind === "retry-wait") return { state, effects: [] };
      s.op = { kind: "retry-wait" };
      effects.push({ type: "set-timer", name: RETRY_TIMER, ms: RETRY_MS });
      break;
    case "serving-stopped":
      if (s.stopping === 0) return { state, effects: [] };
      s.stopping--;
      break;
    case "timer-fired":
      if (event.name !== RETRY_TIMER || s.op?.kind !== "retry-wait") return { state, effects: [] };
      s.op = { kind: "read" };
      effects.push({ type: "read" });
      break;
  }
  return propose(s, effects);
}

/** Settles the write gate, then, if idle, CASes whatever plan() wants changed. */
function propose(state: ActorState, effects: Effect[]): StepResult {
  const s = settleWrites(state, effects);
  if (s.op !== undefined || s.known === undefined) return { state: s, effects };
  const next = plan(s.known.record, s);
  if (next === undefined) return { state: s, effects };
  const cas = { expectedRevision: s.known.revision, ...next };
  effects.push({ type: "cas", ...cas });
  return { state: { ...s, op: { kind: "cas", ...cas } }, effects };
}

/**
 * Releases held writes once a record at the held epoch lists no other member in sync;
 * refuses them once this node no longer serves that epoch.
 *
 * Only while no request is outstanding: after a lost reply this node's own CAS may have
 * put a member back in sync without its knowing (the model checker found that). And a
 * pending report that a member is in sync is dropped on release: that member is about to
 * miss the released write, which only this node applies.
 */
function settleWrites(s: ActorState, effects: Effect[]): ActorState {
  const epoch = s.holding;
  if (epoch === undefined) return s;
  if (s.serving !== epoch) {
    effects.push({ type: "notify", notice: { kind: "refuse-writes", epoch } });
    return { ...s, holding: undefined, holdFor: [] };
  }
  const r = s.known?.record;
  const hold = s.holdFor;
  const out = (m: string) => !r!.inSync.includes(m);
  const clear = hold === "all"
    ? r?.inSync.every((m) => m === s.self)
    : r !== undefined && hold.every(out);
  if (s.op === undefined && r?.epoch === epoch && clear) {
    effects.push({ type: "notify", notice: { kind: "release-writes", epoch } });
    // A member reported in sync before a write it did not get must not go back in.
    const stale = (rep: Report) => rep.inSync && (hold === "all" || hold.includes(rep.replica));
    return { ...s, holding: undefined, holdFor: [], reports: s.reports.filter((x) => !stale(x)) };
  }
  return s;
}

/** Takes in a record (unless older than the known one, or `wentBack`) and adjusts serving. */
function learn(s: ActorState, v: Versioned, effects: Effect[], wentBack = false): ActorState {
  if (s.known !== undefined && v.revision <= s.known.revision && !wentBack) return s;
  const prev = s.known?.record;
  const r = v.record;
  let serving = s.serving;
  let stopping = s.stopping;
  if (serving !== undefined && (r.master !== s.self || r.epoch > serving)) {
    effects.push({ type: "notify", notice: { kind: "stop-serving", epoch: serving } });
    serving = undefined;
  } else if (serving !== undefined && r.handover !== undefined) {
    // A planned handover: close the export first; the driver confirms ("serving-stopped").
    effects.push({
      type: "notify",
      notice: { kind: "stop-serving", epoch: serving, handover: true },
    });
    serving = undefined;
    stopping++;
  }
  const handingOver = r.handover !== undefined;
  if (
    serving === undefined && r.master === s.self && r.members.includes(s.self) && !handingOver
  ) {
    serving = r.epoch;
    // Handed over (not promoted): only a handover changes the master and keeps the old one
    // in sync (record.ts, plan()); the old master CASed it once its export was closed.
    const handedOver = prev !== undefined && prev.handover?.to === s.self &&
      prev.master !== s.self && r.epoch === prev.epoch + 1 && r.inSync.includes(prev.master) &&
      !r.down.includes(prev.master);
    effects.push({
      type: "notify",
      notice: { kind: "serve", epoch: r.epoch, ...(handedOver ? { handedOver: true } : {}) },
    });
    if (prev !== undefined && prev.master !== s.self) {
      effects.push({
        type: "notify",
        notice: { kind: "fence", node: prev.master, epoch: r.epoch },
      });
    }
  }
  if (serving !== undefined) {
    // Members that need a resync now and did not under the previous record (or master).
    const lagging = (x: GroupRecord | undefined) =>
      x === undefined || x.master !== s.self || x.epoch !== serving
        ? []
        : x.members.filter((m) => lags(x, m));
    const before = lagging(prev);
    for (const m of lagging(r)) {
      if (!before.includes(m)) {
        effects.push({ type: "notify", notice: { kind: "resync", replica: m, epoch: serving } });
      }
    }
  }
  let reports = s.reports.filter((rep) =>
    rep.epoch === serving && r.inSync.includes(rep.replica) !== rep.inSync
  );
  if (serving !== undefined && s.holding === serving && s.holdFor === "all") {
    // A write waits until no other member is in sync; one that this record puts in sync
    // (a CAS of this node whose reply was lost, say) must be reported out of sync too, or
    // the write waits for good (the model checker found that).
    const missing = r.inSync.filter((m) => m !== s.self && !reports.some((x) => x.replica === m));
    reports = [
      ...reports,
      ...missing.map((replica) => ({ replica, inSync: false, epoch: serving })),
    ]
      .sort((a, b) => a.replica < b.replica ? -1 : 1);
  }
  return { ...s, known: v, serving, reports, stopping };
}

/** Whether `m` is a member that `r` shows out of sync and not down (it needs a resync). */
function lags(r: GroupRecord, m: string): boolean {
  return r.members.includes(m) && !r.inSync.includes(m) && !r.down.includes(m);
}
