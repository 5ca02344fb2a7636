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
 * Which nodes' liveness leases are up, from one prefix watch on the node keys (list,
 * then watch from the list revision + 1; a compacted or failed watch re-lists and
 * reports the differences). Shared by every GroupDriver of a node.
 */
export class LeaseWatch {
  readonly #store: StateStore;
  readonly #log: Logger;
  /** Nodes with a record. */
  #known = new Set<string>();
  #alive = new Set<string>();
  /** Nodes reported down to subscribers (lease gone for longer than the grace). */
  #reportedDown = new Set<string>();
  /** Grace timers of leases that went away and may come back. */
  readonly #grace = new Map<string, ReturnType<typeof setTimeout>>();
  readonly #graceMs: number;
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
   */
  constructor(options: { store: StateStore; logger: Logger; graceMs?: number }) {
    this.#store = options.store;
    this.#log = options.logger;
    this.#graceMs = options.graceMs ?? 0;
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
          else if (!rest.includes("/")) known.add(rest);
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
          }
        }
      },
    }, { signal: stop, logger: this.#log, what: "lease" });
  }
}
