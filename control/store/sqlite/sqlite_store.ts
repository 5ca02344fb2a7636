/**
 * The embedded state store: the StateStore model (etcd v3 semantics) on node:sqlite,
 * for a single node running without etcd.
 *
 * Durability: WAL journal with synchronous=FULL, so an acknowledged write survives
 * kill -9 and power loss. The database is opened in exclusive locking mode: one
 * process owns it (watches are in-process, so a second writer would go unseen);
 * another process opening the same file gets UnavailableError.
 *
 * Every write is one sqlite transaction that bumps the revision once, or not at all
 * if it changed nothing. History is kept for the last `historyLimit` revisions.
 * Leases expire on the injected clock; a timer sweeps them every `sweepIntervalMs`.
 * @module
 */

import type { DatabaseSync } from "node:sqlite";
import {
  type BallastError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
} from "../../../mod/errors.ts";
import { type Clock, systemClock } from "../../common/mod.ts";
import {
  atomic,
  mapError,
  openDatabase,
  prepareStatements,
  readHistory,
  selectPrefix,
  type Statements,
} from "./_db.ts";
import { historyParams, type KvRow, toKeyValue } from "./_schema.ts";
import {
  checkCompare,
  checkCount,
  checkKey,
  checkOps,
  checkPrefix,
  checkValue,
  type Compare,
  compareHolds,
  type KeyValue,
  type ListResult,
  type Op,
  type OpResult,
  type StateStore,
  type TxnResult,
  type Watch,
  type WatchEvent,
  type WatchOptions,
} from "../mod.ts";
import { WatchHub } from "./_watch.ts";

export interface SqliteStateStoreOptions {
  /** Time source for lease expiry (default: the system clock). */
  clock?: Clock;
  /** Revisions of history kept for watches (default 10,000). */
  historyLimit?: number;
  /** How often expired leases are swept, in ms (default 250; 0 disables the timer). */
  sweepIntervalMs?: number;
  /** How long to wait for a lock held by another connection, in ms (default 5,000). */
  busyTimeoutMs?: number;
  /** Called when a background lease sweep fails (default: ignored; the next sweep retries). */
  onSweepError?: (err: BallastError) => void;
}

/** Longest lease TTL accepted, in seconds (etcd's limit). */
const MAX_TTL_SECONDS = 9_000_000_000;

/** The changes of one write transaction in progress. */
interface PendingWrite {
  revision: number;
  events: WatchEvent[];
}

export class SqliteStateStore implements StateStore {
  readonly description: string;
  readonly #path: string;
  readonly #clock: Clock;
  readonly #historyLimit: number;
  #db: DatabaseSync | undefined;
  #s: Statements;
  #revision: number;
  #compactRevision: number;
  #timer: ReturnType<typeof setInterval> | undefined;
  #hub: WatchHub;

  private constructor(path: string, db: DatabaseSync, options: SqliteStateStoreOptions) {
    this.#path = path;
    this.description = `embedded (sqlite: ${path})`;
    this.#db = db;
    this.#clock = options.clock ?? systemClock;
    this.#historyLimit = options.historyLimit ?? 10_000;
    this.#s = prepareStatements(db);
    this.#revision = Number(this.#s.getMeta.get("revision")!.value);
    this.#compactRevision = Number(this.#s.getMeta.get("compact_revision")!.value);
    this.#hub = new WatchHub({
      revision: () => this.#revision,
      compactRevision: () => this.#compactRevision,
      readHistory: (prefix, from, limit) => readHistory(this.#s, prefix, from, limit),
    });
    const interval = options.sweepIntervalMs ?? 250;
    if (interval > 0) {
      const timer = setInterval(() => {
        try {
          this.#expire();
        } catch (err) {
          options.onSweepError?.(mapError(err, path));
        }
      }, interval);
      Deno.unrefTimer(timer);
      this.#timer = timer;
    }
  }

  /** Opens (creating or migrating) the database at `path`; ":memory:" for a throwaway store. */
  static open(path: string, options: SqliteStateStoreOptions = {}): SqliteStateStore {
    if (typeof path !== "string" || path.length === 0) {
      throw new InvalidArgumentError(`path must be a non-empty string, got ${String(path)}`, {
        field: "path",
      });
    }
    if (options.historyLimit !== undefined) checkCount(options.historyLimit, "historyLimit", 1);
    if (options.sweepIntervalMs !== undefined) {
      checkCount(options.sweepIntervalMs, "sweepIntervalMs");
    }
    if (options.busyTimeoutMs !== undefined) checkCount(options.busyTimeoutMs, "busyTimeoutMs");
    const db = openDatabase(path, options.busyTimeoutMs ?? 5_000);
    try {
      return new SqliteStateStore(path, db, options);
    } catch (err) {
      db.close();
      throw mapError(err, path);
    }
  }

  #open(): DatabaseSync {
    if (!this.#db) throw new UnavailableError(`state store ${this.#path} is closed`);
    return this.#db;
  }

  /** Runs `fn` on the open database, mapping every failure to a BallastError. */
  #run<T>(fn: (db: DatabaseSync) => T): Promise<T> {
    try {
      return Promise.resolve(fn(this.#open()));
    } catch (err) {
      return Promise.reject(mapError(err, this.#path));
    }
  }

  /** One write transaction: bumps the revision once if `fn` recorded any change. */
  #write<T>(db: DatabaseSync, fn: (w: PendingWrite) => T): T {
    const w: PendingWrite = { revision: this.#revision + 1, events: [] };
    let compactTo = this.#compactRevision;
    const result = atomic(db, () => {
      const result = fn(w);
      if (w.events.length > 0) {
        w.events.forEach((e, seq) => this.#s.addHistory.run(...historyParams(w.revision, seq, e)));
        this.#s.setMeta.run(w.revision, "revision");
        compactTo = Math.max(compactTo, w.revision - this.#historyLimit + 1);
        if (compactTo > this.#compactRevision) this.#dropHistory(compactTo);
      }
      return result;
    });
    if (w.events.length > 0) {
      this.#revision = w.revision;
      this.#compactRevision = compactTo;
      this.#hub.publish(w.revision, w.events);
    }
    return result;
  }

  #dropHistory(before: number): void {
    this.#s.dropHistory.run(before);
    this.#s.setMeta.run(before, "compact_revision");
  }

  #get(key: string): KeyValue | undefined {
    const row = this.#s.getKey.get(key) as KvRow | undefined;
    return row && toKeyValue(row);
  }

  /** The lease if it exists and has not expired, else NotFoundError. */
  #liveLease(id: number): { id: number; ttl: number; expires_at: number } {
    const row = this.#s.getLease.get(id) as
      | { id: number; ttl: number; expires_at: number }
      | undefined;
    if (!row || row.expires_at <= this.#clock.now()) throw new NotFoundError("lease", String(id));
    return row;
  }

  #put(w: PendingWrite, key: string, value: string, lease = 0): void {
    if (lease !== 0) this.#liveLease(lease);
    const prev = this.#get(key);
    const kv: KeyValue = {
      key,
      value,
      createRevision: prev?.createRevision ?? w.revision,
      modRevision: w.revision,
      version: (prev?.version ?? 0) + 1,
      lease,
    };
    this.#s.putKey.run(key, value, kv.createRevision, kv.modRevision, kv.version, lease);
    w.events.push(prev ? { type: "put", kv, prevKv: prev } : { type: "put", kv });
  }

  #delete(w: PendingWrite, kvs: KeyValue[]): number {
    for (const prev of kvs) {
      this.#s.deleteKey.run(prev.key);
      const kv = {
        key: prev.key,
        value: "",
        createRevision: 0,
        modRevision: w.revision,
        version: 0,
        lease: 0,
      };
      w.events.push({ type: "delete", kv, prevKv: prev });
    }
    return kvs.length;
  }

  #select(key: string, prefix: boolean | undefined): KeyValue[] {
    if (prefix) return selectPrefix(this.#s, key);
    const kv = this.#get(key);
    return kv ? [kv] : [];
  }

  #revoke(db: DatabaseSync, id: number): void {
    this.#write(db, (w) => {
      this.#delete(w, (this.#s.kvByLease.all(id) as unknown as KvRow[]).map(toKeyValue));
      this.#s.dropLease.run(id);
    });
  }

  #expire(): number {
    const db = this.#open();
    const ids = this.#s.expiredLeases.all(this.#clock.now()) as { id: number }[];
    for (const { id } of ids) this.#revoke(db, id);
    return ids.length;
  }

  get(key: string): Promise<KeyValue | undefined> {
    return this.#run(() => {
      checkKey(key);
      return this.#get(key);
    });
  }

  list(prefix: string): Promise<ListResult> {
    return this.#run(() => {
      checkPrefix(prefix);
      return { kvs: selectPrefix(this.#s, prefix), revision: this.#revision };
    });
  }

  put(key: string, value: string, options?: { lease?: number }): Promise<{ revision: number }> {
    return this.#run((db) => {
      checkKey(key);
      checkValue(value);
      if (options?.lease !== undefined) checkCount(options.lease, "lease");
      this.#write(db, (w) => this.#put(w, key, value, options?.lease));
      return { revision: this.#revision };
    });
  }

  delete(
    key: string,
    options?: { prefix?: boolean },
  ): Promise<{ revision: number; deleted: number }> {
    return this.#run((db) => {
      if (options?.prefix) checkPrefix(key);
      else checkKey(key);
      const deleted = this.#write(db, (w) => this.#delete(w, this.#select(key, options?.prefix)));
      return { revision: this.#revision, deleted };
    });
  }

  txn(compares: Compare[], success: Op[], failure: Op[] = []): Promise<TxnResult> {
    return this.#run((db) => {
      if (!Array.isArray(compares)) {
        throw new InvalidArgumentError("compares must be an array", { field: "compares" });
      }
      compares.forEach(checkCompare);
      checkOps(success, "success");
      checkOps(failure, "failure");
      const { succeeded, results } = this.#write(db, (w) => {
        const succeeded = compares.every((c) => compareHolds(c, this.#get(c.key)));
        const results = (succeeded ? success : failure).map((op): OpResult => {
          switch (op.type) {
            case "put":
              this.#put(w, op.key, op.value, op.lease);
              return { type: "put", revision: w.revision };
            case "delete":
              return { type: "delete", deleted: this.#delete(w, this.#select(op.key, op.prefix)) };
            case "get":
              return { type: "get", kvs: this.#select(op.key, op.prefix) };
          }
        });
        return { succeeded, results };
      });
      return { succeeded, revision: this.#revision, responses: results };
    });
  }

  watch(prefix: string, options: WatchOptions = {}): Watch {
    try {
      this.#open();
      checkPrefix(prefix);
      if (options.startRevision !== undefined) checkCount(options.startRevision, "startRevision");
      const start = options.startRevision || this.#revision + 1;
      return this.#hub.create(prefix, start, options.prevKv === true);
    } catch (err) {
      return this.#hub.failed(mapError(err, this.#path));
    }
  }

  grantLease(ttlSeconds: number): Promise<number> {
    return this.#run(() => {
      checkCount(ttlSeconds, "ttlSeconds", 1);
      if (ttlSeconds > MAX_TTL_SECONDS) {
        throw new InvalidArgumentError(`ttlSeconds must be <= ${MAX_TTL_SECONDS}`, {
          field: "ttlSeconds",
        });
      }
      const row = this.#s.addLease.get(ttlSeconds, this.#clock.now() + ttlSeconds * 1000);
      return Number(row!.id);
    });
  }

  keepAlive(lease: number): Promise<number> {
    return this.#run(() => {
      checkCount(lease, "lease", 1);
      const row = this.#liveLease(lease);
      this.#s.renewLease.run(this.#clock.now() + row.ttl * 1000, lease);
      return row.ttl;
    });
  }

  revokeLease(lease: number): Promise<void> {
    return this.#run((db) => {
      checkCount(lease, "lease", 1);
      if (!this.#s.getLease.get(lease)) throw new NotFoundError("lease", String(lease));
      this.#revoke(db, lease);
    });
  }

  /** Runs one lease sweep now; resolves to the number of leases expired. */
  expireLeases(): Promise<number> {
    return this.#run(() => this.#expire());
  }

  compact(revision: number): Promise<void> {
    return this.#run((db) => {
      checkCount(revision, "revision", 1);
      if (revision > this.#revision) {
        throw new InvalidArgumentError(
          `cannot compact to revision ${revision}: current revision is ${this.#revision}`,
          { field: "revision" },
        );
      }
      if (revision <= this.#compactRevision) return;
      atomic(db, () => this.#dropHistory(revision));
      this.#compactRevision = revision;
    });
  }

  currentRevision(): Promise<number> {
    return this.#run(() => this.#revision);
  }

  /** Oldest revision still in history (watches from earlier revisions get "compacted"). */
  compactRevision(): Promise<number> {
    return this.#run(() => this.#compactRevision);
  }

  close(): Promise<void> {
    const db = this.#db;
    if (!db) return Promise.resolve();
    this.#db = undefined;
    clearInterval(this.#timer);
    this.#hub.closeAll();
    try {
      db.close();
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(mapError(err, this.#path));
    }
  }
}
