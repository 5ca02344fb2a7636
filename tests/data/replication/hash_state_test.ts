/**
 * Region hash lists (data/replication/hash_state.ts, tracker.ts): a new copy starts clean
 * with the hash of zeros; a change marks its region in the activity log before the data
 * changes; the hash keeper makes quiet regions clean again, durably; a copy killed with
 * SIGKILL at random moments while it is written never reopens with a clean region whose
 * hash differs from its data, and only marked regions are rehashed.
 */

import { silentLogger } from "../../../control/common/mod.ts";
import { assert, assertEquals } from "../../_assert.ts";
import { HashState, nodesAt, treeLevels } from "../../../data/replication/hash_state.ts";
import { hashRegions } from "../../../data/replication/hashes.ts";
import { REGION_BYTES } from "../../../data/replication/regions.ts";
import { MARK_AHEAD } from "../../../data/replication/tracker.ts";
import { FileBlockStore } from "../../../data/store/mod.ts";

async function withCopy(
  size: number,
  fn: (path: string, store: FileBlockStore) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ballast-hashes-" });
  const path = `${dir}/copy.vol`;
  const store = FileBlockStore.create(path, size);
  try {
    await fn(path, store);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

const hex = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("a new copy is clean, every region with the hash of its zeros; the files are sparse", async () => {
  await withCopy(3 * REGION_BYTES + 4096, async (path, store) => {
    const hs = await HashState.open(path, silentLogger(), { fresh: true });
    try {
      assertEquals(hs.regions, 4);
      assertEquals(hs.dirtyRegions(), 0);
      for (let r = 0; r < 4; r++) {
        assertEquals(hex(await hs.leaf(r)), hex(await hashRegions(store, r, 1, REGION_BYTES)));
      }
      assert((await Deno.stat(`${path}.hashes`)).size === 64 + 4 * 16);
      assertEquals([...await Deno.readFile(`${path}.al`)], [0, 0, 0, 0]);
    } finally {
      await hs.close();
    }
  });
});

Deno.test("a change marks its region durably before it is made; the keeper cleans it and persists the hash", async () => {
  await withCopy(4 * REGION_BYTES, async (path, store) => {
    const hs = await HashState.open(path, silentLogger(), { fresh: true });
    try {
      const off = 2 * REGION_BYTES + 8192;
      const entering = hs.writer.enter(off, 4096);
      assert(entering !== undefined, "a clean region needs a mark first");
      await entering;
      assertEquals([...await Deno.readFile(`${path}.al`)], [0, 0, 1, 0], "marked on disk");
      assert(hs.table.isDirty(2));
      store.write(new Uint8Array(4096).fill(7), off);
      hs.writer.leave(off, 4096);
      assertEquals(hs.writer.enter(off, 4096), undefined, "a dirty region is entered at once");
      hs.writer.leave(off, 4096);
      const want = hex(await hashRegions(store, 2, 1, REGION_BYTES));
      assertEquals(hex(await hs.leaf(2)), want, "a dirty region is hashed from its data");
      assertEquals(await hs.keepAll(), 1);
      assertEquals(hs.dirtyRegions(), 0);
      assertEquals([...await Deno.readFile(`${path}.al`)], [0, 0, 0, 0], "mark cleared");
    } finally {
      await hs.close();
    }
    const again = await HashState.open(path, silentLogger());
    try {
      assertEquals(again.dirtyRegions(), 0, "reopened clean");
      assertEquals(
        hex(await again.leaf(2)),
        hex(await hashRegions(store, 2, 1, REGION_BYTES)),
        "with the persisted hash of the new data",
      );
    } finally {
      await again.close();
    }
  });
});

Deno.test("a sequential writer has the next regions marked ahead, durably, without entering them", async () => {
  const n = MARK_AHEAD + 6;
  await withCopy(n * REGION_BYTES, async (path) => {
    const hs = await HashState.open(path, silentLogger(), { fresh: true });
    const w = hs.writer;
    const write = async (offset: number, length: number) => {
      await w.enter(offset, length);
      w.leave(offset, length);
    };
    const dirty = () => Array.from({ length: n }, (_, r) => hs.table.isDirty(r) ? 1 : 0);
    const until = async (want: number[]) => {
      const deadline = Date.now() + 10_000;
      while (dirty().join() !== want.join()) {
        assert(Date.now() < deadline, `dirty regions ${dirty()} never became ${want}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    try {
      await write(0, REGION_BYTES);
      assertEquals(dirty(), [1, ...new Array(n - 1).fill(0)], "a first write marks only itself");
      assert(await hs.table.lock(4), "the keeper's lock");
      await write(REGION_BYTES, REGION_BYTES); // continues the first
      const ahead = [
        1,
        1,
        ...Array.from({ length: n - 2 }, (_, i) => i + 2 <= MARK_AHEAD + 1 ? 1 : 0),
      ];
      ahead[4] = 0; // locked: skipped
      await until(ahead);
      assertEquals([...await Deno.readFile(`${path}.al`)], ahead, "the marks are on disk");
      for (let r = 0; r < n; r++) assertEquals(hs.table.inFlight(r), 0, `region ${r} not entered`);
      hs.table.unlock(4);
      await write(4 * REGION_BYTES + 4096, 4096); // starts no stream: marks only region 4
      ahead[4] = 1;
      await until(ahead);
      assertEquals(await hs.keepAll(), MARK_AHEAD + 2, "the keeper cleans them all again");
    } finally {
      await hs.close();
    }
  });
});

Deno.test("a copy without a hash list (made before them) opens with every region dirty", async () => {
  await withCopy(2 * REGION_BYTES, async (path, store) => {
    store.write(new Uint8Array(4096).fill(1), 0);
    const hs = await HashState.open(path, silentLogger());
    try {
      assertEquals(hs.dirtyRegions(), 2);
      assertEquals(hex(await hs.leaf(0)), hex(await hashRegions(store, 0, 1, REGION_BYTES)));
    } finally {
      await hs.close();
    }
  });
});

Deno.test("a hash list whose activity log is gone or short opens with every region dirty (a change behind it is then found)", async () => {
  for (const damage of ["removed", "emptied"] as const) {
    await withCopy(3 * REGION_BYTES, async (path, store) => {
      const first = await HashState.open(path, silentLogger(), { fresh: true });
      await first.close();
      // The data changes while the copy is closed, and its activity log is lost with it.
      store.write(new Uint8Array(4096).fill(7), REGION_BYTES);
      if (damage === "removed") await Deno.remove(`${path}.al`);
      else await Deno.writeFile(`${path}.al`, new Uint8Array(0));
      const hs = await HashState.open(path, silentLogger());
      try {
        assertEquals(hs.dirtyRegions(), 3, damage);
        assertEquals(
          hex(await hs.leaf(1)),
          hex(await hashRegions(store, 1, 1, REGION_BYTES)),
          `${damage}: the changed region's hash is its data's`,
        );
        assertEquals((await Deno.readFile(`${path}.al`)).length, 3, `${damage}: log made again`);
      } finally {
        await hs.close();
      }
    });
  }
});

Deno.test("growth: new regions are clean zeros, a partial last region is rehashed", async () => {
  await withCopy(REGION_BYTES + 4096, async (path, store) => {
    store.write(new Uint8Array(4096).fill(9), REGION_BYTES);
    const hs = await HashState.open(path, silentLogger(), { fresh: false });
    try {
      await hs.keepAll();
      await hs.grow(5 * REGION_BYTES);
      assertEquals(hs.regions, 5);
      assert(hs.table.isDirty(1), "the old partial region");
      const grown = FileBlockStore.open(path);
      try {
        for (let r = 0; r < 5; r++) {
          assertEquals(hex(await hs.leaf(r)), hex(await hashRegions(grown, r, 1, REGION_BYTES)));
        }
      } finally {
        grown.close();
      }
    } finally {
      await hs.close();
    }
    const again = await HashState.open(path, silentLogger());
    try {
      assertEquals(again.regions, 5, "the header follows");
    } finally {
      await again.close();
    }
  });
});

Deno.test("tree: equal copies have equal roots; one changed region changes one node per level", async () => {
  assertEquals(treeLevels(1), 1);
  assertEquals(treeLevels(64), 2);
  assertEquals(treeLevels(65), 3);
  assertEquals(nodesAt(4097, 1), 65);
  await withCopy(130 * REGION_BYTES, async (path, store) => {
    const hs = await HashState.open(path, silentLogger(), { fresh: true });
    try {
      const levels = hs.levels();
      assertEquals(levels, 3);
      const before = await Promise.all([0, 1, 2].map((l) => hs.nodes(l, 0, nodesAt(130, l))));
      await hs.writer.enter(100 * REGION_BYTES, 1);
      store.write(new Uint8Array([1]), 100 * REGION_BYTES);
      hs.writer.leave(100 * REGION_BYTES, 1);
      const after = await Promise.all([0, 1, 2].map((l) => hs.nodes(l, 0, nodesAt(130, l))));
      const differing = (a: Uint8Array, b: Uint8Array) => {
        const out: number[] = [];
        for (let i = 0; i < a.length / 16; i++) {
          if (hex(a.subarray(i * 16, i * 16 + 16)) !== hex(b.subarray(i * 16, i * 16 + 16))) {
            out.push(i);
          }
        }
        return out;
      };
      assertEquals(differing(before[0], after[0]), [100]);
      assertEquals(differing(before[1], after[1]), [1]);
      assertEquals(differing(before[2], after[2]), [0]);
      assertEquals(hex(await hs.nodes(1, 1, 1)), hex(after[1].subarray(16, 32)));
    } finally {
      await hs.close();
    }
  });
});

Deno.test("SIGKILL at random moments while writing: no clean region's hash ever differs from its data, and only marked regions need rehashing", async () => {
  const regions = 24;
  await withCopy(regions * REGION_BYTES, async (path, store) => {
    await (await HashState.open(path, silentLogger(), { fresh: true })).close();
    const child = new URL("./testdata/churn.ts", import.meta.url).pathname;
    let checkedClean = 0;
    let cleanWritten = 0;
    for (let round = 1; round <= 6; round++) {
      const p = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", child, path, String(round * 7919)],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const reader = p.stdout.getReader();
      const first = await reader.read();
      assertEquals(new TextDecoder().decode(first.value).trim(), "writing");
      // A different moment each round: somewhere in the next 50..650 ms.
      await new Promise((r) => setTimeout(r, 50 + ((round * 137) % 600)));
      p.kill("SIGKILL");
      await p.status;
      reader.releaseLock();
      await p.stdout.cancel().catch(() => {});
      const hs = await HashState.open(path, silentLogger());
      try {
        const dirty = hs.dirtyRegions();
        assert(
          dirty < regions,
          `round ${round}: ${dirty} of ${regions} dirty: the log did nothing`,
        );
        for (let r = 0; r < regions; r++) {
          if (hs.table.isDirty(r)) continue;
          checkedClean++;
          const data = new Uint8Array(REGION_BYTES);
          store.read(data, r * REGION_BYTES);
          if (data.some((b) => b !== 0)) cleanWritten++;
          assertEquals(
            hex(await hs.leaf(r)),
            hex(await hashRegions(store, r, 1, REGION_BYTES)),
            `round ${round}: region ${r} is clean but its hash is not its data's`,
          );
        }
      } finally {
        await hs.close();
      }
    }
    assert(checkedClean > 0, "some regions were clean");
    assert(cleanWritten > 0, "the keeper made written regions clean before a kill");
    // deno-lint-ignore no-console
    console.log(`checked ${checkedClean} clean regions, ${cleanWritten} of them written`);
  });
});

Deno.test("verify() finds a clean region whose data changed under it; with markCorrupt the region is marked durably and rehashed from its data", async () => {
  await withCopy(4 * REGION_BYTES, async (path, store) => {
    const hs = await HashState.open(path, silentLogger(), { fresh: true });
    try {
      const stale = hex(await hs.leaf(1));
      store.write(new Uint8Array(512).fill(0x5a), REGION_BYTES + 1536); // behind its back
      const actual = hex(await hashRegions(store, 1, 1, REGION_BYTES));
      const corruptFlags = async (markCorrupt: boolean) => {
        const out = await hs.verify(0, 4, { markCorrupt });
        return [...out.subarray(4 * 16)];
      };
      assertEquals(await corruptFlags(false), [0, 1, 0, 0]);
      assertEquals(hex(await hs.leaf(1)), stale, "a plain verify only reports");
      assertEquals(hs.dirtyRegions(), 0);
      assertEquals(await corruptFlags(true), [0, 1, 0, 0]);
      assertEquals([...await Deno.readFile(`${path}.al`)], [0, 1, 0, 0], "marked on disk");
      assertEquals(hex(await hs.leaf(1)), actual, "the hash now comes from the data");
      await hs.keepAll();
      assertEquals(await corruptFlags(true), [0, 0, 0, 0], "clean again, with the true hash");
    } finally {
      await hs.close();
    }
    const again = await HashState.open(path, silentLogger());
    try {
      assertEquals(again.dirtyRegions(), 0);
      assertEquals(hex(await again.leaf(1)), hex(await hashRegions(store, 1, 1, REGION_BYTES)));
    } finally {
      await again.close();
    }
  });
});
