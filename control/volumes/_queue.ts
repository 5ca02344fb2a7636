/**
 * One serial lane per volume for the record changes this node applies (cluster mode),
 * so the shared record watch (_follow.ts) only dispatches and never waits on one
 * volume's file work or etcd writes: a slow or stuck volume holds up its own lane only.
 *
 * - order: a lane applies one change at a time, in the order they arrived;
 * - coalescing: while a change is applied, only the newest one waiting is kept (a
 *   record is level-triggered state: the latest one is all that matters);
 * - retry: a change that throws (an etcd or disk error) is applied again from a fresh
 *   read of the record, after 0.5 s, doubling up to 30 s, until one succeeds or the
 *   record is gone; any success resets the backoff.
 * @module
 */

import type { Logger } from "../common/mod.ts";
import type { KeyValue } from "../store/mod.ts";

/** What a lane applies: a record as put, or its deletion. */
export type RecordChange = { type: "put"; kv: KeyValue } | { type: "deleted" };

/** Default retry backoff: first delay and cap, in ms. */
export const RETRY_BACKOFF_MS = [500, 30_000] as const;

export interface RecordQueuesOptions {
  /** Applies one change of one volume; throwing schedules a retry. */
  apply(name: string, change: RecordChange): Promise<void>;
  /** Reads a volume's record now (for a retry or a kick); undefined when it is gone. */
  read(name: string): Promise<KeyValue | undefined>;
  logger: Logger;
  /** [first, cap] of the retry backoff; default RETRY_BACKOFF_MS. */
  backoffMs?: readonly [number, number];
}

type Pending = RecordChange | { type: "reread" };

interface Lane {
  running: Promise<void> | undefined;
  next: Pending | undefined;
  retry: ReturnType<typeof setTimeout> | undefined;
  backoff: number;
}

export class RecordQueues {
  readonly #o: RecordQueuesOptions;
  readonly #backoff: readonly [number, number];
  readonly #lanes = new Map<string, Lane>();
  #stopped = false;

  constructor(options: RecordQueuesOptions) {
    this.#o = options;
    this.#backoff = options.backoffMs ?? RETRY_BACKOFF_MS;
  }

  /** Queues a change of `name`; returns at once. */
  push(name: string, change: RecordChange): void {
    this.#enqueue(name, change);
  }

  /** Applies `name`'s record again from a fresh read (level-triggered), soon. */
  kick(name: string): void {
    this.#enqueue(name, { type: "reread" });
  }

  /** Volumes with a lane: busy, waiting, or with a retry scheduled. */
  busy(): string[] {
    return [...this.#lanes.keys()].sort();
  }

  /** Drops waiting changes and retries; resolves when the changes being applied finish. */
  async stop(): Promise<void> {
    this.#stopped = true;
    const running: Promise<void>[] = [];
    for (const lane of this.#lanes.values()) {
      lane.next = undefined;
      if (lane.retry !== undefined) clearTimeout(lane.retry);
      lane.retry = undefined;
      if (lane.running) running.push(lane.running);
    }
    await Promise.all(running);
    this.#lanes.clear();
  }

  #enqueue(name: string, change: Pending): void {
    if (this.#stopped) return;
    let lane = this.#lanes.get(name);
    if (!lane) {
      lane = { running: undefined, next: undefined, retry: undefined, backoff: this.#backoff[0] };
      this.#lanes.set(name, lane);
    }
    // A reread never replaces a record already waiting: it would read the same or newer.
    if (change.type !== "reread" || lane.next === undefined) lane.next = change;
    if (!lane.running) lane.running = this.#drain(name, lane);
  }

  async #drain(name: string, lane: Lane): Promise<void> {
    while (lane.next !== undefined && !this.#stopped) {
      const item = lane.next;
      lane.next = undefined;
      try {
        let change: RecordChange;
        if (item.type === "reread") {
          const kv = await this.#o.read(name);
          change = kv ? { type: "put", kv } : { type: "deleted" };
        } else change = item;
        await this.#o.apply(name, change);
        lane.backoff = this.#backoff[0];
        if (lane.retry !== undefined && lane.next === undefined) {
          clearTimeout(lane.retry);
          lane.retry = undefined;
        }
      } catch (err) {
        this.#scheduleRetry(name, lane, err);
      }
    }
    lane.running = undefined;
    if (lane.retry === undefined && lane.next === undefined && this.#lanes.get(name) === lane) {
      this.#lanes.delete(name);
    }
  }

  #scheduleRetry(name: string, lane: Lane, err: unknown): void {
    if (this.#stopped) return;
    const ms = lane.backoff;
    lane.backoff = Math.min(lane.backoff * 2, this.#backoff[1]);
    this.#o.logger.warn(
      { volume: name, err, retryMs: ms },
      "could not apply a volume record change; retrying from a fresh read",
    );
    if (lane.retry !== undefined) clearTimeout(lane.retry);
    lane.retry = setTimeout(() => {
      lane.retry = undefined;
      if (this.#lanes.get(name) !== lane) this.#lanes.set(name, lane);
      this.#enqueue(name, { type: "reread" });
    }, ms);
  }
}
