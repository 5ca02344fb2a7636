/**
 * The control plane: state store, volume and node services, the HTTP API, the CLI
 * and the `serve` entry point. Each package below has its own mod.ts; this one gathers
 * what embedders use (docs/ARCHITECTURE.md draws which package may import which).
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
} from "./store/mod.ts";
export {
  type Clock,
  createLogger,
  FakeClock,
  type ListenAddress,
  type LogFormat,
  type Logger,
  type LogLevel,
  parseListen,
  silentLogger,
  systemClock,
} from "./common/mod.ts";
export { SqliteStateStore, type SqliteStateStoreOptions } from "./store/sqlite/mod.ts";
export { EtcdStateStore } from "./store/etcd/mod.ts";
export {
  type ReconcileReport,
  VOLUME_PREFIX,
  type VolumeRecord,
  VolumeService,
  type VolumeServiceOptions,
} from "./volumes/mod.ts";
export { NODE_PREFIX, NodeRegistry, type NodeRegistryOptions } from "./nodes/mod.ts";
export { type ApiDeps, createApi } from "./api/mod.ts";
export {
  exitOnSignal,
  resolveConfig,
  serve,
  type ServeConfig,
  type ServeFlags,
  type Server,
} from "./serve/mod.ts";
