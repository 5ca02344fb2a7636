/**
 * Schema, migrations and row mapping of the embedded state store (private).
 *
 * meta     name -> integer: schema_version, revision, compact_revision.
 * kv       the live keys with etcd's createRevision / modRevision / version / lease.
 * leases   id, ttl (s), expires_at (ms on the store's clock).
 * history  one row per change (put or delete), keyed by (revision, seq), with the
 *          previous value of the key; watches replay from it. Rows before
 *          compact_revision are gone.
 * @module
 */

import type { DatabaseSync } from "node:sqlite";
import { FailedPreconditionError } from "../../../mod/errors.ts";
import type { KeyValue, WatchEvent } from "../mod.ts";

/** Migration i (0-based) takes the schema from version i to version i + 1. Append only. */
const MIGRATIONS: readonly string[] = [
  `CREATE TABLE kv (
     key TEXT PRIMARY KEY,
     value TEXT NOT NULL,
     create_revision INTEGER NOT NULL,
     mod_revision INTEGER NOT NULL,
     version INTEGER NOT NULL,
     lease INTEGER NOT NULL
   ) STRICT, WITHOUT ROWID;
   CREATE INDEX kv_by_lease ON kv (lease) WHERE lease != 0;
   CREATE TABLE leases (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     ttl INTEGER NOT NULL,
     expires_at INTEGER NOT NULL
   ) STRICT;
   CREATE INDEX leases_by_expiry ON leases (expires_at);
   CREATE TABLE history (
     revision INTEGER NOT NULL,
     seq INTEGER NOT NULL,
     type TEXT NOT NULL CHECK (type IN ('put', 'delete')),
     key TEXT NOT NULL,
     value TEXT NOT NULL,
     create_revision INTEGER NOT NULL,
     version INTEGER NOT NULL,
     lease INTEGER NOT NULL,
     prev_value TEXT,
     prev_create_revision INTEGER,
     prev_mod_revision INTEGER,
     prev_version INTEGER,
     prev_lease INTEGER,
     PRIMARY KEY (revision, seq)
   ) STRICT, WITHOUT ROWID;
   INSERT INTO meta (name, value) VALUES ('revision', 1), ('compact_revision', 0);`,
];

/** The schema version this code writes. */
export const SCHEMA_VERSION = MIGRATIONS.length;

/** Creates or upgrades the schema. Refuses a database written by newer code. */
export function migrate(db: DatabaseSync, path: string): void {
  db.exec("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT");
  const row = db.prepare("SELECT value FROM meta WHERE name = 'schema_version'").get();
  const current = row ? Number(row.value) : 0;
  if (current > SCHEMA_VERSION) {
    throw new FailedPreconditionError(
      `state database ${path} has schema version ${current}; this build knows up to ${SCHEMA_VERSION}`,
      { path, schemaVersion: current },
    );
  }
  for (let v = current; v < SCHEMA_VERSION; v++) {
    db.exec("BEGIN IMMEDIATE");
    try {
      db.exec(MIGRATIONS[v]);
      db.prepare("INSERT OR REPLACE INTO meta (name, value) VALUES ('schema_version', ?)").run(
        v + 1,
      );
      db.exec("COMMIT");
    } catch (err) {
      db.exec("ROLLBACK");
      throw err;
    }
  }
}

/**
 * The half-open key range [start, end) holding exactly the keys that begin with
 * `prefix` (end undefined: no upper bound). SQLite's BINARY collation compares UTF-8
 * bytes, which orders like code points, so bumping the last code point is exact.
 */
export function prefixRange(prefix: string): { start: string; end?: string } {
  const points = Array.from(prefix, (c) => c.codePointAt(0)!);
  while (points.length > 0) {
    let last = points.pop()! + 1;
    if (last === 0xd800) last = 0xe000; // skip the surrogate block
    if (last <= 0x10ffff) {
      points.push(last);
      return { start: prefix, end: String.fromCodePoint(...points) };
    }
  }
  return { start: prefix };
}

/** A kv table row. */
export interface KvRow {
  key: string;
  value: string;
  create_revision: number;
  mod_revision: number;
  version: number;
  lease: number;
}

export function toKeyValue(r: KvRow): KeyValue {
  return {
    key: r.key,
    value: r.value,
    createRevision: r.create_revision,
    modRevision: r.mod_revision,
    version: r.version,
    lease: r.lease,
  };
}

/** A history table row. */
export interface HistoryRow {
  revision: number;
  seq: number;
  type: "put" | "delete";
  key: string;
  value: string;
  create_revision: number;
  version: number;
  lease: number;
  prev_value: string | null;
  prev_create_revision: number | null;
  prev_mod_revision: number | null;
  prev_version: number | null;
  prev_lease: number | null;
}

/** Parameters for inserting one history row, in column order. */
export function historyParams(
  revision: number,
  seq: number,
  e: WatchEvent,
): (string | number | null)[] {
  const p = e.prevKv;
  return [
    revision,
    seq,
    e.type,
    e.kv.key,
    e.kv.value,
    e.kv.createRevision,
    e.kv.version,
    e.kv.lease,
    p?.value ?? null,
    p?.createRevision ?? null,
    p?.modRevision ?? null,
    p?.version ?? null,
    p?.lease ?? null,
  ];
}

export function toWatchEvent(r: HistoryRow): WatchEvent {
  const event: WatchEvent = {
    type: r.type,
    kv: {
      key: r.key,
      value: r.value,
      createRevision: r.create_revision,
      modRevision: r.revision,
      version: r.version,
      lease: r.lease,
    },
  };
  if (r.prev_value !== null) {
    event.prevKv = {
      key: r.key,
      value: r.prev_value,
      createRevision: r.prev_create_revision!,
      modRevision: r.prev_mod_revision!,
      version: r.prev_version!,
      lease: r.prev_lease!,
    };
  }
  return event;
}
