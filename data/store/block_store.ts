/**
 * The block store: a byte-addressed volume backing. One small interface with
 * capability queries; features such as hash tracking (Delta Sync) and replication
 * layer on top of it by wrapping a BlockStore. One contract suite
 * (tests/data/store/block_store_contract.ts) runs against every implementation.
 *
 * Reads and writes are synchronous on purpose: the file store's pread/pwrite hit the
 * page cache and return in microseconds, so an await per request would only add
 * latency on the NBD hot path. Durability operations (flush) are asynchronous.
 * @module
 */

/** One run of the allocation map, as reported by `extents()`. */
export interface Extent {
  offset: number;
  length: number;
  /** Not allocated in the backing storage (NBD_STATE_HOLE). */
  hole: boolean;
  /** Reads as zeroes (NBD_STATE_ZERO). */
  zero: boolean;
}

/** Error thrown by stores; `errno` is the POSIX error name (EIO, ENOSPC, ...). */
export class BlockStoreError extends Error {
  override name = "BlockStoreError";
  constructor(readonly errno: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

export interface BlockStore {
  /** Current size in bytes. */
  readonly size: number;
  /** Whether trim/punch-hole actually frees space. */
  readonly canTrim: boolean;
  /** Whether writeZeroes can be done without writing data (fast zero). */
  readonly canFastZero: boolean;
  /** Whether extents() reports holes truthfully. */
  readonly canExtents: boolean;
  /** Whether flush() makes writes durable (false for memory stores). */
  readonly canFlush: boolean;

  /** Reads `buf.length` bytes at `offset` into `buf`. Caller has bounds-checked. */
  read(buf: Uint8Array, offset: number): void;
  /**
   * As read(), for the store's own reads of whole regions (hashing, resync, verify) and
   * clients' reads, which must not leave the cache in a shape that makes later writes dearer
   * (file_store.ts).
   * Optional: readBulk() below falls back to read().
   */
  readBulk?(buf: Uint8Array, offset: number): void;
  /** Writes `buf` at `offset`. Caller has bounds-checked. */
  write(buf: Uint8Array, offset: number): void;
  /** Deallocates a range; it then reads as zeroes. */
  trim(offset: number, length: number): void;
  /**
   * Makes a range read as zeroes. With `mayDeallocate` the store may punch a hole;
   * without it the range stays allocated (NBD_CMD_FLAG_NO_HOLE). `fast`
   * (NBD_CMD_FLAG_FAST_ZERO): fail with ENOTSUP, writing nothing, rather than write zeroes.
   */
  writeZeroes(offset: number, length: number, mayDeallocate: boolean, fast?: boolean): void;
  /** Allocation map covering [offset, offset+length), merged runs in order. */
  extents(offset: number, length: number): Extent[];
  /** Makes every completed write durable. */
  flush(): Promise<void>;
  /** Grows (or shrinks, for tests) the store. */
  resize(size: number): void;
  /** Bytes allocated on disk. */
  allocatedBytes(): number;
  close(): void;
}

/** `store.readBulk()` where the store has it, else `store.read()`. */
export function readBulk(
  store: Pick<BlockStore, "read" | "readBulk">,
  buf: Uint8Array,
  offset: number,
): void {
  if (store.readBulk) store.readBulk(buf, offset);
  else store.read(buf, offset);
}
