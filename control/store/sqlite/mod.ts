/**
 * The embedded state store: the StateStore contract on node:sqlite, for a single node
 * running without etcd.
 * @module
 */

export { SqliteStateStore, type SqliteStateStoreOptions } from "./sqlite_store.ts";
