/**
 * The region table (data/replication/regions.ts): writes of one region from two threads
 * never overlap, a lock waits for writes in flight and holds new ones back, and flags and
 * counts survive growth. One test uses a real Web Worker on the same shared memory.
 */

import { assert, assertEquals, assertRejects, assertThrows } from "../../_assert.ts";
import { WriteTracker } from "../../../data/replication/tracker.ts";
import { REGION_BYTES, regionSpan, RegionTable } from "../../../data/replication/regions.ts";

Deno.test("regionSpan() covers every region a byte range touches", () => {
  assertEquals(regionSpan(0, 1), [0, 0]);
  assertEquals(regionSpan(REGION_BYTES - 1, 2), [0, 1]);
  assertEquals(regionSpan(3 * REGION_BYTES, REGION_BYTES), [3, 3]);
  assertEquals(regionSpan(4096, 5 * REGION_BYTES), [0, 5]);
});

Deno.test("RegionTable: one thread's writes share a region, another thread's wait until they left", async () => {
  const t = RegionTable.create(4 * REGION_BYTES);
  assertEquals(t.count, 4);
  assert(t.tryEnter(1, 1));
  assert(t.tryEnter(1, 1), "the same thread enters again");
  assertEquals(t.inFlight(1), 2);
  assert(!t.tryEnter(1, 2), "another thread must wait");
  assert(t.tryEnter(2, 2), "other regions are free");
  let woke = false;
  const waiting = t.wait(1).then(() => (woke = true));
  t.leave(1);
  assert(!t.tryEnter(1, 2), "one write still in flight");
  t.leave(1);
  await waiting;
  assert(woke);
  assert(t.tryEnter(1, 2), "free once the first thread left");
  assertEquals(t.changes(1), 3);
  assertThrows(() => t.tryEnter(4, 1), RangeError);
  t.leave(1);
  t.leave(2);
  assertThrows(() => t.leave(2), Error, "left more often");
});

Deno.test("RegionTable: a lock waits for writes in flight and keeps new ones out until unlocked", async () => {
  const t = RegionTable.create(2 * REGION_BYTES);
  assert(t.tryEnter(0, 3));
  let locked = false;
  const locking = t.lock(0).then((ok) => (locked = ok));
  await new Promise((r) => setTimeout(r, 0));
  assert(!locked, "the lock waits for the write in flight");
  assert(!t.tryEnter(0, 3), "no write enters a region being locked, not even its thread's");
  t.leave(0);
  await locking;
  assert(locked);
  assertEquals(await t.lock(0), false, "a second lock is refused at once");
  assert(t.tryEnter(1, 3), "other regions are not locked");
  t.unlock(0);
  assert(t.tryEnter(0, 4));
  t.leave(0);
  t.leave(1);
});

Deno.test("RegionTable: dirty flags and counts survive in-flight changes and growth", () => {
  const t = RegionTable.create(REGION_BYTES + 1);
  assertEquals(t.count, 2);
  t.setDirty(1, true);
  assert(t.tryEnter(1, 1));
  assert(t.isDirty(1), "entering keeps the flag");
  t.leave(1);
  assert(t.isDirty(1), "leaving keeps the flag");
  t.grow(10 * REGION_BYTES);
  assertEquals(t.count, 10);
  assert(t.isDirty(1) && !t.isDirty(9), "old regions keep their flags; new ones are clean");
  assertEquals(t.changes(1), 1);
  assertThrows(() => t.grow(2 ** 60), RangeError, "reopen the volume");
});

Deno.test("RegionTable: dirtyCount counts the dirty regions as they change, from any view, across locks and growth", () => {
  const t = RegionTable.create(4 * REGION_BYTES);
  const other = new RegionTable({ buffer: t.buffer }); // another thread's view
  assertEquals(t.dirtyCount, 0);
  t.setDirty(0, true);
  other.setDirty(3, true);
  t.setDirty(0, true); // already dirty: counted once
  assertEquals([t.dirtyCount, other.dirtyCount], [2, 2]);
  assert(t.tryEnter(0, 1));
  t.leave(0);
  other.setDirty(2, false); // clean already: no change
  assertEquals(t.dirtyCount, 2);
  t.grow(64 * REGION_BYTES);
  other.setDirty(40, true);
  t.setDirty(0, false);
  assertEquals(t.dirtyCount, 2);
  let n = 0;
  for (let r = 0; r < t.count; r++) if (t.isDirty(r)) n++;
  assertEquals(n, t.dirtyCount);
});

Deno.test("RegionTable: a table attached before the buffer grew reaches the new regions", () => {
  const owner = RegionTable.create(2 * REGION_BYTES);
  const other = new RegionTable({ buffer: owner.buffer }); // as a worker thread attaches
  assert(other.tryEnter(1, 2));
  other.leave(1);
  assertThrows(() => other.tryEnter(5, 2), RangeError, "region 5 of 2");
  owner.grow(8 * REGION_BYTES);
  owner.setDirty(7, true);
  assertEquals(other.count, 8);
  assert(other.isDirty(7), "the owner's flag on a new region is seen");
  assert(other.tryEnter(7, 2), "a new region can be entered");
  assertEquals(owner.inFlight(7), 1);
  assertEquals(owner.changes(7), 1);
  other.leave(7);
  assertEquals(owner.inFlight(7), 0);
  assertThrows(() => other.isDirty(8), RangeError, "region 8 of 8");
  assertThrows(() => other.isDirty(-1), RangeError);
});

Deno.test("RegionTable: a write on a real worker thread holds the main thread's lock back until it leaves", async () => {
  const t = RegionTable.create(REGION_BYTES);
  const url = new URL("../../../data/replication/regions.ts", import.meta.url).href;
  const src = `
    import { RegionTable } from ${JSON.stringify(url)};
    self.onmessage = async (e) => {
      const t = new RegionTable({ buffer: e.data.buffer });
      if (e.data.op === "enter") postMessage(t.tryEnter(0, 7));
      else if (e.data.op === "leave") { t.leave(0); postMessage("left"); }
      else if (e.data.op === "try") postMessage(t.tryEnter(0, 7));
    };`;
  const w = new Worker(URL.createObjectURL(new Blob([src], { type: "text/javascript" })), {
    type: "module",
  });
  const ask = (op: string) =>
    new Promise<unknown>((resolve) => {
      w.onmessage = (e) => resolve(e.data);
      w.postMessage({ op, buffer: t.buffer });
    });
  try {
    assertEquals(await ask("enter"), true);
    assert(!t.tryEnter(0, 1), "the main thread waits for the worker's write");
    let locked = false;
    const locking = t.lock(0).then(() => (locked = true));
    await new Promise((r) => setTimeout(r, 20));
    assert(!locked, "still in flight on the worker");
    assertEquals(await ask("leave"), "left");
    await locking;
    assert(locked);
    assertEquals(await ask("try"), false, "locked: the worker waits");
    t.unlock(0);
    assertEquals(await ask("try"), true);
    assertEquals(await ask("leave"), "left");
  } finally {
    w.terminate();
  }
});

Deno.test("WriteTracker: an activity log on a full disk fails the write with ENOSPC, not EIO, and leaves the region unentered", async () => {
  const t = RegionTable.create(4 * REGION_BYTES);
  // /dev/full: every write to it fails with ENOSPC, as a full file system's would.
  const w = new WriteTracker(t, 1, "/dev/full");
  try {
    const err = await assertRejects(() => w.enter(REGION_BYTES, 4096)!);
    assertEquals((err as { errno?: string }).errno, "ENOSPC");
    assert((err as Error).message.includes("activity log"), (err as Error).message);
    assertEquals([t.inFlight(1), t.isDirty(1)], [0, false]);
  } finally {
    w.close();
  }
});
