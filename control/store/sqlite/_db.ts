/**
 * Opening the embedded store's database, its prepared statements and the queries
 * shared by the store and its watches (private).
 * @module
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import {
  BallastError,
  errorMessage,
  ResourceExhaustedError,
  toBallastError,
  UnavailableError,
} from "../../../mod/errors.ts";
import type { KeyValue, WatchEvent } from "../mod.ts";
import {
  type HistoryRow,
  type KvRow,
  migrate,
  prefixRange,
  toKeyValue,
  toWatchEvent,
} from "./_schema.ts";

/** Maps anything thrown by sqlite (or already a BallastError) to a BallastError. */
export function mapError(err: unknown, path: string): BallastError {
  if (err instanceof BallastError) return err;
  const msg = errorMessage(err);
  if (/database is locked|database table is locked/i.test(msg)) {
    return new UnavailableError(`state database ${path} is locked by another process`, {
      cause: err,
    });
  }
  if (/database or disk is full/i.test(msg)) {
    return new ResourceExhaustedError(`state database ${path}: disk is full`, { cause: err });
  }
  return toBallastError(err);
}

/**
 * Opens `path` with the durability settings the store relies on and brings the
 * schema up to date. Exclusive locking: the first process to open the file keeps
 * it until close (or death); others fail after the busy timeout.
 */
export function openDatabase(path: string, busyTimeoutMs: number): DatabaseSync {
  let db: DatabaseSync | undefined;
  try {
    if (path !== ":memory:") keepPrivate(path);
    db = new DatabaseSync(path);
    db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`);
    if (path !== ":memory:") db.exec("PRAGMA locking_mode = EXCLUSIVE");
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = FULL");
    migrate(db, path);
    if (path !== ":memory:") keepPrivate(path);
    return db;
  } catch (err) {
    try {
      db?.close();
    } catch { /* already failing */ }
    throw mapError(err, path);
  }
}

/** Mode of the database and its side files: the service user's only (cluster state, leases). */
export const DB_FILE_MODE = 0o600;

/**
 * Creates the database file 0600 if it is missing (SQLite gives its WAL, SHM and journal
 * files the database's mode) and sets 0600 on those that exist, fixing older 0644 ones.
 */
function keepPrivate(path: string): void {
  try {
    Deno.openSync(path, { createNew: true, write: true, mode: DB_FILE_MODE }).close();
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
  }
  for (const f of [path, `${path}-wal`, `${path}-shm`, `${path}-journal`]) {
    try {
      if ((Deno.statSync(f).mode! & 0o777) !== DB_FILE_MODE) Deno.chmodSync(f, DB_FILE_MODE);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
}

/** Runs `fn` in one IMMEDIATE transaction; rolls back if it throws. */
export function atomic<T>(db: DatabaseSync, fn: () => T): T {
  db.exec("BEGIN IMMEDIATE");
  try {
    const result = fn();
    db.exec("COMMIT");
    return result;
  } catch (err) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw err;
  }
}

export type Statements = ReturnType<typeof prepareStatements>;

export function prepareStatements(db: DatabaseSync) {
  const p = (sql: string): StatementSync => db.prepare(sql);
  const historyWhere = "revision >= ? AND key >= ?";
  return {
    getKey: p("SELECT * FROM kv WHERE key = ?"),
    kvFrom: p("SELECT * FROM kv WHERE key >= ? ORDER BY key"),
    kvRange: p("SELECT * FROM kv WHERE key >= ? AND key < ? ORDER BY key"),
    kvByLease: p("SELECT * FROM kv WHERE lease = ? ORDER BY key"),
    putKey: p(
      `INSERT OR REPLACE INTO kv (key, value, create_revision, mod_revision, version, lease)
       VALUES (?, ?, ?, ?, ?, ?)`,
    ),
    deleteKey: p("DELETE FROM kv WHERE key = ?"),
    addHistory: p(`INSERT INTO history VALUES (${Array(13).fill("?").join(", ")})`),
    historyFrom: p(`SELECT * FROM history WHERE ${historyWhere} ORDER BY revision, seq LIMIT ?`),
    historyRange: p(
      `SELECT * FROM history WHERE ${historyWhere} AND key < ? ORDER BY revision, seq LIMIT ?`,
    ),
    historyRestOf: p("SELECT * FROM history WHERE revision = ? AND seq > ? ORDER BY seq"),
    dropHistory: p("DELETE FROM history WHERE revision < ?"),
    setMeta: p("UPDATE meta SET value = ? WHERE name = ?"),
    getMeta: p("SELECT value FROM meta WHERE name = ?"),
    getLease: p("SELECT id, ttl, expires_at FROM leases WHERE id = ?"),
    addLease: p("INSERT INTO leases (ttl, expires_at) VALUES (?, ?) RETURNING id"),
    renewLease: p("UPDATE leases SET expires_at = ? WHERE id = ?"),
    dropLease: p("DELETE FROM leases WHERE id = ?"),
    expiredLeases: p("SELECT id FROM leases WHERE expires_at <= ? ORDER BY expires_at, id"),
  };
}

/** Live keys starting with `prefix`, sorted by key (UTF-8 byte order, as etcd). */
export function selectPrefix(s: Statements, prefix: string): KeyValue[] {
  const { start, end } = prefixRange(prefix);
  const rows = end === undefined ? s.kvFrom.all(start) : s.kvRange.all(start, end);
  return (rows as unknown as KvRow[]).map(toKeyValue);
}

/**
 * History events of keys with `prefix` from revision `from` on, about `limit` at
 * most but always whole revisions; `more` says there may be further events.
 */
export function readHistory(
  s: Statements,
  prefix: string,
  from: number,
  limit: number,
): { events: { revision: number; event: WatchEvent }[]; more: boolean } {
  const { start, end } = prefixRange(prefix);
  const rows =
    (end === undefined
      ? s.historyFrom.all(from, start, limit)
      : s.historyRange.all(from, start, end, limit)) as unknown as HistoryRow[];
  const more = rows.length >= limit;
  if (more) {
    const last = rows[rows.length - 1];
    for (const r of s.historyRestOf.all(last.revision, last.seq) as unknown as HistoryRow[]) {
      if (r.key.startsWith(prefix)) rows.push(r);
    }
  }
  return { events: rows.map((r) => ({ revision: r.revision, event: toWatchEvent(r) })), more };
}
