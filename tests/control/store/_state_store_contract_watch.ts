/**
 * Watch and lease properties of the StateStore contract, plus the helpers they use
 * (private to state_store_contract.ts, which registers them).
 * @module
 */

import type { FakeClock } from "../../../control/common/mod.ts";
import type { StateStore, WatchEvent, WatchMessage } from "../../../control/store/state_store.ts";
import { NotFoundError } from "../../../mod/errors.ts";
import { assert, assertEquals, assertRejects, fail } from "../../_assert.ts";

/** What an implementation's test file hands to defineStateStoreContract(). */
export interface OpenedStore {
  store: StateStore;
  /** Fake clock driving lease expiry; absent means real time. */
  clock?: FakeClock;
  /** Runs lease expiry now (e.g. SqliteStateStore.expireLeases()). */
  expire?: () => Promise<void>;
  cleanup: () => Promise<void>;
}

/** What each contract test gets. */
export interface Ctx extends OpenedStore {
  /** A fresh key prefix for this test, ending in "/". */
  p: string;
}

/** Registers one contract test. */
export type ContractTest = (title: string, fn: (ctx: Ctx) => Promise<void>) => void;

const HANG_GUARD_MS = 15_000;

/** The next watch message, failing (not hanging) if none comes. */
async function nextMessage(it: AsyncIterator<WatchMessage>, what: string): Promise<WatchMessage> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no watch message while waiting for ${what}`)),
      HANG_GUARD_MS,
    );
  });
  try {
    const r = await Promise.race([it.next(), guard]);
    if (r.done) fail(`watch ended while waiting for ${what}`);
    return r.value;
  } finally {
    clearTimeout(timer);
  }
}

/** The next message, which must be an events batch. */
async function nextEvents(it: AsyncIterator<WatchMessage>, what: string) {
  const m = await nextMessage(it, what);
  if (m.kind !== "events") fail(`expected events for ${what}, got ${JSON.stringify(m)}`);
  return m;
}

/** [type, key, value, revision] per event: the shape most tests compare. */
function brief(events: WatchEvent[]): [string, string, string, number][] {
  return events.map((e) => [e.type, e.kv.key, e.kv.value, e.kv.modRevision]);
}

/**
 * Polls `check` until it holds; with a fake clock first moves time past `ttl`. On real time
 * the store's own sweep (etcd: every 500 ms, then a raft write) may lag on a loaded machine:
 * the deadline only stops a store that never expires the lease from hanging the run.
 */
async function afterExpiry(ctx: Ctx, ttl: number, check: () => Promise<boolean>): Promise<void> {
  if (ctx.clock) ctx.clock.advance(ttl * 1000 + 1);
  const deadline = Date.now() + ttl * 1000 + 30_000;
  while (true) {
    await ctx.expire?.();
    if (await check()) return;
    if (Date.now() > deadline) fail(`lease of ${ttl} s did not expire in time`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Registers the watch and lease tests. */
export function defineWatchAndLeaseTests(test: ContractTest): void {
  test("a watch from now delivers later writes, one batch per revision, and nothing earlier", async ({ store, p }) => {
    await store.put(`${p}w/before`, "0");
    const w = store.watch(`${p}w/`);
    const it = w[Symbol.asyncIterator]();
    try {
      const r1 = (await store.put(`${p}w/a`, "1")).revision;
      await store.put(`${p}other`, "not watched");
      const t = await store.txn([], [{ type: "put", key: `${p}w/b`, value: "2" }, {
        type: "put",
        key: `${p}w/c`,
        value: "3",
      }]);
      const m1 = await nextEvents(it, "the first put");
      assertEquals([m1.revision, brief(m1.events)], [r1, [["put", `${p}w/a`, "1", r1]]]);
      const m2 = await nextEvents(it, "the txn");
      assertEquals([m2.revision, brief(m2.events)], [t.revision, [[
        "put",
        `${p}w/b`,
        "2",
        t.revision,
      ], ["put", `${p}w/c`, "3", t.revision]]]);
      assertEquals(m2.events[0].kv, {
        key: `${p}w/b`,
        value: "2",
        createRevision: t.revision,
        modRevision: t.revision,
        version: 1,
        lease: 0,
      });
    } finally {
      w.cancel();
    }
  });

  test("a watch resumed from an older revision replays exactly the missed events in order, then continues live", async ({ store, p }) => {
    const r1 = (await store.put(`${p}r/a`, "1")).revision;
    const r2 = (await store.put(`${p}r/b`, "2")).revision;
    await store.put(`${p}elsewhere`, "x");
    const r3 = (await store.delete(`${p}r/a`)).revision;
    const r4 = (await store.txn([], [{ type: "put", key: `${p}r/b`, value: "3" }, {
      type: "put",
      key: `${p}r/c`,
      value: "4",
    }])).revision;
    const w = store.watch(`${p}r/`, { startRevision: r2 });
    const it = w[Symbol.asyncIterator]();
    try {
      const seen: [number, [string, string, string, number][]][] = [];
      for (let i = 0; i < 3; i++) {
        const m = await nextEvents(it, `replayed batch ${i + 1}`);
        seen.push([m.revision, brief(m.events)]);
      }
      assertEquals(seen, [
        [r2, [["put", `${p}r/b`, "2", r2]]],
        [r3, [["delete", `${p}r/a`, "", r3]]],
        [r4, [["put", `${p}r/b`, "3", r4], ["put", `${p}r/c`, "4", r4]]],
      ]);
      assert(r1 < r2);
      const r5 = (await store.put(`${p}r/d`, "5")).revision;
      const live = await nextEvents(it, "the live put");
      assertEquals([live.revision, brief(live.events)], [r5, [["put", `${p}r/d`, "5", r5]]]);
    } finally {
      w.cancel();
    }
  });

  test("a watch with prevKv delivers the previous key; without it, none", async ({ store, p }) => {
    const r0 = (await store.put(`${p}k`, "old")).revision;
    const withPrev = store.watch(p, { prevKv: true });
    const without = store.watch(p);
    try {
      const r1 = (await store.put(`${p}k`, "new")).revision;
      const r2 = (await store.delete(`${p}k`)).revision;
      const a = withPrev[Symbol.asyncIterator]();
      const put = (await nextEvents(a, "put with prevKv")).events[0];
      assertEquals(put.prevKv, {
        key: `${p}k`,
        value: "old",
        createRevision: r0,
        modRevision: r0,
        version: 1,
        lease: 0,
      });
      const del = (await nextEvents(a, "delete with prevKv")).events[0];
      assertEquals([del.type, del.kv.key, del.kv.value, del.kv.modRevision], [
        "delete",
        `${p}k`,
        "",
        r2,
      ]);
      assertEquals(del.prevKv, {
        key: `${p}k`,
        value: "new",
        createRevision: r0,
        modRevision: r1,
        version: 2,
        lease: 0,
      });
      const b = without[Symbol.asyncIterator]();
      assertEquals((await nextEvents(b, "put")).events[0].prevKv, undefined);
      assertEquals((await nextEvents(b, "delete")).events[0].prevKv, undefined);
    } finally {
      withPrev.cancel();
      without.cancel();
    }
  });

  test("a watch from a compacted revision yields one compacted message and ends; re-list plus watch from list revision + 1 misses nothing", async ({ store, p }) => {
    const r1 = (await store.put(`${p}c/1`, "1")).revision;
    await store.put(`${p}c/2`, "2");
    const r3 = (await store.put(`${p}c/3`, "3")).revision;
    await store.compact(r3);
    const old = store.watch(`${p}c/`, { startRevision: r1 });
    const oldIt = old[Symbol.asyncIterator]();
    const m = await nextMessage(oldIt, "the compacted notice");
    assert(m.kind === "compacted", `expected compacted, got ${JSON.stringify(m)}`);
    assert(
      m.compactRevision > r1 && m.compactRevision <= r3 + 1,
      `compactRevision ${m.compactRevision}`,
    );
    assertEquals((await oldIt.next()).done, true, "the watch ends after compacted");
    old.cancel();

    const list = await store.list(`${p}c/`);
    assertEquals(list.kvs.map((kv) => kv.value), ["1", "2", "3"]);
    const r4 = (await store.put(`${p}c/4`, "4")).revision;
    const w = store.watch(`${p}c/`, { startRevision: list.revision + 1 });
    const it = w[Symbol.asyncIterator]();
    try {
      const r5 = (await store.delete(`${p}c/1`)).revision;
      assertEquals(brief((await nextEvents(it, "put after list")).events), [[
        "put",
        `${p}c/4`,
        "4",
        r4,
      ]]);
      assertEquals(brief((await nextEvents(it, "live delete")).events), [[
        "delete",
        `${p}c/1`,
        "",
        r5,
      ]]);
    } finally {
      w.cancel();
    }
  });

  test("cancel() ends a watch whose consumer is waiting", async ({ store, p }) => {
    const w = store.watch(p);
    const pending = w[Symbol.asyncIterator]().next();
    await sleep(10);
    w.cancel();
    assertEquals((await pending).done, true);
  });

  test("lease expiry deletes the attached keys and emits delete events", async (ctx) => {
    const { store, p } = ctx;
    const ttl = ctx.clock ? 10 : 2;
    const lease = await store.grantLease(ttl);
    await store.put(`${p}l/a`, "a", { lease });
    await store.put(`${p}l/b`, "b", { lease });
    await store.put(`${p}l/keep`, "k");
    assertEquals((await store.get(`${p}l/a`))?.lease, lease);
    const w = store.watch(`${p}l/`, { prevKv: true });
    const it = w[Symbol.asyncIterator]();
    try {
      await afterExpiry(ctx, ttl, async () => (await store.list(`${p}l/`)).kvs.length === 1);
      assertEquals((await store.list(`${p}l/`)).kvs.map((kv) => kv.value), ["k"]);
      const deleted: string[] = [];
      while (deleted.length < 2) {
        for (const e of (await nextEvents(it, "lease deletes")).events) {
          assertEquals([e.type, e.prevKv?.lease], ["delete", lease]);
          deleted.push(e.kv.key.slice(p.length));
        }
      }
      assertEquals(deleted.sort(), ["l/a", "l/b"]);
      await assertRejects(
        () => store.keepAlive(lease),
        NotFoundError,
        undefined,
        "keepAlive on an expired lease",
      );
    } finally {
      w.cancel();
    }
  });

  test("keepAlive extends a lease past its TTL", async (ctx) => {
    const { store, p } = ctx;
    const ttl = ctx.clock ? 10 : 2;
    const lease = await store.grantLease(ttl);
    await store.put(`${p}ka`, "v", { lease });
    // Keep alive at a fifth of the TTL for twice the TTL.
    for (let i = 0; i < 10; i++) {
      if (ctx.clock) ctx.clock.advance(ttl * 200);
      else await sleep(ttl * 200);
      assert((await store.keepAlive(lease)) >= ttl, "keepAlive returns the TTL");
      await ctx.expire?.();
    }
    assertEquals(
      (await store.get(`${p}ka`))?.value,
      "v",
      "key outlived its TTL thanks to keepAlive",
    );
    await afterExpiry(ctx, ttl, async () => (await store.get(`${p}ka`)) === undefined);
  });

  test("revokeLease deletes the attached keys in one revision; the lease is gone after", async ({ store, p }) => {
    const lease = await store.grantLease(60);
    await store.put(`${p}x/1`, "1", { lease });
    await store.put(`${p}x/2`, "2", { lease });
    const before = await store.currentRevision();
    const w = store.watch(`${p}x/`);
    const it = w[Symbol.asyncIterator]();
    try {
      await store.revokeLease(lease);
      assertEquals(await store.currentRevision(), before + 1);
      assertEquals((await store.list(`${p}x/`)).kvs, []);
      const m = await nextEvents(it, "revoke deletes");
      assertEquals([m.revision, brief(m.events)], [before + 1, [[
        "delete",
        `${p}x/1`,
        "",
        before + 1,
      ], ["delete", `${p}x/2`, "", before + 1]]]);
      await assertRejects(() => store.keepAlive(lease), NotFoundError);
      await assertRejects(() => store.put(`${p}x/3`, "3", { lease }), NotFoundError);
    } finally {
      w.cancel();
    }
  });
}
