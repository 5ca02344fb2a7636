/**
 * Write tracking on one thread for one volume copy: every data-changing request enters the
 * regions it touches before it changes the copy and leaves them when it is done (locally and,
 * on a master, on its replicas). Entering a region that is clean (its persisted hash still
 * describes it) first marks it dirty in the activity log beside the copy (`<copy>.al`, a byte
 * per region) and waits until that mark is durable: after a crash at any moment, every region
 * that may have changed since its hash was persisted is marked, and only those are rehashed
 * (DRBD's activity log plays the same part for its bitmap).
 *
 * Marks are written by the thread that needs them through its own descriptor and made durable
 * together (one fdatasync for every mark written meanwhile). Only the main thread clears marks
 * (hash_state.ts), holding the region locked with nothing in flight, so a clear and a mark never
 * race for the same byte.
 * @module
 */

import { REGION_BYTES, regionSpan, type RegionTable } from "./regions.ts";

const ONE = new Uint8Array([1]);
/**
 * Regions marked ahead of a sequential writer. Each region a write enters clean waits for an
 * fdatasync of the activity log, and a sequential stream of 1 MiB writes enters a new region
 * with every request: the first pass over a clean volume ran at one fdatasync per MiB per
 * connection (140-200 MiB/s over 4 connections, docs/BENCHMARKS.md, "Where the 4-connection
 * write CPU went"). A write that continues one of the last writes on this thread starts the
 * marks of the next regions without waiting for them, so the stream finds them durable when
 * it arrives. A region marked ahead that is never written costs one rehash by the keeper.
 */
export const MARK_AHEAD = 8;
/** Ends of this thread's latest writes: a write starting at one of them is sequential. */
const RECENT_ENDS = 4;

/** The activity log of a copy as one thread writes it: marks made durable in groups. */
export class MarkLog {
  readonly #file: Deno.FsFile;
  #syncing: Promise<void> | undefined;
  #next: Promise<void> | undefined;

  constructor(path: string) {
    this.#file = Deno.openSync(path, { read: true, write: true });
  }

  /** Marks region `r` dirty; resolves once the mark is durable. */
  mark(r: number): Promise<void> {
    try {
      this.#file.seekSync(r, Deno.SeekMode.Start);
      this.#file.writeSync(ONE);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#sync();
  }

  /** A sync that starts after this call: one in progress may not cover what was just written. */
  #sync(): Promise<void> {
    if (!this.#syncing) {
      const s = this.#file.syncData().finally(() => {
        if (this.#syncing === s) this.#syncing = undefined;
      });
      this.#syncing = s;
      return s;
    }
    this.#next ??= this.#syncing.catch(() => {}).then(() => {
      this.#next = undefined;
      return this.#sync();
    });
    return this.#next;
  }

  close(): void {
    try {
      this.#file.close();
    } catch { /* closed already */ }
  }
}

/** One thread's view of a copy's tracking: its region table and its activity log writer. */
export class WriteTracker {
  readonly table: RegionTable;
  readonly #me: number;
  readonly #log: MarkLog;
  /** Marks this thread is making, by region (another write of the same region waits on it). */
  readonly #marking = new Map<number, Promise<void>>();
  /** Ends of the latest writes entered on this thread (RECENT_ENDS of them, a ring). */
  readonly #ends = new Array<number>(RECENT_ENDS).fill(-1);
  #nextEnd = 0;

  /** `me`: this thread's number (1..MAX_THREAD), `alPath`: the copy's activity log. */
  constructor(table: RegionTable, me: number, alPath: string) {
    this.table = table;
    this.#me = me;
    this.#log = new MarkLog(alPath);
  }

  /**
   * Enters the regions of bytes [offset, offset + length) for a change. Returns undefined
   * when that was done at once (the common case: no other thread is writing there, nothing is
   * locked, every region is marked already); otherwise a promise that resolves once entered
   * and marked, or rejects (the activity log could not be written: nothing was entered).
   * Regions are entered in ascending order, so two writes never wait for each other in a ring.
   */
  enter(offset: number, length: number): Promise<void> | undefined {
    if (length <= 0) return undefined;
    const [first, last] = regionSpan(offset, length);
    if (this.#continues(offset, offset + length)) this.#markAhead(last);
    let r = first;
    while (r <= last && this.table.tryEnter(r, this.#me)) r++;
    if (r <= last) return this.#enterSlowly(first, last, r);
    let marks: Promise<void>[] | undefined;
    for (let k = first; k <= last; k++) {
      if (!this.table.isDirty(k)) (marks ??= []).push(this.#mark(k));
    }
    if (!marks) return undefined;
    return Promise.all(marks).then(() => {}, (err) => {
      this.leave(offset, length);
      throw err;
    });
  }

  async #enterSlowly(first: number, last: number, from: number): Promise<void> {
    let r = from;
    while (r <= last) {
      if (this.table.tryEnter(r, this.#me)) r++;
      else await this.table.wait(r);
    }
    const marks: Promise<void>[] = [];
    for (let k = first; k <= last; k++) if (!this.table.isDirty(k)) marks.push(this.#mark(k));
    try {
      await Promise.all(marks);
    } catch (err) {
      for (let k = first; k <= last; k++) this.table.leave(k);
      throw err;
    }
  }

  /** Whether a write at `offset` continues a recent one; notes where this one ends. */
  #continues(offset: number, end: number): boolean {
    const ends = this.#ends;
    const i = ends.indexOf(offset);
    // The stream's entry moves on with it: several interleaved streams keep one each.
    if (i >= 0) ends[i] = end;
    else {
      ends[this.#nextEnd] = end;
      this.#nextEnd = (this.#nextEnd + 1) % RECENT_ENDS;
    }
    return i >= 0;
  }

  /**
   * Starts the marks of the MARK_AHEAD regions after `last` that are clean and not locked (a
   * locked region is the hash keeper's or a resync's: marks and clears never race for a byte).
   * Nobody waits for them here; a write that enters such a region waits for its mark.
   */
  #markAhead(last: number): void {
    const end = Math.min(this.table.count - 1, last + MARK_AHEAD);
    for (let k = last + 1; k <= end; k++) {
      if (this.table.isDirty(k) || this.table.isLocked(k) || this.#marking.has(k)) continue;
      this.#mark(k).catch(() => {}); // on failure, the write that enters k marks it again
    }
  }

  #mark(r: number): Promise<void> {
    let p = this.#marking.get(r);
    if (!p) {
      p = this.#log.mark(r).then(
        () => {
          this.table.setDirty(r, true);
          this.#marking.delete(r);
        },
        (err) => {
          this.#marking.delete(r);
          const e = new Error(
            `could not record the change of region ${r} (${r * REGION_BYTES}) in the ` +
              `activity log: ${err instanceof Error ? err.message : err}`,
            { cause: err },
          );
          // A full disk is said as one (ENOSPC to the client, NBD "Error values"), not EIO.
          const code = (err as { code?: unknown } | null)?.code;
          if (code === "ENOSPC" || code === "EDQUOT" || code === "EFBIG") {
            Object.assign(e, { errno: "ENOSPC" });
          }
          throw e;
        },
      );
      this.#marking.set(r, p);
    }
    return p;
  }

  /** The change of bytes [offset, offset + length) is done everywhere it had to go. */
  leave(offset: number, length: number): void {
    if (length <= 0) return;
    const [first, last] = regionSpan(offset, length);
    for (let r = first; r <= last; r++) this.table.leave(r);
  }

  close(): void {
    this.#log.close();
  }
}
