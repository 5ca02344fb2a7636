/**
 * A BlockStore in memory: sparse fixed-size pages, allocated on first write and dropped by
 * trim. For tests of the layers above the store (the NBD connection, hash tracking,
 * replication) without a file system, and for benchmarks of the protocol alone. It passes
 * the same contract suite as the file store.
 * @module
 */

import { type BlockStore, BlockStoreError, type Extent } from "./block_store.ts";

/** Allocation granularity: holes and data extents are reported in whole pages. */
export const MEMORY_PAGE_BYTES = 64 * 1024;

export class MemoryBlockStore implements BlockStore {
  readonly canTrim = true;
  readonly canFastZero = true;
  readonly canExtents = true;
  readonly canFlush = false;
  #size: number;
  #pages = new Map<number, Uint8Array>();
  #closed = false;

  constructor(size: number) {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new RangeError(`store size must be a non-negative integer, got ${size}`);
    }
    this.#size = size;
  }

  get size(): number {
    return this.#size;
  }

  #check(): void {
    if (this.#closed) throw new BlockStoreError("EBADF", "memory store is closed");
  }

  /** Calls `fn` for each page piece of [offset, offset + length): page, start in it, bytes. */
  #pieces(
    offset: number,
    length: number,
    fn: (page: number, within: number, n: number, done: number) => void,
  ): void {
    for (let done = 0; done < length;) {
      const at = offset + done;
      const page = Math.floor(at / MEMORY_PAGE_BYTES);
      const within = at - page * MEMORY_PAGE_BYTES;
      const n = Math.min(MEMORY_PAGE_BYTES - within, length - done);
      fn(page, within, n, done);
      done += n;
    }
  }

  read(buf: Uint8Array, offset: number): void {
    this.#check();
    this.#pieces(offset, buf.length, (page, within, n, done) => {
      const p = this.#pages.get(page);
      if (p) buf.set(p.subarray(within, within + n), done);
      else buf.fill(0, done, done + n);
    });
  }

  write(buf: Uint8Array, offset: number): void {
    this.#check();
    this.#pieces(offset, buf.length, (page, within, n, done) => {
      let p = this.#pages.get(page);
      if (!p) {
        p = new Uint8Array(MEMORY_PAGE_BYTES);
        this.#pages.set(page, p);
      }
      p.set(buf.subarray(done, done + n), within);
    });
  }

  trim(offset: number, length: number): void {
    this.#zero(offset, length, true);
  }

  writeZeroes(offset: number, length: number, mayDeallocate: boolean): void {
    this.#zero(offset, length, mayDeallocate);
  }

  /** Zeroes a range: whole pages are dropped (or kept allocated and cleared), edges cleared. */
  #zero(offset: number, length: number, deallocate: boolean): void {
    this.#check();
    this.#pieces(offset, length, (page, within, n) => {
      const p = this.#pages.get(page);
      if (n === MEMORY_PAGE_BYTES && deallocate) this.#pages.delete(page);
      else if (p) p.fill(0, within, within + n);
      else if (!deallocate) this.#pages.set(page, new Uint8Array(MEMORY_PAGE_BYTES));
    });
  }

  extents(offset: number, length: number): Extent[] {
    this.#check();
    const end = Math.min(offset + length, this.#size);
    const out: Extent[] = [];
    for (let at = offset; at < end;) {
      const page = Math.floor(at / MEMORY_PAGE_BYTES);
      const stop = Math.min((page + 1) * MEMORY_PAGE_BYTES, end);
      const hole = !this.#pages.has(page);
      const last = out[out.length - 1];
      if (last && last.hole === hole) last.length += stop - at;
      else out.push({ offset: at, length: stop - at, hole, zero: hole });
      at = stop;
    }
    return out;
  }

  flush(): Promise<void> {
    this.#check();
    return Promise.resolve();
  }

  resize(size: number): void {
    this.#check();
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new RangeError(`store size must be a non-negative integer, got ${size}`);
    }
    if (size < this.#size) {
      // Bytes past the new end are gone: a later grow reads them as zeroes.
      const lastPage = Math.floor(size / MEMORY_PAGE_BYTES);
      for (const page of [...this.#pages.keys()]) {
        if (page > lastPage) this.#pages.delete(page);
      }
      const p = this.#pages.get(lastPage);
      if (p) p.fill(0, size - lastPage * MEMORY_PAGE_BYTES);
    }
    this.#size = size;
  }

  allocatedBytes(): number {
    return this.#pages.size * MEMORY_PAGE_BYTES;
  }

  close(): void {
    this.#closed = true;
    this.#pages.clear();
  }
}
