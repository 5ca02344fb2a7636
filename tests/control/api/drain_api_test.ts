/**
 * POST /v1/nodes/{name}/drain and GET /v1/volumes/{name}/events on a real single node
 * (embedded store, real data plane): the stream's lines, refusals, bad requests. The
 * handover itself is exercised on a real cluster in tests/e2e/drain_test.ts.
 */

import { assert, assertEquals } from "../../_assert.ts";
import { call, NODE, startTestNode } from "../_fixtures.ts";

Deno.test("api: drain streams the plan and a refusal for a volume with no replicas, and changes nothing", async () => {
  const node = await startTestNode();
  try {
    const made = await call(node.app, "POST", "/v1/volumes", { name: "solo", size: "8MiB" });
    assertEquals(made.status, 201);
    const res = await node.app.request(`/v1/nodes/${NODE}/drain`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    assertEquals(res.status, 200);
    assertEquals(res.headers.get("content-type"), "application/x-ndjson");
    const lines = (await res.text()).trim().split("\n").map((l) => JSON.parse(l));
    assertEquals(lines.map((l) => l.type), ["plan", "summary"]);
    assertEquals(lines[0].volumes[0].volume, "solo");
    assertEquals(lines[0].volumes[0].status, "refused");
    assert(lines[0].volumes[0].reason.includes("it is not replicated"), lines[0].volumes[0].reason);
    assertEquals(lines[1].report.result, "refused");
    assertEquals(lines[1].report.cordoned, false);
    assertEquals((await call(node.app, "GET", `/v1/nodes/${NODE}`)).body.state, "ready");

    // A dry run with force: what would happen, still nothing changed.
    const dry = await node.app.request(`/v1/nodes/${NODE}/drain`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ force: true, dryRun: true }),
    });
    const last = JSON.parse((await dry.text()).trim().split("\n").at(-1)!);
    assertEquals([last.report.result, last.report.dryRun], ["drained", true]);
    assertEquals((await call(node.app, "GET", `/v1/nodes/${NODE}`)).body.state, "ready");
  } finally {
    await node.close();
  }
});

Deno.test("api: drain of an unknown node is 404, a bad body 400; events of a volume without replicas are empty, of no volume 404", async () => {
  const node = await startTestNode();
  try {
    assertEquals((await call(node.app, "POST", "/v1/nodes/nope/drain", {})).status, 404);
    const bad = await call(node.app, "POST", `/v1/nodes/${NODE}/drain`, { force: "yes" });
    assertEquals(bad.status, 400);
    assert(String(bad.body.error.message).includes(`invalid force "yes"`), bad.body.error.message);
    const unknown = await call(node.app, "POST", `/v1/nodes/${NODE}/drain`, { now: true });
    assertEquals(unknown.status, 400);
    await call(node.app, "POST", "/v1/volumes", { name: "solo", size: "8MiB" });
    const ev = await call(node.app, "GET", "/v1/volumes/solo/events");
    assertEquals([ev.status, ev.body.items], [200, []]);
    assertEquals((await call(node.app, "GET", "/v1/volumes/none/events")).status, 404);
  } finally {
    await node.close();
  }
});

Deno.test("api: a cordoned node creates no unreplicated volume (it would be placed there), and does again once uncordoned", async () => {
  const node = await startTestNode();
  try {
    const cordoned = await call(node.app, "POST", `/v1/nodes/${NODE}/cordon`, { reason: "disk" });
    assertEquals(cordoned.status, 200);
    const refused = await call(node.app, "POST", "/v1/volumes", { name: "u1", size: "8MiB" });
    assertEquals(refused.status, 412);
    const msg = String(refused.body.error.message);
    assert(msg.includes(`the node is cordoned (cordoned since`), msg);
    assert(msg.includes(": disk) and takes no new volumes"), msg);
    assert(msg.includes(`ballast node uncordon ${NODE}`), msg);
    assertEquals((await call(node.app, "GET", "/v1/volumes/u1")).status, 404, "nothing made");
    assertEquals((await call(node.app, "POST", `/v1/nodes/${NODE}/uncordon`, {})).status, 200);
    const made = await call(node.app, "POST", "/v1/volumes", { name: "u1", size: "8MiB" });
    assertEquals(made.status, 201);
  } finally {
    await node.close();
  }
});
