import { EtcdStateStore } from "../../../../control/store/etcd/etcd_store.ts";
import type { WatchMessage } from "../../../../control/store/mod.ts";
import { InvalidArgumentError, UnavailableError } from "../../../../mod/errors.ts";
import { assert, assertEquals, assertRejects } from "../../../_assert.ts";
import { ETCD_INSTALLED, type EtcdCluster, startEtcd } from "../../_etcd_harness.ts";
import { defineStateStoreContract } from "../state_store_contract.ts";

/** The next message of a watch, failing instead of hanging. */
async function next(it: AsyncIterator<WatchMessage>, what: string): Promise<WatchMessage> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const r = await Promise.race([
      it.next(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no watch message for ${what}`)), 20_000);
      }),
    ]);
    assert(!r.done, `watch ended while waiting for ${what}`);
    return r.value;
  } finally {
    clearTimeout(timer);
  }
}

if (!ETCD_INSTALLED) {
  Deno.test({
    name: "EtcdStateStore tests (skipped: etcd / etcdctl not installed; run scripts/setup.sh)",
    ignore: true,
    fn() {},
  });
} else {
  /** One single-member etcd shared by the contract tests; each test has its own prefix. */
  let shared: Promise<EtcdCluster> | undefined;
  const sharedEtcd = () => shared ??= startEtcd();

  defineStateStoreContract("EtcdStateStore", async () => {
    const etcd = await sharedEtcd();
    const store = await EtcdStateStore.connect({
      endpoints: etcd.endpoints,
      prefix: `/t/${crypto.randomUUID()}`,
    });
    return { store, cleanup: () => store.close() };
  });

  Deno.test("EtcdStateStore: the namespace prefix isolates stores and the description names the endpoints", async () => {
    const etcd = await sharedEtcd();
    const a = await EtcdStateStore.connect({ endpoints: etcd.endpoints, prefix: "/ns-a" });
    const b = await EtcdStateStore.connect({ endpoints: etcd.endpoints, prefix: "/ns-b" });
    try {
      assertEquals(a.description, `etcd (${etcd.endpoints.join(",")})`);
      await a.put("/k", "a");
      await b.put("/k", "b");
      assertEquals((await a.list("")).kvs.map((kv) => [kv.key, kv.value]), [["/k", "a"]]);
      assertEquals((await b.get("/k"))?.value, "b");
    } finally {
      await a.close();
      await b.close();
    }
  });

  Deno.test("EtcdStateStore.connect() to a port nobody listens on rejects with UnavailableError naming it", async () => {
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    const endpoint = `http://127.0.0.1:${port}`;
    await assertRejects(
      () => EtcdStateStore.connect({ endpoints: [endpoint], dialTimeoutMs: 500 }),
      UnavailableError,
      endpoint,
    );
    await assertRejects(
      () => EtcdStateStore.connect({ endpoints: ["127.0.0.1:2379"] }),
      InvalidArgumentError,
      "127.0.0.1:2379",
    );
  });
}

if (ETCD_INSTALLED) {
  Deno.test("EtcdStateStore: killing the leader of 3 members under a running writer fails no put, loses no acknowledged write and applies none twice", async () => {
    const etcd = await startEtcd({ members: 3 });
    const store = await EtcdStateStore.connect({ endpoints: etcd.endpoints });
    try {
      const start = (await store.currentRevision()) + 1;
      const acked = new Map<string, number>();
      const errors: string[] = [];
      let attempt = 0;
      let killedAt = 0;
      let ackedAfterKill = 0;
      const stopAt = Date.now() + 30_000;
      while (ackedAfterKill < 50) {
        assert(Date.now() < stopAt, `only ${ackedAfterKill} writes acknowledged after the kill`);
        if (!killedAt && acked.size === 50) {
          await etcd.killMember(await etcd.leaderIndex());
          killedAt = Date.now();
        }
        const value = `w${attempt++}`;
        try {
          acked.set(value, (await store.put("/seq", value)).revision);
          if (killedAt) ackedAfterKill++;
        } catch (err) {
          errors.push(String(err));
        }
      }
      // Replay the key's whole history: every acknowledged value exactly once, at its
      // revision, and no value (acknowledged or not) applied twice.
      const last = await store.currentRevision();
      const w = store.watch("/seq", { startRevision: start });
      const it = w[Symbol.asyncIterator]();
      const seen = new Map<string, number>();
      let revision = start - 1;
      try {
        while (revision < last) {
          const m = await next(it, "history replay");
          assert(m.kind === "events");
          for (const e of m.events) {
            assert(!seen.has(e.kv.value), `${e.kv.value} applied twice`);
            seen.set(e.kv.value, e.kv.modRevision);
          }
          revision = m.revision;
        }
      } finally {
        w.cancel();
      }
      assertEquals(errors, []);
      for (const [value, rev] of acked) assertEquals(seen.get(value), rev, value);
      assertEquals(seen.size, acked.size, "every applied write was acknowledged");
    } finally {
      await store.close();
      await etcd.stop();
    }
  });

  Deno.test("EtcdStateStore: a watch survives its member being killed and restarted and misses no event written meanwhile", async () => {
    const etcd = await startEtcd({ members: 3 });
    // The watcher's member is a follower, so writes go on without an election.
    const victim = ((await etcd.leaderIndex()) + 1) % 3;
    const watcher = await EtcdStateStore.connect({ endpoints: [etcd.endpoints[victim]] });
    const writer = await EtcdStateStore.connect({
      endpoints: etcd.endpoints.filter((_, i) => i !== victim),
    });
    const w = watcher.watch("/r/");
    const it = w[Symbol.asyncIterator]();
    try {
      const revisions: number[] = [];
      const put = async (i: number) =>
        revisions.push((await writer.put(`/r/${i % 3}`, `${i}`)).revision);
      for (let i = 0; i < 5; i++) await put(i);
      const before: number[] = [];
      while (before.length < 5) {
        const m = await next(it, "events before the kill");
        assert(m.kind === "events");
        before.push(m.revision);
      }
      assertEquals(before, revisions);
      await etcd.killMember(victim);
      for (let i = 5; i < 25; i++) await put(i);
      await etcd.restartMember(victim);
      for (let i = 25; i < 30; i++) await put(i);
      const delivered: [number, string][] = [];
      while (delivered.length < 25) {
        const m = await next(it, `event ${delivered.length + 6}`);
        assert(m.kind === "events", JSON.stringify(m));
        for (const e of m.events) delivered.push([e.kv.modRevision, e.kv.value]);
      }
      assertEquals(delivered, revisions.slice(5).map((r, i) => [r, `${i + 5}`]));
    } finally {
      w.cancel();
      await watcher.close();
      await writer.close();
      await etcd.stop();
    }
  });

  Deno.test("EtcdStateStore: a watch resuming after its history was compacted reports compacted; re-list and re-watch miss nothing", async () => {
    const etcd = await startEtcd({ members: 3 });
    // The watcher's member is a follower, so writes go on without an election.
    const victim = ((await etcd.leaderIndex()) + 1) % 3;
    const watcher = await EtcdStateStore.connect({ endpoints: [etcd.endpoints[victim]] });
    const writer = await EtcdStateStore.connect({
      endpoints: etcd.endpoints.filter((_, i) => i !== victim),
    });
    const w = watcher.watch("/c/");
    const it = w[Symbol.asyncIterator]();
    try {
      const r1 = (await writer.put("/c/a", "1")).revision;
      const first = await next(it, "the first put");
      assertEquals(first.kind === "events" && first.revision, r1);
      await etcd.killMember(victim);
      await writer.put("/c/b", "2");
      await writer.delete("/c/a");
      const compactTo = (await writer.put("/c/c", "3")).revision;
      await writer.compact(compactTo);
      await etcd.restartMember(victim);
      const m = await next(it, "the compacted notice");
      assertEquals(m, { kind: "compacted", compactRevision: compactTo });
      assertEquals((await it.next()).done, true, "the watch ends after compacted");

      const list = await watcher.list("/c/");
      assertEquals(list.kvs.map((kv) => [kv.key, kv.value]), [["/c/b", "2"], ["/c/c", "3"]]);
      const again = watcher.watch("/c/", { startRevision: list.revision + 1 });
      const it2 = again[Symbol.asyncIterator]();
      try {
        const r = (await writer.put("/c/d", "4")).revision;
        const live = await next(it2, "the put after re-list");
        assertEquals(live.kind === "events" && [live.revision, live.events[0].kv.key], [r, "/c/d"]);
      } finally {
        again.cancel();
      }
    } finally {
      w.cancel();
      await watcher.close();
      await writer.close();
      await etcd.stop();
    }
  });

  Deno.test("EtcdStateStore: https endpoints with a client certificate work; without one connect() fails naming the endpoint", async () => {
    const etcd = await startEtcd({ tls: true });
    try {
      const tls = etcd.tls!;
      assert(etcd.endpoints[0].startsWith("https://127.0.0.1:"));
      const store = await EtcdStateStore.connect({ endpoints: etcd.endpoints, tls });
      try {
        const w = store.watch("/tls/");
        const it = w[Symbol.asyncIterator]();
        const r = (await store.put("/tls/k", "v")).revision;
        assertEquals((await store.get("/tls/k"))?.modRevision, r);
        const m = await next(it, "a put over TLS");
        assertEquals(m.kind === "events" && m.revision, r);
        w.cancel();
      } finally {
        await store.close();
      }
      await assertRejects(
        () =>
          EtcdStateStore.connect({
            endpoints: etcd.endpoints,
            tls: { caPem: tls.caPem },
            dialTimeoutMs: 2000,
          }),
        UnavailableError,
        etcd.endpoints[0],
      );
      await assertRejects(
        () =>
          EtcdStateStore.connect({
            endpoints: etcd.endpoints.map((e) => e.replace("https", "http")),
            dialTimeoutMs: 1000,
          }),
        UnavailableError,
      );
    } finally {
      await etcd.stop();
    }
  });
}
