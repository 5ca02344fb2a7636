/**
 * The data worker pool, on the main thread: starts and stops Web Workers (worker.ts), hands
 * each accepted connection to one of them, measures how busy each is from its thread's run
 * and run-queue times, grows and shrinks the pool by sizing.ts (each resize logged with its
 * reason), and replaces a worker that dies. Volumes, the write gate, TLS material and
 * shutdown reach the workers as protocol.ts messages.
 * @module
 */

import type { Logger } from "pino";
import { type ThreadTimes, threadTimes } from "./_cpu.ts";
import { closeFd, dupFd, shutdownFd } from "../net/fd_listener.ts";
import { nextConnectionId } from "../nbd/server.ts";
import { errnoOf } from "../nbd/errno.ts";
import type { DirectoryEntry } from "../proxy/mod.ts";
import type { ReplicaReasons } from "../replication/mod.ts";
import {
  checkFromWorker,
  type ClientVerdict,
  type FromWorker,
  type ListenerKind,
  POOL_PROTOCOL_VERSION,
  type ToWorker,
  type WorkerTls,
  type WorkerVolume,
} from "./protocol.ts";
import {
  busyRatio,
  decide,
  describePool,
  initialSizing,
  place,
  type SizingState,
  type SizingTimings,
  type WorkerSample,
} from "./sizing.ts";

export interface WorkerPoolOptions {
  /** Workers kept at least / at most (equal for a fixed size). */
  min: number;
  max: number;
  nodeName: string;
  logger: Logger;
  logLevel: string;
  logFormat: "json" | "pretty";
  /** Current TLS material for STARTTLS (undefined: the node runs without TLS). */
  tls(): WorkerTls | undefined;
  tlsRequired: boolean;
  handshakeTimeoutMs: number;
  requestTimeoutMs: number;
  /** The volumes a new worker must serve. */
  volumes(): WorkerVolume[];
  /** The directory of volumes other nodes serve, for a new worker. */
  directory(): DirectoryEntry[];
  /** Runs volume `name`'s write gate once on behalf of every worker. */
  passGate(name: string): Promise<void>;
  /** Checks an NBD client certificate for a worker (the PKI lives on this thread). */
  verifyClient?(der: Uint8Array): Promise<ClientVerdict>;
  /** Checks a replica node's server certificate for a worker. */
  verifyNode?(der: Uint8Array): Promise<ClientVerdict>;
  /** Replicas of volume `name` failed on a worker: see LiveExport.replicasFailed. */
  replicasFailed?(name: string, nodes: string[], reasons?: ReplicaReasons): Promise<void>;
  /** How often the pool measures its workers and decides (default 1 s). */
  sampleMs?: number;
  /** The sizing rules' waits (default sizing.ts DEFAULT_TIMINGS). */
  timings?: SizingTimings;
  /** A worker is gone (died or retired): what its stats slot counts as open is cleared. */
  onWorkerGone?(slot: number): void;
}

type State = "starting" | "active" | "retiring" | "stopping";

interface Slot {
  id: number;
  worker: Worker;
  state: State;
  tid: number;
  connections: number;
  busy: number;
  times: ThreadTimes | undefined;
  sampledAt: number;
  ready: Promise<void>;
  stopped?: () => void;
  /** Connections handed to this worker so far (see the "connections" message). */
  handed: number;
  /** Outstanding "sync" messages: resolved when answered, or when the worker is gone. */
  syncs: Map<number, () => void>;
  /**
   * This thread's descriptor of each connection the worker serves (by id), let go when it
   * ended ("ended"); shut down when the worker dies, so that its clients see the end.
   */
  kept: Map<number, number>;
}

/** What /metrics and `node get` show of the pool. */
export interface PoolStatus {
  size: number;
  min: number;
  max: number;
  workers: { id: number; state: State; connections: number; busy: number }[];
  resizes: { grow: number; shrink: number };
  replaced: number;
}

const WORKER_URL = new URL("./worker.ts", import.meta.url);

export class WorkerPool {
  readonly #o: WorkerPoolOptions;
  readonly #log: Logger;
  readonly #slots = new Map<number, Slot>();
  #nextSync = 1;
  #sizing: SizingState;
  #timer: ReturnType<typeof setInterval> | undefined;
  #closing = false;
  #resizes = { grow: 0, shrink: 0 };
  #replaced = 0;
  /** Workers in a row that died before they were ready: one replacement, backing off. */
  #failedStarts = 0;
  #respawn: ReturnType<typeof setTimeout> | undefined;
  /** Connections accepted while no worker was ready yet. */
  #waiting: { fd: number; listener: ListenerKind; remote: string; conn: number }[] = [];
  /** The TLS material the workers have, to resend it when it changes. */
  #tlsSent = "";

  private constructor(o: WorkerPoolOptions) {
    this.#o = o;
    this.#log = o.logger.child({ component: "data-pool" });
    this.#sizing = initialSizing(o.min, o.max, performance.now(), o.timings);
    this.#tlsSent = JSON.stringify(o.tls() ?? null);
  }

  /** Starts `min` workers and resolves once they are ready. */
  static async start(o: WorkerPoolOptions): Promise<WorkerPool> {
    const pool = new WorkerPool(o);
    for (let i = 0; i < o.min; i++) pool.#spawn();
    await Promise.all([...pool.#slots.values()].map((s) => s.ready));
    pool.#timer = setInterval(() => pool.#sample(), o.sampleMs ?? 1000);
    Deno.unrefTimer(pool.#timer);
    pool.#log.info(
      { workers: o.min, min: o.min, max: o.max },
      `data worker pool started with ${o.min} worker${o.min === 1 ? "" : "s"}`,
    );
    return pool;
  }

  /** The lowest free id (ids are the workers' stats slots, 1..max), if any. */
  #freeId(): number | undefined {
    for (let id = 1; id <= this.#o.max; id++) if (!this.#slots.has(id)) return id;
  }

  #spawn(id = this.#freeId()): Slot | undefined {
    if (id === undefined || this.#closing) return undefined;
    const worker = new Worker(WORKER_URL, { type: "module", name: `ballast-data-${id}` });
    let ready!: () => void;
    const slot: Slot = {
      id,
      worker,
      state: "starting",
      tid: 0,
      connections: 0,
      busy: 0,
      times: undefined,
      sampledAt: performance.now(),
      ready: new Promise<void>((r) => (ready = r)),
      syncs: new Map(),
      kept: new Map(),
      handed: 0,
    };
    this.#slots.set(id, slot);
    worker.onmessage = (e: MessageEvent) => this.#onMessage(slot, e.data, ready);
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#died(slot, e.message || String(e.error));
    };
    worker.onmessageerror = () => this.#died(slot, "a message could not be read");
    this.#send(slot, {
      type: "init",
      version: POOL_PROTOCOL_VERSION,
      worker: id,
      slot: id,
      nodeName: this.#o.nodeName,
      logLevel: this.#o.logLevel,
      logFormat: this.#o.logFormat,
      tls: this.#o.tls(),
      tlsRequired: this.#o.tlsRequired,
      handshakeTimeoutMs: this.#o.handshakeTimeoutMs,
      requestTimeoutMs: this.#o.requestTimeoutMs,
      volumes: this.#o.volumes(),
      directory: this.#o.directory(),
    });
    return slot;
  }

  #send(slot: Slot, m: ToWorker): void {
    try {
      slot.worker.postMessage(m);
    } catch (err) {
      this.#log.error({ worker: slot.id, err }, "could not message a data worker");
    }
  }

  #onMessage(slot: Slot, data: unknown, ready: () => void): void {
    let m: FromWorker;
    try {
      m = checkFromWorker(data);
    } catch (err) {
      this.#died(slot, (err as Error).message);
      return;
    }
    switch (m.type) {
      case "ready":
        slot.tid = m.tid;
        slot.times = m.tid ? threadTimes(m.tid) : undefined;
        slot.sampledAt = performance.now();
        if (slot.state === "starting") slot.state = "active";
        this.#failedStarts = 0;
        ready();
        this.#drainWaiting();
        break;
      case "ended":
        letGo(slot, m.conn, false);
        break;
      case "connections":
        // Connections handed over since this report was sent are not in it yet.
        slot.connections = m.count + Math.max(0, slot.handed - m.received);
        if (slot.state === "retiring" && m.count === 0) this.#stop(slot);
        break;
      case "gate":
        this.#o.passGate(m.name).then(
          () => this.#send(slot, { type: "gate-result", name: m.name, ok: true }),
          (err) => this.#send(slot, { type: "gate-result", name: m.name, ...failure(err) }),
        );
        break;
      case "log":
        this.#relayLog(m.line);
        break;
      case "replicas-failed": {
        const hold = this.#o.replicasFailed ??
          (() => Promise.reject(new Error("this node replicates nothing")));
        hold(m.name, m.nodes, m.reasons).then(
          () => this.#send(slot, { type: "replicas-failed-result", id: m.id, ok: true }),
          (err) => this.#send(slot, { type: "replicas-failed-result", id: m.id, ...failure(err) }),
        );
        break;
      }
      case "verify": {
        const none = () =>
          Promise.resolve<ClientVerdict>({ ok: false, reason: "no PKI on this node" });
        const check = (m.purpose === "node" ? this.#o.verifyNode : this.#o.verifyClient) ?? none;
        check(m.der).then(
          (verdict) => this.#send(slot, { type: "verdict", id: m.id, verdict }),
          (err) =>
            this.#send(slot, {
              type: "verdict",
              id: m.id,
              verdict: { ok: false, reason: `certificate check failed: ${(err as Error).message}` },
            }),
        );
        break;
      }
      case "stopped":
        slot.stopped?.();
        break;
      case "clock":
        this.#send(slot, { type: "clock", sentAt: m.sentAt, mainNow: performance.now() });
        break;
      case "synced":
        slot.syncs.get(m.id)?.();
        slot.syncs.delete(m.id);
        break;
      case "fatal":
        this.#died(slot, m.message);
        break;
    }
  }

  /** Writes a worker's pino line with the main thread's logger (and its format). */
  #relayLog(line: string): void {
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(line);
    } catch {
      return;
    }
    const { level, time: _t, pid: _p, hostname: _h, msg, ...fields } = rec;
    const name = pinoLevelName(Number(level));
    this.#log[name](fields, String(msg ?? ""));
  }

  /** A worker ended by an error: its connections are gone; another takes its place. */
  #died(slot: Slot, why: string): void {
    if (this.#slots.get(slot.id) !== slot) return;
    this.#slots.delete(slot.id);
    try {
      slot.worker.terminate();
    } catch { /* already gone */ }
    slot.stopped?.();
    for (const done of slot.syncs.values()) done();
    slot.syncs.clear();
    for (const conn of [...slot.kept.keys()]) letGo(slot, conn, true);
    this.#o.onWorkerGone?.(slot.id);
    if (this.#closing) return;
    this.#replaced++;
    // One that dies before it is ready (it cannot start: a bug, the program's files changed
    // under it) would otherwise be replaced in a tight loop: 1 s, doubling to 60 s.
    const early = slot.state === "starting";
    const delayMs = early ? Math.min(60_000, 1000 * 2 ** this.#failedStarts++) : 0;
    this.#log.error(
      { worker: slot.id, reason: why, connections: slot.connections, delayMs },
      `data worker ${slot.id} died (${why}); its ${slot.connections} connection(s) were cut; ` +
        (early ? `it never started: next try in ${delayMs / 1000} s` : "starting a replacement"),
    );
    if (delayMs === 0) this.#spawn(slot.id);
    else if (this.#respawn === undefined) {
      this.#respawn = setTimeout(() => (this.#respawn = undefined, this.#spawn()), delayMs);
      Deno.unrefTimer(this.#respawn);
    }
  }

  /** Hands a connection to a worker, numbered here (ids unique across workers, listeners). */
  dispatch(fd: number, listener: ListenerKind, remote: string, conn = nextConnectionId()): void {
    if (this.#closing) {
      closeFd(fd);
      return;
    }
    const active = [...this.#slots.values()].filter((s) => s.state === "active");
    const id = place(active.map((s) => ({ id: s.id, busy: s.busy, connections: s.connections })));
    if (id === undefined) {
      this.#waiting.push({ fd, listener, remote, conn });
      return;
    }
    const slot = this.#slots.get(id)!;
    slot.connections++; // counted now, so a burst spreads before the worker reports
    slot.handed++;
    const kept = dupFd(fd);
    if (kept >= 0) slot.kept.set(conn, kept);
    this.#send(slot, { type: "serve", fd, listener, remote, conn });
  }

  #drainWaiting(): void {
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const w of waiting) this.dispatch(w.fd, w.listener, w.remote, w.conn);
  }

  /** Sends `m` to every worker (volumes, TLS material). */
  broadcast(m: ToWorker): void {
    for (const s of this.#slots.values()) this.#send(s, m);
  }

  /** Resolves once every worker acted on every message sent before (a dead one counts). */
  sync(): Promise<void> {
    const id = this.#nextSync++;
    return Promise.all([...this.#slots.values()].map((s) =>
      new Promise<void>((resolve) => {
        s.syncs.set(id, resolve);
        this.#send(s, { type: "sync", id });
      })
    )).then(() => {});
  }

  /** Sends the workers changed TLS material (renewal, rotation): on reload, and each second. */
  refreshTls(): void {
    const tls = this.#o.tls();
    const tlsNow = JSON.stringify(tls ?? null);
    if (tls && tlsNow !== this.#tlsSent) {
      this.#tlsSent = tlsNow;
      this.broadcast({ type: "tls", tls });
    }
  }

  #sample(): void {
    if (this.#closing) return;
    this.refreshTls();
    const now = performance.now();
    const samples: WorkerSample[] = [];
    for (const s of this.#slots.values()) {
      if (s.state !== "active" || !s.tid) continue;
      const times = threadTimes(s.tid);
      if (times !== undefined && s.times !== undefined) {
        const wall = (now - s.sampledAt) / 1000;
        s.busy = busyRatio(times.run - s.times.run, times.wait - s.times.wait, wall);
      }
      s.times = times;
      s.sampledAt = now;
      samples.push({ id: s.id, busy: s.busy, connections: s.connections });
    }
    const all = [...this.#slots.values()];
    const starting = all.filter((s) => s.state === "starting").length;
    const leaving = all.filter((s) => s.state === "retiring" || s.state === "stopping").length;
    // While workers fail to start, none is added but the one replacement (it backs off).
    const failing = this.#failedStarts > 0 ? 1 : 0;
    const others = { starting: starting + failing, leaving };
    const { state, action } = decide(this.#sizing, samples, now, others);
    this.#sizing = state;
    if (action.kind === "grow") {
      this.#resizes.grow++;
      this.#log.info(
        { from: samples.length, to: samples.length + 1, reason: action.reason },
        `data worker pool grows: ${action.reason} (${describePool(samples)})`,
      );
      this.#spawn();
    } else if (action.kind === "shrink") {
      const slot = this.#slots.get(action.worker);
      if (!slot) return;
      this.#resizes.shrink++;
      this.#log.info(
        { from: samples.length, to: samples.length - 1, worker: slot.id, reason: action.reason },
        `data worker pool shrinks: ${action.reason} (${describePool(samples)})`,
      );
      slot.state = "retiring";
      if (slot.connections === 0) this.#stop(slot);
    }
  }

  /** Stops one worker gracefully (its connections finish), then terminates it. */
  #stop(slot: Slot): Promise<void> {
    if (slot.state === "stopping") return Promise.resolve();
    slot.state = "stopping";
    const done = new Promise<void>((resolve) => (slot.stopped = resolve));
    this.#send(slot, { type: "shutdown" });
    return done.then(() => {
      if (this.#slots.get(slot.id) === slot) this.#slots.delete(slot.id);
      slot.worker.terminate();
      for (const sync of slot.syncs.values()) sync();
      slot.syncs.clear();
      for (const conn of [...slot.kept.keys()]) letGo(slot, conn, true);
      this.#o.onWorkerGone?.(slot.id);
    });
  }

  status(): PoolStatus {
    const workers = [...this.#slots.values()]
      .sort((a, b) => a.id - b.id)
      .map((s) => ({ id: s.id, state: s.state, connections: s.connections, busy: s.busy }));
    return {
      size: workers.filter((w) => w.state === "active" || w.state === "starting").length,
      min: this.#o.min,
      max: this.#o.max,
      workers,
      resizes: { ...this.#resizes },
      replaced: this.#replaced,
    };
  }

  /** Connections the workers serve. */
  get connections(): number {
    let n = 0;
    for (const s of this.#slots.values()) n += s.connections;
    return n;
  }

  /** Hidden debug hook: makes worker `id` die of an uncaught error. */
  crash(id: number): boolean {
    const slot = this.#slots.get(id);
    if (!slot) return false;
    this.#send(slot, { type: "debug-crash", message: `debug hook: worker ${id} crashes` });
    return true;
  }

  /** Every worker finishes its connections' in-flight requests, flushes and stops. */
  async close(): Promise<void> {
    this.#closing = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    clearTimeout(this.#respawn);
    for (const w of this.#waiting) closeFd(w.fd);
    this.#waiting = [];
    await Promise.all([...this.#slots.values()].map((s) => this.#stop(s)));
  }
}

/** Closes this thread's descriptor of connection `conn`; `end`: shut the socket down first. */
function letGo(slot: Slot, conn: number, end: boolean): void {
  const fd = slot.kept.get(conn);
  if (fd === undefined) return;
  slot.kept.delete(conn);
  if (end) shutdownFd(fd);
  closeFd(fd);
}

function pinoLevelName(n: number): "trace" | "debug" | "info" | "warn" | "error" | "fatal" {
  if (n >= 60) return "fatal";
  if (n >= 50) return "error";
  if (n >= 40) return "warn";
  if (n >= 30) return "info";
  if (n >= 20) return "debug";
  return "trace";
}

/** A failed answer to a worker's question, keeping what the client is to be told. */
function failure(err: unknown): { ok: false; message: string; errno: string } {
  return {
    ok: false,
    message: err instanceof Error ? err.message : String(err),
    errno: errnoOf(err),
  };
}
