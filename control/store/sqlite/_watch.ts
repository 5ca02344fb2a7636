/**
 * In-process watches of the embedded state store (private).
 *
 * A watch is either catching up (it reads committed history from the database,
 * a bounded batch at a time, when its consumer asks for more) or live (the store
 * hands it each committed revision as it commits). Because node:sqlite is
 * synchronous and every commit runs to completion on this thread, switching from
 * catching up to live happens between two commits: nothing is missed or seen twice.
 * A live watch whose consumer falls behind by more than MAX_QUEUED messages drops
 * its queue and goes back to catching up from history, so memory stays bounded; if
 * history was compacted in the meantime it gets "compacted", exactly like a watch
 * started from an old revision.
 * @module
 */

import type { Watch, WatchEvent, WatchMessage } from "../mod.ts";

/** Where a catching-up watch reads committed changes from. */
export interface HistorySource {
  /** Current store revision. */
  revision(): number;
  /** Oldest revision still in history. */
  compactRevision(): number;
  /**
   * Events of keys with `prefix` at revisions >= `from`, in order, whole revisions
   * only, about `limit` events at most; `more` says the batch stopped early.
   */
  readHistory(
    prefix: string,
    from: number,
    limit: number,
  ): { events: { revision: number; event: WatchEvent }[]; more: boolean };
}

const MAX_QUEUED = 1024;
const HISTORY_BATCH = 1000;

type EventsMessage = Extract<WatchMessage, { kind: "events" }>;

/** Copies an event for one consumer, with or without prevKv. */
function copyEvent(e: WatchEvent, withPrev: boolean): WatchEvent {
  const out: WatchEvent = { type: e.type, kv: { ...e.kv } };
  if (withPrev && e.prevKv) out.prevKv = { ...e.prevKv };
  return out;
}

/** One watch; created and fed by WatchHub. */
export class SqliteWatch implements Watch {
  #hub: WatchHub;
  #prefix: string;
  #prevKv: boolean;
  /** Catching up: next revision to read from history. Live: lowest revision to accept. */
  #scanFrom: number;
  #live = false;
  #queue: WatchMessage[] = [];
  #waiters: (() => void)[] = [];
  #ended = false;
  #failure: Error | undefined;

  constructor(
    hub: WatchHub,
    prefix: string,
    startRevision: number,
    prevKv: boolean,
    failure?: Error,
  ) {
    this.#hub = hub;
    this.#prefix = prefix;
    this.#prevKv = prevKv;
    this.#scanFrom = startRevision;
    this.#failure = failure;
  }

  cancel(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#queue = [];
    this.#hub.remove(this);
    this.#wake();
  }

  /** Called by the hub after each commit, in revision order. */
  offer(revision: number, events: readonly WatchEvent[]): void {
    if (this.#ended) return;
    if (this.#live && revision >= this.#scanFrom) {
      this.#scanFrom = revision + 1;
      const mine = events.filter((e) => e.kv.key.startsWith(this.#prefix));
      if (mine.length > 0) {
        this.#queue.push({
          kind: "events",
          revision,
          events: mine.map((e) => copyEvent(e, this.#prevKv)),
        });
        if (this.#queue.length > MAX_QUEUED) {
          // Consumer too slow: forget the queue, re-read it from history later.
          this.#scanFrom = (this.#queue[0] as EventsMessage).revision;
          this.#queue = [];
          this.#live = false;
        }
      }
    }
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  /** Refills the queue from history, goes live when caught up, or ends if compacted. */
  #catchUp(source: HistorySource): void {
    if (this.#scanFrom < source.compactRevision()) {
      this.#queue.push({ kind: "compacted", compactRevision: source.compactRevision() });
      this.#ended = true;
      this.#hub.remove(this);
      return;
    }
    const current = source.revision();
    if (this.#scanFrom <= current) {
      const { events, more } = source.readHistory(this.#prefix, this.#scanFrom, HISTORY_BATCH);
      let message: EventsMessage | undefined;
      for (const { revision, event } of events) {
        if (message?.revision !== revision) {
          message = { kind: "events", revision, events: [] };
          this.#queue.push(message);
        }
        message.events.push(copyEvent(event, this.#prevKv));
      }
      if (more) {
        this.#scanFrom = message!.revision + 1;
        return;
      }
      this.#scanFrom = current + 1;
    }
    this.#live = true;
  }

  async next(): Promise<IteratorResult<WatchMessage>> {
    while (true) {
      if (this.#failure) {
        const err = this.#failure;
        this.#failure = undefined;
        this.#ended = true;
        throw err;
      }
      const message = this.#queue.shift();
      if (message) return { done: false, value: message };
      if (this.#ended) return { done: true, value: undefined };
      if (!this.#live) {
        this.#catchUp(this.#hub.source);
        continue;
      }
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<WatchMessage> {
    return {
      next: () => this.next(),
      return: () => {
        this.cancel();
        return Promise.resolve({ done: true, value: undefined });
      },
    };
  }
}

/** The set of running watches of one store. */
export class WatchHub {
  readonly source: HistorySource;
  #watches = new Set<SqliteWatch>();

  constructor(source: HistorySource) {
    this.source = source;
  }

  /** Starts a watch delivering revisions >= startRevision. */
  create(prefix: string, startRevision: number, prevKv: boolean): SqliteWatch {
    const watch = new SqliteWatch(this, prefix, startRevision, prevKv);
    this.#watches.add(watch);
    return watch;
  }

  /** A watch whose first next() rejects with `err` (e.g. the store is closed). */
  failed(err: Error): SqliteWatch {
    return new SqliteWatch(this, "", 0, false, err);
  }

  remove(watch: SqliteWatch): void {
    this.#watches.delete(watch);
  }

  /** Delivers one committed revision to every watch. */
  publish(revision: number, events: readonly WatchEvent[]): void {
    for (const w of [...this.#watches]) w.offer(revision, events);
  }

  /** Ends every watch (store closing). */
  closeAll(): void {
    for (const w of [...this.#watches]) w.cancel();
  }
}
