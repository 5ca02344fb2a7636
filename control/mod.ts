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
export { createLogger, type Logger, type LogFormat, type LogLevel, silentLogger } from "./log.ts";
