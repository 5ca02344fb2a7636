/**
 * `ballast serve`: the assembly of one node (data-dir lock, state store, TLS, cluster
 * trust, data plane, volumes, nodes, API) and its configuration, resolved from flags,
 * environment and file by one pure function.
 * @module
 */

export {
  type ConfigFile,
  type EtcdConfig,
  parseEtcdUrls,
  resolveConfig,
  type ServeConfig,
  type ServeFlags,
  SETTINGS,
} from "./config.ts";
export { exitOnSignal, serve, type Server } from "./serve.ts";
