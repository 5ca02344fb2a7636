/**
 * BlockStore on a sparse file, through libc (see _libc.ts): pread/pwrite at an
 * offset, fallocate to punch holes and zero ranges, SEEK_DATA/SEEK_HOLE for the
 * allocation map, fdatasync off the event loop for flushes.
 *
 * A new volume is an empty file truncated to its size: a 10 TiB volume costs one
 * inode until written.
 * @module
 */

import { type BlockStore, BlockStoreError, type Extent } from "./block_store.ts";
import { ReadaheadStreams } from "./_readahead.ts";
import {
  cString,
  errno,
  errnoName,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  libc,
  O_CLOEXEC,
  O_CREAT,
  O_EXCL,
  O_RDONLY,
  O_RDWR,
  POSIX_FADV_RANDOM,
  POSIX_FADV_WILLNEED,
  SEEK_DATA,
  SEEK_HOLE,
  strerror,
  SYS_CACHESTAT,
} from "./_libc.ts";

const ZERO_CHUNK = 1 << 20;
/**
 * The largest piece one pwrite() writes. Since Linux 6.16, ext4 keeps a file's page cache in
 * folios as large as the write that created them (a 1 MiB write makes a 1 MiB folio), and a
 * later 4 KiB write into a folio walks every buffer head of it (ext4_block_write_begin): on
 * this machine's 6.18 kernel a 4 KiB pwrite costs 1.7 us in 4 KiB folios, 2.0 us in 16 KiB
 * ones, 2.4 us in 64 KiB ones and 7.8 us in 1 MiB ones, alone; under load, with the walk's
 * cache misses, the difference grows (docs/BENCHMARKS.md, "CPU profiles" and "Folio size").
 * Smaller folios cost large reads and writes more (a MiB in 4 KiB pieces costs 2.5 times
 * the CPU of 64 KiB ones), so large writes go in 16 KiB pieces: random 4 KiB writes into
 * what they left cost a quarter less than into 64 KiB folios, 1 MiB sequential I/O about a
 * tenth more.
 */
const WRITE_PIECE = 16 * 1024;
/**
 * readBulk()'s readahead windows (_readahead.ts): a sequential reader's first is 4 times its
 * read, at least BULK_FIRST; they double up to BULK_AHEAD (as far as the kernel's own reaches
 * here: read_ahead_kb 8192).
 */
const BULK_FIRST = 128 * 1024;
const BULK_AHEAD = 8 * 1024 * 1024;
let zeroes: Uint8Array | undefined;

// cachestat(2)'s argument (struct cachestat_range: off, len) and result (struct cachestat:
// nr_cache, nr_dirty, ...), 64-bit fields written and read as 32-bit halves.
const csRange = new Uint32Array(4);
const csStat = new Uint32Array(10);
const csRangeBytes = new Uint8Array(csRange.buffer);
const csStatBytes = new Uint8Array(csStat.buffer);
let cachestatWorks = true;
const PAGE = 4096;
const TWO32 = 2 ** 32;

/**
 * Whether every page of [offset, offset + length) of `fd` is in the page cache (cachestat(2)).
 * A write into cached pages makes no new folios, whatever its size. False where cachestat is
 * missing (before Linux 6.5) or pages are larger than 4 KiB (fewer pages than counted here).
 */
function allCached(fd: number, offset: number, length: number): boolean {
  if (!cachestatWorks) return false;
  csRange[0] = offset % TWO32;
  csRange[1] = Math.floor(offset / TWO32);
  csRange[2] = length % TWO32;
  csRange[3] = Math.floor(length / TWO32);
  if (Number(libc().cachestat(SYS_CACHESTAT, fd, csRangeBytes, csStatBytes, 0)) !== 0) {
    cachestatWorks = false; // ENOSYS (older kernel) or a refusal: pieces from now on
    return false;
  }
  const pages = Math.ceil((offset + length) / PAGE) - Math.floor(offset / PAGE);
  return csStat[0] + csStat[1] * TWO32 >= pages;
}

function fail(op: string, path: string): never {
  const n = errno();
  throw new BlockStoreError(errnoName(n), `${op} ${path}: ${strerror(n)}`);
}

export class FileBlockStore implements BlockStore {
  /** Punching holes works here (false once the file system refused it). */
  canTrim = true;
  readonly canExtents = true;
  readonly canFlush = true;
  canFastZero = true;
  #fd: number;
  /** readBulk()'s open file: -1 until first used; #fd itself where no second one was made. */
  #bulkFd = -1;
  /** The sequential readers of readBulk(), and how far ahead each was asked for. */
  #streams = new ReadaheadStreams(BULK_FIRST, BULK_AHEAD);
  #size: number;
  #closed = false;

  private constructor(readonly path: string, fd: number, size: number) {
    this.#fd = fd;
    this.#size = size;
  }

  /** Creates a new sparse file of `size` bytes; fails with EEXIST if it exists. */
  static create(path: string, size: number): FileBlockStore {
    const fd = libc().open(cString(path), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600);
    if (fd < 0) fail("create", path);
    if (libc().ftruncate(fd, size) !== 0) {
      const n = errno();
      libc().close(fd);
      try {
        Deno.removeSync(path);
      } catch { /* best effort */ }
      throw new BlockStoreError(errnoName(n), `truncate ${path}: ${strerror(n)}`);
    }
    return new FileBlockStore(path, fd, size);
  }

  /** Opens an existing file; its size is the file's size. */
  static open(path: string): FileBlockStore {
    const fd = libc().open(cString(path), O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) fail("open", path);
    const size = Number(libc().lseek(fd, 0, 2 /* SEEK_END */));
    if (size < 0) fail("lseek", path);
    return new FileBlockStore(path, fd, size);
  }

  get size(): number {
    return this.#size;
  }

  read(buf: Uint8Array, offset: number): void {
    this.#live("read");
    this.#pread(this.#fd, buf, offset);
  }

  /**
   * Reads of whole regions (hashing, resync, verify) and clients' reads: through a second open file of the same inode advised POSIX_FADV_RANDOM, so that data read
   * from the disk enters the page cache in 4 KiB folios instead of readahead's large ones. A
   * 4 KiB write into a range that readahead brought in costs 15-20 us of CPU here instead of 2
   * (ext4 walks every block of the folio, see WRITE_PIECE): `volume verify --deep`, a master
   * seeding a new member, or a client reading a cold volume through, made every later small
   * write there several times dearer (docs/BENCHMARKS.md, "Cold reads and the folios they
   * leave"). The readahead a sequential reader needs is done here instead (_readahead.ts: a
   * few streams at once, windows growing to BULK_AHEAD), asked for with POSIX_FADV_WILLNEED,
   * which fills the cache in 4 KiB folios too.
   */
  readBulk(buf: Uint8Array, offset: number): void {
    this.#live("read");
    if (this.#bulkFd < 0) this.#bulkFd = this.#openBulk();
    const ra = this.#streams;
    // Not for a range that is cached already (a reader of cached data, the common case: the
    // advice would walk it page by page for nothing). Advice: where it fails, the reads still
    // read, only without readahead.
    if (ra.read(offset, buf.length, this.#size) && !allCached(this.#fd, ra.from, ra.to - ra.from)) {
      libc().posix_fadvise(this.#bulkFd, ra.from, ra.to - ra.from, POSIX_FADV_WILLNEED);
    }
    this.#pread(this.#bulkFd, buf, offset);
  }

  /** The second open file for readBulk(); this store's own where that cannot be made. */
  #openBulk(): number {
    // The same inode as #fd whatever became of the path since (renamed, replaced).
    const fd = libc().open(cString(`/proc/self/fd/${this.#fd}`), O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) return this.#fd;
    if (libc().posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM) !== 0) {
      libc().close(fd);
      return this.#fd;
    }
    return fd;
  }

  #pread(fd: number, buf: Uint8Array, offset: number): void {
    let done = 0;
    while (done < buf.length) {
      const part = done === 0 ? buf : buf.subarray(done);
      const n = Number(libc().pread(fd, part, part.length, offset + done));
      if (n < 0) fail("read", this.path);
      if (n === 0) {
        // Past EOF (cannot happen within size): reads as zeroes.
        buf.fill(0, done);
        return;
      }
      done += n;
    }
  }

  /**
   * Writes in pieces of at most WRITE_PIECE bytes (see there), or in one pwrite() where the
   * range is in the page cache already (no new folio can come of it): sixteen pwrite() calls
   * per MiB cost about 0.07 s of CPU per GiB (15%) more than one (docs/BENCHMARKS.md, "Where
   * the 4-connection write CPU went").
   */
  write(buf: Uint8Array, offset: number): void {
    this.#live("write");
    const piece = buf.length > WRITE_PIECE && allCached(this.#fd, offset, buf.length)
      ? buf.length
      : WRITE_PIECE;
    let done = 0;
    while (done < buf.length) {
      const end = Math.min(buf.length, done + piece);
      const part = done === 0 && end === buf.length ? buf : buf.subarray(done, end);
      const n = Number(libc().pwrite(this.#fd, part, part.length, offset + done));
      if (n < 0) fail("write", this.path);
      done += n;
    }
  }

  /**
   * TRIM is a hint ("A server MAY discard len bytes ..., but is not required to"): where the
   * file system cannot punch holes it does nothing, and canTrim turns false.
   */
  trim(offset: number, length: number): void {
    this.#live("trim");
    if (this.canTrim) this.#punch(offset, length, "trim");
  }

  writeZeroes(offset: number, length: number, mayDeallocate: boolean, fast = false): void {
    this.#live("zero");
    if (mayDeallocate && this.canTrim && this.#punch(offset, length, "zero")) return;
    // NO_HOLE: the range must stay allocated. ZERO_RANGE does it without writing data;
    // where the filesystem lacks it, write zeroes (and stop advertising FAST_ZERO), unless
    // the client asked for a fast zero: that fails quickly instead, having written nothing.
    const noFastZero = () =>
      new BlockStoreError("ENOTSUP", `zero ${this.path}: no fast zero on this file system`);
    if (fast && !this.canFastZero) throw noFastZero();
    if (this.canFastZero) {
      if (
        libc().fallocate(this.#fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length) === 0
      ) {
        return;
      }
      const n = errno();
      if (errnoName(n) !== "EOPNOTSUPP") {
        throw new BlockStoreError(errnoName(n), `zero ${this.path}: ${strerror(n)}`);
      }
      this.canFastZero = false;
      if (fast) throw noFastZero();
    }
    zeroes ??= new Uint8Array(ZERO_CHUNK);
    for (let done = 0; done < length; done += ZERO_CHUNK) {
      const n = Math.min(ZERO_CHUNK, length - done);
      this.write(n === ZERO_CHUNK ? zeroes : zeroes.subarray(0, n), offset + done);
    }
  }

  /** Punches a hole; false (and canTrim false from then on) where the file system cannot. */
  #punch(offset: number, length: number, op: string): boolean {
    const mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    if (libc().fallocate(this.#fd, mode, offset, length) === 0) return true;
    if (errnoName(errno()) === "EOPNOTSUPP") {
      this.canTrim = false;
      return false;
    }
    fail(op, this.path);
  }

  extents(offset: number, length: number): Extent[] {
    this.#live("seek");
    const end = offset + length;
    const out: Extent[] = [];
    const push = (start: number, stop: number, hole: boolean) => {
      if (stop <= start) return;
      const last = out[out.length - 1];
      if (last && last.hole === hole && last.offset + last.length === start) {
        last.length += stop - start;
      } else {
        out.push({ offset: start, length: stop - start, hole, zero: hole });
      }
    };
    let pos = offset;
    while (pos < end) {
      const data = Number(libc().lseek(this.#fd, pos, SEEK_DATA));
      if (data < 0) {
        // ENXIO: no data at or after pos.
        if (errnoName(errno()) === "ENXIO") {
          push(pos, end, true);
          break;
        }
        fail("seek", this.path);
      }
      if (data > pos) push(pos, Math.min(data, end), true);
      if (data >= end) break;
      let hole = Number(libc().lseek(this.#fd, data, SEEK_HOLE));
      if (hole < 0) hole = this.#size;
      push(data, Math.min(hole, end), false);
      pos = hole;
    }
    return out;
  }

  /**
   * Makes what was written durable. A failed fdatasync is final for this open file: the
   * kernel reports a writeback error once and may have dropped the pages, so a later
   * fdatasync that succeeds proves nothing; every flush after it fails too.
   */
  async flush(): Promise<void> {
    if (this.#closed) return;
    const shared = this.#sharedFailure;
    if (!this.#flushFailed && shared && Atomics.load(shared.words, shared.index) !== 0) {
      this.#flushFailed = `flush ${this.path}: fdatasync failed on another thread's open ` +
        "file of this copy; data written before may be lost, so no later flush succeeds";
    }
    if (this.#flushFailed) throw new BlockStoreError("EIO", this.#flushFailed);
    const rc = await libc().fdatasync(this.#fd);
    if (rc !== 0) {
      this.#flushFailed = `flush ${this.path}: fdatasync failed; data written before may ` +
        "be lost, so no later flush of this copy succeeds until it is opened again";
      if (shared) Atomics.store(shared.words, shared.index, 1);
      throw new BlockStoreError("EIO", this.#flushFailed);
    }
  }
  #flushFailed: string | undefined;
  #sharedFailure: { words: Int32Array; index: number } | undefined;

  /**
   * Shares the failure of a flush with the other threads' open files of this copy (a word of
   * shared memory): the kernel reports a writeback error only to files open when it happened,
   * so a worker that opened the copy later would flush with success, and a FLUSH there (which
   * covers writes acknowledged on every connection, CAN_MULTI_CONN) would wrongly say so.
   */
  shareFlushFailure(words: Int32Array, index: number): void {
    this.#sharedFailure = { words, index };
  }

  resize(size: number): void {
    this.#live("resize");
    if (libc().ftruncate(this.#fd, size) !== 0) fail("resize", this.path);
    this.#size = size;
  }

  allocatedBytes(): number {
    const info = Deno.statSync(this.path);
    return (info.blocks ?? 0) * 512;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc().fdatasync_sync(this.#fd);
    if (this.#bulkFd >= 0 && this.#bulkFd !== this.#fd) libc().close(this.#bulkFd);
    this.#bulkFd = -1;
    libc().close(this.#fd);
  }

  /**
   * Refuses use after close(): the descriptor's number may belong to another open file by
   * then (another volume's), which a read or write through it would reach without an error.
   */
  #live(op: string): void {
    if (this.#closed) throw new BlockStoreError("EBADF", `${op} ${this.path}: the store is closed`);
  }
}
