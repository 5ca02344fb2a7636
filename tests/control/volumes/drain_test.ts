/**
 * A drain whose handover does not complete (control/volumes/_drain.ts), on a real node
 * (embedded store, real registry): no group driver answers the request here, so the drain
 * withdraws it after its wait, reports the volume failed (result incomplete), and the
 * volume's events say so. The completed handover runs on a real cluster in
 * tests/e2e/drain_test.ts.
 */

import { assert, assertEquals } from "../../_assert.ts";
import type { DrainProgress, DrainReport } from "../../../mod/types.ts";
import { newRecord } from "../../../control/group/mod.ts";
import { aliveKey, NODE_PREFIX } from "../../../control/nodes/mod.ts";
import { NODE, startTestNode } from "../_fixtures.ts";

Deno.test("drain: a handover nobody carries out is withdrawn after the wait; the volume is reported failed and its events say why", async () => {
  const node = await startTestNode();
  try {
    const { store } = node;
    // Another live node, and a group mastered here with it as an in-sync replica.
    await store.put(NODE_PREFIX + "peer", JSON.stringify({ name: "peer", labels: {} }));
    const lease = await store.grantLease(60);
    await store.put(aliveKey("peer"), "{}", { lease });
    const now = new Date().toISOString();
    await store.put(
      "/ballast/volumes/g1",
      JSON.stringify({
        name: "g1",
        uuid: "u-g1",
        sizeBytes: 8 << 20,
        replicas: 1,
        labels: {},
        description: "",
        state: "ready",
        master: NODE,
        epoch: 1,
        group: newRecord(NODE, ["peer"]),
        createdAt: now,
        updatedAt: now,
      }),
    );
    const lines: DrainProgress[] = [];
    for await (const p of node.volumes.drain(NODE, node.nodes, { handoverWaitMs: 300 })) {
      lines.push(p);
    }
    assertEquals(lines.map((l) => l.type), ["plan", "volume", "summary"]);
    const plan = lines[0] as Extract<DrainProgress, { type: "plan" }>;
    assertEquals(plan.volumes, [{ volume: "g1", from: NODE, status: "planned", to: "peer" }]);
    const report = (lines[2] as { report: DrainReport }).report;
    assertEquals([report.result, report.cordoned], ["incomplete", true]);
    const [v] = report.volumes;
    assertEquals([v.status, v.to], ["failed", "peer"]);
    assert(v.reason?.includes("did not hand over within 0.3 s"), v.reason);
    const rec = JSON.parse((await store.get("/ballast/volumes/g1"))!.value);
    assertEquals([rec.group.master, rec.group.epoch, rec.group.handover], [NODE, 1, undefined]);
    assertEquals((await node.nodes.get(NODE)).state, "cordoned");
    const events = await node.volumes.events("g1");
    assertEquals(events.map((e) => [e.seq, e.type]), [
      [1, "handover-requested"],
      [2, "handover-abandoned"],
    ]);
    assert(events[1].message.includes("cancelled by the drain"), events[1].message);
  } finally {
    await node.close();
  }
});
