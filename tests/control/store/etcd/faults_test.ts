/**
 * The etcd store under the faults of issue 4, on real 3-member etcd clusters: the
 * leader killed (and restarted) under running CAS writers and watches, and every
 * member stopped (SIGSTOP) and resumed. Timing bounds here are generous ceilings.
 * @module
 */

import { EtcdStateStore } from "../../../../control/store/etcd/etcd_store.ts";
import type { Watch, WatchMessage } from "../../../../control/store/mod.ts";
import { NotFoundError, UnavailableError } from "../../../../mod/errors.ts";
import { assert, assertEquals } from "../../../_assert.ts";
import { ETCD_INSTALLED, type EtcdCluster, startEtcd } from "../../_etcd_harness.ts";

/** Collects a watch's events (revision, key, value) in the background. */
function collect(w: Watch): { events: [number, string, string][]; messages: WatchMessage[] } {
  const out = { events: [] as [number, string, string][], messages: [] as WatchMessage[] };
  (async () => {
    for await (const m of w) {
      out.messages.push(m);
      if (m.kind === "events") {
        for (const e of m.events) out.events.push([e.kv.modRevision, e.kv.key, e.kv.value]);
      }
    }
  })().catch(() => {});
  return out;
}

async function until(what: string, cond: () => boolean, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Runs `steps` (each after `acked()` reaches its count), concurrently with the caller. */
function chaos(
  etcd: EtcdCluster,
  acked: () => number,
  steps: [number, "kill leader" | "restart"][],
): { done: Promise<void>; log: string[] } {
  const log: string[] = [];
  let killed = -1;
  const done = (async () => {
    for (const [at, step] of steps) {
      await until(`${at} acknowledged increments`, () => acked() >= at, 60_000).catch((err) => {
        throw new Error(`${err.message} (${acked()} after: ${log.join(", ")})`);
      });
      if (step === "kill leader") {
        killed = await etcd.leaderIndex();
        await etcd.killMember(killed);
      } else await etcd.restartMember(killed);
      log.push(`${step} ${killed} at ${acked()}`);
    }
  })();
  // Handled here so that a failed step fails the test awaiting `done`, not the module.
  done.catch(() => {});
  return { done, log };
}

if (ETCD_INSTALLED) {
  Deno.test("EtcdStateStore: CAS increments by two writers while the leader is killed and restarted twice: no error reaches them, none is lost or doubled", async () => {
    const etcd = await startEtcd({ members: 3 });
    const writers = await Promise.all(
      [0, 1].map(() => EtcdStateStore.connect({ endpoints: etcd.endpoints })),
    );
    const key = "/counter";
    let acked = 0;
    let slowest = 0;
    const errors: unknown[] = [];
    // Each write is "count writer-attempt": the store recognizes a write whose answer
    // was lost by its effects, so two writers must not write identical values (see
    // control/store/etcd/_write.ts).
    let attempts = 0;
    const increment = async (store: EtcdStateStore, writer: number) => {
      for (;;) {
        const kv = await store.get(key);
        const next = parseInt(kv?.value ?? "0") + 1;
        const r = await store.txn(
          [{ key, target: "modRevision", op: "==", value: kv?.modRevision ?? 0 }],
          [{ type: "put", key, value: `${next} ${writer}-${attempts++}` }],
        );
        if (r.succeeded) return;
      }
    };
    const steps = chaos(etcd, () => acked, [
      [20, "kill leader"],
      [60, "restart"],
      [100, "kill leader"],
      [140, "restart"],
    ]);
    let stop = false;
    // The writers run on for a second after the last step, or stop at once if a step
    // failed; that failure is then reported by `await steps.done` below, in this test.
    steps.done.then(() => setTimeout(() => stop = true, 1000), () => stop = true);
    const stopAt = Date.now() + 120_000;
    try {
      await Promise.all(writers.map(async (store, writer) => {
        while (!stop && Date.now() < stopAt && errors.length === 0) {
          const started = Date.now();
          try {
            await increment(store, writer);
            acked++;
          } catch (err) {
            errors.push(err);
          }
          slowest = Math.max(slowest, Date.now() - started);
        }
      }));
      assertEquals(errors.map(String), [], `after ${steps.log.join(", ")}`);
      await steps.done;
      assertEquals(parseInt((await writers[0].get(key))?.value ?? ""), acked);
      assert(slowest < 15_000, `slowest increment took ${slowest} ms`);
      // deno-lint-ignore no-console
      console.log(`  ${acked} increments; ${steps.log.join(", ")}; slowest ${slowest} ms`);
    } finally {
      for (const w of writers) await w.close();
      await etcd.stop();
    }
  });

  Deno.test("EtcdStateStore: watches across a leader kill and restart see every event exactly once", async () => {
    const etcd = await startEtcd({ members: 3 });
    const writer = await EtcdStateStore.connect({ endpoints: etcd.endpoints });
    // Three watchers with randomly pinned members: some watch through the leader.
    const watchers = await Promise.all(
      [0, 1, 2].map(() => EtcdStateStore.connect({ endpoints: etcd.endpoints })),
    );
    const watches = watchers.map((s) => s.watch("/w/"));
    const seen = watches.map(collect);
    const written: [number, string, string][] = [];
    try {
      const steps = chaos(etcd, () => written.length, [[15, "kill leader"], [30, "restart"]]);
      for (let i = 0; written.length < 45; i++) {
        const key = `/w/${i % 4}`;
        written.push([(await writer.put(key, `${i}`)).revision, key, `${i}`]);
      }
      await steps.done;
      // A last write after the chaos: each watch delivers in revision order, so once it has
      // delivered this one, any duplicate of an earlier event on it has shown up too.
      written.push([(await writer.put("/w/last", "last")).revision, "/w/last", "last"]);
      for (const [i, s] of seen.entries()) {
        await until(`watcher ${i} to catch up`, () => s.events.some(([, k]) => k === "/w/last"));
        assertEquals(s.events, written, `watcher ${i}`);
        assert(s.messages.every((m) => m.kind === "events"));
      }
    } finally {
      for (const w of watches) w.cancel();
      for (const s of [writer, ...watchers]) await s.close();
      await etcd.stop();
    }
  });

  Deno.test("EtcdStateStore: with every member stopped calls fail within a bound saying 'control plane unavailable'; after SIGCONT the same store and its watch carry on", async () => {
    const etcd = await startEtcd({ members: 3 });
    const store = await EtcdStateStore.connect({ endpoints: etcd.endpoints });
    const w = store.watch("/o/");
    const seen = collect(w);
    const timings: string[] = [];
    try {
      const lease = await store.grantLease(30);
      const r1 = (await store.put("/o/before", "1")).revision;
      await until("the first event", () => seen.events.length === 1);
      for (let i = 0; i < 3; i++) etcd.pauseMember(i);
      const calls: [string, () => Promise<unknown>][] = [
        ["get", () => store.get("/o/before")],
        ["list", () => store.list("/o/")],
        ["put", () => store.put("/o/during", "x")],
        ["txn", () => store.txn([], [{ type: "delete", key: "/o/before" }])],
        ["keepAlive", () => store.keepAlive(lease)],
        ["grantLease", () => store.grantLease(10)],
        ["currentRevision", () => store.currentRevision()],
        ["get again", () => store.get("/o/before")],
      ];
      for (const [what, fn] of calls) {
        const started = Date.now();
        const err = await fn().then(() => undefined, (e) => e);
        const ms = Date.now() - started;
        timings.push(`${what} ${ms} ms`);
        assert(err instanceof UnavailableError, `${what}: ${err}`);
        assert(err.message.startsWith("control plane unavailable: cannot reach etcd at "));
        assert(err.message.includes(etcd.endpoints[0]), err.message);
        // The cause in words (etcd SIGSTOPped: no answer), not gRPC's status codes.
        assert(!/\d+ [A-Z_]+:|LB pick/.test(err.message), err.message);
        assert(ms < 8_000, `${what} took ${ms} ms`);
      }
      for (let i = 0; i < 3; i++) etcd.resumeMember(i);

      // The same store works again; a write that failed during the outage may have
      // been applied after all (it reached a stopped member), so read it back.
      const back = Date.now();
      let r2 = 0;
      while (!r2) {
        assert(Date.now() - back < 30_000, "etcd did not come back within 30 s");
        r2 = await store.put("/o/after", "2").then((r) => r.revision, () => 0);
      }
      timings.push(`first put after SIGCONT ${Date.now() - back} ms`);
      await store.keepAlive(lease).catch((e) => assert(e instanceof NotFoundError, String(e)));
      const kvs = (await store.list("/o/")).kvs.map((kv) => [kv.modRevision, kv.key, kv.value]);
      await until("the watch to catch up", () => seen.events.some(([r]) => r === r2));
      const events = seen.events.filter(([, , v]) => v !== "");
      assertEquals(events[0], [r1, "/o/before", "1"]);
      assertEquals(events.filter(([, k]) => k === "/o/after"), [[r2, "/o/after", "2"]]);
      for (const kv of kvs) assert(events.some((e) => e[0] === kv[0]), `no event for ${kv}`);
      assertEquals(new Set(seen.events.map(([r, k]) => `${r}${k}`)).size, seen.events.length);
      // deno-lint-ignore no-console
      console.log(`  ${timings.join("; ")}`);
    } finally {
      for (let i = 0; i < 3; i++) etcd.resumeMember(i);
      w.cancel();
      await store.close();
      await etcd.stop();
    }
  });
}
