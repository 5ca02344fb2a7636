/**
 * The data worker pool: NBD connections served on Web Workers whose number grows and
 * shrinks with load (sizing.ts), with the main thread accepting and handing each connection
 * over (pool.ts) through the typed, versioned messages of protocol.ts.
 * @module
 */

export { usableCores } from "./_cpu.ts";
export { type PoolStatus, WorkerPool, type WorkerPoolOptions } from "./pool.ts";
export {
  type FromWorker,
  type ListenerKind,
  POOL_PROTOCOL_VERSION,
  type ToWorker,
  type WorkerTls,
  type WorkerVolume,
} from "./protocol.ts";
export {
  busyRatio,
  decide,
  DEFAULT_TIMINGS,
  describePool,
  initialSizing,
  place,
  type SizingAction,
  type SizingState,
  type SizingTimings,
  type WorkerSample,
} from "./sizing.ts";
