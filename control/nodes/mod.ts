/**
 * Node membership: the registry (each node's record, its leased liveness key and cordon
 * in the store, and the derived state ready / unreachable / down / cordoned), the liveness
 * keys other packages guard transactions with, the probe that tells "unreachable", the
 * crash watch that ends a dead process's lease at once (crash_watch.ts), and this node's
 * client of the other nodes' node-to-node API (peer_api.ts).
 * @module
 */

export {
  ALIVE_SUFFIX,
  aliveKey,
  cordonKey,
  livenessCompares,
  NODE_PREFIX,
  NodeRegistry,
  type NodeRegistryOptions,
} from "./registry.ts";
export {
  type CrashCheck,
  type CrashCounts,
  CrashWatch,
  type CrashWatchOptions,
  type Dial,
  type DialResult,
  listenersOf,
} from "./crash_watch.ts";
export { NodeProbe, type NodeProbeOptions, type ProbeCredentials } from "./probe.ts";
export { PeerApi, type PeerApiOptions } from "./peer_api.ts";
