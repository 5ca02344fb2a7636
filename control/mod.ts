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
} from "./state_store.ts";
export { createLogger, type LogFormat, type Logger, type LogLevel, silentLogger } from "./log.ts";
export { type Clock, FakeClock, systemClock } from "./clock.ts";
export { SqliteStateStore, type SqliteStateStoreOptions } from "./sqlite_store.ts";
export {
  type ReconcileReport,
  VOLUME_PREFIX,
  type VolumeRecord,
  VolumeService,
  type VolumeServiceOptions,
} from "./volumes.ts";
export { NODE_PREFIX, NodeRegistry, type NodeRegistryOptions } from "./nodes.ts";
export { type ApiDeps, createApi } from "./api.ts";
export {
  type ListenAddress,
  parseListen,
  resolveConfig,
  type ServeConfig,
  type ServeFlags,
} from "./config.ts";
export { exitOnSignal, serve, type Server } from "./serve.ts";
export { EtcdStateStore } from "./etcd_store.ts";
