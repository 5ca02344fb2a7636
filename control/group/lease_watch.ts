/**
 * The lease view shared by every group driver of a node: which nodes' liveness
 * leases (`/ballast/nodes/<name>/alive`) are up. One prefix watch per node, so a
 * node's lease costs the store nothing beyond its own keep-alives.
 * @module
 */

import type { Logger } from "../log.ts";
import { ALIVE_SUFFIX, NODE_PREFIX } from "../nodes.ts";
import type { StateStore, Watch } from "../state_store.ts";

const WATCH_BACKOFF_MS = [100, 5_000] as const;

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
  readonly #subs = new Set<(node: string, up: boolean) => void>();
  #stop: AbortController | undefined;
  #loop: Promise<void> | undefined;
  #ready: Promise<void>;
  #markReady: () => void = () => {};

  constructor(options: { store: StateStore; logger: Logger }) {
    this.#store = options.store;
    this.#log = options.logger;
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
    this.#markReady();
    await this.#loop;
    this.#loop = undefined;
  }

  /** Known nodes whose lease is not up, sorted. */
  down(): string[] {
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
    if (up) this.#alive.add(node);
    else this.#alive.delete(node);
    // A node first seen coming up was never reported down: nothing to tell.
    if (wasKnown ? wasUp === up : up) return;
    this.#log.info({ peer: node, up }, up ? "node lease up" : "node lease expired");
    for (const fn of this.#subs) fn(node, up);
  }

  async #run(stop: AbortSignal): Promise<void> {
    let backoff: number = WATCH_BACKOFF_MS[0];
    while (!stop.aborted) {
      let watch: Watch | undefined;
      const cancel = () => watch?.cancel();
      stop.addEventListener("abort", cancel);
      try {
        const { kvs, revision } = await this.#store.list(NODE_PREFIX);
        const known = new Set<string>();
        const alive = new Set<string>();
        for (const kv of kvs) {
          const rest = kv.key.slice(NODE_PREFIX.length);
          if (rest.endsWith(ALIVE_SUFFIX)) alive.add(rest.slice(0, -ALIVE_SUFFIX.length));
          else if (!rest.includes("/")) known.add(rest);
        }
        for (const n of alive) known.add(n);
        for (const n of known) this.#set(n, alive.has(n));
        this.#markReady();
        if (stop.aborted) return;
        watch = this.#store.watch(NODE_PREFIX, { startRevision: revision + 1 });
        for await (const msg of watch) {
          backoff = WATCH_BACKOFF_MS[0];
          if (msg.kind === "compacted") break;
          for (const ev of msg.events) {
            const rest = ev.kv.key.slice(NODE_PREFIX.length);
            if (rest.endsWith(ALIVE_SUFFIX)) {
              this.#set(rest.slice(0, -ALIVE_SUFFIX.length), ev.type === "put");
            } else if (!rest.includes("/") && ev.type === "put") {
              this.#known.add(rest);
            }
          }
        }
      } catch (err) {
        if (stop.aborted) return;
        this.#log.warn({ err: String(err), retryMs: backoff }, "lease watch failed; retrying");
        await new Promise<void>((r) => {
          const t = setTimeout(r, backoff);
          stop.addEventListener("abort", () => (clearTimeout(t), r()), { once: true });
        });
        backoff = Math.min(backoff * 2, WATCH_BACKOFF_MS[1]);
      } finally {
        stop.removeEventListener("abort", cancel);
        watch?.cancel();
      }
    }
  }
}
