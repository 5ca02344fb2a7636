import { FakeClock } from "../../../control/common/mod.ts";
import {
  ReadCacheStore,
  type StaleMark,
  withStaleTracking,
} from "../../../control/store/read_cache.ts";
import { SqliteStateStore } from "../../../control/store/sqlite/mod.ts";
import type { StateStore } from "../../../control/store/state_store.ts";
import { AGE_HEADER, BallastClient, STALE_HEADER } from "../../../mod/client.ts";
import { BallastError, NotFoundError, UnavailableError } from "../../../mod/errors.ts";
import { assert, assertEquals, assertRejects } from "../../_assert.ts";
import { call, startTestNode } from "../_fixtures.ts";
import { defineStateStoreContract } from "./state_store_contract.ts";

/** Wraps a real store; while `down`, every call rejects as an unreachable etcd would. */
function outage(
  inner: StateStore,
): { store: StateStore; down: { on: boolean }; hang: { on: boolean } } {
  const down = { on: false };
  const hang = { on: false };
  const store = new Proxy(inner, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== "function" || prop === "close") {
        return typeof v === "function" ? v.bind(target) : v;
      }
      return (...args: unknown[]) => {
        if (hang.on && prop !== "watch") return new Promise(() => {}); // a member that never answers
        if (!down.on) return v.apply(target, args);
        const err = new UnavailableError(
          "control plane unavailable: cannot reach etcd at http://127.0.0.1:1 (test outage)",
        );
        if (prop === "watch") throw err;
        return Promise.reject(err);
      };
    },
  });
  return { store, down, hang };
}

async function openCached(now = () => new Date()) {
  const dir = await Deno.makeTempDir({ prefix: "ballast-cache-" });
  const sqlite = SqliteStateStore.open(`${dir}/state.db`, { clock: new FakeClock() });
  const { store, down, hang } = outage(sqlite);
  const cache = new ReadCacheStore(store, { now });
  return {
    cache,
    sqlite,
    down,
    hang,
    cleanup: async () => {
      await cache.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Runs `fn` in a stale-tracking scope; returns its result and the mark. */
async function tracked<T>(fn: () => Promise<T>): Promise<[T, Date | undefined]> {
  const mark: StaleMark = {};
  const value = await withStaleTracking(mark, fn);
  return [value, mark.since];
}

defineStateStoreContract("ReadCacheStore over SqliteStateStore", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ballast-cache-" });
  const clock = new FakeClock();
  const sqlite = SqliteStateStore.open(`${dir}/state.db`, { clock });
  const store = new ReadCacheStore(sqlite);
  return {
    store,
    clock,
    expire: async () => void await sqlite.expireLeases(),
    cleanup: async () => {
      await store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
});

Deno.test("ReadCacheStore: while the store is up, answers are fresh and not marked stale", async () => {
  const s = await openCached();
  try {
    await s.cache.put("/a/1", "x");
    const [kv, since] = await tracked(() => s.cache.get("/a/1"));
    assertEquals([kv?.value, since], ["x", undefined]);
    await s.sqlite.put("/a/1", "changed behind the cache");
    assertEquals((await s.cache.get("/a/1"))?.value, "changed behind the cache");
  } finally {
    await s.cleanup();
  }
});

Deno.test("ReadCacheStore: during an outage get and list answer from the cache, marked with the time they were read", async () => {
  let now = new Date("2030-01-01T00:00:00Z");
  const s = await openCached(() => now);
  try {
    await s.cache.put("/v/a", "1");
    await s.cache.put("/v/b", "2");
    await s.cache.put("/n/x", "n");
    const listed = await s.cache.list("/v/");
    const readAt = now;
    await s.cache.get("/n/x");
    await s.cache.get("/n/missing");
    now = new Date("2030-01-01T00:00:30Z");
    s.down.on = true;

    const [list, since] = await tracked(() => s.cache.list("/v/"));
    assertEquals(list, listed);
    assertEquals(since, readAt);
    const [kv, since2] = await tracked(() => s.cache.get("/n/x"));
    assertEquals([kv?.value, since2], ["n", readAt]);
    assertEquals(await s.cache.get("/n/missing"), undefined, "a cached miss stays a miss");
    // Answered from a cached list that covers the key or the prefix.
    assertEquals((await s.cache.get("/v/b"))?.value, "2");
    assertEquals(await s.cache.get("/v/zzz"), undefined);
    assertEquals((await s.cache.list("/v/a")).kvs.map((k) => k.key), ["/v/a"]);
  } finally {
    await s.cleanup();
  }
});

Deno.test("ReadCacheStore: during an outage uncached reads and every write reject with UnavailableError", async () => {
  const s = await openCached();
  try {
    await s.cache.list("/v/");
    s.down.on = true;
    const message = "control plane unavailable";
    await assertRejects(() => s.cache.get("/elsewhere"), UnavailableError, message);
    await assertRejects(() => s.cache.list("/other/"), UnavailableError, message);
    await assertRejects(() => s.cache.put("/v/a", "1"), UnavailableError, message);
    await assertRejects(() => s.cache.delete("/v/a"), UnavailableError, message);
    await assertRejects(
      () => s.cache.txn([], [{ type: "put", key: "/v/a", value: "1" }]),
      UnavailableError,
      message,
    );
    await assertRejects(() => s.cache.grantLease(10), UnavailableError, message);
    await assertRejects(() => s.cache.currentRevision(), UnavailableError, message);
    s.down.on = false;
    assertEquals((await s.cache.list("/v/")).kvs, [], "the failed writes did not land");
  } finally {
    await s.cleanup();
  }
});

Deno.test("ReadCacheStore: other errors are not hidden by the cache", async () => {
  const s = await openCached();
  try {
    await assertRejects(() => s.cache.keepAlive(12345), NotFoundError);
  } finally {
    await s.cleanup();
  }
});

Deno.test("ReadCacheStore: writes made before the outage show in cached answers (put, txn, delete, revoke)", async () => {
  const s = await openCached();
  try {
    await s.cache.put("/v/a", "1");
    await s.cache.put("/v/gone", "1");
    const lease = await s.cache.grantLease(60);
    await s.cache.put("/v/leased", "1", { lease });
    await s.cache.list("/v/");
    await s.cache.get("/v/a");
    const r = await s.cache.txn([{ key: "/v/a", target: "version", op: "==", value: 1 }], [
      { type: "put", key: "/v/a", value: "2" },
      { type: "put", key: "/v/c", value: "3" },
    ]);
    assert(r.succeeded);
    await s.cache.txn([{ key: "/v/a", target: "version", op: "==", value: 1 }], [
      { type: "put", key: "/v/a", value: "lost CAS" },
    ]);
    await s.cache.delete("/v/gone");
    await s.cache.revokeLease(lease);
    const fresh = await s.sqlite.list("/v/");
    const freshA = await s.sqlite.get("/v/a");

    s.down.on = true;
    assertEquals((await s.cache.list("/v/")).kvs, fresh.kvs);
    assertEquals(await s.cache.get("/v/a"), freshA);
  } finally {
    await s.cleanup();
  }
});

Deno.test("ReadCacheStore: a watch through it keeps cached entries under its prefix current, and their answers are as old as the last word from the store", async () => {
  let now = new Date("2030-01-01T00:00:00Z");
  const s = await openCached(() => now);
  try {
    await s.sqlite.put("/v/a", "1");
    await s.sqlite.put("/v/b", "2");
    await s.sqlite.put("/n/x", "old");
    await s.cache.get("/v/a");
    await s.cache.get("/n/x");
    // As followPrefix does: list, then watch from the list revision + 1.
    const listed = await s.cache.list("/v/");
    const watch = s.cache.watch("/v/", { startRevision: listed.revision + 1 });
    const seen: string[] = [];
    const reader = (async () => {
      for await (const msg of watch) {
        if (msg.kind === "events") seen.push(...msg.events.map((e) => `${e.type} ${e.kv.key}`));
      }
    })();

    // Changes made elsewhere (another node), seen only by the watch.
    now = new Date("2030-01-01T00:01:00Z");
    await s.sqlite.put("/v/a", "changed");
    await s.sqlite.delete("/v/b");
    await s.sqlite.put("/v/c", "new");
    await s.sqlite.put("/n/x", "unwatched change");
    for (let i = 0; i < 200 && seen.length < 3; i++) await new Promise((r) => setTimeout(r, 5));
    assertEquals(seen, ["put /v/a", "delete /v/b", "put /v/c"]);
    const heard = now;

    now = new Date("2030-01-01T00:03:00Z");
    s.down.on = true;
    const [list, since] = await tracked(() => s.cache.list("/v/"));
    assertEquals(list.kvs.map((kv) => `${kv.key}=${kv.value}`), ["/v/a=changed", "/v/c=new"]);
    assertEquals(since, heard, "as of the last word from the store, not the list's read");
    const [a, sinceA] = await tracked(() => s.cache.get("/v/a"));
    assertEquals([a?.value, sinceA], ["changed", heard]);
    assertEquals(await s.cache.get("/v/b"), undefined);
    assertEquals((await s.cache.get("/v/c"))?.value, "new", "never read, answered from the list");
    // Nothing watches /n/: the cached answer is as old as its read, and says so.
    const [x, sinceX] = await tracked(() => s.cache.get("/n/x"));
    assertEquals([x?.value, sinceX], ["old", new Date("2030-01-01T00:00:00Z")]);
    watch.cancel();
    await reader;
  } finally {
    await s.cleanup();
  }
});

Deno.test("ReadCacheStore behind the API: stale reads carry Ballast-Stale, changes get 503 UNAVAILABLE, health is degraded, all recover", async () => {
  let down: { on: boolean } | undefined;
  const node = await startTestNode({
    wrapStore: (inner) => {
      const o = outage(inner);
      down = o.down;
      return new ReadCacheStore(o.store);
    },
  });
  try {
    const created = await call(node.app, "POST", "/v1/volumes", { name: "v1", size: "1MiB" });
    assertEquals(created.status, 201);
    const before = await call(node.app, "GET", "/v1/volumes");
    assertEquals(before.headers.get(STALE_HEADER), null);
    await call(node.app, "GET", "/v1/volumes/v1");
    await call(node.app, "GET", "/v1/nodes");
    const cachedAt = Date.now();
    down!.on = true;

    const list = await call(node.app, "GET", "/v1/volumes");
    assertEquals(list.status, 200);
    assertEquals(list.body.items.map((v: { name: string }) => v.name), ["v1"]);
    const since = Date.parse(list.headers.get(STALE_HEADER) ?? "");
    assert(since <= cachedAt && since > cachedAt - 60_000, `stale since ${since}`);
    const age = list.headers.get(AGE_HEADER);
    assert(age !== null && /^\d+$/.test(age), `Age header: ${age}`);
    assert(Number(age) <= (Date.now() - since) / 1000, `Age ${age} for ${since}`);
    const one = await call(node.app, "GET", "/v1/volumes/v1");
    assertEquals([one.status, one.body.name, !!one.headers.get(STALE_HEADER)], [200, "v1", true]);
    assertEquals((await call(node.app, "GET", "/v1/nodes")).status, 200);

    const create = await call(node.app, "POST", "/v1/volumes", { name: "v2", size: "1MiB" });
    assertEquals(create.status, 503);
    assertEquals(create.body.error.code, "UNAVAILABLE");
    assert(create.body.error.message.startsWith("control plane unavailable"));
    const resize = await call(node.app, "PATCH", "/v1/volumes/v1", { size: "2MiB" });
    assertEquals([resize.status, resize.body.error.code], [503, "UNAVAILABLE"]);
    // Said as operators name things, and that nothing was changed (no etcd key).
    const m = String(resize.body.error.message);
    assert(m.includes('the last answer for volume "v1" is from'), m);
    assert(m.includes("the change was not applied"), m);
    const health = await call(node.app, "GET", "/v1/health");
    assertEquals([health.status, health.body.status, health.body.checks.store.ok], [
      503,
      "degraded",
      false,
    ]);
    assert(health.body.checks.store.message.includes("control plane unavailable"));

    down!.on = false;
    const after = await call(node.app, "GET", "/v1/volumes");
    assertEquals([after.status, after.headers.get(STALE_HEADER)], [200, null]);
    assertEquals((await call(node.app, "GET", "/v1/health")).status, 200);
    const again = await call(node.app, "POST", "/v1/volumes", { name: "v2", size: "1MiB" });
    assertEquals(again.status, 201);
  } finally {
    down!.on = false;
    await node.close();
  }
});

Deno.test("BallastClient calls onStale with the time an answer was cached, and not for fresh answers", async () => {
  const calls: string[] = [];
  let stale: string | undefined = "2030-01-01T00:00:00.000Z";
  const client = new BallastClient("http://127.0.0.1:1", {
    fetch: () =>
      Promise.resolve(
        new Response(JSON.stringify({ items: [] }), {
          headers: stale ? { [STALE_HEADER]: stale, [AGE_HEADER]: "12" } : {},
        }),
      ),
    onStale: (since, request, age) => calls.push(`${since} ${request} ${age}`),
  });
  assertEquals(await client.listVolumes(), []);
  stale = undefined;
  await client.listVolumes();
  assertEquals(calls, ["2030-01-01T00:00:00.000Z GET /v1/volumes 12"]);
});

Deno.test("BallastClient does not call onStale for an error answer (a create refused while etcd is away)", async () => {
  const calls: string[] = [];
  const client = new BallastClient("http://127.0.0.1:1", {
    fetch: () =>
      Promise.resolve(
        new Response(
          JSON.stringify({ error: { code: "UNAVAILABLE", message: "control plane unavailable" } }),
          {
            status: 503,
            headers: { [STALE_HEADER]: "2030-01-01T00:00:00.000Z", [AGE_HEADER]: "12" },
          },
        ),
      ),
    onStale: (since) => calls.push(since),
  });
  await assertRejects(() => client.createVolume({ name: "v", size: 2 ** 26 }), BallastError);
  assertEquals(calls, []);
});

Deno.test("ReadCacheStore: once an outage is known, a read whose store call hangs answers from the cache quickly", async () => {
  const s = await openCached();
  try {
    await s.cache.put("/h/1", "cached");
    await s.cache.list("/h/");
    s.down.on = true;
    const [first, since1] = await tracked(() => s.cache.get("/h/1")); // detects the outage
    assertEquals(first?.value, "cached");
    assert(since1 !== undefined);
    s.down.on = false;
    s.hang.on = true; // now the store neither answers nor fails
    let timer: ReturnType<typeof setTimeout> | undefined;
    const guard = new Promise<"hung">((r) => (timer = setTimeout(r, 5_000, "hung")));
    const [got, since2] = await Promise.race([tracked(() => s.cache.get("/h/1")), guard]) as [
      { value: string } | undefined,
      Date | undefined,
    ];
    const [listed, since3] = await Promise.race([tracked(() => s.cache.list("/h/")), guard]) as [
      { kvs: { value: string }[] },
      Date | undefined,
    ];
    clearTimeout(timer);
    assertEquals([got?.value, since2 !== undefined], ["cached", true]);
    assertEquals([listed.kvs.map((kv) => kv.value), since3 !== undefined], [["cached"], true]);
    s.hang.on = false;
    const [fresh, since4] = await tracked(() => s.cache.get("/h/1"));
    assertEquals([fresh?.value, since4], ["cached", undefined]);
  } finally {
    await s.cleanup();
  }
});
