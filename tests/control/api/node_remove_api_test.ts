/**
 * DELETE /v1/nodes/{name} (`ballast node remove`) on a real node (embedded store, real
 * registry): another node's keys are written into the store as a node that stopped would
 * leave them. Refused while it runs or a record counts on a copy there; otherwise its record
 * and cordon go (and nothing of a node whose name it prefixes), and the tombstones of
 * deleted volumes stop waiting for it.
 */

import { assert, assertEquals } from "../../_assert.ts";
import { call, NODE, startTestNode } from "../_fixtures.ts";
import { VOLUME_PREFIX } from "../../../control/volumes/mod.ts";

/** Where forced deletes keep the members still to remove a copy (control/volumes/). */
const TOMBSTONE_PREFIX = "/ballast/volume-tombstones/";

function nodeRecord(name: string): string {
  const at = "2026-12-01T00:00:00.000Z";
  return JSON.stringify({
    name,
    apiAddress: "http://10.0.0.9:5705",
    nbdAddress: "10.0.0.9:10809",
    version: "test",
    labels: {},
    capacityBytes: 2 ** 30,
    freeBytes: 2 ** 29,
    volumes: 0,
    startedAt: at,
    lastSeen: at,
  });
}

Deno.test("api: node remove refuses a running node or one that holds a copy, then forgets its record, cordon and tombstone entries", async () => {
  const node = await startTestNode();
  try {
    const s = node.store;
    for (const n of ["n9", "n90"]) await s.put(`/ballast/nodes/${n}`, nodeRecord(n));
    await s.put("/ballast/nodes/n9/cordon", JSON.stringify({ reason: "dead", since: "x" }));
    const held = {
      name: "held",
      uuid: "6f1c0b7e-0000-4000-8000-000000000001",
      sizeBytes: 8 << 20,
      replicas: 0,
      master: "n9",
      state: "ready",
      labels: {},
      createdAt: "2026-12-01T00:00:00.000Z",
      updatedAt: "2026-12-01T00:00:00.000Z",
    };
    await s.put(VOLUME_PREFIX + "held", JSON.stringify(held));

    const refused = await call(node.app, "DELETE", "/v1/nodes/n9");
    assertEquals(refused.status, 412);
    const msg = String(refused.body.error.message);
    assert(msg.includes("node n9 still holds copies of 1 volume: held (master)"), msg);
    assertEquals(refused.body.error.details.volumes, ["held"]);
    assert(await s.get("/ballast/nodes/n9"), "nothing removed");

    const self = await call(node.app, "DELETE", `/v1/nodes/${NODE}`);
    assertEquals(self.status, 412);
    assert(String(self.body.error.message).includes(`node ${NODE} is running`), self.body);
    assertEquals((await call(node.app, "DELETE", "/v1/nodes/nope")).status, 404);

    await s.delete(VOLUME_PREFIX + "held");
    const uuid = "6f1c0b7e-0000-4000-8000-000000000002";
    const tomb = { name: "old", uuid, members: ["n2", "n9"], deletedAt: "2026-12-01T00:00:00Z" };
    await s.put(TOMBSTONE_PREFIX + uuid, JSON.stringify(tomb));

    const removed = await call(node.app, "DELETE", "/v1/nodes/n9");
    assertEquals(removed.status, 200, JSON.stringify(removed.body));
    assertEquals([removed.body.node.name, removed.body.node.state], ["n9", "down"]);
    assertEquals(removed.body.forgottenCopies, ["old"]);
    assertEquals(await s.get("/ballast/nodes/n9"), undefined);
    assertEquals(await s.get("/ballast/nodes/n9/cordon"), undefined);
    assert(await s.get("/ballast/nodes/n90"), "a node whose name it prefixes stays");
    const left = JSON.parse((await s.get(TOMBSTONE_PREFIX + uuid))!.value);
    assertEquals(left.members, ["n2"]);
    assertEquals((await call(node.app, "GET", "/v1/nodes/n9")).status, 404);
    const names = (await call(node.app, "GET", "/v1/nodes")).body.items.map(
      (n: { name: string }) => n.name,
    );
    assertEquals(names, ["n90", NODE]);
  } finally {
    await node.close();
  }
});
