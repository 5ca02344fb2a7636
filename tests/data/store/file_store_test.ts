/**
 * FileBlockStore: the block store contract on real sparse files, plus what only a
 * file can show: allocation on disk (st_blocks), punch-hole and zero-range behaviour,
 * errno on create/open, and persistence across close/open.
 * @module
 */

import { BlockStoreError } from "../../../data/store/block_store.ts";
import { FileBlockStore } from "../../../data/store/file_store.ts";
import { assert, assertEquals, assertThrows } from "../../_assert.ts";
import { defineBlockStoreContract, pattern } from "./block_store_contract.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const TiB = 1024 * 1024 * MiB;

defineBlockStoreContract("FileBlockStore", async (size) => {
  const dir = await Deno.makeTempDir({ prefix: "ballast-file-store-" });
  const store = FileBlockStore.create(`${dir}/vol`, size);
  return {
    store,
    cleanup: async () => {
      store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
});

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
async function withDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ballast-file-store-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Allocated bytes as the filesystem reports them (st_blocks * 512). */
function statAllocated(path: string): number {
  const blocks = Deno.statSync(path).blocks;
  assert(blocks !== null, "st_blocks is not available on this platform");
  return blocks * 512;
}

Deno.test("FileBlockStore.create() makes a 4 TiB sparse file that allocates almost nothing", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/big`;
    const store = FileBlockStore.create(path, 4 * TiB);
    try {
      assertEquals(store.size, 4 * TiB);
      assertEquals(Deno.statSync(path).size, 4 * TiB);
      assert(store.allocatedBytes() < 64 * KiB, `allocatedBytes() = ${store.allocatedBytes()}`);
      assert(statAllocated(path) < 64 * KiB, `st_blocks = ${statAllocated(path) / 512}`);
      assertEquals(store.extents(0, store.size), [
        { offset: 0, length: 4 * TiB, hole: true, zero: true },
      ]);
      // The far end works, and costs one block, not terabytes.
      store.write(new Uint8Array([1, 2, 3, 4]), 4 * TiB - 4);
      const b = new Uint8Array(4);
      store.read(b, 4 * TiB - 4);
      assertEquals(b, new Uint8Array([1, 2, 3, 4]));
      await store.flush();
      assert(store.allocatedBytes() <= 64 * KiB, `allocatedBytes() = ${store.allocatedBytes()}`);
      assertEquals(Deno.statSync(path).size, 4 * TiB);
    } finally {
      store.close();
    }
  });
});

Deno.test("FileBlockStore.allocatedBytes() equals st_blocks * 512", async () => {
  await withDir(async (dir) => {
    const store = FileBlockStore.create(`${dir}/v`, 16 * MiB);
    try {
      store.write(pattern(1 * MiB, 1), 0);
      await store.flush();
      assertEquals(store.allocatedBytes(), statAllocated(`${dir}/v`));
      assert(store.allocatedBytes() >= 1 * MiB, `allocatedBytes() = ${store.allocatedBytes()}`);
    } finally {
      store.close();
    }
  });
});

Deno.test("FileBlockStore.trim() frees the blocks on disk and keeps other data", async () => {
  await withDir(async (dir) => {
    const store = FileBlockStore.create(`${dir}/v`, 32 * MiB);
    try {
      store.write(pattern(8 * MiB, 2), 4 * MiB);
      await store.flush();
      const before = store.allocatedBytes();
      assert(before >= 8 * MiB, `allocated before trim: ${before}`);
      store.trim(4 * MiB, 6 * MiB);
      const after = store.allocatedBytes();
      assert(before - after >= 6 * MiB, `trim of 6 MiB freed only ${before - after} bytes`);
      assert(after >= 2 * MiB, `untrimmed 2 MiB must stay allocated, have ${after}`);
      const tail = new Uint8Array(2 * MiB);
      store.read(tail, 10 * MiB);
      assertEquals(tail, pattern(8 * MiB, 2).slice(6 * MiB));
    } finally {
      store.close();
    }
  });
});

Deno.test("FileBlockStore.writeZeroes() punches a hole only when it may deallocate", async () => {
  await withDir(async (dir) => {
    const store = FileBlockStore.create(`${dir}/v`, 16 * MiB);
    try {
      store.write(pattern(4 * MiB, 3), 0);
      store.write(pattern(4 * MiB, 4), 8 * MiB);
      await store.flush();
      const before = store.allocatedBytes();
      assert(before >= 8 * MiB, `allocated: ${before}`);

      // NBD_CMD_FLAG_NO_HOLE: zeroes, but the blocks stay allocated.
      store.writeZeroes(0, 4 * MiB, false);
      const kept = store.allocatedBytes();
      assert(kept >= before - 64 * KiB, `NO_HOLE zeroing freed ${before - kept} bytes`);

      // May deallocate: the blocks go.
      store.writeZeroes(8 * MiB, 4 * MiB, true);
      const freed = store.allocatedBytes();
      assert(kept - freed >= 4 * MiB, `zeroing with deallocation freed ${kept - freed} bytes`);

      const b = new Uint8Array(16 * MiB).fill(0xee);
      store.read(b, 0);
      assertEquals(b.findIndex((x) => x !== 0), -1);
      assertEquals(store.extents(8 * MiB, 4 * MiB), [
        { offset: 8 * MiB, length: 4 * MiB, hole: true, zero: true },
      ]);
    } finally {
      store.close();
    }
  });
});

Deno.test("FileBlockStore.writeZeroes(mayDeallocate=false) allocates a never-written range", async () => {
  await withDir((dir) => {
    const store = FileBlockStore.create(`${dir}/v`, 16 * MiB);
    try {
      const before = store.allocatedBytes();
      store.writeZeroes(1 * MiB, 2 * MiB, false);
      assert(
        store.allocatedBytes() - before >= 2 * MiB,
        `NO_HOLE zeroing allocated ${store.allocatedBytes() - before} bytes`,
      );
    } finally {
      store.close();
    }
  });
});

Deno.test("FileBlockStore.create() over an existing file fails with EEXIST and leaves it alone", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/v`;
    await Deno.writeFile(path, new Uint8Array([7, 7, 7]));
    const err = assertThrows(() => FileBlockStore.create(path, 1 * MiB), BlockStoreError);
    assertEquals(err.errno, "EEXIST");
    assertEquals(err.name, "BlockStoreError");
    assert(err.message.includes(path), err.message);
    assertEquals(await Deno.readFile(path), new Uint8Array([7, 7, 7]));
  });
});

Deno.test("FileBlockStore.open() of a missing file fails with ENOENT", async () => {
  await withDir((dir) => {
    const err = assertThrows(() => FileBlockStore.open(`${dir}/missing`), BlockStoreError);
    assertEquals(err.errno, "ENOENT");
    assert(err.message.includes(`${dir}/missing`), err.message);
  });
});

Deno.test("FileBlockStore.create() in a missing directory fails with ENOENT", async () => {
  await withDir((dir) => {
    const err = assertThrows(
      () => FileBlockStore.create(`${dir}/no/such/v`, 4096),
      BlockStoreError,
    );
    assertEquals(err.errno, "ENOENT");
  });
});

Deno.test("FileBlockStore data, holes and size survive close and open", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/v`;
    const data = pattern(300_001, 9);
    const first = FileBlockStore.create(path, 64 * MiB + 5);
    first.write(data, 12_345);
    first.write(new Uint8Array([0xaa]), 64 * MiB + 4);
    await first.flush();
    first.close();
    first.close(); // idempotent

    const second = FileBlockStore.open(path);
    try {
      assertEquals(second.size, 64 * MiB + 5);
      const b = new Uint8Array(data.length);
      second.read(b, 12_345);
      assertEquals(b, data);
      const last = new Uint8Array(1);
      second.read(last, 64 * MiB + 4);
      assertEquals(last, new Uint8Array([0xaa]));
      const map = second.extents(0, second.size);
      assertEquals(map[0], { offset: 0, length: map[0].length, hole: true, zero: true });
      assert(map.some((e) => !e.hole && e.offset <= 12_345));
      assertEquals(map[map.length - 1].offset + map[map.length - 1].length, 64 * MiB + 5);
    } finally {
      second.close();
    }
  });
});

Deno.test("FileBlockStore.readBulk() reads the store's own inode through a second open file, closed with the store", async () => {
  await withDir((dir) => {
    // This process's open files of `path` (not all of them: other tests' leftovers may close
    // theirs meanwhile, as happened in one CI run).
    const openOf = (path: string) =>
      [...Deno.readDirSync("/proc/self/fd")].filter((e) => {
        try {
          return Deno.readLinkSync(`/proc/self/fd/${e.name}`) === path;
        } catch {
          return false; // closed meanwhile
        }
      }).length;
    const path = Deno.realPathSync(dir) + "/v";
    const store = FileBlockStore.create(path, 4 * MiB);
    assertEquals(openOf(path), 1);
    const data = pattern(2 * MiB, 3);
    store.write(data, MiB);
    const b = new Uint8Array(2 * MiB);
    store.readBulk(b, MiB);
    assertEquals(b, data);
    assertEquals(openOf(path), 2, "one more open file, made on first use");
    store.readBulk(b, 0);
    assertEquals(openOf(path), 2, "and only one");
    // The path renamed and another file put in its place: still this store's data.
    const old = Deno.realPathSync(dir) + "/old";
    Deno.renameSync(path, old);
    Deno.writeFileSync(path, new Uint8Array(4 * MiB).fill(0xee));
    store.readBulk(b, MiB);
    assertEquals(b, data);
    assertEquals(openOf(old), 2);
    store.close();
    assertEquals(openOf(old), 0, "both closed");
  });
});

Deno.test("FileBlockStore refuses use after close with EBADF, even when its descriptor's number went to another file", async () => {
  await withDir((dir) => {
    const a = FileBlockStore.create(`${dir}/a`, MiB);
    a.write(pattern(4096, 1), 0);
    a.close();
    // The lowest free number: most likely a's, now another volume's file.
    const b = FileBlockStore.create(`${dir}/b`, MiB);
    try {
      b.write(new Uint8Array(4096).fill(0xbb), 0);
      const buf = new Uint8Array(4096);
      for (
        const [what, use] of [
          ["read", () => a.read(buf, 0)],
          ["readBulk", () => a.readBulk(buf, 0)],
          ["write", () => a.write(buf, 0)],
          ["trim", () => a.trim(0, 4096)],
          ["writeZeroes", () => a.writeZeroes(0, 4096, false)],
          ["extents", () => a.extents(0, MiB)],
          ["resize", () => a.resize(2 * MiB)],
        ] as const
      ) {
        const err = assertThrows(use, BlockStoreError, undefined, what);
        assertEquals((err as BlockStoreError).errno, "EBADF", what);
      }
      const check = new Uint8Array(4096);
      b.read(check, 0);
      assertEquals(check, new Uint8Array(4096).fill(0xbb), "b untouched");
    } finally {
      b.close();
    }
  });
});

Deno.test("FileBlockStore.resize() changes the file size on disk", async () => {
  await withDir((dir) => {
    const store = FileBlockStore.create(`${dir}/v`, 1 * MiB);
    try {
      store.resize(1 * TiB);
      assertEquals(Deno.statSync(`${dir}/v`).size, 1 * TiB);
      assert(store.allocatedBytes() < 64 * KiB);
    } finally {
      store.close();
    }
  });
});

/**
 * Writes 1 MiB three times (into a new file, over the same range, then half over it and half
 * past it) in a child process under strace; the sizes of its pwrite() calls, in order.
 */
async function pwriteSizes(dir: string): Promise<number[]> {
  const script = `${dir}/pieces.ts`;
  const store = new URL("../../../data/store/file_store.ts", import.meta.url).href;
  await Deno.writeTextFile(
    script,
    `import { FileBlockStore } from "${store}";
const s = FileBlockStore.create("${dir}/vol", 4 << 20);
const data = (v: number) => new Uint8Array(1 << 20).fill(v);
s.write(data(1), 0);
s.write(data(2), 0);
s.write(data(3), 512 << 10);
const back = new Uint8Array(3 << 19);
s.read(back, 0);
const want = (i: number) => (i < 1 << 19 ? 2 : 3);
if (!back.every((b, i) => b === want(i))) throw new Error("read back differs");
s.close();
`,
  );
  const out = `${dir}/strace.txt`;
  const run = await new Deno.Command("strace", {
    args: ["-f", "-qq", "-y", "-e", "trace=pwrite64", "-e", "signal=none", "-o", out]
      .concat([Deno.execPath(), "run", "-A", script]),
    stdout: "null",
    stderr: "piped",
  }).output();
  assert(run.success, new TextDecoder().decode(run.stderr));
  // The volume's calls only (-y names each descriptor's file): deno writes caches too.
  const calls = /pwrite64\(\d+<[^>]*\/vol>, .*, (\d+), \d+\) = /g;
  return [...(await Deno.readTextFile(out)).matchAll(calls)].map((m) => Number(m[1]));
}

const HAVE_STRACE = (() => {
  try {
    return new Deno.Command("strace", { args: ["-V"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
})();
if (!HAVE_STRACE) {
  // deno-lint-ignore no-console
  console.warn("file_store_test: skipping the pwrite() sizes test: strace is not installed");
}

Deno.test({
  name: "large writes: in 16 KiB pieces into pages not cached, in one pwrite() over cached ones",
  ignore: !HAVE_STRACE,
  fn: async () => {
    await withDir(async (dir) => {
      const pieces = new Array(64).fill(16 * KiB);
      // New file: pieces (no large folio for later 4 KiB writes to walk). Cached: one call.
      // Half cached: pieces again.
      assertEquals(await pwriteSizes(dir), [...pieces, MiB, ...pieces]);
    });
  },
});

/** Bytes of `path` in the page cache (util-linux fincore). */
async function resident(path: string): Promise<number> {
  const out = await new Deno.Command("fincore", {
    args: ["--bytes", "--noheadings", "--output", "RES", path],
    stdout: "piped",
  }).output();
  return Number(new TextDecoder().decode(out.stdout).trim());
}

/** Drops the clean pages of `path` from the page cache (GNU dd: nocache with no count). */
async function dropCache(path: string): Promise<void> {
  await new Deno.Command("dd", { args: [`if=${path}`, "iflag=nocache", "count=0"], stderr: "null" })
    .output();
}

Deno.test("FileBlockStore.readBulk() reads ahead for a sequential reader only, interleaved or not", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/v`;
    const store = FileBlockStore.create(path, 64 * MiB);
    try {
      store.write(pattern(64 * MiB, 9), 0);
      await store.flush();
      await dropCache(path);
      if (await resident(path) !== 0) {
        // deno-lint-ignore no-console
        console.warn(`file_store_test: skipped: the page cache of ${path} cannot be dropped here`);
        return;
      }
      const b = new Uint8Array(4 * KiB);
      // A one-off read brings in its own page only: the file it reads through has no kernel
      // readahead (a regression to the store's own file would read 128 KiB or more here).
      store.readBulk(b, 40 * MiB);
      assertEquals(await resident(path), 4 * KiB, "a one-off 4 KiB read");
      assertEquals(b, pattern(64 * MiB, 9).subarray(40 * MiB, 40 * MiB + 4 * KiB));
      // Two readers, interleaved: each one's second read asks for what follows it.
      for (const at of [0, 4 * KiB]) {
        store.readBulk(b, at);
        store.readBulk(b, 20 * MiB + at);
      }
      const want = 2 * (8 * KiB + 128 * KiB) + 4 * KiB;
      const deadline = Date.now() + 20_000;
      let got = 0;
      while ((got = await resident(path)) < want && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assertEquals(got, want, "both readers' next 128 KiB, read ahead (and nothing more)");
    } finally {
      store.close();
    }
  });
});

/**
 * A directory on a file system without FALLOC_FL_ZERO_RANGE (tmpfs, /dev/shm), or why this
 * machine has none to test on.
 */
function noZeroRangeDir(): { dir: string } | { why: string } {
  let dir: string;
  try {
    dir = Deno.makeTempDirSync({ dir: "/dev/shm", prefix: "ballast-fastzero-" });
  } catch (err) {
    return { why: `/dev/shm is not usable here (${err})` };
  }
  const scratch = FileBlockStore.create(`${dir}/probe.vol`, 1 << 20);
  scratch.writeZeroes(0, 4096, false); // finds out whether ZERO_RANGE works
  const zeroRange = scratch.canFastZero;
  scratch.close();
  if (!zeroRange) return { dir };
  Deno.removeSync(dir, { recursive: true });
  return { why: "this tmpfs zeroes ranges without writing (FAST_ZERO is real here)" };
}
const NO_ZERO_RANGE = noZeroRangeDir();
globalThis.addEventListener("unload", () => {
  if ("dir" in NO_ZERO_RANGE) Deno.removeSync(NO_ZERO_RANGE.dir, { recursive: true });
});

Deno.test({
  name: "dir" in NO_ZERO_RANGE
    ? "FAST_ZERO where the file system cannot zero without writing: ENOTSUP at once, nothing written"
    : `FAST_ZERO without ZERO_RANGE (skipped: ${NO_ZERO_RANGE.why})`,
  ignore: !("dir" in NO_ZERO_RANGE),
  fn() {
    const dir = (NO_ZERO_RANGE as { dir: string }).dir;
    const store = FileBlockStore.create(`${dir}/v.vol`, 1 << 20);
    try {
      store.write(new Uint8Array(8192).fill(7), 0);
      assertEquals(store.canFastZero, true, "a fresh store has not found out yet");
      const fastZero = () => store.writeZeroes(0, 8192, false, true); // NO_HOLE, FAST_ZERO
      const err = assertThrows(fastZero, BlockStoreError);
      assertEquals(err.errno, "ENOTSUP");
      const back = new Uint8Array(8192);
      store.read(back, 0);
      assert(back.every((b) => b === 7), "nothing was written");
      assertEquals(store.canFastZero, false, "no longer advertised");
      assertEquals(assertThrows(fastZero, BlockStoreError).errno, "ENOTSUP", "nor the next");
      store.writeZeroes(0, 8192, false); // without FAST_ZERO: zeroes are written
      store.read(back, 0);
      assert(back.every((b) => b === 0), "zeroed");
    } finally {
      store.close();
    }
  },
});

Deno.test("FileBlockStore: a flush that failed on another thread's open file of the copy fails here too (shared word)", async () => {
  await withDir(async (dir) => {
    const words = new Int32Array(new SharedArrayBuffer(16));
    const a = FileBlockStore.create(`${dir}/vol`, MiB);
    const b = FileBlockStore.open(`${dir}/vol`);
    try {
      a.shareFlushFailure(words, 2);
      b.shareFlushFailure(words, 2);
      await a.flush();
      await b.flush();
      // What `a`'s thread writes into the word when its fdatasync fails (no way to make the
      // kernel fail one here): every other open file's flush fails from then on.
      Atomics.store(words, 2, 1);
      for (const s of [b, a]) {
        const err = await s.flush().then(() => undefined, (e) => e);
        assert(err instanceof BlockStoreError, "flush fails");
        assertEquals(err.errno, "EIO");
        assert(err.message.includes("fdatasync failed on another thread"), err.message);
      }
      // Final for the open file, even if the word were cleared.
      Atomics.store(words, 2, 0);
      assertEquals(await b.flush().then(() => "ok", () => "EIO"), "EIO");
    } finally {
      a.close();
      b.close();
    }
  });
});
