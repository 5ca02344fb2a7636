/**
 * The directory feed (control/directory/feed.ts) over the embedded store: a volume's entry
 * follows its record and its master's node record, and what is handed over is always a state
 * the records made; the per-entry comparison that keeps record changes which move no entry
 * from being handed over is tested on its own (sameEntry).
 */

import { assert, assertEquals } from "../../_assert.ts";
import { feedDirectory, placedOf, sameEntry } from "../../../control/directory/feed.ts";
import { silentLogger } from "../../../control/common/mod.ts";
import { aliveKey, NODE_PREFIX } from "../../../control/nodes/mod.ts";
import { VOLUME_PREFIX, type VolumeRecord } from "../../../control/volumes/mod.ts";
import type { DirectoryEntry } from "../../../data/mod.ts";
import { eventually, withSqlite } from "../_fixtures.ts";
import type { StateStore } from "../../../control/store/mod.ts";

function record(master: string, epoch: number, more: Partial<VolumeRecord> = {}): VolumeRecord {
  return {
    name: "v",
    uuid: "u1",
    sizeBytes: 4096,
    state: "ready",
    master,
    epoch,
    group: {
      epoch,
      master,
      members: ["n1", "n2"],
      inSync: ["n1", "n2"],
      down: [],
      phase: "healthy",
    },
    ...more,
  } as unknown as VolumeRecord;
}

/**
 * Nodes n1 and n2 (NBD h:1, h:2, both up), volume "v" mastered by n1, and a feed over them
 * once its first directory is out; `last()` is the entry of the last directory handed over.
 */
async function startFeed(store: StateStore) {
  await store.put(NODE_PREFIX + "n1", JSON.stringify({ name: "n1", nbdAddress: "h:1" }));
  await store.put(NODE_PREFIX + "n2", JSON.stringify({ name: "n2", nbdAddress: "h:2" }));
  for (const n of ["n1", "n2"]) await store.put(aliveKey(n), "{}");
  await store.put(VOLUME_PREFIX + "v", JSON.stringify(record("n1", 1)));
  const published: DirectoryEntry[][] = [];
  const feed = feedDirectory({ store, log: silentLogger(), publish: (e) => published.push(e) });
  const last = () => published.at(-1)?.[0];
  await eventually("the first directory", () => last()?.address === "h:1");
  return { published, feed, last };
}

Deno.test("placedOf(): served records only; the master's lease gone shows as masterDown", () => {
  assertEquals(placedOf("v", record("n1", 2)), {
    name: "v",
    uuid: "u1",
    sizeBytes: 4096,
    master: "n1",
    epoch: 2,
    masterDown: false,
  });
  assertEquals(
    placedOf("v", record("n1", 2, { state: "creating" } as Partial<VolumeRecord>)),
    undefined,
  );
  // Being deleted: served while the delete may still be refused (not forced), not after.
  const deleting = (deleteForce?: boolean) =>
    placedOf("v", record("n1", 2, { state: "deleting", deleteForce } as Partial<VolumeRecord>));
  assertEquals(deleting(false)?.master, "n1");
  assertEquals(deleting(true), undefined);
  assertEquals(deleting(undefined), undefined, "a record of an older version: as forced");
  // A copy its node could not open: unavailable, with the record's reason.
  const failed = placedOf(
    "v",
    record("n1", 2, { state: "failed", stateReason: "node n1 could not open its copy: EIO" }),
  );
  assertEquals([failed?.unavailable, failed?.why], [true, "node n1 could not open its copy: EIO"]);
  const down = record("n1", 2);
  down.group!.down = ["n1"];
  assertEquals(placedOf("v", down)?.masterDown, true);
  const a = { ...placedOf("v", record("n1", 2))!, address: "h:1" };
  assert(sameEntry(a, { ...a }));
  assert(!sameEntry(a, { ...a, epoch: 3 }));
  assert(!sameEntry(a, undefined));
});

Deno.test("feedDirectory(): entries follow the volume records and the masters' node records", async () => {
  await withSqlite(async (store) => {
    const { published, feed, last } = await startFeed(store);
    try {
      // Only the in-sync set changes: the entry stays as it was.
      const other = record("n1", 1);
      other.group!.inSync = ["n1"];
      await store.put(VOLUME_PREFIX + "v", JSON.stringify(other));
      // n2 takes over at epoch 2.
      await store.put(VOLUME_PREFIX + "v", JSON.stringify(record("n2", 2)));
      await eventually("the new master", () => last()?.master === "n2");
      assertEquals(last(), {
        name: "v",
        uuid: "u1",
        sizeBytes: 4096,
        master: "n2",
        epoch: 2,
        masterDown: false,
        address: "h:2",
      });
      assert(
        published.every((d) => d.length === 1 && (d[0].master === "n1") === (d[0].epoch === 1)),
        `every directory handed over is one the records made: ${JSON.stringify(published)}`,
      );
      const count = published.length;
      // n2 moves its NBD listener: the entry follows the node record.
      await store.put(NODE_PREFIX + "n2", JSON.stringify({ name: "n2", nbdAddress: "h:9" }));
      await eventually("the new address", () => last()?.address === "h:9");
      assertEquals(published.length, count + 1);
      await store.delete(VOLUME_PREFIX + "v");
      await eventually("the volume gone", () => published.at(-1)?.length === 0);
    } finally {
      await feed.stop();
    }
  });
});

Deno.test("feedDirectory(): a group all of whose in-sync members lost their liveness keys (its record still healthy) is unavailable after the grace, and back when one returns", async () => {
  await withSqlite(async (store) => {
    const { feed, last } = await startFeed(store);
    try {
      // Both in-sync members die at once: nobody is left to change the record.
      await store.delete(aliveKey("n1"));
      await store.delete(aliveKey("n2"));
      await eventually("unavailable after the grace", () => last()?.unavailable === true);
      assertEquals(last()?.why, "no in-sync member is up (n1, n2: liveness lease gone)");
      await store.put(aliveKey("n2"), "{}");
      await eventually("available again", () => last()?.unavailable === undefined);
      assertEquals(last()?.master, "n1");
    } finally {
      await feed.stop();
    }
  });
});
