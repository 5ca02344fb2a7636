/**
 * Replicated volumes at the VolumeService level: two cluster-mode nodes (real data
 * plane each) on one real etcd, their record watches stopped and started to stand in
 * for a node that is down. Growing every member's copy, a member restarting
 * mid-create, a create whose creator died, and copies nobody recorded.
 */

import { newRecord } from "../../control/group/record.ts";
import { specOf, VOLUME_PREFIX, type VolumeRecord } from "../../control/_volume_record.ts";
import { FailedPreconditionError } from "../../mod/errors.ts";
import { assertEquals, assertRejects } from "../_assert.ts";
import { ETCD_INSTALLED, type EtcdCluster, startEtcd } from "./_etcd_harness.ts";
import {
  type ClusterNode,
  eventually,
  fileSize,
  readyNode,
  startClusterNode,
} from "./_cluster_node.ts";

const MiB = 2 ** 20;

async function withTwoNodes(fn: (a: ClusterNode, b: ClusterNode) => Promise<void>) {
  const etcd: EtcdCluster = await startEtcd();
  const prefix = `/t/${crypto.randomUUID()}`;
  const options = {
    listNodes: () => Promise.resolve([readyNode("node-a"), readyNode("node-b")]),
    groupCreateWaitMs: 8_000,
  };
  const a = await startClusterNode(etcd, prefix, "node-a", options);
  const b = await startClusterNode(etcd, prefix, "node-b", options);
  try {
    await fn(a, b);
  } finally {
    await b.close();
    await a.close();
    await etcd.stop();
  }
}

const copy = (n: ClusterNode, uuid: string) => `${n.dir}/volumes/${uuid}.vol`;

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
