import { FakeClock } from "../../control/clock.ts";
import { silentLogger } from "../../control/log.ts";
import { NodeRegistry } from "../../control/nodes.ts";
import { VOLUME_PREFIX, VolumeService } from "../../control/volumes.ts";
import { ConflictError } from "../../mod/errors.ts";
import { assert, assertEquals, assertRejects } from "../_assert.ts";
import { call, NODE, racingStore, startTestNode } from "./_fixtures.ts";

const KEY = VOLUME_PREFIX + "v";
const otherWriter = (value: string) =>
  JSON.stringify({ ...JSON.parse(value), description: "written by another writer" });

Deno.test("VolumeService.update() retries after losing a CAS race and keeps both changes", async () => {
  const race = racingStore();
  const node = await startTestNode({ wrapStore: race.wrap });
  try {
    await node.volumes.create({ name: "v", size: "4MiB" });
    const before = (await node.store.get(KEY))!.modRevision;
    race.arm(KEY, 2, otherWriter);
    const updated = await node.volumes.update("v", { labels: { after: "race" } });
    assertEquals(updated.labels, { after: "race" });
    assertEquals(updated.description, "written by another writer", "re-read after the race");
    const stored = JSON.parse((await node.store.get(KEY))!.value);
    assertEquals(stored.description, "written by another writer", "the other write survived");
    assertEquals(stored.labels, { after: "race" }, "our change applied on top");
    assertEquals((await node.store.get(KEY))!.modRevision, before + 3, "2 interleaved + ours");
  } finally {
    await node.close();
  }
});

Deno.test("VolumeService.update() gives up with CONFLICT when every attempt loses", async () => {
  const race = racingStore();
  const node = await startTestNode({ wrapStore: race.wrap });
  try {
    await node.volumes.create({ name: "v", size: "4MiB" });
    race.arm(KEY, 100, otherWriter);
    await assertRejects(
      () => node.volumes.update("v", { description: "mine" }),
      ConflictError,
      "kept changing",
    );
    race.arm(KEY, 100, otherWriter);
    const res = await call(node.app, "PATCH", "/v1/volumes/v", { description: "mine" });
    assertEquals([res.status, res.body.error.code], [409, "CONFLICT"]);
    const stored = JSON.parse((await node.store.get(KEY))!.value);
    assertEquals(stored.description, "written by another writer", "ours never applied");
  } finally {
    await node.close();
  }
});

Deno.test("VolumeService.reconcile() reopens ready volumes and cleans up interrupted ones", async () => {
  const first = await startTestNode();
  const dir = first.dir;
  await first.volumes.create({ name: "keep", size: "4MiB" });
  await first.volumes.create({ name: "halfdeleted", size: "4MiB" });
  await first.volumes.create({ name: "halfcreated", size: "4MiB" });
  const lost = await first.volumes.create({ name: "lost", size: "4MiB" });
  // Simulate crashes: flip records behind the service's back, remove one file.
  for (const [name, state] of [["halfdeleted", "deleting"], ["halfcreated", "creating"]]) {
    const kv = (await first.store.get(VOLUME_PREFIX + name))!;
    await first.store.put(kv.key, JSON.stringify({ ...JSON.parse(kv.value), state }));
  }
  await first.close({ keepDir: true });
  await Deno.remove(`${dir}/volumes/${lost.uuid}.vol`);

  const node = await startTestNode({ dir });
  try {
    const report = await node.volumes.reconcile();
    assertEquals(report.opened, ["keep"]);
    assertEquals(report.failed, ["lost"]);
    assertEquals(report.finishedDeletes, ["halfdeleted"]);
    assertEquals(report.removedCreating, ["halfcreated"]);
    const names = (await node.volumes.list()).map((v) => `${v.name}:${v.state}`);
    assertEquals(names, ["keep:ready", "lost:failed"]);
    assertEquals(node.dataPlane.volumeStatus("keep")?.connections, 0, "keep is exported");
    const files = [...Deno.readDirSync(`${dir}/volumes`)].map((e) => e.name);
    assertEquals(files.length, 1, `only keep's file is left: ${files}`);
  } finally {
    await node.close();
  }
});

Deno.test("NodeRegistry: a node whose lease expires is listed as down", async () => {
  const clock = new FakeClock(Date.now());
  const node = await startTestNode({ storeOptions: { clock, sweepIntervalMs: 0 } });
  const other = new NodeRegistry({
    store: node.store,
    dataPlane: node.dataPlane,
    logger: silentLogger(),
    nodeName: "node-b",
    apiAddress: "http://127.0.0.2:5705",
    version: "test",
    leaseTtlSeconds: 60,
  });
  try {
    await other.start();
    let b = await node.nodes.get("node-b");
    assertEquals([b.state, b.reason], ["ready", ""]);
    clock.advance(61_000);
    await node.store.expireLeases();
    b = await node.nodes.get("node-b");
    assertEquals(b.state, "down");
    assert(b.reason.includes("lease expired"), b.reason);
    const states = (await node.nodes.list()).map((n) => `${n.name}:${n.state}`);
    assertEquals(states, [`${NODE}:ready`, "node-b:down"]);
  } finally {
    await other.stop();
    await node.close();
  }
});

Deno.test("VolumeService rejects replicas without cluster mode before writing anything", async () => {
  const node = await startTestNode();
  try {
    const svc = new VolumeService({
      store: node.store,
      dataPlane: node.dataPlane,
      logger: silentLogger(),
      nodeName: NODE,
    });
    assertEquals(
      await svc.create({ name: "r", size: "4MiB", replicas: 1 }).catch((e) => e.code),
      "FAILED_PRECONDITION",
    );
    assertEquals(await node.store.get(VOLUME_PREFIX + "r"), undefined);
  } finally {
    await node.close();
  }
});

Deno.test("VolumeService.create() is put-if-absent across writers: one wins, the other gets ALREADY_EXISTS", async () => {
  const node = await startTestNode();
  try {
    const other = new VolumeService({
      store: node.store,
      dataPlane: node.dataPlane,
      logger: silentLogger(),
      nodeName: NODE,
    });
    const results = await Promise.allSettled([
      node.volumes.create({ name: "dup", size: "4MiB" }),
      other.create({ name: "dup", size: "4MiB" }),
    ]);
    const codes = results.map((r) => r.status === "fulfilled" ? "ok" : r.reason.code).sort();
    assertEquals(codes, ["ALREADY_EXISTS", "ok"]);
    const stored = JSON.parse((await node.store.get(VOLUME_PREFIX + "dup"))!.value);
    assertEquals(stored.state, "ready");
    assertEquals(node.dataPlane.volumeStatus("dup")?.allocatedBytes, 0);
  } finally {
    await node.close();
  }
});
