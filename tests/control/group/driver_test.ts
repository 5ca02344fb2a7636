/**
 * GroupDriver (control/group/driver.ts) over real state stores: the embedded sqlite
 * store for the single-driver cases and a real etcd for two drivers racing on the
 * same group. The host is a recorder of the serve / stop-serving calls (the data path
 * side is covered by tests/e2e/groups_test.ts).
 */

import { assert, assertEquals } from "../../_assert.ts";
import { GroupDriver, resyncRetryDelay, retryDelay } from "../../../control/group/driver.ts";
import type { GroupHost, ServeHooks } from "../../../control/group/host.ts";
import { LeaseWatch } from "../../../control/group/lease_watch.ts";
import { type GroupRecord, newRecord, withHandover } from "../../../control/group/record.ts";
import { silentLogger } from "../../../control/common/mod.ts";
import { aliveKey, NODE_PREFIX } from "../../../control/nodes/mod.ts";
import { eventually as poll, withSqlite } from "../_fixtures.ts";
import type { StateStore } from "../../../control/store/mod.ts";
import { EtcdStateStore } from "../../../control/store/etcd/mod.ts";
import { ETCD_INSTALLED, startEtcd } from "../_etcd_harness.ts";

const KEY = "/ballast/volumes/v";
/** Generous liveness bound. */
const LIVENESS_MS = 15_000;

class RecordingHost implements GroupHost {
  calls: string[] = [];
  wrote = false;
  gate: (() => Promise<void>) | undefined;
  hooks: ServeHooks | undefined;
  serve(epoch: number, hooks: ServeHooks): Promise<void> {
    this.calls.push(`serve ${epoch}${hooks.writeGate ? " gated" : ""}`);
    this.gate = hooks.writeGate;
    this.hooks = hooks;
    return Promise.resolve();
  }
  stopServing(epoch: number): Promise<void> {
    this.calls.push(`stop ${epoch}`);
    return Promise.resolve();
  }
  written(): boolean {
    return this.wrote;
  }
}

/** Node records and leased alive keys for `nodes`, and the group record (master n1). */
async function seed(store: StateStore, nodes: string[]): Promise<Record<string, number>> {
  const leases: Record<string, number> = {};
  for (const n of nodes) {
    await store.put(NODE_PREFIX + n, JSON.stringify({ name: n }));
    leases[n] = await store.grantLease(60);
    await store.put(aliveKey(n), "{}", { lease: leases[n] });
  }
  const group = newRecord(nodes[0], nodes.slice(1));
  await store.put(KEY, JSON.stringify({ name: "v", other: "kept", group }));
  return leases;
}

function driver(store: StateStore, self: string, leases: LeaseWatch, host: GroupHost) {
  return new GroupDriver({
    store,
    key: KEY,
    self,
    logger: silentLogger(),
    leases,
    host,
    decode: (v) => (JSON.parse(v) as { group?: GroupRecord }).group,
    encode: (v, group) => JSON.stringify({ ...JSON.parse(v), group }),
    writePollMs: 20,
  });
}

async function stored(store: StateStore): Promise<{ other: string; group: GroupRecord }> {
  return JSON.parse((await store.get(KEY))!.value);
}

const eventually = (what: string, check: () => Promise<boolean> | boolean) =>
  poll(what, check, LIVENESS_MS, 20);

Deno.test("GroupDriver: the master serves; when its lease goes an in-sync replica takes over at epoch 2", async () => {
  await withSqlite(async (store) => {
    const leases = await seed(store, ["n1", "n2"]);
    const watch = new LeaseWatch({ store, logger: silentLogger() });
    await watch.start();
    const h1 = new RecordingHost();
    const h2 = new RecordingHost();
    const d1 = driver(store, "n1", watch, h1);
    const d2 = driver(store, "n2", watch, h2);
    d1.start();
    d2.start();
    try {
      await eventually("n1 serves", () => h1.calls.length === 1);
      assertEquals(h1.calls, ["serve 1 gated"]);
      assertEquals(h2.calls, []);
      await d1.stop(); // n1 "crashes": its lease goes
      await store.revokeLease(leases.n1);
      await eventually("n2 promoted", async () => (await stored(store)).group.epoch === 2);
      const { other, group } = await stored(store);
      assertEquals(other, "kept", "the rest of the value survives the CAS");
      assertEquals(
        [group.master, group.inSync, group.down, group.phase],
        ["n2", ["n2"], ["n1"], "degraded"],
      );
      await eventually("n2 serves", () => h2.calls.length === 1);
      assertEquals(h2.calls, ["serve 2"]);
    } finally {
      await d1.stop();
      await d2.stop();
      await watch.stop();
    }
  });
});

Deno.test("GroupDriver: a lease view the store contradicts loses the guarded CAS and is corrected", async () => {
  await withSqlite(async (store) => {
    await seed(store, ["n1", "n2"]);
    const watch = new LeaseWatch({ store, logger: silentLogger() });
    await watch.start();
    const h2 = new RecordingHost();
    const d2 = driver(store, "n2", watch, h2);
    d2.start();
    try {
      await eventually("n2 read the record", () => d2.state.known !== undefined);
      const before = (await store.get(KEY))!.modRevision;
      // A wrong belief (n1's lease is in fact up): the CAS carries the guard "n1 down".
      d2.feed({ type: "lease-expired", node: "n1" });
      await eventually("CAS answered", () => d2.state.op === undefined);
      assertEquals((await store.get(KEY))!.modRevision, before, "nothing written");
      assertEquals(d2.state.leaseDown, [], "the failure branch's lease facts corrected the view");
      assertEquals((await stored(store)).group.master, "n1");
      assertEquals(h2.calls, []);
    } finally {
      await d2.stop();
      await watch.stop();
    }
  });
});

Deno.test("GroupDriver: after the master's first write its replicas are out of sync and never promoted", async () => {
  await withSqlite(async (store) => {
    const leases = await seed(store, ["n1", "n2", "n3"]);
    const watch = new LeaseWatch({ store, logger: silentLogger() });
    await watch.start();
    const hosts = { n1: new RecordingHost(), n2: new RecordingHost(), n3: new RecordingHost() };
    const drivers = Object.entries(hosts).map(([n, h]) => driver(store, n, watch, h));
    for (const d of drivers) d.start();
    try {
      await eventually("n1 serves", () => hosts.n1.calls.length === 1);
      assertEquals((await stored(store)).group.inSync, ["n1", "n2", "n3"]);
      hosts.n1.wrote = true;
      await eventually(
        "replicas out of sync",
        async () => (await stored(store)).group.inSync.join() === "n1",
      );
      await drivers[0].stop();
      await store.revokeLease(leases.n1);
      await eventually(
        "n1 marked down",
        async () => (await stored(store)).group.down.join() === "n1",
      );
      // Let the replicas see every event there is; neither may promote itself.
      await eventually(
        "drivers idle",
        () => drivers.slice(1).every((d) => d.state.op === undefined),
      );
      const { group } = await stored(store);
      assertEquals([group.epoch, group.master, group.phase], [1, "n1", "unavailable"]);
      assertEquals([hosts.n2.calls, hosts.n3.calls], [[], []]);
    } finally {
      for (const d of drivers) await d.stop();
      await watch.stop();
    }
  });
});

Deno.test({
  name: ETCD_INSTALLED
    ? "GroupDriver on etcd: two replicas race to take over; exactly one CAS wins, the other re-plans from the winner's record"
    : "GroupDriver on etcd race (skipped: etcd / etcdctl not installed)",
  ignore: !ETCD_INSTALLED,
  async fn() {
    const etcd = await startEtcd();
    const prefix = `/t/${crypto.randomUUID()}`;
    const stores = await Promise.all(
      [0, 1, 2].map(() => EtcdStateStore.connect({ endpoints: etcd.endpoints, prefix })),
    );
    const [admin, s2, s3] = stores;
    const watches: LeaseWatch[] = [];
    const drivers: GroupDriver[] = [];
    try {
      const leases = await seed(admin, ["n1", "n2", "n3"]);
      const created = (await admin.get(KEY))!.modRevision;
      const history = admin.watch(KEY, { startRevision: created + 1 });
      const puts: GroupRecord[] = [];
      (async () => {
        for await (const msg of history) {
          if (msg.kind !== "events") continue;
          for (const ev of msg.events) puts.push(JSON.parse(ev.kv.value).group);
        }
      })();
      const h2 = new RecordingHost();
      const h3 = new RecordingHost();
      // Each racer has its own etcd client and lease view, and no record watch: the
      // loser can learn the winner's record only from its failed CAS.
      for (const [store, self, host] of [[s2, "n2", h2], [s3, "n3", h3]] as const) {
        const w = new LeaseWatch({ store, logger: silentLogger() });
        await w.start();
        watches.push(w);
        const d = driver(store, self, w, host);
        drivers.push(d);
        d.start();
      }
      await eventually(
        "both read epoch 1",
        () => drivers.every((d) => d.state.known?.revision === created),
      );
      await admin.revokeLease(leases.n1);
      // Done racing once both are idle knowing the record as it now is: the loser has then
      // had its CAS refused (its only way to learn of the winner's), and a driver that
      // wanted another write would not be idle. Its lease watch may be seconds late here.
      await eventually("one promoted; both drivers idle, knowing its record", async () => {
        const now = (await admin.get(KEY))!;
        if (now.version > 2) return true; // a second write: judged below
        return puts.length > 0 &&
          drivers.every((d) =>
            d.state.op === undefined && d.state.known?.revision === now.modRevision
          );
      });
      const final = (await admin.get(KEY))!;
      // The record's version counts every write since it was created: exactly one.
      assertEquals(final.version, 2, `exactly one write: ${JSON.stringify(puts)}`);
      assertEquals(puts.length, 1, `exactly one write: ${JSON.stringify(puts)}`);
      const winner = puts[0];
      assert(winner.master === "n2" || winner.master === "n3", winner.master);
      assertEquals([winner.epoch, winner.down], [2, ["n1"]]);
      for (const d of drivers) {
        assertEquals(d.state.known?.revision, final.modRevision, "both know the winner's record");
        assertEquals(d.state.known?.record.master, winner.master);
      }
      const loser = winner.master === "n2" ? h3 : h2;
      const won = winner.master === "n2" ? h2 : h3;
      assertEquals(
        [won.calls, loser.calls],
        [["serve 2 gated"], []],
        "the other replica is still in sync",
      );
      history.cancel();
    } finally {
      for (const d of drivers) await d.stop();
      for (const w of watches) await w.stop();
      for (const s of stores) await s.close();
      await etcd.stop();
    }
  },
});

Deno.test("GroupDriver: the first write waits until the record says the replicas are out of sync", async () => {
  await withSqlite(async (store) => {
    const leases = await seed(store, ["n1", "n2", "n3"]);
    const watch = new LeaseWatch({ store, logger: silentLogger() });
    await watch.start();
    const h1 = new RecordingHost();
    const d1 = new GroupDriver({
      store,
      key: KEY,
      self: "n1",
      logger: silentLogger(),
      leases: watch,
      host: h1,
      decode: (v) => (JSON.parse(v) as { group?: GroupRecord }).group,
      encode: (v, group) => JSON.stringify({ ...JSON.parse(v), group }),
      writePollMs: 60_000, // only the gate may mark the replicas
    });
    d1.start();
    try {
      await eventually("n1 serves", () => h1.calls.length === 1);
      assertEquals(h1.calls, ["serve 1 gated"]);
      assertEquals((await stored(store)).group.inSync, ["n1", "n2", "n3"]);
      let passed = false;
      const gate = h1.gate!().then(() => (passed = true));
      // The gate opens only after the CAS landed: the record read now must show it.
      await gate;
      assert(passed);
      const { group } = await stored(store);
      assertEquals([group.epoch, group.master, group.inSync, group.phase], [
        1,
        "n1",
        ["n1"],
        "degraded",
      ]);
      // Now the master's lease goes: no replica is in sync, so none is promoted.
      await d1.stop();
      await store.revokeLease(leases.n1);
      await new Promise((r) => setTimeout(r, 300));
      assertEquals((await stored(store)).group.epoch, 1);
    } finally {
      await d1.stop();
      await watch.stop();
    }
  });
});

/** A host whose stopServing resolves only when the test releases it. */
class SlowStopHost extends RecordingHost {
  release: () => void = () => {};
  override stopServing(epoch: number): Promise<void> {
    this.calls.push(`stop ${epoch}`);
    return new Promise((resolve) => (this.release = resolve));
  }
}

Deno.test("GroupDriver: a handover asked in the record closes the master's export first, then hands over at epoch 2; the new master serves handed over", async () => {
  await withSqlite(async (store) => {
    await seed(store, ["n1", "n2"]);
    const watch = new LeaseWatch({ store, logger: silentLogger() });
    await watch.start();
    const h1 = new SlowStopHost();
    const h2 = new RecordingHost();
    const d1 = driver(store, "n1", watch, h1);
    const d2 = driver(store, "n2", watch, h2);
    d1.start();
    d2.start();
    const deliver = async () => {
      const kv = (await store.get(KEY))!;
      d1.recordChanged(kv);
      d2.recordChanged(kv);
    };
    try {
      await eventually("n1 serves", () => h1.calls.length === 1);
      await eventually("n2 read the record", () => d2.state.known !== undefined);
      // The drain's CAS (control/volumes/_drain.ts does it through casRecord).
      const v = await stored(store);
      const asked = withHandover(v.group, { to: "n2", reason: "drain of node n1" });
      await store.put(KEY, JSON.stringify({ ...v, group: asked }));
      await deliver();
      await eventually("n1 closes its export", () => h1.calls.includes("stop 1"));
      // While the export is closing nothing is written: the machine waits for it.
      assertEquals([d1.state.stopping, d1.state.op], [1, undefined]);
      assertEquals((await stored(store)).group.epoch, 1);
      h1.release();
      await eventually("handed over", async () => (await stored(store)).group.epoch === 2);
      const { group } = await stored(store);
      assertEquals([group.master, group.inSync, group.handover], ["n2", ["n1", "n2"], undefined]);
      await deliver();
      await eventually("n2 serves", () => h2.calls.length === 1);
      assertEquals(h2.calls, ["serve 2 gated"]); // (no replication here: n1 is in sync)
      assertEquals(h2.hooks?.handedOver, true);
      assertEquals(h1.calls, ["serve 1 gated", "stop 1"], "n1 does not serve again");
    } finally {
      await d1.stop();
      await d2.stop();
      await watch.stop();
    }
  });
});

Deno.test("retryDelay(): doubles per lost response up to a cap, spread by a random 0.5-1.5", () => {
  assertEquals(retryDelay(500, 1, 0.5), 500);
  assertEquals(retryDelay(500, 3, 0.5), 2000);
  assertEquals(retryDelay(500, 30, 0.5), 8000, "capped");
  assertEquals(retryDelay(500, 1, 0), 250);
  assertEquals(retryDelay(500, 1, 0.999), 750);
  assertEquals(retryDelay(500, 0, 0.5), 500, "no loss counted yet: the machine's delay");
});

Deno.test("GroupDriver: a lagging replica's resync starts only once the master's export is done", async () => {
  await withSqlite(async (store) => {
    await seed(store, ["n1", "n2", "n3"]);
    const r = await stored(store);
    const lagging = { ...r.group, inSync: ["n1", "n3"], phase: "degraded" as const };
    await store.put(KEY, JSON.stringify({ ...r, group: lagging }));
    const watch = new LeaseWatch({ store, logger: silentLogger() });
    await watch.start();
    let exported = false;
    let finishServe: () => void = () => {};
    const host = new (class extends RecordingHost {
      replicates = true;
      override serve(epoch: number, hooks: ServeHooks): Promise<void> {
        void super.serve(epoch, hooks);
        return new Promise<void>((res) => finishServe = res).then(() => {
          exported = true;
        });
      }
      resync(replica: string, epoch: number): Promise<boolean> {
        this.calls.push(`resync ${replica} ${epoch} ${exported ? "after" : "before"} the export`);
        return Promise.resolve(false);
      }
    })();
    const d = driver(store, "n1", watch, host);
    d.start();
    try {
      await eventually("n1 serves", () => host.calls.includes("serve 1"));
      finishServe();
      await eventually("n2 resynced", () => host.calls.some((c) => c.startsWith("resync n2")));
      assertEquals(host.calls.filter((c) => c.startsWith("resync")), [
        "resync n2 1 after the export",
      ]);
    } finally {
      await d.stop();
      await watch.stop();
    }
  });
});

Deno.test("GroupDriver: a lagging replica whose liveness lease is gone is not asked to resync (the record then lists it down)", async () => {
  await withSqlite(async (store) => {
    const leases = await seed(store, ["n1", "n2", "n3"]);
    const r = await stored(store);
    const lagging = { ...r.group, inSync: ["n1", "n3"], phase: "degraded" as const };
    await store.put(KEY, JSON.stringify({ ...r, group: lagging }));
    await store.revokeLease(leases.n2); // n2 died: its lease is gone
    const watch = new LeaseWatch({ store, logger: silentLogger() });
    await watch.start();
    const host = new (class extends RecordingHost {
      replicates = true;
      resync(replica: string, epoch: number): Promise<boolean> {
        this.calls.push(`resync ${replica} ${epoch}`);
        return Promise.resolve(false);
      }
    })();
    const d = driver(store, "n1", watch, host);
    d.start();
    try {
      await eventually("n1 serves", () => host.calls.includes("serve 1"));
      await eventually(
        "n2 listed down",
        async () => (await stored(store)).group.down.includes("n2"),
      );
      assertEquals(host.calls.filter((c) => c.startsWith("resync")), []);
    } finally {
      await d.stop();
      await watch.stop();
    }
  });
});

Deno.test("resyncRetryDelay(): 5 s after a failure, doubled per failure in a row, at most a minute", () => {
  assertEquals([1, 2, 3, 4, 5, 6, 100].map(resyncRetryDelay), [
    5_000,
    10_000,
    20_000,
    40_000,
    60_000,
    60_000,
    60_000,
  ]);
  assertEquals(resyncRetryDelay(0), 5_000);
});

Deno.test("GroupDriver: an export that fails (a full disk) is tried again until it works, and says why meanwhile", async () => {
  await withSqlite(async (store) => {
    await seed(store, ["n1", "n2"]);
    const watch = new LeaseWatch({ store, logger: silentLogger() });
    await watch.start();
    let failures = 1;
    const host = new (class extends RecordingHost {
      override serve(epoch: number, hooks: ServeHooks): Promise<void> {
        void super.serve(epoch, hooks);
        if (failures-- > 0) return Promise.reject(new Error("No space left on device"));
        return Promise.resolve();
      }
    })();
    const d = driver(store, "n1", watch, host);
    d.start();
    try {
      await eventually("n1's export fails", () => d.serveFailure !== undefined);
      assertEquals(d.serveFailure, "No space left on device");
      await eventually("then it serves", () => host.calls.length === 2);
      assertEquals(host.calls, ["serve 1 gated", "serve 1 gated"]);
      await eventually("the failure is over", () => d.serveFailure === undefined);
    } finally {
      await d.stop();
      await watch.stop();
    }
  });
});
