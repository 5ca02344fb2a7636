/**
 * The state store: an etcd-shaped key-value model that the control plane is written
 * against. Two implementations exist: the embedded one on node:sqlite (single node,
 * no etcd configured) and, in cluster mode, etcd itself. Both pass the same contract
 * suite (tests/control/store/state_store_contract.ts).
 *
 * The model follows etcd v3: one global revision counter bumped by every write
 * transaction; each key carries createRevision, modRevision and version; writes may
 * be attached to a lease and vanish when it expires; watches deliver every change
 * after a given revision, in order, or report that the revision was compacted so
 * the caller must re-list.
 * @module
 */

/** One stored key. Values are strings (Ballast stores JSON). */
export interface KeyValue {
  key: string;
  value: string;
  /** Revision of the transaction that created this key (since its last delete). */
  createRevision: number;
  /** Revision of the last transaction that modified this key. */
  modRevision: number;
  /** Number of modifications since creation; 1 after the first put. */
  version: number;
  /** Lease the key is attached to, 0 for none. */
  lease: number;
}

/** A condition in a transaction. A missing key has version, createRevision and modRevision 0. */
export type Compare =
  | {
    key: string;
    target: "version" | "createRevision" | "modRevision";
    op: "==" | "!=" | "<" | ">";
    value: number;
  }
  | { key: string; target: "value"; op: "==" | "!="; value: string }
  | { key: string; target: "lease"; op: "==" | "!="; value: number };

/** An operation inside a transaction. */
export type Op =
  | { type: "put"; key: string; value: string; lease?: number }
  | { type: "delete"; key: string; prefix?: boolean }
  | { type: "get"; key: string; prefix?: boolean };

/** Result of one Op: the keys read (get) or the number of keys deleted (delete). */
export type OpResult =
  | { type: "put"; revision: number }
  | { type: "delete"; deleted: number }
  | { type: "get"; kvs: KeyValue[] };

/** Result of a transaction. */
export interface TxnResult {
  /** Whether every compare held (so the success branch ran). */
  succeeded: boolean;
  /** Store revision after the transaction (unchanged if it wrote nothing). */
  revision: number;
  responses: OpResult[];
}

/** One change seen by a watch. */
export interface WatchEvent {
  type: "put" | "delete";
  /** For delete: key with modRevision = deleting revision and empty value. */
  kv: KeyValue;
  prevKv?: KeyValue;
}

/** What a watch delivers: a batch of events, or notice that history was compacted. */
export type WatchMessage =
  | { kind: "events"; events: WatchEvent[]; revision: number }
  | {
    kind: "compacted";
    /** Oldest revision still available; re-list, then watch from the list revision + 1. */
    compactRevision: number;
  };

export interface WatchOptions {
  /** Deliver changes with modRevision >= startRevision (default: only future changes). */
  startRevision?: number;
  /** Also deliver the previous value with each event. */
  prevKv?: boolean;
}

/** A running watch; iterate it, cancel it to stop. */
export interface Watch extends AsyncIterable<WatchMessage> {
  cancel(): void;
}

export interface ListResult {
  kvs: KeyValue[];
  /** Store revision at which the list was taken. */
  revision: number;
}

/** The store interface. All methods reject with UnavailableError when the store cannot be reached. */
export interface StateStore {
  /** Human name of the implementation, e.g. "embedded (sqlite: /data/state.db)". */
  readonly description: string;
  get(key: string): Promise<KeyValue | undefined>;
  /** All keys with the prefix, sorted by key. */
  list(prefix: string): Promise<ListResult>;
  put(key: string, value: string, options?: { lease?: number }): Promise<{ revision: number }>;
  delete(
    key: string,
    options?: { prefix?: boolean },
  ): Promise<{ revision: number; deleted: number }>;
  /** Atomic compare-and-swap: if every compare holds run `success`, else `failure`. */
  txn(compares: Compare[], success: Op[], failure?: Op[]): Promise<TxnResult>;
  /** Watch every key with the prefix. */
  watch(prefix: string, options?: WatchOptions): Watch;
  /** Grants a lease living `ttlSeconds` after its last keep-alive. Returns the lease id. */
  grantLease(ttlSeconds: number): Promise<number>;
  /** Refreshes a lease. Rejects with NotFoundError if it has expired. Returns the TTL granted. */
  keepAlive(lease: number): Promise<number>;
  /** Revokes a lease now, deleting its keys. */
  revokeLease(lease: number): Promise<void>;
  /** Discards history before `revision`; watches from earlier revisions get "compacted". */
  compact(revision: number): Promise<void>;
  /** Current store revision. */
  currentRevision(): Promise<number>;
  close(): Promise<void>;
}
