/**
 * The state store: the etcd-shaped contract every control package is written against
 * (state_store.ts), the transaction rules both implementations follow, the read cache for
 * etcd outages and the list-then-watch loop. The implementations are the sub-packages
 * store/sqlite/ (embedded, single node) and store/etcd/ (cluster mode).
 * @module
 */

export type {
  Compare,
  KeyValue,
  ListResult,
  Op,
  OpResult,
  StateStore,
  TxnResult,
  Watch,
  WatchEvent,
  WatchMessage,
  WatchOptions,
} from "./state_store.ts";
export {
  checkCompare,
  checkCount,
  checkKey,
  checkOps,
  checkPrefix,
  checkValue,
  compareHolds,
} from "./txn_rules.ts";
export {
  freshGet,
  type ReadCacheOptions,
  ReadCacheStore,
  type StaleMark,
  withStaleTracking,
} from "./read_cache.ts";
export {
  FOLLOW_BACKOFF_MS,
  type FollowHandlers,
  type FollowOptions,
  followPrefix,
} from "./follow_prefix.ts";
