/**
 * Replicated volumes at the VolumeService level: two cluster-mode nodes (real data
 * plane each) on one real etcd, their record watches stopped and started to stand in
 * for a node that is down. Growing every member's copy, a member restarting
 * mid-create, a create whose creator died, and copies nobody recorded; one group's
 * stuck step not holding up another group, failed member steps retried, forced deletes
 * with a member down, and the orphan cleanup at node start.
 */

import { newRecord } from "../../../control/group/mod.ts";
import { specOf, VOLUME_PREFIX, type VolumeRecord } from "../../../control/volumes/_record.ts";
import { FailedPreconditionError, UnavailableError } from "../../../mod/errors.ts";
import type { DataPlane } from "../../../data/plane.ts";
import type { StateStore } from "../../../control/store/mod.ts";
import { armedTxnStore, eventually } from "../_fixtures.ts";
import { assert, assertEquals, assertRejects } from "../../_assert.ts";
import { NODE_PREFIX } from "../../../control/nodes/mod.ts";
import { ETCD_INSTALLED, type EtcdCluster, startEtcd } from "../_etcd_harness.ts";
import { type ClusterNode, fileSize, readyNode, startClusterNode } from "../_cluster_node.ts";

const MiB = 2 ** 20;

type NodeOptions = Parameters<typeof startClusterNode>[3];

async function withTwoNodes(
  fn: (a: ClusterNode, b: ClusterNode) => Promise<void>,
  extra: { a?: NodeOptions; b?: NodeOptions } = {},
) {
  const etcd: EtcdCluster = await startEtcd();
  const prefix = `/t/${crypto.randomUUID()}`;
  const options = {
    listNodes: () => Promise.resolve([readyNode("node-a"), readyNode("node-b")]),
    groupCreateWaitMs: 8_000,
  };
  const a = await startClusterNode(etcd, prefix, "node-a", { ...options, ...extra.a });
  const b = await startClusterNode(etcd, prefix, "node-b", { ...options, ...extra.b });
  try {
    await fn(a, b);
  } finally {
    await b.close();
    await a.close();
    await etcd.stop();
  }
}

const copy = (n: ClusterNode, uuid: string) => `${n.dir}/volumes/${uuid}.vol`;

/**
 * Deadline for what follows retried member steps (they back off from 500 ms, doubling: two
 * failures already cost 1.5 s) and other waits on both nodes through etcd: generous for a
 * loaded machine; the tests go on as soon as the condition holds.
 */
const RETRIED_MS = 30_000;

/** A group record on node-a (master) and node-b as a creator would have written it. */
function groupRecord(name: string, over: Partial<VolumeRecord>): VolumeRecord {
  const group = newRecord("node-a", ["node-b"]);
  const now = new Date().toISOString();
  return {
    name,
    uuid: crypto.randomUUID(),
    sizeBytes: 4 * MiB,
    replicas: 1,
    labels: {},
    description: "",
    createdAt: now,
    updatedAt: now,
    master: "node-a",
    epoch: 1,
    state: "creating",
    group,
    ...over,
  };
}

function etcdTest(name: string, fn: () => Promise<void>) {
  Deno.test({
    name: ETCD_INSTALLED ? name : `${name} (skipped: etcd / etcdctl not installed)`,
    ignore: !ETCD_INSTALLED,
    fn,
  });
}

etcdTest(
  "VolumeService.resize() of a group: every member grows its copy; one not watching grows when it starts again",
  () =>
    withTwoNodes(async (a, b) => {
      const g = await a.volumes.create({ name: "g", size: "4MiB", replicas: 1 });
      assertEquals(g.members, ["node-a", "node-b"]);
      const grown = await b.volumes.resize("g", "8MiB");
      assertEquals(grown.sizeBytes, 8 * MiB);
      assertEquals(await fileSize(copy(b, g.uuid)), 8 * MiB, "the asked member, at once");
      await eventually("node-a grows", async () => await fileSize(copy(a, g.uuid)) === 8 * MiB);
      await assertRejects(
        () => a.volumes.resize("g", "4MiB"),
        FailedPreconditionError,
        "volumes can only grow",
      );

      await b.volumes.stopWatching(); // node-b is down
      assertEquals((await a.volumes.resize("g", "12MiB")).sizeBytes, 12 * MiB);
      assertEquals(await fileSize(copy(a, g.uuid)), 12 * MiB);
      assertEquals(await fileSize(copy(b, g.uuid)), 8 * MiB);
      b.volumes.startWatching(); // back: compares the record with its copy
      await eventually("node-b grows", async () => await fileSize(copy(b, g.uuid)) === 12 * MiB);
      assertEquals((await b.volumes.get("g")).sizeBytes, 12 * MiB);
    }),
);

etcdTest(
  "a member that restarts mid-create keeps the copy it had made, and the create completes",
  () =>
    withTwoNodes(async (a, b) => {
      await b.volumes.stopWatching(); // node-b goes down ...
      const creating = a.volumes.create({ name: "g", size: "4MiB", replicas: 1 });
      let rec: VolumeRecord | undefined;
      await eventually("the record is written", async () => {
        const kv = await a.store.get(VOLUME_PREFIX + "g");
        rec = kv && JSON.parse(kv.value);
        return rec !== undefined;
      });
      // ... after making its copy but before saying so in the record; then restarts.
      await b.plane.createVolume(specOf(rec!), { export: false });
      b.volumes.startWatching();
      const g = await creating;
      assertEquals([g.state, g.members], ["ready", ["node-a", "node-b"]]);
      assertEquals(await fileSize(copy(b, g.uuid)), 4 * MiB);
    }),
);

etcdTest(
  "a group whose creator died mid-create is refused delete while fresh, deleted everywhere once stale",
  () =>
    withTwoNodes(async (a, b) => {
      // Both members made and recorded their copies; nobody is left to flip it ready.
      for (const [name, age] of [["fresh", 0], ["stale", 120_000]] as const) {
        const createdAt = new Date(Date.now() - age).toISOString();
        const rec = groupRecord(name, { createdAt, created: ["node-a", "node-b"] });
        for (const n of [a, b]) await n.plane.createVolume(specOf(rec), { export: false });
        await a.store.put(VOLUME_PREFIX + name, JSON.stringify(rec));
      }
      await assertRejects(
        () => b.volumes.delete("fresh"),
        FailedPreconditionError,
        "being created",
      );
      const stale = await b.volumes.get("stale");
      await b.volumes.delete("stale");
      assertEquals(await a.store.get(VOLUME_PREFIX + "stale"), undefined);
      for (const n of [a, b]) assertEquals(await fileSize(copy(n, stale.uuid)), -1, n.name);
    }),
);

etcdTest(
  "a member not on a delete's remaining list still removes a copy it never recorded",
  () =>
    withTwoNodes(async (a, b) => {
      // An undone create: node-a recorded its copy; node-b made one but crashed before
      // recording it, so only node-a is left to remove its copy.
      const rec = groupRecord("g", { state: "deleting", remaining: ["node-a"], deleteForce: true });
      for (const n of [a, b]) await n.plane.createVolume(specOf(rec), { export: false });
      await a.store.put(VOLUME_PREFIX + "g", JSON.stringify(rec));
      await eventually("both copies removed and the record gone", async () =>
        await fileSize(copy(a, rec.uuid)) === -1 && await fileSize(copy(b, rec.uuid)) === -1 &&
        await a.store.get(VOLUME_PREFIX + "g") === undefined);
    }),
);

/** A data plane whose `method` calls for volume `name` run `around` first (hang or fail). */
function planeWith(
  method: "resizeVolume" | "deleteVolume",
  name: string,
  around: () => Promise<void>,
): (p: DataPlane) => DataPlane {
  return (inner) =>
    new Proxy(inner, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver);
        if (typeof v !== "function") return v;
        if (prop !== method) return v.bind(target);
        return async (volume: string, ...rest: unknown[]) => {
          if (volume === name) await around();
          return await (v as (...a: unknown[]) => Promise<unknown>).call(target, volume, ...rest);
        };
      },
    });
}

/** A store whose next `count` transactions on `key` fail like an etcd outage, once armed. */
function flakyStore(): { wrap: (s: StateStore) => StateStore; arm(key: string, n: number): void } {
  const armed = armedTxnStore();
  return {
    wrap: armed.wrap,
    arm: (key, n) =>
      armed.arm(
        n,
        (c) => c.key === key,
        () => Promise.reject(new UnavailableError("control plane unavailable: test")),
      ),
  };
}

const gone = (n: ClusterNode, name: string) => async () =>
  await n.store.get(VOLUME_PREFIX + name) === undefined;

etcdTest(
  "a member step that hangs for one group does not hold up another group's change on that node",
  async () => {
    let hold = false;
    let release = () => {};
    const held = new Promise<void>((r) => release = r);
    await withTwoNodes(async (a, b) => {
      const slow = await a.volumes.create({ name: "slow", size: "4MiB", replicas: 1 });
      const fast = await a.volumes.create({ name: "fast", size: "4MiB", replicas: 1 });
      hold = true; // node-b's copy of "slow" cannot grow: its step hangs
      await a.volumes.resize("slow", "8MiB");
      await a.volumes.resize("fast", "8MiB");
      try {
        await eventually(
          "node-b grows fast while slow hangs",
          async () => await fileSize(copy(b, fast.uuid)) === 8 * MiB,
          RETRIED_MS, // a deadline only: slow hangs until released, however long this takes
        );
        assertEquals(await fileSize(copy(b, slow.uuid)), 4 * MiB, "slow still held");
      } finally {
        release(); // else closing node-b would wait for the held step
      }
      await eventually(
        "node-b grows slow once released",
        async () => await fileSize(copy(b, slow.uuid)) === 8 * MiB,
      );
    }, {
      b: { wrapPlane: planeWith("resizeVolume", "slow", () => hold ? held : Promise.resolve()) },
    });
  },
);

etcdTest(
  "failed member steps are retried: a copy that could not be deleted, a record that could not be updated, a copy that could not grow",
  async () => {
    const flaky = flakyStore();
    let diskErrors = 0;
    const failDelete = () =>
      diskErrors-- > 0 ? Promise.reject(new Error("EIO: i/o error, unlink")) : Promise.resolve();
    let growErrors = 0;
    const failGrow = () =>
      growErrors-- > 0 ? Promise.reject(new Error("EIO: i/o error, ftruncate")) : Promise.resolve();
    const wrapPlane = (p: DataPlane) =>
      planeWith("resizeVolume", "g3", failGrow)(planeWith("deleteVolume", "g1", failDelete)(p));
    await withTwoNodes(async (a, b) => {
      // Placement makes the node mastering fewer groups the master: a group mastered by
      // node-b after each keeps node-a the master of g1 and g2.
      const g1 = await a.volumes.create({ name: "g1", size: "4MiB", replicas: 1 });
      await a.volumes.create({ name: "b1", size: "4MiB", replicas: 1 });
      const g2 = await a.volumes.create({ name: "g2", size: "4MiB", replicas: 1 });
      await a.volumes.create({ name: "b2", size: "4MiB", replicas: 1 });
      const g3 = await a.volumes.create({ name: "g3", size: "4MiB", replicas: 1 });
      assertEquals([g1.master, g2.master], ["node-a", "node-a"]);

      // node-b (a replica) fails to remove its copy of g1 once.
      diskErrors = 1;
      await a.volumes.delete("g1");
      await eventually(
        "g1 deleted after node-b retried",
        async () => await gone(a, "g1")() && await fileSize(copy(b, g1.uuid)) === -1,
        RETRIED_MS,
      );
      assert(diskErrors < 0, "node-b's first attempt failed");

      // node-b removes its copy of g2, but cannot say so in the record (etcd) twice.
      flaky.arm(VOLUME_PREFIX + "g2", 2);
      await a.volumes.delete("g2");
      await eventually(
        "g2 deleted after node-b retried",
        async () => await gone(a, "g2")() && await fileSize(copy(b, g2.uuid)) === -1,
        RETRIED_MS,
      );

      // node-b cannot grow its copy of g3 the first time.
      growErrors = 1;
      await a.volumes.resize("g3", "8MiB");
      await eventually(
        "node-b grows g3 after a retry",
        async () => await fileSize(copy(b, g3.uuid)) === 8 * MiB,
        RETRIED_MS,
      );
      assertEquals(growErrors, -1, "node-b's first attempt failed");
    }, { b: { wrapPlane, wrapStore: flaky.wrap } });
  },
);

etcdTest(
  "delete of a group with a member down: refused without force; forced, the live members delete and the record goes; the down member removes its copy at start",
  () =>
    withTwoNodes(async (a, b) => {
      const g = await a.volumes.create({ name: "g", size: "4MiB", replicas: 1 });
      await b.volumes.stopWatching(); // node-b goes down ...
      await b.setAlive(false); // ... and its lease expires
      await assertRejects(
        () => a.volumes.delete("g"),
        FailedPreconditionError,
        'volume "g" has member down: node-b',
      );
      assertEquals((await a.volumes.get("g")).state, "ready", "nothing changed");
      await a.volumes.delete("g", { force: true });
      await eventually("record and node-a's copy gone", async () =>
        await gone(a, "g")() && await fileSize(copy(a, g.uuid)) === -1);
      assertEquals(await fileSize(copy(b, g.uuid)), 4 * MiB, "node-b was down");

      // node-b starts again: its copy has no record any more.
      await b.setAlive(true);
      const report = await b.volumes.reconcile();
      // Deleted while it was down (a tombstone says so): removed, not moved aside.
      assertEquals([report.removedDeleted, report.movedOrphans], [[g.uuid], []]);
      assertEquals(await fileSize(copy(b, g.uuid)), -1);
    }, { b: { orphanMinAgeMs: 0 } }),
);

etcdTest(
  "a forced delete finishes when a member goes down while it waits, and with every member down the record goes at once",
  () =>
    withTwoNodes(async (a, b) => {
      const g = await a.volumes.create({ name: "g", size: "4MiB", replicas: 1 });
      const h = await a.volumes.create({ name: "h", size: "4MiB", replicas: 1 });
      await b.volumes.stopWatching(); // node-b stops, its lease not yet expired
      await a.volumes.delete("g", { force: true });
      const rec = JSON.parse((await a.store.get(VOLUME_PREFIX + "g"))!.value) as VolumeRecord;
      assertEquals([rec.state, rec.remaining], ["deleting", ["node-b"]], "waits for node-b");
      await b.setAlive(false); // the lease expires: node-a drops node-b from the delete
      await eventually("g gone", gone(a, "g"));
      assertEquals(await fileSize(copy(a, g.uuid)), -1);

      await a.volumes.stopWatching();
      await a.setAlive(false);
      await b.volumes.delete("h", { force: true }); // node-b answers the API only
      await eventually("h gone at once", gone(a, "h"), 1_000);
      for (const n of [a, b]) assertEquals(await fileSize(copy(n, h.uuid)), 4 * MiB, n.name);
    }),
);

etcdTest(
  "orphan cleanup at node start never moves a copy whose record exists (any state), nor a new one, nor on an unknown store",
  () =>
    withTwoNodes(async (a, b) => {
      // Only reconcile() acts on these records.
      for (const n of [a, b]) await n.volumes.stopWatching();
      const uuids: string[] = [];
      for (const state of ["creating", "ready", "deleting", "failed"] as const) {
        const rec = groupRecord(`v-${state}`, { state, remaining: ["node-b"] });
        await a.plane.createVolume(specOf(rec), { export: false });
        await a.store.put(VOLUME_PREFIX + rec.name, JSON.stringify(rec));
        uuids.push(rec.uuid);
      }
      const orphan = crypto.randomUUID();
      await a.plane.createVolume(
        { name: "x", uuid: orphan, sizeBytes: MiB, description: "" },
        { export: false },
      );
      // Not registered in this store: nothing is removed.
      await a.store.delete(NODE_PREFIX + "node-a");
      assertEquals((await a.volumes.reconcile()).movedOrphans, []);
      await a.store.put(NODE_PREFIX + "node-a", "{}");
      assertEquals((await a.volumes.reconcile()).movedOrphans, [orphan]);
      for (const u of uuids) assertEquals(await fileSize(copy(a, u)), 4 * MiB, u);
      assertEquals(await fileSize(copy(a, orphan)), -1);
      const quarantined = copy(a, orphan).replace("/volumes/", "/orphaned/");
      assertEquals(await fileSize(quarantined), MiB, "moved aside, never deleted");
    }, { a: { orphanMinAgeMs: 0 } }),
);

etcdTest(
  "orphan cleanup keeps a copy without a record while it is newer than the margin",
  () =>
    withTwoNodes(async (a, _b) => {
      const orphan = crypto.randomUUID();
      await a.plane.createVolume(
        { name: "x", uuid: orphan, sizeBytes: MiB, description: "" },
        { export: false },
      );
      assertEquals((await a.volumes.reconcile()).movedOrphans, [], "default margin: 10 min");
      const old = new Date(Date.now() - 11 * 60_000);
      await Deno.utime(copy(a, orphan), old, old);
      assertEquals((await a.volumes.reconcile()).movedOrphans, [orphan]);
    }),
);
