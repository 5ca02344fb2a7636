/**
 * The region table of one volume copy: a word per region (REGION_BYTES of the copy) in
 * shared memory, read and changed with Atomics by every thread that writes the copy.
 *
 *     bits 0..18   writes in flight in the region (entered, not yet left)
 *     bits 19..27  the thread those writes run on (1..511)
 *     bit  28      LOCKED: the main thread holds the region alone (a resync copying it, or
 *                  the hash keeper rehashing it); no write enters until it is unlocked
 *     bit  29      DIRTY: the region may differ from its persisted hash (its mark in the
 *                  activity log is durable), see hash_state.ts
 *
 * and a second word per region counting the writes that ever entered it, so the main
 * thread can tell whether a region changed between two looks. A header word counts the dirty
 * regions (dirtyCount).
 *
 * Writes of one region from two threads never overlap in time: a write waits while another
 * thread has writes in flight there. Within one thread requests run in the order they are
 * applied, and a master sends each request to its replicas in the order it applied it
 * locally, so overlapping writes land in the same order on every member (NBD lets a server
 * order concurrent requests as it likes; replication must not order them differently on
 * two copies). Waiting uses Atomics.waitAsync; whoever brings the in-flight count to zero
 * or unlocks notifies.
 *
 * The buffer is a growable SharedArrayBuffer: a copy that grows keeps its table, and every
 * thread reaches the new regions (zero: clean, nothing in flight) through a view it makes
 * again the first time it asks for one past its old view.
 * @module
 */

/** Bytes per region: the unit of write tracking, locking, rehashing and coarse hashing. */
export const REGION_BYTES = 1024 * 1024;

const HEADER_WORDS = 4;
/** Header word 0: how many regions are dirty, so that the hash keeper of a quiet copy reads one word. */
const DIRTY_COUNT = 0;
const INFLIGHT = (1 << 19) - 1;
const OWNER_SHIFT = 19;
const OWNER = 0x1ff << OWNER_SHIFT;
const LOCKED = 1 << 28;
const DIRTY = 1 << 29;
/** Highest thread number a writer may use. */
export const MAX_THREAD = 0x1ff;
/** Re-check a wait at least this often (a missed notify costs no more than this). */
const WAIT_MS = 1000;
/** Largest copy a table grows to: Ballast's largest volume. */
const MAX_BYTES = 2 ** 50;

/** Every word of `buffer` as it is now: a fixed-length view (RegionTable's #w says why). */
function wordsOf(buffer: SharedArrayBuffer): Int32Array {
  return new Int32Array(buffer, 0, buffer.byteLength / 4);
}

/** Regions of a copy of `sizeBytes`. */
export function regionCount(sizeBytes: number): number {
  return Math.ceil(sizeBytes / REGION_BYTES);
}

/** The regions [first, last] that bytes [offset, offset + length) touch. */
export function regionSpan(offset: number, length: number): [number, number] {
  return [Math.floor(offset / REGION_BYTES), Math.floor((offset + length - 1) / REGION_BYTES)];
}

function bufferBytes(regions: number): number {
  return (HEADER_WORDS + 2 * regions) * 4;
}

/** What a thread needs to attach to a copy's table. */
export interface SharedRegions {
  buffer: SharedArrayBuffer;
}

export class RegionTable {
  readonly buffer: SharedArrayBuffer;
  /**
   * A fixed-length view of the words as long as the buffer was when it was made, made again
   * when a region past it is asked for (the buffer only grows). Not a length-tracking view:
   * V8 runs Atomics on a length-tracking view of a growable buffer about 4x slower (110 ns
   * against 26 for a load, a compare-exchange and an add) and reads its length at 16-19 ns,
   * which made entering and leaving a region cost a 4 KiB write 0.3 us
   * (`deno task bench:tracking`).
   */
  #w: Int32Array;

  /**
   * A table for a copy of `sizeBytes`, able to grow in place to 64 times that (at least
   * 4 TiB of copy; 8 bytes of address space per MiB are reserved, not used).
   */
  static create(sizeBytes: number): RegionTable {
    const n = regionCount(sizeBytes);
    const most = Math.min(regionCount(MAX_BYTES), Math.max(64 * n, regionCount(4 * 2 ** 40)));
    const buffer = new SharedArrayBuffer(bufferBytes(n), { maxByteLength: bufferBytes(most) });
    return new RegionTable({ buffer });
  }

  constructor(shared: SharedRegions) {
    this.buffer = shared.buffer;
    this.#w = wordsOf(this.buffer);
  }

  get count(): number {
    return (this.buffer.byteLength / 4 - HEADER_WORDS) / 2;
  }

  /**
   * Grows the table for a copy of `sizeBytes` (main thread, before the copy is announced
   * bigger). Throws RangeError past what the table reserved.
   */
  grow(sizeBytes: number): void {
    const want = bufferBytes(regionCount(sizeBytes));
    if (want <= this.buffer.byteLength) return;
    if (want > this.buffer.maxByteLength) {
      throw new RangeError(
        `the region table reserved room for ${
          (this.buffer.maxByteLength / 4 - HEADER_WORDS) / 2
        } MiB of copy; reopen the volume to grow it further`,
      );
    }
    this.buffer.grow(want);
  }

  /** The index of region `r`'s first word; this.#w covers both of its words afterwards. */
  #at(r: number): number {
    const i = HEADER_WORDS + 2 * r;
    if (r >= 0 && i + 1 < this.#w.length) return i;
    this.#w = wordsOf(this.buffer); // another thread may have grown it
    if (!(r >= 0 && i + 1 < this.#w.length)) {
      throw new RangeError(`region ${r} of ${this.count}`);
    }
    return i;
  }

  /**
   * Thread `me` enters region `r` for a write: false when it must wait (the region is
   * locked, or another thread has writes in flight there); see wait().
   */
  tryEnter(r: number, me: number): boolean {
    const i = this.#at(r);
    const w = this.#w;
    for (;;) {
      const v = Atomics.load(w, i);
      const n = v & INFLIGHT;
      if ((v & LOCKED) !== 0 || n === INFLIGHT) return false;
      if (n > 0 && (v & OWNER) >>> OWNER_SHIFT !== me) return false;
      const next = (v & DIRTY) | (me << OWNER_SHIFT) | (n + 1);
      if (Atomics.compareExchange(w, i, v, next) === v) {
        Atomics.add(w, i + 1, 1);
        return true;
      }
    }
  }

  /** A write entered with tryEnter() is done with region `r`. */
  leave(r: number): void {
    const i = this.#at(r);
    const w = this.#w;
    for (;;) {
      const v = Atomics.load(w, i);
      const n = v & INFLIGHT;
      if (n === 0) throw new Error(`region ${r} left more often than entered`);
      const next = n === 1 ? v & (DIRTY | LOCKED) : v - 1;
      if (Atomics.compareExchange(w, i, v, next) === v) {
        if (n === 1) Atomics.notify(w, i);
        return;
      }
    }
  }

  /**
   * Resolves when region `r`'s word changed from what it is now (or after a while). A timer
   * runs beside the wait: Deno does not keep a thread alive for Atomics.waitAsync alone.
   */
  wait(r: number): Promise<void> {
    const i = this.#at(r);
    const w = this.#w;
    const v = Atomics.load(w, i);
    const res = Atomics.waitAsync(w, i, v, WAIT_MS);
    if (!res.async) return Promise.resolve();
    let timer: ReturnType<typeof setTimeout> | undefined;
    return Promise.race([
      res.value,
      new Promise((resolve) => (timer = setTimeout(resolve, WAIT_MS))),
    ]).then(() => clearTimeout(timer));
  }

  /** Writes in flight in region `r`. */
  inFlight(r: number): number {
    const i = this.#at(r);
    return Atomics.load(this.#w, i) & INFLIGHT;
  }

  /** How many writes ever entered region `r` (wraps; compare for equality only). */
  changes(r: number): number {
    const i = this.#at(r);
    return Atomics.load(this.#w, i + 1);
  }

  isDirty(r: number): boolean {
    const i = this.#at(r);
    return (Atomics.load(this.#w, i) & DIRTY) !== 0;
  }

  isLocked(r: number): boolean {
    const i = this.#at(r);
    return (Atomics.load(this.#w, i) & LOCKED) !== 0;
  }

  /** Sets or clears a flag bit of region `r`; returns whether it was set before. */
  #flag(r: number, bit: number, on: boolean): boolean {
    const i = this.#at(r);
    const w = this.#w;
    for (;;) {
      const v = Atomics.load(w, i);
      const next = on ? v | bit : v & ~bit;
      if (next === v) return (v & bit) !== 0;
      if (Atomics.compareExchange(w, i, v, next) === v) {
        if (!on) Atomics.notify(w, i);
        return (v & bit) !== 0;
      }
    }
  }

  setDirty(r: number, dirty: boolean): void {
    if (this.#flag(r, DIRTY, dirty) !== dirty) Atomics.add(this.#w, DIRTY_COUNT, dirty ? 1 : -1);
  }

  /**
   * How many regions are dirty: counted as they change, on every thread, so that nothing needs
   * to look at every region of a large copy to learn that none is (a 15 TiB copy has 15.7
   * million; the hash keeper looked at each of them every second).
   */
  get dirtyCount(): number {
    return Atomics.load(this.#w, DIRTY_COUNT);
  }

  /**
   * Main thread: takes region `r` alone. New writes wait from now on; resolves once the
   * writes in flight there have left. Returns false at once if it is locked already (the
   * main thread is the only locker: the caller waits and tries again).
   */
  async lock(r: number): Promise<boolean> {
    if (this.#flag(r, LOCKED, true)) return false;
    while (this.inFlight(r) > 0) await this.wait(r);
    return true;
  }

  unlock(r: number): void {
    this.#flag(r, LOCKED, false);
  }

  /** Main thread: locks `r`, waiting for another holder of the lock to let go first. */
  async lockWaiting(r: number): Promise<void> {
    while (!await this.lock(r)) await this.wait(r);
  }
}
