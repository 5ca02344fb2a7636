/**
 * A model of one volume group on a few nodes, for _explore.ts: the shared record (what
 * etcd holds), each node's truth (alive, lease, partitioned from etcd), one actor per
 * hosting node running the real step() (or a broken one), its outstanding request and
 * retry timer, and what its data path was told to serve. The environment does everything
 * a driver, etcd and the network may do, in any order.
 *
 * The data path is a plug-in (DataModel): the write gate of a master that does not
 * replicate (_gate.ts), or replication with acknowledgements, fencing, lease grants and
 * resyncs (_replication.ts). It receives the machine's notices as the driver would pass
 * them on, adds its own steps (client requests, replies, failures, the passing of time)
 * and its own invariants.
 * @module
 */

import {
  type ActorState,
  type Effect,
  type GroupEvent,
  initActor,
  type Notice,
  type StepResult,
} from "../../../control/group/machine.ts";
import {
  describeRecord,
  type GroupRecord,
  newRecord,
  type Versioned,
  withHandover,
} from "../../../control/group/record.ts";
import type { Spec } from "./_explore.ts";
import {
  canonWorld,
  describeWorld,
  stateInvariant,
  transitionInvariant,
  worldKey,
} from "./_model_world.ts";
import { registrySteps, watchSteps } from "./_leases.ts";

export type StepFn = (s: ActorState, e: GroupEvent) => StepResult;

export interface World<D = unknown> {
  record: Versioned;
  /** Per member (index into `names`). */
  alive: boolean[];
  lease: boolean[];
  partitioned: boolean[];
  actors: (ActorState | undefined)[];
  /** The request the driver has outstanding for each actor. */
  pending: (Effect | undefined)[];
  timer: boolean[];
  /** What each node's data path was told: serve at this epoch. */
  serving: (number | undefined)[];
  crashes: number;
  partitions: number;
  /** Replicas reported out of sync while alive (a slow replica). */
  syncLosses: number;
  /** Replies lost by a node that can reach etcd (a cut-off node loses all). */
  lostReplies: number;
  /** Record changes made by the environment (membership changes, _membership_env.ts). */
  envChanges: number;
  /** Handovers asked for so far. */
  handovers: number;
  /** Per node: the nodes its lease watch reports down, one bit each (`leaseWatch` only). */
  watched: number[];
  /** Per node: its driver's lease sync is due (after a lost CAS; `leaseWatch` only). */
  syncDue: boolean[];
  /** Leases lapsed while their node was connected (`leaseWatch` only). */
  lapses: number;
  /** The data path's state (DataModel). */
  data: D;
  /** Set when a driver or a client would see something wrong. */
  flaw?: string;
}

export interface Bounds {
  replicas: 1 | 2;
  maxCrashes: number;
  maxPartitions: number;
  /** Out-of-sync reports about (or failures of) a replica that is alive. */
  maxSyncLosses: number;
  /** Lost replies to a node that can reach etcd (CAS applied or not). */
  maxLostReplies: number;
  /** Client writes (default 0). */
  maxWrites?: number;
  /** Of those, writes that fail on the master midway, ENOSPC (default 0; _replication.ts). */
  maxFailedWrites?: number;
  /** Silent corruptions of a copy (default 0; _verify.ts). */
  maxCorruptions?: number;
  /** `volume verify --deep` runs (default 0; _verify.ts). */
  maxVerifies?: number;
  /** Nodes that are not members at the start (default 0): room for new members. */
  spares?: number;
  /** Record changes the environment may make (membership changes; default 0). */
  maxEnvChanges?: number;
  /** Handovers an operator asks for (`node drain`), default 0. */
  maxHandovers?: number;
  /**
   * Lease notices as the driver gets them (_leases.ts): one edge-triggered watch per node,
   * lease facts of lost CASes, the driver's lease sync, and leases that come back only when
   * their node registers again. Default false: every actor learns each lease change.
   */
  leaseWatch?: boolean;
  /** Leases that lapse while their node is connected (`leaseWatch` only), default 0. */
  maxLapses?: number;
}

/** What a data model's steps may use. */
export interface DataContext<D> {
  names: string[];
  bounds: Bounds;
  /** A copy of `w` (its data cloned too) that the caller may change. */
  clone(w: World<D>): World<D>;
  /** A copy of `w` after actor i stepped `event`, its effects applied as a driver would. */
  deliver(w: World<D>, i: number, event: GroupEvent): World<D>;
  push(label: string, w: World<D>): void;
}

/** A data path plugged into the group model. */
export interface DataModel<D> {
  init(names: string[]): D;
  /** A copy of `d` that may be changed (nested objects only ever replaced, not changed). */
  clone(d: D): D;
  /** Actor i's step() gave notice `n`; `w` is being built and may be changed. */
  notify(w: World<D>, i: number, n: Notice, ctx: DataContext<D>): void;
  /** Actor i stepped an event and its effects were applied (`w` may be changed). */
  stepped?(w: World<D>, i: number): void;
  /** Node i crashed (`w` may be changed): what it held in memory is gone. */
  crash(w: World<D>, i: number): void;
  /** Whether node i's export, closing for a handover, still has requests to answer. */
  closing?(w: World<D>, i: number): boolean;
  /** Data path steps of node i (node i's driver, clients and peers). */
  next(w: World<D>, i: number, ctx: DataContext<D>): void;
  key(d: D): string;
  invariant(w: World<D>, names: string[]): string | undefined;
  /** Checked before the model's own transition checks. */
  transition(from: World<D>, to: World<D>, names: string[]): string | undefined;
  /** Besides a healthy record whose master serves. */
  goal(w: World<D>, names: string[]): boolean;
  /** Flags of node i, and a summary for the end of the line. */
  describeNode(w: World<D>, i: number): string[];
  summary(w: World<D>, names: string[]): string;
}

export interface ModelOptions<D> {
  /** The step() under test (default the real one). */
  step: StepFn;
  data: DataModel<D>;
  /**
   * Also check the machine's own rules (only an in-sync member is promoted), not only
   * what clients see. Default true.
   */
  ruleChecks?: boolean;
  /** Record changes the environment makes (membership changes), if any. */
  environment?: Environment<D>;
  /**
   * With `leaseWatch`: the driver brings the machine's lease view in line with its watch
   * after a lost CAS (driver.ts). Default true; false is a broken driver.
   */
  leaseSync?: boolean;
}

/** What an environment's steps may use: they write the record as an atomic CAS would. */
export interface EnvContext<D> extends DataContext<D> {
  write(w: World<D>, record: GroupRecord): void;
}

/** Changes of the record made outside the group machine (any node, any time). */
export type Environment<D> = (w: World<D>, ctx: EnvContext<D>) => void;

const NAMES = ["n1", "n2", "n3", "n4"];

/** The model as a Spec for explore(). */
export function groupModel<D>(bounds: Bounds, options: ModelOptions<D>): Spec<World<D>> {
  const { step: stepFn, data } = options;
  const ruleChecks = options.ruleChecks ?? true;
  const leaseSync = options.leaseSync ?? true;
  const names = NAMES.slice(0, bounds.replicas + 1 + (bounds.spares ?? 0));
  const n = names.length;
  const record: GroupRecord = newRecord("n1", names.slice(1, bounds.replicas + 1));
  const init: World<D> = {
    record: { revision: 1, record },
    alive: names.map(() => true),
    lease: names.map(() => true),
    partitioned: names.map(() => false),
    actors: names.map((m) => initActor(m).state),
    pending: names.map(() => ({ type: "read" })),
    timer: names.map(() => false),
    serving: names.map(() => undefined),
    crashes: 0,
    partitions: 0,
    syncLosses: 0,
    lostReplies: 0,
    envChanges: 0,
    handovers: 0,
    watched: names.map(() => 0),
    syncDue: names.map(() => false),
    lapses: 0,
    data: data.init(names),
  };

  // Shallow: actor states and records are never mutated, only replaced.
  const clone = (w: World<D>): World<D> => ({
    ...w,
    alive: [...w.alive],
    lease: [...w.lease],
    partitioned: [...w.partitioned],
    actors: [...w.actors],
    pending: [...w.pending],
    timer: [...w.timer],
    serving: [...w.serving],
    watched: [...w.watched],
    syncDue: [...w.syncDue],
    data: data.clone(w.data),
  });

  /** Delivers `event` to actor i and applies its effects as a driver would. */
  const deliver = (w0: World<D>, i: number, event: GroupEvent): World<D> => {
    const w = clone(w0);
    const { state, effects } = stepFn(w.actors[i]!, event);
    w.actors[i] = state;
    for (const e of effects) {
      if (e.type === "read" || e.type === "cas") {
        if (w.pending[i] !== undefined) w.flaw = `${names[i]} sent a second request`;
        w.pending[i] = e;
      } else if (e.type === "set-timer") w.timer[i] = true;
      else {
        if (e.notice.kind === "serve") w.serving[i] = e.notice.epoch;
        else if (e.notice.kind === "stop-serving") w.serving[i] = undefined;
        data.notify(w, i, e.notice, ctx);
      }
    }
    data.stepped?.(w, i);
    if (event.type === "cas-lost" && bounds.leaseWatch && leaseSync) w.syncDue[i] = true;
    return w;
  };
  let out: { label: string; state: World<D> }[] = [];
  const ctx: DataContext<D> = {
    names,
    bounds,
    clone,
    deliver,
    push: (label, state) => out.push({ label, state }),
  };
  const push = ctx.push;
  const casApplies = (w: World<D>, c: Extract<Effect, { type: "cas" }>) =>
    c.expectedRevision === w.record.revision &&
    c.guard.down.every((m) => !w.lease[names.indexOf(m)]) &&
    c.guard.up.every((m) => w.lease[names.indexOf(m)]);
  const write = (w: World<D>, rec: GroupRecord) => {
    w.record = { revision: w.record.revision + 1, record: rec };
  };

  const next = (w: World<D>): { label: string; state: World<D> }[] => {
    out = [];
    for (let i = 0; i < n; i++) {
      const me = names[i];
      const actor = w.actors[i];
      const pend = w.pending[i];
      // Node truth.
      if (w.alive[i] && w.crashes < bounds.maxCrashes) {
        const crash = (x: World<D>) => {
          x.alive[i] = false;
          x.lease[i] = false;
          x.actors[i] = undefined;
          x.pending[i] = undefined;
          x.timer[i] = false;
          x.serving[i] = undefined;
          x.watched[i] = 0;
          x.syncDue[i] = false;
          data.crash(x, i);
          x.crashes++;
          return x;
        };
        push(`${me} crashes`, crash(clone(w)));
        if (pend?.type === "cas" && !w.partitioned[i] && casApplies(w, pend)) {
          const x = clone(w);
          write(x, pend.record);
          push(`${me} crashes after its CAS applied`, crash(x));
        }
      }
      if (!w.alive[i]) {
        const x = clone(w);
        const started = initActor(me);
        x.alive[i] = true;
        x.lease[i] = !x.partitioned[i];
        x.actors[i] = started.state;
        x.pending[i] = started.effects[0];
        push(`${me} restarts`, x);
      }
      if (w.alive[i] && !w.partitioned[i] && w.partitions < bounds.maxPartitions) {
        const x = clone(w);
        x.partitioned[i] = true;
        x.lease[i] = false;
        x.partitions++;
        push(`${me} is cut off from etcd`, x);
      }
      if (w.partitioned[i]) {
        const x = clone(w);
        x.partitioned[i] = false;
        // With leaseWatch, the node registers again in a step of its own (_leases.ts).
        x.lease[i] = x.alive[i] && !bounds.leaseWatch;
        push(`${me} reaches etcd again`, x);
      }
      if (bounds.leaseWatch) registrySteps(w, i, ctx);
      if (actor) actorSteps(w, i, actor, pend);
      data.next(w, i, ctx);
    }
    options.environment?.(w, { ...ctx, write });
    drainerSteps(w);
    return out;
  };

  /**
   * An operator's drain (control/volumes/drain.ts) asks the master to hand over to an
   * in-sync member that is up, in one CAS; and may give up on a handover still pending
   * (its wait timed out), in another.
   */
  const drainerSteps = (w: World<D>) => {
    const r = w.record.record;
    if (r.handover !== undefined) {
      const x = clone(w);
      write(x, withHandover(r, undefined));
      push(`the drain gives up the handover to ${r.handover.to}`, x);
      return;
    }
    if (w.handovers >= (bounds.maxHandovers ?? 0)) return;
    for (const to of r.inSync) {
      if (to === r.master || r.down.includes(to) || !w.lease[names.indexOf(to)]) continue;
      const x = clone(w);
      x.handovers++;
      write(x, withHandover(r, { to, reason: "drain" }));
      push(`the drain asks ${r.master} to hand over to ${to}`, x);
    }
  };

  /** What etcd, the driver's watch and its timers do for actor i. */
  const actorSteps = (w: World<D>, i: number, actor: ActorState, pend: Effect | undefined) => {
    const me = names[i];
    // Lease notices (a node cut off from etcd still learns about its own lease).
    if (bounds.leaseWatch) watchSteps(w, i, actor, ctx);
    else {
      for (let j = 0; j < n; j++) {
        if (w.partitioned[i] && j !== i) continue;
        const seenDown = actor.leaseDown.includes(names[j]);
        if (seenDown !== !w.lease[j]) {
          const type = w.lease[j] ? "lease-restored" : "lease-expired";
          push(`${me} sees ${type} of ${names[j]}`, deliver(w, i, { type, node: names[j] }));
        }
      }
    }
    // The driver's watch on the record.
    if (!w.partitioned[i] && actor.known && actor.known.revision < w.record.revision) {
      push(
        `${me}'s watch delivers the record`,
        deliver(w, i, { type: "record-changed", current: w.record }),
      );
    }
    // The outstanding request.
    const cleared = (lost = false) => {
      const x = clone(w);
      x.pending[i] = undefined;
      if (lost && !w.partitioned[i] && Number.isFinite(bounds.maxLostReplies)) x.lostReplies++;
      return x;
    };
    const mayLose = w.partitioned[i] || w.lostReplies < bounds.maxLostReplies;
    if (pend?.type === "read") {
      if (!w.partitioned[i]) {
        push(`${me} reads`, deliver(cleared(), i, { type: "read-result", current: w.record }));
      } else {
        push(`${me}'s read gets no answer`, deliver(cleared(), i, { type: "response-lost" }));
      }
    } else if (pend?.type === "cas") {
      const match = casApplies(w, pend);
      const leases = [...pend.guard.down, ...pend.guard.up].map((m) => ({
        node: m,
        up: w.lease[names.indexOf(m)],
      }));
      if (!w.partitioned[i] && match) {
        const x = cleared();
        write(x, pend.record);
        push(
          `${me} wins CAS: ${describeRecord(pend.record)}`,
          deliver(x, i, { type: "cas-won", revision: x.record.revision }),
        );
        if (mayLose) {
          const y = cleared(true);
          write(y, pend.record);
          push(`${me}'s CAS applies, reply lost`, deliver(y, i, { type: "response-lost" }));
        }
      }
      if (!w.partitioned[i] && !match) {
        push(
          `${me} loses CAS`,
          deliver(cleared(), i, { type: "cas-lost", current: w.record, leases }),
        );
      }
      if (mayLose && (w.partitioned[i] || match)) {
        // (Lost after a mismatch behaves like a lost CAS followed by the same read.)
        push(
          `${me}'s CAS does not apply, reply lost`,
          deliver(cleared(true), i, { type: "response-lost" }),
        );
      }
    }
    if (actor.stopping > 0 && !data.closing?.(w, i)) {
      push(`${me}'s export is closed`, deliver(clone(w), i, { type: "serving-stopped" }));
    }
    if (w.timer[i]) {
      const x = clone(w);
      x.timer[i] = false;
      push(`${me}'s retry timer fires`, deliver(x, i, { type: "timer-fired", name: "retry" }));
    }
  };

  return {
    init,
    next,
    canon: canonWorld,
    key: worldKey(data),
    invariant: (w) => stateInvariant(w, names) ?? data.invariant(w, names),
    transition: (a, b) =>
      data.transition(a, b, names) ?? transitionInvariant(a, b, names, ruleChecks),
    goal: (w) =>
      w.record.record.phase === "healthy" &&
      w.serving[names.indexOf(w.record.record.master)] === w.record.record.epoch &&
      data.goal(w, names),
    describe: (w) => describeWorld(w, names, data),
  };
}
