/**
 * The hash list of one volume copy (Delta Sync, StorageOS V2's idea): a 16-byte xxh128 hash
 * per region (REGION_BYTES) of the copy, kept in memory on the main thread, persisted beside
 * the copy, and compared with another member's through a tree over the list (fanout 64), so
 * that equal copies cost one comparison and k differing regions about k * 64 * log64(n) hashes.
 *
 * Files beside the copy `<uuid>.vol`:
 *
 *     <copy>.hashes   header (64 bytes: magic, version, region size, regions) and a hash per
 *                     region; sixteen zero bytes stand for "all zeros" (a new copy is a sparse
 *                     file of zeros and its hash file a sparse file too)
 *     <copy>.al       the activity log: a byte per region, 1 = dirty (tracker.ts)
 *
 * A region is either clean (its persisted hash describes its data) or dirty (marked in the
 * activity log before it was first changed). The hash keeper below makes dirty regions clean
 * again once they have been quiet for a while (QUIET_LOOKS rounds): it locks the region (no
 * write in flight, none may enter), hashes it, makes the copy's data durable, persists the
 * hash, then clears the mark. A crash at any point leaves the region marked (rehashed later from the data) or clean
 * with the hash of data that is on disk: the list never claims a region equal when the data
 * differs. After an unclean stop only marked regions are rehashed, not the whole copy.
 *
 * Dirty regions compared before they are clean are hashed from the data then; the hash is kept
 * (not persisted) while the region does not change, so a member that is written to during a
 * resync is not rehashed whole on every question.
 *
 * Memory: 4 + 4 bytes of region table, 16 of hash and 6 of bookkeeping per MiB of copy, about
 * 30 MiB per TiB.
 * @module
 */

import type { Logger } from "pino";
import { type BlockStore, FileBlockStore, readBulk } from "../store/mod.ts";
import { hashRegions } from "./hashes.ts";
import { REGION_BYTES, regionCount, RegionTable } from "./regions.ts";
import { WriteTracker } from "./tracker.ts";
import { HASH_BYTES } from "./wire.ts";
import { createFiles, HEADER, header, parseHeader, readFull } from "./_hash_files.ts";
import { FANOUT, foldRow, nodesAt, treeLevels } from "./tree.ts";

/** How often the hash keeper looks for quiet dirty regions. */
const KEEP_EVERY_MS = 1000;
/** Regions made clean per round at most (bounds the reading it does beside client I/O). */
const KEEP_BATCH = 32;
/**
 * Looks in a row that must find a dirty region unchanged before it is made clean (5 s). One
 * look was not enough: under random writes a region quiet for a second is common, and making
 * it clean costs a flush of the copy, and the next write to it a durable mark that holds the
 * writer back (docs/BENCHMARKS.md, "CPU profiles").
 */
const QUIET_LOOKS = 5;
/** Regions read for hashing between two yields to the event loop. */
const YIELD_EVERY = 8;
/** The main thread's number as a writer (workers use 2..). */
export const MAIN_THREAD = 1;

/** The sidecar files of the copy at `path`. */
export function sidecars(path: string): string[] {
  return [`${path}.hashes`, `${path}.al`, `${path}.epoch`, `${path}.served`];
}

const SNAP_NONE = 0;
/** The change count was noted at the last look. */
const SNAP_NOTED = 1;
/** The kept hash is of the data at the noted change count. */
const SNAP_HASHED = 2;

export { FANOUT, nodesAt, treeLevels };

export class HashState {
  readonly path: string;
  readonly table: RegionTable;
  /** The main thread's writer (replica requests, NBD served on the main thread). */
  readonly writer: WriteTracker;
  readonly #store: BlockStore;
  readonly #log: Logger;
  #hashes: Uint8Array;
  #noted: Int32Array;
  #snap: Uint8Array;
  /** Looks in a row that found the region unchanged (up to QUIET_LOOKS). */
  #quiet: Uint8Array;
  #hashFile: Deno.FsFile;
  #alFile: Deno.FsFile;
  #timer: ReturnType<typeof setInterval> | undefined;
  #keeping: Promise<void> | undefined;
  #closed = false;
  /** Set while grow() or #markDirty() runs: the hash keeper waits. */
  #paused: Promise<void> | undefined;
  readonly #zero = new Map<number, Uint8Array>();

  private constructor(
    path: string,
    store: BlockStore,
    table: RegionTable,
    files: { hashes: Deno.FsFile; al: Deno.FsFile },
    hashes: Uint8Array,
    log: Logger,
  ) {
    this.path = path;
    this.#store = store;
    this.table = table;
    this.#hashFile = files.hashes;
    this.#alFile = files.al;
    this.#hashes = hashes;
    this.#noted = new Int32Array(table.count);
    this.#snap = new Uint8Array(table.count);
    this.#quiet = new Uint8Array(table.count);
    this.#log = log;
    this.writer = new WriteTracker(table, MAIN_THREAD, `${path}.al`);
  }

  /**
   * Opens the hash list of the copy at `path`. `fresh`: the copy was just created (all
   * zeros), so every region is clean with the hash of zeros. Without valid files (a copy made
   * before hash lists existed, or a crash while they were first written) every region is dirty.
   */
  static async open(path: string, log: Logger, options: { fresh?: boolean } = {}) {
    const store = FileBlockStore.open(path);
    try {
      const n = regionCount(store.size);
      const table = RegionTable.create(store.size);
      const hashes = new Uint8Array(n * HASH_BYTES);
      let valid = false;
      let al: Uint8Array | undefined;
      if (!options.fresh) {
        try {
          const head = new Uint8Array(HEADER);
          using f = await Deno.open(`${path}.hashes`, { read: true });
          if (await readFull(f, head) && parseHeader(head) === n && await readFull(f, hashes)) {
            al = await Deno.readFile(`${path}.al`);
            // Without its whole activity log a hash list may describe regions that changed
            // since: it counts as none (every region rehashed from the data).
            valid = al.length >= n;
          }
        } catch (err) {
          if (!(err instanceof Deno.errors.NotFound)) throw err;
        }
      }
      if (!valid) await createFiles(path, n, !options.fresh);
      const files = {
        hashes: await Deno.open(`${path}.hashes`, { read: true, write: true }),
        al: await Deno.open(`${path}.al`, { read: true, write: true }),
      };
      let dirty = 0;
      for (let r = 0; r < n; r++) {
        if (valid ? (al?.[r] ?? 0) !== 0 : !options.fresh) {
          table.setDirty(r, true);
          dirty++;
        }
      }
      if (dirty > 0) {
        log.info(
          {
            copy: path,
            regions: n,
            dirty,
            reason: valid ? "activity log" : "no hash list or activity log",
          },
          "regions to rehash from the data",
        );
      }
      const s = new HashState(path, store, table, files, hashes, log);
      s.#timer = setInterval(() => s.#keepSoon(), KEEP_EVERY_MS);
      return s;
    } catch (err) {
      store.close();
      throw err;
    }
  }

  get regions(): number {
    return this.table.count;
  }

  get sizeBytes(): number {
    return this.#store.size;
  }

  /** Reads the copy (a resync copying a locked region), as the store's own bulk read. */
  read(into: Uint8Array, offset: number): void {
    readBulk(this.#store, into, offset);
  }

  /**
   * Deep verification of regions [first, first + count): each region's hash from its data
   * (16 bytes each), then a byte per region, 1 where the region is clean and its persisted
   * hash is not its data's (silent corruption of the data or of the hash list).
   */
  async verify(
    first: number,
    count: number,
    options: { markCorrupt?: boolean } = {},
  ): Promise<Uint8Array> {
    if (first < 0 || first + count > this.table.count) {
      throw new RangeError(`regions ${first}+${count} of ${this.table.count}`);
    }
    const out = new Uint8Array(count * (HASH_BYTES + 1));
    const corrupt: number[] = [];
    for (let i = 0; i < count; i++) {
      const r = first + i;
      if (i > 0 && i % YIELD_EVERY === 0) await new Promise((res) => setTimeout(res, 0));
      const clean = !this.table.isDirty(r);
      const stored = clean ? await this.leaf(r) : undefined;
      const h = await hashRegions(this.#store, r, 1, REGION_BYTES);
      out.set(h, i * HASH_BYTES);
      if (stored && stored.some((b, k) => b !== h[k])) {
        out[count * HASH_BYTES + i] = 1;
        corrupt.push(r);
      }
    }
    if (options.markCorrupt && corrupt.length > 0) await this.#markDirty(corrupt);
    return out;
  }

  /**
   * Marks clean regions dirty (durably, as a write would) so that their hashes are taken from
   * the data again: a replica's regions that a deep verification found corrupt. Its hash list
   * then tells the truth, the tree differs from the master's, and the next resync of this copy
   * copies the differing blocks (`volume verify` alone had no way to make a resync see them).
   */
  async #markDirty(regions: number[]): Promise<void> {
    await this.#exclusive(async () => {
      const todo = regions.filter((r) => r < this.table.count && !this.table.isDirty(r));
      if (todo.length === 0) return;
      for (const r of todo) await this.#writeAt(this.#alFile, r, new Uint8Array([1]));
      await this.#alFile.syncData();
      for (const r of todo) this.table.setDirty(r, true);
      this.#log.warn(
        { copy: this.path, regions: todo.slice(0, 16), count: todo.length },
        "regions whose data is not what their persisted hash says (silent corruption) " +
          "marked for rehashing: the next resync of this copy copies them from the master",
      );
    });
  }

  /** Runs `fn` with the hash keeper stopped (it writes the same files). */
  async #exclusive(fn: () => Promise<void>): Promise<void> {
    while (this.#paused) await this.#paused;
    let done!: () => void;
    this.#paused = new Promise((r) => done = r);
    try {
      while (this.#keeping) await this.#keeping;
      await fn();
    } finally {
      this.#paused = undefined;
      done();
    }
  }

  /** Regions that are dirty now. */
  dirtyRegions(): number {
    return this.table.dirtyCount;
  }

  #zeroHash(length: number): Promise<Uint8Array> {
    const known = this.#zero.get(length);
    if (known) return Promise.resolve(known);
    const view = { size: length, read: (into: Uint8Array) => into.fill(0) };
    return hashRegions(view, 0, 1, Math.max(1, length)).then((h) => {
      this.#zero.set(length, h);
      return h;
    });
  }

  #length(r: number): number {
    return Math.min(REGION_BYTES, this.#store.size - r * REGION_BYTES);
  }

  /** The hash of region `r` now: the persisted one if clean, else from the data. */
  async leaf(r: number): Promise<Uint8Array> {
    const t = this.table;
    const at = r * HASH_BYTES;
    if (this.#known(r)) {
      const h = this.#hashes.subarray(at, at + HASH_BYTES);
      return isZero(h) ? await this.#zeroHash(this.#length(r)) : h.slice();
    }
    const before = t.changes(r);
    const quiet = t.inFlight(r) === 0;
    const h = await hashRegions(this.#store, r, 1, REGION_BYTES);
    if (quiet && t.inFlight(r) === 0 && t.changes(r) === before && t.isDirty(r)) {
      this.#hashes.set(h, at);
      this.#noted[r] = before;
      this.#snap[r] = SNAP_HASHED;
    }
    return h;
  }

  /** Whether leaf `r` is known without reading the region (clean, or hashed and unchanged). */
  #known(r: number): boolean {
    const t = this.table;
    return !t.isDirty(r) || (this.#snap[r] === SNAP_HASHED && t.changes(r) === this.#noted[r] &&
      t.inFlight(r) === 0);
  }

  /** Regions among [first, first + count) that would have to be read to hash them now. */
  unknownLeaves(first = 0, count = this.table.count): number {
    let n = 0;
    for (let r = first; r < first + count; r++) if (!this.#known(r)) n++;
    return n;
  }

  /**
   * The hashes of leaves [first, first + count), concatenated. Reading regions to hash them
   * yields to the event loop every few regions: other work on this thread goes on.
   */
  async leaves(first: number, count: number): Promise<Uint8Array> {
    const out = new Uint8Array(count * HASH_BYTES);
    let read = 0;
    for (let i = 0; i < count; i++) {
      if (!this.#known(first + i) && ++read % YIELD_EVERY === 0) {
        await new Promise((r) => setTimeout(r, 0));
      }
      out.set(await this.leaf(first + i), i * HASH_BYTES);
    }
    return out;
  }

  /** The root (hex), or undefined when more than `budget` regions would have to be read. */
  async root(budget = Infinity): Promise<string | undefined> {
    if (budget !== Infinity && this.unknownLeaves() > budget) return undefined;
    const r = await this.nodes(this.levels() - 1, 0, 1);
    return [...r].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** Levels of the tree: 0 is the leaves, levels() - 1 the root (a single node). */
  levels(): number {
    return treeLevels(this.table.count);
  }

  /**
   * Nodes [first, first + count) of tree level `level` (0: leaves). A node hashes the
   * concatenated hashes of its FANOUT children (fewer for the last).
   */
  async nodes(level: number, first: number, count: number): Promise<Uint8Array> {
    // The level first: nodesAt() walks every level up to it (a peer's u32 froze the thread).
    if (level < 0 || level >= this.levels()) {
      throw new RangeError(`level ${level} of a tree of ${this.levels()} levels`);
    }
    const width = nodesAt(this.table.count, level);
    if (first < 0 || first + count > width) {
      throw new RangeError(`nodes ${first}+${count} of level ${level} (${width} there)`);
    }
    const span = FANOUT ** level;
    const lo = first * span;
    const hi = Math.min(this.table.count, (first + count) * span);
    let row = await this.leaves(lo, hi - lo);
    for (let l = 0; l < level; l++) row = await foldRow(row);
    return row;
  }

  /** Wakes the hash keeper unless it is at work. */
  #keepSoon(): void {
    if (this.#keeping || this.#closed || this.#paused) return;
    this.#keeping = this.keep().then(() => {}, (err) => {
      this.#log.error({ copy: this.path, err }, "could not persist region hashes; will retry");
    }).finally(() => this.#keeping = undefined);
  }

  /**
   * One round of the hash keeper: regions dirty and quiet for the last QUIET_LOOKS rounds (no
   * write entered, none in flight) are locked, hashed, and made clean durably. Returns how
   * many.
   */
  async keep(): Promise<number> {
    const t = this.table;
    // No dirty region: one word a round, however large the copy; else up to the last one.
    const dirty = t.dirtyCount;
    if (dirty === 0) return 0;
    const ready: number[] = [];
    let seen = 0;
    for (let r = 0; r < t.count && ready.length < KEEP_BATCH && seen < dirty; r++) {
      if (!t.isDirty(r)) continue;
      seen++;
      if (t.isLocked(r) || t.inFlight(r) > 0) continue;
      const c = t.changes(r);
      if (this.#snap[r] !== SNAP_NONE && this.#noted[r] === c) {
        if (this.#quiet[r] < QUIET_LOOKS) this.#quiet[r]++;
        if (this.#quiet[r] >= QUIET_LOOKS) ready.push(r);
      } else {
        this.#noted[r] = c;
        this.#snap[r] = SNAP_NOTED;
        this.#quiet[r] = 0;
      }
    }
    if (ready.length === 0) return 0;
    const held: number[] = [];
    try {
      for (const r of ready) {
        if (this.#closed || !await t.lock(r)) continue;
        held.push(r);
        if (t.changes(r) !== this.#noted[r]) continue; // a write slipped in before the lock
        if (this.#snap[r] !== SNAP_HASHED) {
          this.#hashes.set(
            await hashRegions(this.#store, r, 1, REGION_BYTES),
            r * HASH_BYTES,
          );
          this.#snap[r] = SNAP_HASHED;
        }
      }
      const done = held.filter((r) => t.changes(r) === this.#noted[r]);
      if (done.length === 0) return 0;
      // The data first, then the hashes, then the marks: each durable before the next.
      await this.#store.flush();
      for (const r of done) {
        const h = this.#hashes.subarray(r * HASH_BYTES, (r + 1) * HASH_BYTES);
        await this.#writeAt(this.#hashFile, HEADER + r * HASH_BYTES, h);
      }
      await this.#hashFile.syncData();
      const zero = new Uint8Array(1);
      for (const r of done) await this.#writeAt(this.#alFile, r, zero);
      await this.#alFile.syncData();
      for (const r of done) {
        t.setDirty(r, false);
        this.#snap[r] = SNAP_NONE;
      }
      return done.length;
    } finally {
      for (const r of held) t.unlock(r);
    }
  }

  async #writeAt(f: Deno.FsFile, at: number, data: Uint8Array): Promise<void> {
    await f.seek(at, Deno.SeekMode.Start);
    let done = 0;
    while (done < data.length) done += await f.write(data.subarray(done));
  }

  /** Makes every dirty region clean now (tests, `volume verify`): returns how many. */
  async keepAll(): Promise<number> {
    while (this.#keeping) await this.#keeping;
    let n = 0;
    for (;;) {
      // The first look notes the change counts, the next QUIET_LOOKS find them unchanged.
      let k = 0;
      for (let look = 0; look <= QUIET_LOOKS; look++) k += await this.keep();
      n += k;
      if (k === 0 && this.dirtyRegions() === 0) return n;
      if (k === 0) await new Promise((r) => setTimeout(r, 10));
    }
  }

  /**
   * The copy grew to `sizeBytes` (main thread, before any thread writes past the old end).
   * New regions are zeros: clean. The old last region, if it was partial, is marked dirty
   * first (its hash covered fewer bytes).
   */
  grow(sizeBytes: number): Promise<void> {
    return this.#exclusive(() => this.#grow(sizeBytes));
  }

  async #grow(sizeBytes: number): Promise<void> {
    const before = this.table.count;
    const n = regionCount(sizeBytes);
    const oldSize = this.#store.size;
    this.#store.resize(Math.max(sizeBytes, oldSize));
    if (n <= before && oldSize % REGION_BYTES === 0) return;
    const partial = oldSize % REGION_BYTES !== 0 ? before - 1 : -1;
    if (partial >= 0 && !this.table.isDirty(partial)) {
      await this.#writeAt(this.#alFile, partial, new Uint8Array([1]));
      await this.#alFile.syncData();
      this.table.setDirty(partial, true);
    }
    if (n <= before) return;
    this.table.grow(sizeBytes);
    const hashes = new Uint8Array(n * HASH_BYTES);
    hashes.set(this.#hashes);
    this.#hashes = hashes;
    const noted = new Int32Array(n);
    noted.set(this.#noted);
    this.#noted = noted;
    const snap = new Uint8Array(n);
    snap.set(this.#snap);
    this.#snap = snap;
    const quiet = new Uint8Array(n);
    quiet.set(this.#quiet);
    this.#quiet = quiet;
    await this.#alFile.truncate(n);
    await this.#hashFile.truncate(HEADER + n * HASH_BYTES);
    await this.#writeAt(this.#hashFile, 0, header(n));
    await this.#hashFile.syncData();
    await this.#alFile.syncData();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    while (this.#keeping || this.#paused) await (this.#keeping ?? this.#paused);
    this.writer.close();
    for (const f of [this.#hashFile, this.#alFile]) {
      try {
        f.close();
      } catch { /* closed */ }
    }
    this.#store.close();
  }
}

function isZero(b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}
