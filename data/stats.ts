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

const KINDS = OP_KINDS.length;
// Float64 offsets of one slot's fields.
const OPS = 0;
const BYTES = OPS + KINDS;
const ERRORS = BYTES + KINDS;
const BUCKETS = ERRORS + KINDS;
const SUM = BUCKETS + KINDS * NB;
const CONNECTIONS = SUM + KINDS;
const PROTOCOL_ERRORS = CONNECTIONS + 1;
/** Float64 values in one slot. */
const SLOT = PROTOCOL_ERRORS + 1;

/**
 * Counters for one volume, indexed by the OP_* constants. The counters live in one slot per
 * thread that serves the volume (the main thread and each data worker, data/pool/), all in
 * one SharedArrayBuffer: each thread writes only its own slot, without atomics, and readers
 * (metrics, `volume get`) add the slots up. Nothing is copied between threads, and no count
 * is lost to two threads updating one number.
 */
export class VolumeStats {
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  readonly slots: number;
  readonly #all: Float64Array;
  /** This thread's slot. */
  readonly #mine: Float64Array;

  /**
   * Statistics of `volume`. With `shared`, a view of that buffer writing slot `slot`;
   * otherwise a private buffer with one slot.
   */
  constructor(
    readonly volume: string,
    shared?: { buffer: SharedArrayBuffer; slot: number },
  ) {
    this.buffer = shared?.buffer ?? new ArrayBuffer(SLOT * 8);
    this.#all = new Float64Array(this.buffer);
    this.slots = this.#all.length / SLOT;
    const slot = shared?.slot ?? 0;
    if (!Number.isInteger(this.slots) || slot < 0 || slot >= this.slots) {
      throw new RangeError(`stats slot ${slot} outside a buffer of ${this.slots} slots`);
    }
    this.#mine = this.#all.subarray(slot * SLOT, (slot + 1) * SLOT);
  }

  /** A zeroed buffer for `slots` threads to share. */
  static sharedBuffer(slots: number): SharedArrayBuffer {
    return new SharedArrayBuffer(slots * SLOT * 8);
  }

  /** Counts one completed request. `seconds` is its service time. */
  record(kind: number, bytes: number, seconds: number, failed: boolean): void {
    const m = this.#mine;
    m[OPS + kind]++;
    if (failed) m[ERRORS + kind]++;
    else m[BYTES + kind] += bytes;
    m[SUM + kind] += seconds;
    let b = 0;
    while (b < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[b]) b++;
    m[BUCKETS + kind * NB + b]++;
  }

  /** Counts a malformed request seen on a connection to this volume. */
  countProtocolError(): void {
    this.#mine[PROTOCOL_ERRORS]++;
  }

  /** Sets the number of this thread's open connections to the volume. */
  setConnections(n: number): void {
    this.#mine[CONNECTIONS] = n;
  }

  /** Clears the open connections of `slot` (a thread that is gone). */
  clearConnections(slot: number): void {
    if (slot >= 0 && slot < this.slots) this.#all[slot * SLOT + CONNECTIONS] = 0;
  }

  #sum(at: number, length: number): Float64Array {
    const out = new Float64Array(length);
    for (let s = 0; s < this.slots; s++) {
      const base = s * SLOT + at;
      for (let i = 0; i < length; i++) out[i] += this.#all[base + i];
    }
    return out;
  }

  /** Requests completed, per kind (all threads). */
  get ops(): Float64Array {
    return this.#sum(OPS, KINDS);
  }
  /** Bytes of successful requests, per kind. */
  get bytes(): Float64Array {
    return this.#sum(BYTES, KINDS);
  }
  /** Failed requests, per kind. */
  get errors(): Float64Array {
    return this.#sum(ERRORS, KINDS);
  }
  /** Sum of service times (seconds), per kind. */
  get latencySum(): Float64Array {
    return this.#sum(SUM, KINDS);
  }
  /** Open NBD connections to this volume (all threads). */
  get connections(): number {
    return this.#sum(CONNECTIONS, 1)[0];
  }
  /** Protocol errors (bad requests) seen on connections to this volume. */
  get protocolErrors(): number {
    return this.#sum(PROTOCOL_ERRORS, 1)[0];
  }

  /** Cumulative bucket counts for one kind (Prometheus `le` semantics), last is +Inf. */
  cumulativeBuckets(kind: number): number[] {
    const counts = this.#sum(BUCKETS + kind * NB, NB);
    const out: number[] = [];
    let acc = 0;
    for (let b = 0; b < NB; b++) {
      acc += counts[b];
      out.push(acc);
    }
    return out;
  }
}
