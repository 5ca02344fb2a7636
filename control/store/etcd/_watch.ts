/**
 * One StateStore watch on etcd (private to etcd_store.ts).
 *
 * Each watch has its own gRPC watch stream on the pinned endpoint. It remembers
 * the revision after the last batch it delivered and, whenever the stream breaks
 * (member killed, restarted, network), opens a new one from that revision on the
 * next endpoint, so no event is missed or repeated. When etcd reports that the
 * start revision was compacted, the watch yields one "compacted" message and ends.
 * @module
 */

import type { Buffer } from "node:buffer";
import type { Watch, WatchMessage } from "../mod.ts";
import type { Namespace, PbEvent, PbHeader } from "./_codec.ts";
import type { EndpointPool } from "./_conn.ts";
import { byRevision } from "./_settle.ts";

interface PbWatchResponse {
  header: PbHeader;
  created: boolean;
  canceled: boolean;
  cancel_reason: string;
  compact_revision: string;
  events: PbEvent[];
}

/** A gRPC watch stream as the `etcd3` raw client hands it out (also used by _write.ts). */
export interface WatchStream {
  on(event: "data", fn: (r: PbWatchResponse) => void): unknown;
  on(event: "end", fn: () => void): unknown;
  on(event: "error", fn: (err: Error) => void): unknown;
  write(req: unknown): void;
  cancel(): void;
}

export interface WatchContext {
  pool: EndpointPool;
  ns: Namespace;
  /** Records a revision seen in a response header. */
  observe(revision: number): void;
}

/** What to watch: key + range_end inside the namespace, from `startRevision`. */
export interface WatchSpec {
  key: Buffer;
  range_end: Buffer;
  startRevision: number;
  prevKv: boolean;
}

export class EtcdWatch implements Watch {
  readonly #ctx: WatchContext;
  readonly #spec: WatchSpec;
  readonly #onEnd: (w: EtcdWatch) => void;
  #next: number;
  #queue: WatchMessage[] = [];
  #waiters: ((r: IteratorResult<WatchMessage>) => void)[] = [];
  #done = false;
  #stream: WatchStream | undefined;
  #wake: (() => void) | undefined;
  #started = false;

  constructor(ctx: WatchContext, spec: WatchSpec, onEnd: (w: EtcdWatch) => void) {
    this.#ctx = ctx;
    this.#spec = spec;
    this.#next = spec.startRevision;
    this.#onEnd = onEnd;
  }

  /** A watch that fails on its first next() (bad arguments, closed store). */
  static failed(error: unknown): Watch {
    let thrown = false;
    return {
      cancel() {},
      [Symbol.asyncIterator]: () => ({
        next: () => {
          if (thrown) return Promise.resolve({ done: true, value: undefined });
          thrown = true;
          return Promise.reject(error);
        },
      }),
    };
  }

  /** Starts the stream loop (called once by the store). */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#run();
  }

  cancel(): void {
    this.#finish();
  }

  [Symbol.asyncIterator](): AsyncIterator<WatchMessage> {
    return {
      next: () => {
        const m = this.#queue.shift();
        if (m) return Promise.resolve({ done: false, value: m });
        if (this.#done) return Promise.resolve({ done: true, value: undefined });
        return new Promise((resolve) => this.#waiters.push(resolve));
      },
      return: () => {
        this.#finish();
        return Promise.resolve({ done: true, value: undefined });
      },
    };
  }

  #push(m: WatchMessage): void {
    const w = this.#waiters.shift();
    if (w) w({ done: false, value: m });
    else this.#queue.push(m);
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    try {
      this.#stream?.cancel();
    } catch { /* already closed */ }
    this.#stream = undefined;
    this.#wake?.();
    for (const w of this.#waiters.splice(0)) w({ done: true, value: undefined });
    this.#onEnd(this);
  }

  async #run(): Promise<void> {
    let backoff = 50;
    while (!this.#done) {
      let endpoint = "";
      try {
        const pinned = this.#ctx.pool.pinned();
        endpoint = pinned.endpoint;
        const delivered = await this.#stream1(pinned.client.watchClient);
        if (delivered) backoff = 50;
      } catch {
        // The stream failed; resume from this.#next on the next endpoint.
      }
      if (this.#done || this.#ctx.pool.closed) break;
      if (endpoint) this.#ctx.pool.failed(endpoint);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, backoff);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
      backoff = Math.min(backoff * 2, 1000);
    }
  }

  /** Runs one stream until it breaks; resolves whether it delivered anything. */
  async #stream1(client: { watch(): Promise<unknown> }): Promise<boolean> {
    const stream = (await client.watch()) as WatchStream;
    if (this.#done) {
      stream.cancel();
      return false;
    }
    this.#stream = stream;
    let delivered = false;
    await new Promise<void>((resolve, reject) => {
      stream.on("data", (r) => {
        if (this.#done) return;
        this.#ctx.observe(Number(r.header?.revision ?? 0));
        if (r.compact_revision && r.compact_revision !== "0") {
          this.#push({ kind: "compacted", compactRevision: Number(r.compact_revision) });
          this.#finish();
          resolve();
          return;
        }
        if (r.canceled) {
          reject(new Error(`etcd canceled the watch: ${r.cancel_reason}`));
          return;
        }
        const events = (r.events ?? []).map((e) => this.#ctx.ns.event(e));
        for (const [revision, batch] of byRevision(events)) {
          this.#push({ kind: "events", events: batch, revision });
          this.#next = revision + 1;
          delivered = true;
        }
      });
      stream.on("error", reject);
      stream.on("end", () => reject(new Error("watch stream ended")));
      stream.write({
        create_request: {
          key: this.#spec.key,
          range_end: this.#spec.range_end,
          start_revision: String(this.#next),
          prev_kv: this.#spec.prevKv,
        },
      });
    }).finally(() => {
      if (this.#stream === stream) this.#stream = undefined;
      try {
        stream.cancel();
      } catch { /* already closed */ }
    });
    return delivered;
  }
}
