/**
 * The BlockStore contract: what every implementation (file, memory, hash-tracking
 * and replicating wrappers) must do. Call defineBlockStoreContract() from an
 * implementation's test file; it registers one Deno.test per property, each on a
 * fresh store.
 *
 * Content is checked against a plain Uint8Array model. Allocation is checked only
 * where the interface promises it: when `canExtents` is true, every extent marked as
 * a hole must read as zeroes and every byte written with data must lie in a data
 * extent (a filesystem may round data extents out to its block size).
 * @module
 */

import { type BlockStore, type Extent, readBulk } from "../../../data/store/block_store.ts";
import { assert, assertEquals } from "../../_assert.ts";

export interface OpenedBlockStore {
  store: BlockStore;
  /** Closes the store and removes whatever backs it. */
  cleanup(): Promise<void>;
}

/** Opens a fresh, never-written store of `size` bytes. */
export type OpenBlockStore = (size: number) => Promise<OpenedBlockStore>;

const KiB = 1024;
const MiB = 1024 * KiB;

/** Deterministic bytes (xorshift32) so a failure reproduces. */
export function pattern(length: number, seed: number): Uint8Array {
  const b = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

function readAt(store: BlockStore, offset: number, length: number): Uint8Array {
  const b = new Uint8Array(length).fill(0xee); // not zero: a read must overwrite it
  store.read(b, offset);
  return b;
}

/** Index of the first nonzero byte, or -1. */
function firstNonZero(b: Uint8Array): number {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return i;
  return -1;
}

function assertZero(store: BlockStore, offset: number, length: number, what: string): void {
  const at = firstNonZero(readAt(store, offset, length));
  assertEquals(at, -1, `${what}: byte ${offset + at} of [${offset}, ${offset + length}) is not 0`);
}

/** Compares the whole store with the model, reporting the first differing byte. */
function assertMatches(store: BlockStore, model: Uint8Array, what: string): void {
  const got = readAt(store, 0, model.length);
  for (let i = 0; i < model.length; i++) {
    if (got[i] !== model[i]) {
      assertEquals(got[i], model[i], `${what}: byte ${i}`);
    }
  }
}

/**
 * Checks the shape of an allocation map: in order, contiguous, exactly covering
 * [offset, offset+length), no empty runs, and merged (no two neighbours alike).
 */
export function assertWellFormed(extents: Extent[], offset: number, length: number): void {
  assert(extents.length > 0, `no extents for [${offset}, ${offset + length})`);
  let pos = offset;
  for (const [i, e] of extents.entries()) {
    assertEquals(e.offset, pos, `extent ${i} starts where the previous ended`);
    assert(e.length > 0, `extent ${i} is empty: ${JSON.stringify(e)}`);
    if (i > 0) {
      const prev = extents[i - 1];
      assert(
        prev.hole !== e.hole || prev.zero !== e.zero,
        `extents ${i - 1} and ${i} are alike and not merged: ${JSON.stringify(extents)}`,
      );
    }
    pos += e.length;
  }
  assertEquals(pos, offset + length, `extents end at the end of the range`);
}

/** Holes and zero runs must read as zeroes (the map must never claim less data than exists). */
function assertTruthful(store: BlockStore, extents: Extent[]): void {
  for (const e of extents) {
    if (e.hole || e.zero) assertZero(store, e.offset, e.length, `extent ${JSON.stringify(e)}`);
  }
}

/** Whether [offset, offset+length) lies entirely in data (non-hole) extents. */
function inData(extents: Extent[], offset: number, length: number): boolean {
  return extents.every((e) =>
    !e.hole || e.offset + e.length <= offset || e.offset >= offset + length
  );
}

/** Registers every contract test for stores `open` creates. */
export function defineBlockStoreContract(name: string, open: OpenBlockStore): void {
  const test = (title: string, size: number, fn: (store: BlockStore) => Promise<void> | void) =>
    Deno.test(`${name}: ${title}`, async () => {
      const opened = await open(size);
      try {
        await fn(opened.store);
      } finally {
        await opened.cleanup();
      }
    });

  test("reports the size it was opened with", 3 * MiB + 17, (store) => {
    assertEquals(store.size, 3 * MiB + 17);
  });

  test("never-written ranges read as zeroes, including the first and last byte", 2 * MiB, (s) => {
    assertZero(s, 0, s.size, "whole store");
    assertZero(s, 0, 1, "first byte");
    assertZero(s, s.size - 1, 1, "last byte");
    assertZero(s, 4095, 3, "across a block boundary");
  });

  test("reads back what was written at unaligned offsets and lengths", 1 * MiB, (s) => {
    const model = new Uint8Array(s.size);
    const writes: [number, number][] = [
      [0, 1],
      [1, 4095],
      [4093, 5000], // crosses two block boundaries
      [65535, 2],
      [100_001, 65_537],
      [200_003, 300_001], // several of FileBlockStore's 64 KiB pwrite pieces, unaligned
      [s.size - 3, 3], // ends exactly at the size
      [s.size - 1, 1],
      [4096 * 7, 4096], // aligned, for contrast
      [4096 * 7 + 100, 10], // overwrite inside an earlier write
    ];
    for (const [i, [offset, length]] of writes.entries()) {
      const data = pattern(length, i + 1);
      s.write(data, offset);
      model.set(data, offset);
      assertEquals(readAt(s, offset, length), data, `write ${i} at ${offset}+${length}`);
    }
    assertMatches(s, model, "after all writes");
    // Reads at unaligned offsets into the middle of written data.
    assertEquals(readAt(s, 4093 + 17, 333), model.slice(4093 + 17, 4093 + 17 + 333));
  });

  test("a write does not disturb the neighbouring bytes", 256 * KiB, (s) => {
    s.write(new Uint8Array(8192).fill(0x11), 4096);
    s.write(new Uint8Array(3).fill(0x22), 6000);
    const got = readAt(s, 4095, 8194);
    assertEquals(got[0], 0);
    assertEquals(got[1], 0x11);
    assertEquals(got.slice(6000 - 4095, 6003 - 4095), new Uint8Array(3).fill(0x22));
    assertEquals(got[6003 - 4095], 0x11);
    assertEquals(got[8193], 0);
  });

  test("trim makes the range read as zeroes and leaves neighbours intact", 1 * MiB, (s) => {
    const model = pattern(s.size, 7);
    s.write(model, 0);
    const trims: [number, number][] = [[64 * KiB, 64 * KiB], [200_003, 9_000], [s.size - 5, 5]];
    for (const [offset, length] of trims) {
      s.trim(offset, length);
      model.fill(0, offset, offset + length);
      assertZero(s, offset, length, `trim ${offset}+${length}`);
    }
    assertMatches(s, model, "after trims");
    // Trimming a never-written or already-trimmed range is fine.
    s.trim(64 * KiB, 128 * KiB);
    model.fill(0, 64 * KiB, 192 * KiB);
    assertMatches(s, model, "after a second trim");
  });

  for (const mayDeallocate of [true, false]) {
    test(
      `writeZeroes(mayDeallocate=${mayDeallocate}) zeroes exactly the range`,
      1 * MiB,
      (s) => {
        const model = pattern(s.size, 11);
        s.write(model, 0);
        const ranges: [number, number][] = [[0, 4096], [5000, 70_000], [512 * KiB, 256 * KiB]];
        for (const [offset, length] of ranges) {
          s.writeZeroes(offset, length, mayDeallocate);
          model.fill(0, offset, offset + length);
          assertZero(s, offset, length, `writeZeroes ${offset}+${length}`);
        }
        assertMatches(s, model, "after writeZeroes");
        // Writing data over a zeroed range works as before.
        const again = pattern(10_000, 12);
        s.write(again, 6000);
        model.set(again, 6000);
        assertMatches(s, model, "after writing over zeroes");
        // Zeroing never-written space keeps it zero.
        s.trim(0, s.size);
        s.writeZeroes(100, 1000, mayDeallocate);
        assertZero(s, 0, s.size, "zeroes over a hole");
      },
    );
  }

  test("random writes, trims and zeroes agree with a byte model", 512 * KiB, (s) => {
    const model = new Uint8Array(s.size);
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    for (let i = 0; i < 300; i++) {
      const length = 1 + rand(rand(4) === 0 ? 40_000 : 5000);
      const offset = rand(s.size - length + 1);
      switch (rand(4)) {
        case 0:
        case 1: {
          const data = pattern(length, i + 100);
          s.write(data, offset);
          model.set(data, offset);
          break;
        }
        case 2:
          s.trim(offset, length);
          model.fill(0, offset, offset + length);
          break;
        default:
          s.writeZeroes(offset, length, rand(2) === 0);
          model.fill(0, offset, offset + length);
      }
      if (i % 50 === 49) assertMatches(s, model, `after step ${i}`);
    }
    assertMatches(s, model, "at the end");
    if (s.canExtents) {
      const extents = s.extents(0, s.size);
      assertWellFormed(extents, 0, s.size);
      assertTruthful(s, extents);
    }
  });

  test("extents() of a fresh store is one hole covering the range", 4 * MiB, (s) => {
    const all = s.extents(0, s.size);
    assertWellFormed(all, 0, s.size);
    if (!s.canExtents) return;
    assertEquals(all, [{ offset: 0, length: s.size, hole: true, zero: true }]);
    assertEquals(s.extents(12_345, 6789), [
      { offset: 12_345, length: 6789, hole: true, zero: true },
    ]);
  });

  test("extents() reports written data, holes around it, and clips to the range", 4 * MiB, (s) => {
    s.write(pattern(64 * KiB, 1), 1 * MiB);
    const all = s.extents(0, s.size);
    assertWellFormed(all, 0, s.size);
    assertTruthful(s, all);
    assert(inData(all, 1 * MiB, 64 * KiB), `written range not in data: ${JSON.stringify(all)}`);
    if (!s.canExtents) return;
    assertEquals(all.map((e) => e.hole), [true, false, true], JSON.stringify(all));
    // The data run is the written range, give or take the backing's allocation unit.
    assert(all[1].offset <= 1 * MiB && all[1].offset > 1 * MiB - 64 * KiB, JSON.stringify(all));
    const dataEnd = all[1].offset + all[1].length;
    assert(dataEnd >= 1 * MiB + 64 * KiB && dataEnd < 1 * MiB + 128 * KiB, JSON.stringify(all));

    // A query starting inside the data run starts exactly at its offset.
    const mid = s.extents(1 * MiB + 100, 1000);
    assertEquals(mid, [{ offset: 1 * MiB + 100, length: 1000, hole: false, zero: false }]);
    const tail = s.extents(1 * MiB + 32 * KiB, 2 * MiB);
    assertWellFormed(tail, 1 * MiB + 32 * KiB, 2 * MiB);
    assertEquals(tail.map((e) => e.hole), [false, true]);
    // Only the last byte of the store.
    assertEquals(s.extents(s.size - 1, 1), [
      { offset: s.size - 1, length: 1, hole: true, zero: true },
    ]);
  });

  test("extents() merges adjacent runs of the same kind", 4 * MiB, (s) => {
    // Three separate writes that touch: one data run, not three.
    s.write(pattern(64 * KiB, 1), 1 * MiB);
    s.write(pattern(64 * KiB, 2), 1 * MiB + 64 * KiB);
    s.write(pattern(64 * KiB, 3), 1 * MiB + 128 * KiB);
    const all = s.extents(0, s.size);
    assertWellFormed(all, 0, s.size);
    assert(inData(all, 1 * MiB, 192 * KiB), JSON.stringify(all));
    if (s.canExtents) assertEquals(all.length, 3, JSON.stringify(all));
  });

  test("extents() shows a trimmed range as a hole again", 4 * MiB, (s) => {
    s.write(pattern(1 * MiB, 5), 1 * MiB);
    s.trim(1 * MiB + 256 * KiB, 512 * KiB);
    const all = s.extents(0, s.size);
    assertWellFormed(all, 0, s.size);
    assertTruthful(s, all);
    assert(inData(all, 1 * MiB, 256 * KiB), JSON.stringify(all));
    assert(inData(all, 1 * MiB + 768 * KiB, 256 * KiB), JSON.stringify(all));
    if (!s.canTrim || !s.canExtents) return;
    assertEquals(all.map((e) => e.hole), [true, false, true, false, true], JSON.stringify(all));
    assertEquals([all[2].offset, all[2].length], [1 * MiB + 256 * KiB, 512 * KiB]);
  });

  test("resize grows with zeroes and keeps data; shrinking drops the tail", 1 * MiB, (s) => {
    const head = pattern(100_000, 3);
    s.write(head, 0);
    s.write(new Uint8Array([1, 2, 3]), s.size - 3);
    s.resize(3 * MiB);
    assertEquals(s.size, 3 * MiB);
    assertEquals(readAt(s, 0, head.length), head);
    assertEquals(readAt(s, 1 * MiB - 3, 3), new Uint8Array([1, 2, 3]));
    assertZero(s, 1 * MiB, 2 * MiB, "grown area");
    s.write(new Uint8Array([9]), 3 * MiB - 1);
    assertEquals(readAt(s, 3 * MiB - 1, 1), new Uint8Array([9]));
    if (s.canExtents) {
      const all = s.extents(0, s.size);
      assertWellFormed(all, 0, s.size);
      assertTruthful(s, all);
    }

    s.resize(50_000);
    assertEquals(s.size, 50_000);
    assertEquals(readAt(s, 0, 50_000), head.slice(0, 50_000));
    s.resize(1 * MiB);
    assertEquals(readAt(s, 0, 50_000), head.slice(0, 50_000));
    assertZero(s, 50_000, 1 * MiB - 50_000, "area cut off by the shrink, then regrown");
  });

  test("readBulk() reads what read() does, before and after writes and a resize", 1 * MiB, (s) => {
    const bulk = (offset: number, length: number) => {
      const b = new Uint8Array(length);
      readBulk(s, b, offset);
      return b;
    };
    const plain = (offset: number, length: number) => {
      const b = new Uint8Array(length);
      s.read(b, offset);
      return b;
    };
    assertEquals(bulk(0, s.size), new Uint8Array(s.size), "never written: zeroes");
    s.write(pattern(300_001, 4), 70_003);
    assertEquals(bulk(65_536, 400_000), plain(65_536, 400_000));
    // A write after a bulk read is seen by the next bulk read (one page cache).
    s.write(pattern(4096, 5), 69_632);
    assertEquals(bulk(69_632, 4096), pattern(4096, 5));
    s.resize(2 * MiB);
    s.write(pattern(1000, 6), 2 * MiB - 1000);
    assertEquals(bulk(MiB, MiB), plain(MiB, MiB));
    assertEquals(bulk(2 * MiB - 1000, 1000), pattern(1000, 6));
    // A sequential reader to the last byte (the file store reads ahead of one), then a jump.
    s.write(pattern(2 * MiB, 7), 0);
    for (let at = 0; at < 2 * MiB; at += 96 * 1024) {
      const n = Math.min(96 * 1024, 2 * MiB - at);
      assertEquals(bulk(at, n), pattern(2 * MiB, 7).subarray(at, at + n), `at ${at}`);
    }
    assertEquals(bulk(4096, 65536), pattern(2 * MiB, 7).subarray(4096, 4096 + 65536));
  });

  test("flush() resolves on a fresh store and after writes", 1 * MiB, async (s) => {
    await s.flush();
    s.write(pattern(4096, 1), 4096);
    s.trim(0, 4096);
    s.writeZeroes(8192, 4096, false);
    await s.flush();
    await Promise.all([s.flush(), s.flush(), s.flush()]);
    assertEquals(readAt(s, 4096, 4096), pattern(4096, 1));
  });

  test("allocatedBytes() is a non-negative integer", 1 * MiB, (s) => {
    const n = s.allocatedBytes();
    assert(Number.isInteger(n) && n >= 0, `allocatedBytes() = ${n}`);
  });
}
