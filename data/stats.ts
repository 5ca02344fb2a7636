/**
 * Per-volume I/O statistics, updated on the NBD hot path without allocation and
 * rendered as Prometheus metrics by the control plane.
 * @module
 */

/** Operation kinds counted separately. */
export const OP_KINDS = [
  "read",
  "write",
  "flush",
  "trim",
  "write_zeroes",
  "block_status",
  "cache",
] as const;
export type OpKind = typeof OP_KINDS[number];
export const OP_READ = 0;
export const OP_WRITE = 1;
export const OP_FLUSH = 2;
export const OP_TRIM = 3;
export const OP_WRITE_ZEROES = 4;
export const OP_BLOCK_STATUS = 5;
export const OP_CACHE = 6;

/** Upper bounds (seconds) of the latency histogram buckets; +Inf is implicit. */
export const LATENCY_BUCKETS: readonly number[] = [
  0.00001,
  0.000025,
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
];
const NB = LATENCY_BUCKETS.length + 1;

/** Counters for one volume. Arrays are indexed by the OP_* constants. */
export class VolumeStats {
  readonly ops = new Float64Array(OP_KINDS.length);
  readonly bytes = new Float64Array(OP_KINDS.length);
  readonly errors = new Float64Array(OP_KINDS.length);
  /** Non-cumulative bucket counts: [kind * NB + bucket]; the last bucket of a kind is +Inf. */
  readonly latencyBuckets = new Float64Array(OP_KINDS.length * NB);
  readonly latencySum = new Float64Array(OP_KINDS.length);
  /** Open NBD connections to this volume. */
  connections = 0;
  /** Protocol errors (bad requests) seen on connections to this volume. */
  protocolErrors = 0;

  constructor(readonly volume: string) {}

  /** Counts one completed request. `seconds` is its service time. */
  record(kind: number, bytes: number, seconds: number, failed: boolean): void {
    this.ops[kind]++;
    if (failed) {
      this.errors[kind]++;
    } else {
      this.bytes[kind] += bytes;
    }
    this.latencySum[kind] += seconds;
    let b = 0;
    while (b < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[b]) b++;
    this.latencyBuckets[kind * NB + b]++;
  }

  /** Cumulative bucket counts for one kind (Prometheus `le` semantics), last is +Inf. */
  cumulativeBuckets(kind: number): number[] {
    const out: number[] = [];
    let acc = 0;
    for (let b = 0; b < NB; b++) {
      acc += this.latencyBuckets[kind * NB + b];
      out.push(acc);
    }
    return out;
  }
}
