/**
 * A read cache in front of the cluster state store (etcd): while the store answers,
 * every get and list result is remembered (per key, per prefix) and passed through;
 * when the store rejects with UnavailableError, get and list answer from what was
 * remembered, a list from the same prefix or a longer one's parent, a get from its
 * own entry or a cached list covering it. Such an answer is marked stale in the
 * current request's context (withStaleTracking), which the API turns into a
 * `Ballast-Stale: <time the data was read>` header. Writes, leases and watches are
 * passed through: during an outage they fail with the store's UnavailableError.
 *
 * Writes that succeed through the wrapper are applied to the cached entries, so a
 * stale answer never hides a change this node made before the outage. So are the events of
 * every watch made through the wrapper (the volume records, the nodes' keys, ...): a cached
 * entry under a watched prefix follows every change the watch saw, and an answer from it is
 * as old as the moment etcd was last heard from, not as old as the read that filled it.
 * @module
 */

import { AsyncLocalStorage } from "node:async_hooks";
import { UnavailableError } from "../../mod/errors.ts";
import type { Logger } from "../common/mod.ts";
import type {
  Compare,
  KeyValue,
  ListResult,
  Op,
  StateStore,
  TxnResult,
  Watch,
  WatchEvent,
  WatchOptions,
} from "./state_store.ts";

/** What a request collects: the oldest cached data it was answered from, if any. */
export interface StaleMark {
  since?: Date;
}

const scope = new AsyncLocalStorage<StaleMark>();

/** Runs `fn` so that cached answers given inside it are recorded in `mark`. */
export function withStaleTracking<T>(mark: StaleMark, fn: () => T): T {
  return scope.run(mark, fn);
}

/**
 * A get that never answers from the read cache (ReadCacheStore): what a node does to
 * its copies must follow the record as it is, not as it was before an outage. Rejects
 * with UnavailableError when only a cached answer was to be had.
 */
export async function freshGet(store: StateStore, key: string): Promise<KeyValue | undefined> {
  const mark: StaleMark = {};
  const kv = await withStaleTracking(mark, () => store.get(key));
  if (mark.since !== undefined) {
    throw new UnavailableError(
      `etcd is unreachable, so nothing can be changed now (the last answer for ${whatOf(key)} ` +
        `is from ${mark.since.toISOString()}); the change was not applied: retry once etcd ` +
        "answers",
    );
  }
  return kv;
}

/** A store key as operators name the thing: `volume "v4"`, `node "n1"`, else the key. */
function whatOf(key: string): string {
  const m = /^\/ballast\/(volumes|nodes)\/([^/]+)$/.exec(key);
  return m ? `${m[1] === "volumes" ? "volume" : "node"} "${m[2]}"` : key;
}

function markStale(at: Date): void {
  const mark = scope.getStore();
  if (mark && (!mark.since || at < mark.since)) mark.since = at;
}

/**
 * Once the store has been found unavailable, a read with a cached answer waits this
 * long for the store before answering from the cache (the store call goes on and
 * refreshes the cache, or ends the outage, when it completes). The first read of an
 * outage waits for the store's own deadline, which is what detects the outage.
 */
const DEGRADED_WAIT_MS = 300;
const LATE = Symbol("late");

/** `p`, or LATE if it has not settled within `ms` (p's later outcome is only observed). */
function orLate<T>(p: Promise<T>, ms: number): Promise<T | typeof LATE> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<typeof LATE>((resolve) => (timer = setTimeout(resolve, ms, LATE)));
  return Promise.race([p, late]).then(
    (v) => {
      clearTimeout(timer);
      if (v === LATE) p.catch(() => {});
      return v;
    },
    (err) => {
      clearTimeout(timer);
      throw err;
    },
  );
}

interface Cached<T> {
  value: T;
  /** When the store returned it. */
  at: Date;
}

/** A watch made through the wrapper: entries under `prefix` read since `since` follow it. */
interface Follow {
  prefix: string;
  since: Date;
}

export interface ReadCacheOptions {
  logger?: Logger;
  now?: () => Date;
}

/** The StateStore wrapper; see the module doc. */
export class ReadCacheStore implements StateStore {
  readonly #inner: StateStore;
  readonly #now: () => Date;
  readonly #log: Logger | undefined;
  readonly #gets = new Map<string, Cached<KeyValue | undefined>>();
  readonly #lists = new Map<string, Cached<ListResult>>();
  /** Set while answers come from the cache (for one log line per outage). */
  #degradedSince: Date | undefined;
  /** Watches whose events are applied to the cache, while they run. */
  readonly #follows = new Set<Follow>();
  /** When the store last answered anything (a read, a write, a watch message). */
  #heardAt: Date | undefined;

  constructor(inner: StateStore, options: ReadCacheOptions = {}) {
    this.#inner = inner;
    this.#now = options.now ?? (() => new Date());
    this.#log = options.logger;
  }

  get description(): string {
    return this.#inner.description;
  }

  get(key: string): Promise<KeyValue | undefined> {
    const fresh = this.#inner.get(key).then((kv) => {
      this.#recovered();
      this.#gets.set(key, { value: kv, at: this.#now() });
      return kv;
    });
    return this.#read(fresh, () => this.#cachedGet(key), (kv) => kv, key);
  }

  list(prefix: string): Promise<ListResult> {
    const fresh = this.#inner.list(prefix).then((result) => {
      this.#recovered();
      this.#lists.set(prefix, { value: { ...result, kvs: [...result.kvs] }, at: this.#now() });
      return result;
    });
    const copy = (l: ListResult) => ({ ...l, kvs: [...l.kvs] });
    return this.#read(fresh, () => this.#cachedList(prefix), copy, prefix);
  }

  /**
   * The store's answer `fresh`; from the cache (`cached`, handed out as `copy`) when
   * the store is unavailable, or, once degraded, when it is late.
   */
  async #read<T>(
    fresh: Promise<T>,
    cached: () => Cached<T> | undefined,
    copy: (value: T) => T,
    key: string,
  ): Promise<T> {
    let hit = this.#degradedSince ? cached() : undefined;
    try {
      const value = hit ? await orLate(fresh, DEGRADED_WAIT_MS) : await fresh;
      if (value !== LATE) return value;
    } catch (err) {
      hit = cached();
      if (!(err instanceof UnavailableError) || !hit) throw err;
      this.#degraded(err);
    }
    markStale(this.#asOf(hit!.at, key));
    return copy(hit!.value);
  }

  /**
   * How current a cached entry for `key` (a key or a prefix) read at `at` is: as of when the
   * store was last heard from if a watch that ran since before `at` covers it (its events
   * kept the entry current), else as of `at`.
   */
  #asOf(at: Date, key: string): Date {
    const followed = [...this.#follows].some((f) => key.startsWith(f.prefix) && f.since <= at);
    return followed && this.#heardAt !== undefined && this.#heardAt > at ? this.#heardAt : at;
  }

  async put(key: string, value: string, options?: { lease?: number }) {
    const r = await this.#inner.put(key, value, options);
    this.#apply([{ type: "put", key, value, lease: options?.lease }], r.revision);
    return r;
  }

  async delete(key: string, options?: { prefix?: boolean }) {
    const r = await this.#inner.delete(key, options);
    this.#apply([{ type: "delete", key, prefix: options?.prefix }], r.revision);
    return r;
  }

  async txn(compares: Compare[], success: Op[], failure?: Op[]): Promise<TxnResult> {
    const r = await this.#inner.txn(compares, success, failure);
    this.#apply(r.succeeded ? success : failure ?? [], r.revision);
    return r;
  }

  /**
   * The store's watch, whose events are also applied to the cache. A watch from the revision
   * after a cached list of the same prefix covers the entries read since that list; one from
   * now, those read from now on. A compacted watch covers nothing more.
   */
  watch(prefix: string, options?: WatchOptions): Watch {
    const inner = this.#inner.watch(prefix, options);
    const listed = this.#lists.get(prefix);
    const start = options?.startRevision;
    const since = start !== undefined && listed?.value.revision === start - 1
      ? listed.at
      : this.#now();
    const follow: Follow = { prefix, since };
    const follows = this.#follows;
    const heard = (events: readonly WatchEvent[]) => this.#heard(events);
    return {
      cancel() {
        follows.delete(follow);
        inner.cancel();
      },
      async *[Symbol.asyncIterator]() {
        follows.add(follow);
        try {
          for await (const msg of inner) {
            if (msg.kind === "events") heard(msg.events);
            else follows.delete(follow);
            yield msg;
          }
        } finally {
          follows.delete(follow);
        }
      },
    };
  }

  /** A watch message came: the store is reachable; its events update the cached entries. */
  #heard(events: readonly WatchEvent[]): void {
    this.#heardAt = this.#now();
    for (const ev of events) {
      this.#follow(ev.kv.key, ev.type === "put" ? ev.kv : undefined, ev.kv.modRevision);
    }
  }

  /**
   * Puts `kv` (undefined: deletes `key`), changed at `revision`, into every cached entry that
   * holds the key or covers it, unless the entry already holds a newer version. A watch
   * delivers every change of a key in order, so an entry that a write of this node made newer
   * meanwhile is brought in line by the events that follow.
   */
  #follow(key: string, kv: KeyValue | undefined, revision: number): void {
    const entry = this.#gets.get(key);
    if (entry && (entry.value?.modRevision ?? 0) < revision) entry.value = kv;
    for (const [prefix, l] of this.#lists) {
      if (!key.startsWith(prefix)) continue;
      const kvs = l.value.kvs;
      const i = kvs.findIndex((x) => x.key >= key);
      const has = i >= 0 && kvs[i].key === key;
      if (has && kvs[i].modRevision >= revision) continue;
      if (has) kvs.splice(i, 1, ...(kv ? [kv] : []));
      else if (kv) kvs.splice(i < 0 ? kvs.length : i, 0, kv);
    }
  }

  grantLease(ttlSeconds: number): Promise<number> {
    return this.#inner.grantLease(ttlSeconds);
  }

  async keepAlive(lease: number): Promise<number> {
    const ttl = await this.#inner.keepAlive(lease);
    this.#heardAt = this.#now();
    return ttl;
  }

  async revokeLease(lease: number): Promise<void> {
    await this.#inner.revokeLease(lease);
    this.#forget((kv) => kv.lease === lease);
  }

  compact(revision: number): Promise<void> {
    return this.#inner.compact(revision);
  }

  currentRevision(): Promise<number> {
    return this.#inner.currentRevision();
  }

  close(): Promise<void> {
    this.#gets.clear();
    this.#lists.clear();
    return this.#inner.close();
  }

  /** The key's own entry, else the newest cached list whose prefix covers it. */
  #cachedGet(key: string): Cached<KeyValue | undefined> | undefined {
    let best = this.#gets.get(key);
    for (const [prefix, l] of this.#lists) {
      if (!key.startsWith(prefix) || (best && best.at >= l.at)) continue;
      best = { value: l.value.kvs.find((kv) => kv.key === key), at: l.at };
    }
    return best;
  }

  /** The prefix's own list, else the newest cached list of a shorter prefix, filtered. */
  #cachedList(prefix: string): Cached<ListResult> | undefined {
    let best = this.#lists.get(prefix);
    for (const [p, l] of this.#lists) {
      if (p === prefix || !prefix.startsWith(p) || (best && best.at >= l.at)) continue;
      const kvs = l.value.kvs.filter((kv) => kv.key.startsWith(prefix));
      best = { value: { kvs, revision: l.value.revision }, at: l.at };
    }
    return best;
  }

  /** Applies successful writes to the cached entries. */
  #apply(ops: Op[], revision: number): void {
    this.#heardAt = this.#now();
    for (const op of ops) {
      if (op.type === "get") continue;
      if (op.type === "delete") {
        this.#forget((kv) => op.prefix ? kv.key.startsWith(op.key) : kv.key === op.key);
        continue;
      }
      const put = (old: KeyValue | undefined): KeyValue => ({
        key: op.key,
        value: op.value,
        createRevision: old?.createRevision ?? revision,
        modRevision: revision,
        version: (old?.version ?? 0) + 1,
        lease: op.lease ?? 0,
      });
      const entry = this.#gets.get(op.key);
      if (entry) entry.value = put(entry.value);
      for (const [prefix, l] of this.#lists) {
        if (!op.key.startsWith(prefix)) continue;
        const kvs = l.value.kvs;
        const i = kvs.findIndex((kv) => kv.key >= op.key);
        if (i >= 0 && kvs[i].key === op.key) kvs[i] = put(kvs[i]);
        else kvs.splice(i < 0 ? kvs.length : i, 0, put(undefined));
      }
    }
  }

  #forget(match: (kv: KeyValue) => boolean): void {
    for (const entry of this.#gets.values()) {
      if (entry.value && match(entry.value)) entry.value = undefined;
    }
    for (const l of this.#lists.values()) l.value.kvs = l.value.kvs.filter((kv) => !match(kv));
  }

  #degraded(err: UnavailableError): void {
    if (this.#degradedSince) return;
    this.#degradedSince = this.#now();
    this.#log?.warn({ err }, "state store unavailable; answering reads from cache");
  }

  #recovered(): void {
    this.#heardAt = this.#now();
    if (!this.#degradedSince) return;
    const ms = this.#now().getTime() - this.#degradedSince.getTime();
    this.#degradedSince = undefined;
    this.#log?.info({ degradedMs: ms }, "state store reachable again");
  }
}
