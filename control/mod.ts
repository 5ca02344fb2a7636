/**
 * The control plane: state store, volume and node services, the HTTP API, the CLI
 * and the `serve` entry point.
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
} from "./store/state_store.ts";
export { createLogger, type LogFormat, type Logger, type LogLevel, silentLogger } from "./common/log.ts";
export { type Clock, FakeClock, systemClock } from "./common/clock.ts";
export { SqliteStateStore, type SqliteStateStoreOptions } from "./store/sqlite/sqlite_store.ts";
export {
  type ReconcileReport,
  VOLUME_PREFIX,
  type VolumeRecord,
  VolumeService,
  type VolumeServiceOptions,
} from "./volumes/service.ts";
export { NODE_PREFIX, NodeRegistry, type NodeRegistryOptions } from "./nodes/registry.ts";
export { type ApiDeps, createApi } from "./api/app.ts";
export {
  type ListenAddress,
  parseListen,
  resolveConfig,
  type ServeConfig,
  type ServeFlags,
} from "./serve/config.ts";
export { exitOnSignal, serve, type Server } from "./serve/serve.ts";
export { EtcdStateStore } from "./store/etcd/etcd_store.ts";
