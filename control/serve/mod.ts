/**
 * `ballast serve`: the assembly of one node (data-dir lock, state store, TLS, cluster
 * trust, data plane, volumes, nodes, API) and its configuration, resolved from flags,
 * environment and file by one pure function.
 * @module
 */

export { resolveConfig, type ServeConfig } from "./config.ts";
export { type ConfigFile, type ServeFlags, SETTINGS } from "./settings.ts";
export type { EtcdConfig } from "./_etcd_config.ts";
export { serve, type Server } from "./serve.ts";
export {
  exitOnSignal,
  type FirstSignal,
  SAME_SIGNAL_MS,
  type SignalAction,
  signalAction,
} from "./signals.ts";
