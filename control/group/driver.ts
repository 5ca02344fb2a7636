/**
 * The I/O shell around machine.ts: one GroupDriver per volume group this node hosts.
 *
 * It feeds events into `step()` and performs the effects it returns:
 *
 * - "read": a get of the group's key;
 * - "cas": ONE transaction whose compares are the key's modRevision plus the lease
 *   guard (each guarded-down node's alive key absent, each guarded-up node's present);
 *   its failure branch reads the key and the guarded alive keys, which come back as
 *   "cas-lost" with the fresh record and lease facts (both in _record_io.ts). A timeout
 *   or a store error is "response-lost" (the machine re-reads after its retry timer);
 * - "set-timer": a setTimeout that feeds "timer-fired";
 * - notices: serve / stop-serving go to the host (the local data path), and so does resync
 *   (not toward a member whose liveness lease is gone); fence is logged.
 *
 * Lease facts come from one LeaseWatch per node (shared by every driver), record changes
 * from the caller's record watch. Nothing is written unless the record needs to change.
 * @module
 */

import { UnavailableError } from "../../mod/errors.ts";
import type { Logger } from "../common/mod.ts";
import type { KeyValue, StateStore } from "../store/mod.ts";
import { type Encoded, GroupRecordIo } from "./_record_io.ts";
import type { LeaseWatch } from "./lease_watch.ts";
import { type GroupHost, NotMasterError } from "./host.ts";
import {
  type ActorState,
  type Effect,
  type GroupEvent,
  initActor,
  type Notice,
  RETRY_TIMER,
  step,
} from "./machine.ts";
import { describeRecord, type GroupRecord, type LeaseGuard } from "./record.ts";

/** How long a read or CAS may take before it counts as lost. */
const REQUEST_TIMEOUT_MS = 5_000;
/** How often the serving master checks its local write counter. */
const WRITE_POLL_MS = 250;
/**
 * A failed resync is tried again after this long while the replica still lags, doubled after
 * each failure in a row up to RESYNC_RETRY_MAX_MS (a member that fails every time, a full
 * disk, is not compared and sent to every 5 s for ever).
 */
const RESYNC_RETRY_MS = 5_000;
const RESYNC_RETRY_MAX_MS = 60_000;

/** How long before a resync is tried again after `failures` failures in a row (1, 2, ...). */
export function resyncRetryDelay(failures: number): number {
  return Math.min(
    RESYNC_RETRY_MAX_MS,
    RESYNC_RETRY_MS * 2 ** Math.max(0, Math.min(failures - 1, 10)),
  );
}
/** How long after a lost CAS the lease facts it brought are checked against the watch. */
const LEASE_SYNC_MS = 1000;
/** Longest wait before the read that follows lost responses (the retry timer's backoff). */
const RETRY_CAP_MS = 8_000;

/**
 * The retry timer's delay after `losses` lost responses in a row: the machine's `ms`, doubled
 * per loss up to RETRY_CAP_MS, times a random 0.5-1.5. When etcd is slow every group of a
 * node loses its response at once; without backoff and jitter they all read again at once,
 * 500 ms later, and again (most of a failover storm's reads, docs/BENCHMARKS.md).
 */
export function retryDelay(ms: number, losses: number, random = Math.random()): number {
  const backoff = Math.min(RETRY_CAP_MS, ms * 2 ** Math.max(0, losses - 1));
  return Math.round(backoff * (0.5 + random));
}

export type { Encoded };

export interface GroupDriverOptions {
  store: StateStore;
  /** The key holding the group record (inside a larger value, see decode/encode). */
  key: string;
  self: string;
  logger: Logger;
  leases: LeaseWatch;
  host: GroupHost;
  /** The group record inside a stored value, or undefined if it holds none. */
  decode(value: string): GroupRecord | undefined;
  /**
   * The stored value `value` with its group record replaced by `record` (and operations
   * to apply in the same transaction, if any).
   */
  encode(value: string, record: GroupRecord): Encoded;
  requestTimeoutMs?: number;
  writePollMs?: number;
}

/** Drives one group's state machine on this node. */
export class GroupDriver {
  readonly #o: Required<GroupDriverOptions>;
  readonly #log: Logger;
  #state: ActorState;
  #stopped = false;
  /** Id of the outstanding request; results of any other (timed out) one are dropped. */
  #request = 0;
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  #writePoll: ReturnType<typeof setInterval> | undefined;
  readonly #records: GroupRecordIo;
  #unsubscribe: () => void = () => {};
  #lastLogged = "";
  /** First writes waiting for the record to show the replicas out of sync. */
  #gateWaiters: { epoch: number; resolve: () => void; reject: (err: Error) => void }[] = [];
  /** Host calls (serve / stop-serving) in order. */
  #hostChain: Promise<void> = Promise.resolve();
  /** Events not yet stepped, and whether a batch's effects are being applied. */
  #inbox: GroupEvent[] = [];
  #applying = false;
  /** Store requests lost in a row (timed out or failed), for the retry backoff. */
  #losses = 0;

  constructor(options: GroupDriverOptions) {
    this.#o = {
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      writePollMs: WRITE_POLL_MS,
      ...options,
    };
    this.#log = options.logger;
    this.#state = initActor(options.self).state;
    this.#records = new GroupRecordIo({
      store: options.store,
      key: options.key,
      decode: options.decode,
      encode: options.encode,
      logger: options.logger,
    });
  }

  /** The actor state (for tests and status). */
  get state(): ActorState {
    return this.#state;
  }

  /** Starts: the machine reads the record; known-down nodes are fed as expired. */
  start(): void {
    const { state, effects } = initActor(this.#o.self);
    this.#state = state;
    this.#unsubscribe = this.#o.leases.subscribe((node, up) =>
      this.feed(up ? { type: "lease-restored", node } : { type: "lease-expired", node })
    );
    for (const node of this.#o.leases.down()) this.feed({ type: "lease-expired", node });
    this.#perform(effects);
  }

  /** Stops; `release`: stop serving first (group deleted, node left); else exports stay. */
  async stop(options: { release?: boolean } = {}): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#unsubscribe();
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    if (this.#writePoll !== undefined) clearInterval(this.#writePoll);
    this.#settleGates(undefined, new NotMasterError("the group driver stopped"));
    const serving = this.#state.serving;
    if (options.release && serving !== undefined) {
      this.#hostChain = this.#hostChain.then(() => this.#o.host.stopServing(serving));
    }
    await this.#hostChain.catch(() => {});
  }

  /** The record key changed (the caller's watch). */
  recordChanged(kv: KeyValue): void {
    const record = this.#o.decode(kv.value);
    if (record === undefined) return;
    this.#records.remember(kv.modRevision, kv.value);
    this.feed({ type: "record-changed", current: { revision: kv.modRevision, record } });
  }

  /**
   * Feeds one event. Events are stepped in batches and each batch's effects applied as a
   * whole (etcd-io/raft's Ready/Advance): an event that arrives while effects are being
   * applied (a notice's callback, a lease change) waits for the next batch, so step() is
   * never re-entered.
   */
  feed(event: GroupEvent): void {
    if (this.#stopped) return;
    this.#inbox.push(event);
    if (this.#applying) return;
    this.#applying = true;
    try {
      while (this.#inbox.length > 0 && !this.#stopped) {
        const batch = this.#inbox;
        this.#inbox = [];
        const before = this.#state;
        let state = before;
        const effects: Effect[] = [];
        for (const e of batch) {
          const r = step(state, e);
          state = r.state;
          effects.push(...r.effects);
        }
        this.#state = state;
        this.#logChanges(before, state);
        this.#perform(effects);
      }
    } finally {
      this.#applying = false;
    }
  }

  #logChanges(before: ActorState, state: ActorState): void {
    const line = state.known ? describeRecord(state.known.record) : "";
    if (line !== this.#lastLogged && state.known) {
      this.#lastLogged = line;
      const r = state.known.record;
      this.#log.info(
        { epoch: r.epoch, master: r.master, inSync: r.inSync, down: r.down, phase: r.phase },
        `group record: ${line}`,
      );
    }
    if (before.leaseDown.join() !== state.leaseDown.join()) {
      this.#log.info({ leaseDown: state.leaseDown }, "group: lease view changed");
    }
  }

  /** A master's write gate (others in sync): the first change waits for the machine. */
  #writeGate(epoch: number): Promise<void> {
    const done = new Promise<void>((resolve, reject) =>
      this.#gateWaiters.push({ epoch, resolve, reject })
    );
    const others = this.#state.known?.record.inSync.filter((m) => m !== this.#o.self) ?? [];
    if (others.length > 0) {
      this.#log.info({ epoch, replicas: others }, "group: first write waits for the record");
    }
    this.feed({ type: "data-changed", epoch, waiting: true });
    return done;
  }

  /** Members being resynced, so a notice seen again does not start a second one. */
  readonly #resyncing = new Set<string>();
  /** Failed resyncs in a row of each replica (the retry backoff). */
  readonly #resyncFailures = new Map<string, number>();

  /**
   * Runs the host's resync of `replica` once the export asked before it is done (a new
   * master's waits out the old master's read lease; a resync started sooner failed with "not
   * replicated from here"); success while serving `epoch` reports the replica in sync (CAS);
   * a failure is tried again (resyncRetryDelay) while the replica lags and is not down.
   */
  #resync(replica: string, epoch: number, log: Logger): void {
    const host = this.#o.host;
    if (!host.resync || !host.replicates || this.#resyncing.has(replica)) {
      if (!host.replicates) log.warn({ replica }, "group: replica out of sync (no replication)");
      return;
    }
    if (this.#state.leaseDown.includes(replica)) {
      // Its lease is gone: not asked (the record will list it down, and a member back up is
      // resynced then); looked at again later, in case the lease returns first.
      log.debug({ replica }, "group: no resync of a replica whose liveness lease is gone");
      this.#resyncLater(replica, epoch, log, 1);
      return;
    }
    this.#resyncing.add(replica);
    // It starts once the member answers (the data plane logs "resync started"); a member
    // that has just died fails at once ("resync could not start") and is asked again.
    log.info({ replica }, "group: resync of a replica asked");
    const exported = this.#hostChain; // never rejects (each step has its catch)
    exported.then(() =>
      this.#stopped || this.#state.serving !== epoch ? false : host.resync!(replica, epoch)
    ).then((ok) => ok, (err) => {
      log.warn({ replica, err }, "group: resync failed");
      return false;
    }).then((ok) => {
      this.#resyncing.delete(replica);
      if (this.#stopped || this.#state.serving !== epoch) return;
      const failures = ok ? 0 : (this.#resyncFailures.get(replica) ?? 0) + 1;
      if (ok) this.#resyncFailures.delete(replica);
      else this.#resyncFailures.set(replica, failures);
      if (ok) this.feed({ type: "replica-in-sync", replica, epoch });
      else this.#resyncLater(replica, epoch, log, failures);
    });
  }

  /**
   * Asks for the resync of `replica` again after its `failures`-th failure in a row
   * (resyncRetryDelay), if it still lags then.
   */
  #resyncLater(replica: string, epoch: number, log: Logger, failures: number): void {
    this.#later(resyncRetryDelay(failures), () => {
      const r = this.#state.known?.record;
      const lagging = r && r.epoch === epoch && r.members.includes(replica) &&
        !r.inSync.includes(replica) && !r.down.includes(replica);
      if (!this.#stopped && this.#state.serving === epoch && lagging) {
        this.#resync(replica, epoch, log);
      }
    });
  }

  /** Runs `fn` in `ms` unless the driver stops first. */
  #later(ms: number, fn: () => void): ReturnType<typeof setTimeout> {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      fn();
    }, ms);
    this.#timers.add(t);
    return t;
  }

  /**
   * A lost CAS brings lease facts fresher than the lease watch; the watch reports later
   * changes, but not a lease that came back before it saw it go (a node that registered
   * again at once): the machine would keep that node down for good. A moment later its
   * view is brought in line with the watch's.
   */
  #syncLeasesSoon(): void {
    this.#later(LEASE_SYNC_MS, () => {
      if (this.#stopped) return;
      const watched = new Set(this.#o.leases.down());
      for (const node of this.#state.leaseDown) {
        if (!watched.has(node)) this.feed({ type: "lease-restored", node });
      }
      for (const node of watched) {
        if (!this.#state.leaseDown.includes(node)) this.feed({ type: "lease-expired", node });
      }
    });
  }

  /** Replicas failed (ServeHooks.replicasFailed): hold until the record drops them. */
  #replicasFailed(epoch: number, nodes: string[]): Promise<void> {
    const done = new Promise<void>((resolve, reject) =>
      this.#gateWaiters.push({ epoch, resolve, reject })
    );
    this.#log.warn(
      { epoch, replicas: nodes },
      "group: replicas failed; writes wait for the record",
    );
    this.feed({ type: "replicas-failed", epoch, replicas: nodes });
    return done;
  }

  /** Settles the gate waiters of `epoch` (of every epoch when it is undefined). */
  #settleGates(epoch: number | undefined, err?: Error): void {
    this.#gateWaiters = this.#gateWaiters.filter((w) => {
      if (epoch !== undefined && w.epoch !== epoch) return true;
      if (err) w.reject(err);
      else w.resolve();
      return false;
    });
  }

  #perform(effects: Effect[]): void {
    for (const e of effects) {
      switch (e.type) {
        case "read":
          this.#read();
          break;
        case "cas":
          this.#cas(e.expectedRevision, e.record, e.guard);
          break;
        case "set-timer": {
          const ms = e.name === RETRY_TIMER ? retryDelay(e.ms, this.#losses) : e.ms;
          this.#later(ms, () => this.feed({ type: "timer-fired", name: e.name }));
          break;
        }
        case "notify":
          this.#notify(e.notice);
          break;
      }
    }
  }

  /** Why this master's export failed, while it is tried again. */
  serveFailure: string | undefined;

  /** Exports at `epoch`; a failure (a full disk) is tried again, 1-30 s, while to serve it. */
  #serve(epoch: number, handedOver: boolean, log: Logger, tries: number): void {
    this.#hostChain = this.#hostChain.then(async () => {
      if (tries > 0 && (this.#stopped || this.#state.serving !== epoch)) {
        this.serveFailure = undefined; // no longer to serve that epoch
        return;
      }
      const inSync = this.#state.known?.record.inSync ?? [];
      const gated = !this.#o.host.replicates && inSync.some((m) => m !== this.#o.self);
      await this.#o.host.serve(epoch, {
        ...(gated ? { writeGate: () => this.#writeGate(epoch) } : {}),
        ...(handedOver ? { handedOver: true } : {}),
        replicasFailed: (nodes) => this.#replicasFailed(epoch, nodes),
      });
      this.serveFailure = undefined;
    }).catch((err) => {
      const retryMs = Math.min(30_000, 1000 * 2 ** tries);
      this.serveFailure = (err as Error).message;
      log.error({ err, retryMs }, "group: could not export the volume; trying again");
      this.#later(retryMs, () => this.#serve(epoch, handedOver, log, tries + 1));
    });
  }

  #notify(n: Notice): void {
    const log = this.#log.child({ epoch: n.epoch });
    switch (n.kind) {
      case "serve":
        log.info("group: serving as master");
        this.#serve(n.epoch, n.handedOver === true, log, 0);
        // Without replication, any data on the master leaves the replicas behind.
        if (!this.#o.host.replicates) this.#startWritePoll(n.epoch);
        break;
      case "stop-serving":
        log.info("group: no longer master; stopping the export");
        if (this.#writePoll !== undefined) clearInterval(this.#writePoll);
        this.#writePoll = undefined;
        if (n.handover) log.info("group: handing over; closing the export first");
        this.#hostChain = this.#hostChain.then(async () => {
          await this.#o.host.stopServing(n.epoch);
          // A planned handover waits for the export to be closed on every thread
          // (machine.ts): the new master then serves without waiting out a read lease. A
          // close that failed is not confirmed: the handover does not happen (the drain
          // withdraws it).
          if (n.handover) this.feed({ type: "serving-stopped" });
        }).catch((err) => log.error({ err }, "group: could not stop the export"));
        break;
      case "release-writes":
        log.info("group: the record shows the replicas out of sync; writes may pass");
        this.#settleGates(n.epoch);
        break;
      case "refuse-writes":
        this.#settleGates(
          n.epoch,
          new NotMasterError(`this node is no longer master at epoch ${n.epoch}`),
        );
        break;
      case "fence":
        log.warn({ fenced: n.node }, "group: fence the old master below this epoch");
        break;
      case "resync":
        this.#resync(n.replica, n.epoch, log);
        break;
    }
  }

  /** Without replication a replica is in sync only while the master never took a write. */
  #startWritePoll(epoch: number): void {
    if (this.#writePoll !== undefined) clearInterval(this.#writePoll);
    const check = () => {
      const s = this.#state;
      if (s.serving !== epoch || s.known === undefined) return;
      if (!s.known.record.inSync.some((m) => m !== this.#o.self)) return;
      if (!this.#o.host.written()) return;
      this.#log.warn({ epoch }, "group: master has written data; replicas out of sync");
      this.feed({ type: "data-changed", epoch, waiting: false });
    };
    this.#writePoll = setInterval(check, this.#o.writePollMs);
    check();
  }

  #read(): void {
    const id = ++this.#request;
    this.#withTimeout(id, () => this.#records.read());
  }

  #cas(expectedRevision: number, record: GroupRecord, guard: LeaseGuard): void {
    const id = ++this.#request;
    this.#withTimeout(id, () => this.#records.cas(expectedRevision, record, guard));
  }

  /** Runs a request; feeds its event, or response-lost on a timeout or error. */
  #withTimeout(id: number, fn: () => Promise<GroupEvent | undefined>): void {
    let settled = false;
    const timer = this.#later(this.#o.requestTimeoutMs, () => {
      if (settled || id !== this.#request) return;
      settled = true;
      this.#request++;
      this.#losses++;
      this.#log.warn({ ms: this.#o.requestTimeoutMs }, "group: store request timed out");
      this.feed({ type: "response-lost" });
    });
    /** Claims the outcome for this request; false if it timed out or was superseded. */
    const settle = (): boolean => {
      if (settled || id !== this.#request) return false;
      settled = true;
      clearTimeout(timer);
      this.#timers.delete(timer);
      return true;
    };
    fn().then(
      (event) => {
        if (!settle()) return;
        this.#losses = 0;
        if (!event) return;
        this.feed(event);
        if (event.type === "cas-lost") this.#syncLeasesSoon();
      },
      (err) => {
        if (!settle()) return;
        this.#losses++;
        const level = err instanceof UnavailableError ? "warn" : "error";
        this.#log[level]({ err }, "group: store request failed");
        this.feed({ type: "response-lost" });
      },
    );
  }
}
