/**
 * The lease view shared by every group driver of a node: which nodes' liveness
 * leases (`/ballast/nodes/<name>/alive`) are up. One prefix watch per node, so a
 * node's lease costs the store nothing beyond its own keep-alives.
 * @module
 */

import type { Logger } from "../common/mod.ts";
import { ALIVE_SUFFIX, NODE_PREFIX } from "../nodes/mod.ts";
import { followPrefix, type StateStore } from "../store/mod.ts";

/**
 * After another node's lease went, how long to wait for this node's own to go as well (an
 * etcd outage expires every lease at once) before reporting that node down without a grace.
 */
export const SETTLE_MS = 500;

/**
 * Which nodes' liveness leases are up, from one prefix watch on the node keys (list,
 * then watch from the list revision + 1; a compacted or failed watch re-lists and
 * reports the differences). Shared by every GroupDriver of a node.
 */
export class LeaseWatch {
  readonly #store: StateStore;
  readonly #log: Logger;
  /** Nodes with a record. */
  #known = new Set<string>();
  /** Each node's peer address, from its record as the watch last saw it. */
  readonly #peers = new Map<string, string>();
  /** Nodes whose record carries the stopping mark (`stoppedAt`: a clean stop). */
  readonly #stopping = new Set<string>();
  #alive = new Set<string>();
  /** Nodes reported down to subscribers (lease gone for longer than the grace). */
  #reportedDown = new Set<string>();
  /** Grace timers of leases that went away and may come back. */
  readonly #grace = new Map<string, ReturnType<typeof setTimeout>>();
  readonly #graceMs: number;
  readonly #self: string | undefined;
  /** performance.now() when this node's own lease was last seen lapse (go after being up). */
  #selfGoneAt = -Infinity;
  readonly #subs = new Set<(node: string, up: boolean) => void>();
  #stop: AbortController | undefined;
  #loop: Promise<void> | undefined;
  #ready: Promise<void>;
  #markReady: () => void = () => {};

  /**
   * `graceMs`: how long a lease must stay gone before its node is reported down. When
   * etcd returns from an outage longer than the lease TTL it expires every lease at
   * once, before the nodes can renew them; without a grace every group would see its
   * members die and come back (and an unwritten one could fail over for nothing). Use
   * about one lease TTL: a live node re-registers within a heartbeat.
   *
   * `self`: this node. An outage expires this node's own lease too; so when another node's
   * lease goes while this node's own has held (present, and not gone within the grace),
   * that node stopped renewing by itself and is reported down after SETTLE_MS, without the
   * grace (failover is then bounded by the lease TTL, not twice it).
   */
  constructor(
    options: { store: StateStore; logger: Logger; graceMs?: number; self?: string },
  ) {
    this.#store = options.store;
    this.#log = options.logger;
    this.#graceMs = options.graceMs ?? 0;
    this.#self = options.self;
    this.#ready = new Promise((r) => this.#markReady = r);
  }

  /** Starts watching; resolves after the first listing. */
  start(): Promise<void> {
    if (!this.#loop) {
      this.#stop = new AbortController();
      this.#loop = this.#run(this.#stop.signal);
    }
    return this.#ready;
  }

  async stop(): Promise<void> {
    this.#stop?.abort();
    for (const t of this.#grace.values()) clearTimeout(t);
    this.#grace.clear();
    this.#markReady();
    await this.#loop;
    this.#loop = undefined;
  }

  /** Known nodes reported down (lease gone past the grace), sorted. */
  down(): string[] {
    return [...this.#reportedDown].sort();
  }

  /**
   * Known nodes whose liveness key is absent right now (grace or not), sorted: what
   * `node list` shows as down, as this watch last saw it.
   */
  gone(): string[] {
    return [...this.#known].filter((n) => !this.#alive.has(n)).sort();
  }

  /**
   * The peer address `node`'s record gives, as this watch last saw it (no store request);
   * undefined when its record is unknown or names none. A node that restarted on another
   * address is seen within a watch event; until then a connection to the old one fails, as
   * to a node that is down.
   */
  peerAddress(node: string): string | undefined {
    return this.#peers.get(node);
  }

  /**
   * Known nodes whose liveness key is absent after a clean stop (their record has the
   * stopping mark the node writes before revoking its lease), sorted.
   */
  stopped(): string[] {
    return this.gone().filter((n) => this.#stopping.has(n));
  }

  /** Notes the peer address and the stopping mark of a node record's value. */
  #noteRecord(node: string, value: string): void {
    let rec: { peerAddress?: unknown; stoppedAt?: unknown } = {};
    try {
      rec = JSON.parse(value) ?? {};
    } catch {
      rec = {}; // not a node record: no address
    }
    const address = rec.peerAddress;
    if (typeof address === "string" && address !== "") this.#peers.set(node, address);
    else this.#peers.delete(node);
    if (typeof rec.stoppedAt === "string") this.#stopping.add(node);
    else this.#stopping.delete(node);
  }

  /** Calls `fn(node, up)` on every change; returns the unsubscribe function. */
  subscribe(fn: (node: string, up: boolean) => void): () => void {
    this.#subs.add(fn);
    return () => this.#subs.delete(fn);
  }

  #set(node: string, up: boolean): void {
    const wasKnown = this.#known.has(node);
    const wasUp = this.#alive.has(node);
    this.#known.add(node);
    if (up) {
      this.#alive.add(node);
      const timer = this.#grace.get(node);
      if (timer !== undefined) {
        clearTimeout(timer);
        this.#grace.delete(node);
        this.#log.info({ peer: node }, "node lease back within the grace period");
      }
      if (this.#reportedDown.delete(node)) this.#report(node, true);
      return;
    }
    this.#alive.delete(node);
    // Only a lapse of this node's own lease hints at an etcd outage; not being registered yet
    // (the first listing of a node that is starting) does not, or every death within one
    // grace of a node's start would wait out the grace.
    if (node === this.#self && wasUp) this.#selfGoneAt = performance.now();
    if (this.#reportedDown.has(node) || this.#grace.has(node)) return;
    if (!wasKnown || !wasUp || this.#graceMs <= 0) {
      // First seen without a lease (down before this node started): no grace to give.
      this.#reportedDown.add(node);
      this.#report(node, false);
      return;
    }
    this.#log.info(
      { peer: node, graceMs: this.#graceMs },
      "node lease gone; waiting out the grace",
    );
    const timer = setTimeout(() => {
      this.#grace.delete(node);
      if (this.#alive.has(node) || this.#reportedDown.has(node)) return;
      this.#reportedDown.add(node);
      this.#report(node, false);
    }, this.#graceMs);
    Deno.unrefTimer(timer);
    this.#grace.set(node, timer);
    if (this.#self === undefined || node === this.#self) return;
    const settle = setTimeout(() => {
      if (this.#grace.get(node) !== timer || !this.#selfSteady()) return;
      clearTimeout(timer);
      this.#grace.delete(node);
      this.#log.info(
        { peer: node },
        "node lease gone while this node's own lease held: no grace (not an etcd outage)",
      );
      this.#reportedDown.add(node);
      this.#report(node, false);
    }, Math.min(SETTLE_MS, this.#graceMs));
    Deno.unrefTimer(settle);
  }

  /** This node's own lease is up and was not gone within the grace (no outage under way). */
  #selfSteady(): boolean {
    return this.#self !== undefined && this.#alive.has(this.#self) &&
      performance.now() - this.#selfGoneAt > this.#graceMs + SETTLE_MS;
  }

  #report(node: string, up: boolean): void {
    this.#log.info({ peer: node, up }, up ? "node lease up" : "node lease expired");
    for (const fn of this.#subs) fn(node, up);
  }

  #run(stop: AbortSignal): Promise<void> {
    const nodeOf = (key: string) => key.slice(NODE_PREFIX.length);
    return followPrefix(this.#store, NODE_PREFIX, {
      onList: (kvs) => {
        const known = new Set<string>();
        const alive = new Set<string>();
        for (const kv of kvs) {
          const rest = nodeOf(kv.key);
          if (rest.endsWith(ALIVE_SUFFIX)) alive.add(rest.slice(0, -ALIVE_SUFFIX.length));
          else if (!rest.includes("/")) {
            known.add(rest);
            this.#noteRecord(rest, kv.value);
          }
        }
        for (const n of alive) known.add(n);
        for (const n of known) this.#set(n, alive.has(n));
        this.#markReady();
      },
      onEvents: (events) => {
        for (const ev of events) {
          const rest = nodeOf(ev.kv.key);
          if (rest.endsWith(ALIVE_SUFFIX)) {
            this.#set(rest.slice(0, -ALIVE_SUFFIX.length), ev.type === "put");
          } else if (!rest.includes("/") && ev.type === "put") {
            this.#known.add(rest);
            this.#noteRecord(rest, ev.kv.value);
          } else if (!rest.includes("/")) this.#peers.delete(rest);
        }
      },
    }, { signal: stop, logger: this.#log, what: "lease" });
  }
}
