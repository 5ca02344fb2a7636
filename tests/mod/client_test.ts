import {
  BallastClient,
  BallastError,
  formatSize,
  UnavailableError,
  VERSION,
} from "../../mod/mod.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../_assert.ts";
import { attachNbd, startTestNode } from "../control/_fixtures.ts";

/** Serves the real app of a test node on a loopback port. */
async function startHttpNode() {
  const node = await startTestNode();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req) => node.app.fetch(req),
  );
  return {
    node,
    client: new BallastClient(`http://127.0.0.1:${server.addr.port}/`),
    async close() {
      await server.shutdown();
      await node.close();
    },
  };
}

Deno.test("BallastClient: typed calls against a real node", async () => {
  const { node, client, close } = await startHttpNode();
  try {
    assertEquals((await client.health()).status, "ok");
    assertEquals((await client.version()).version, VERSION);
    const v = await client.createVolume({ name: "c1", size: "16MiB", labels: { x: "y" } });
    assertEquals([v.name, v.sizeBytes, v.state], ["c1", 16 * 2 ** 20, "ready"]);
    assertEquals((await client.getVolume("c1")).uuid, v.uuid);
    assertEquals((await client.listVolumes()).map((x) => x.name), ["c1"]);
    assertEquals(formatSize((await client.resizeVolume("c1", "32MiB")).sizeBytes), "32 MiB");
    assertEquals((await client.updateVolume("c1", { description: "d" })).description, "d");
    const nodes = await client.listNodes();
    assertEquals(nodes.map((n) => n.state), ["ready"]);
    assertEquals((await client.getNode(nodes[0].name)).nbdAddress, node.dataPlane.nbdAddress);
    assert((await client.metrics()).includes('ballast_volume_size_bytes{volume="c1"} 33554432'));

    const conn = await attachNbd(node.dataPlane.nbdAddress, "c1");
    try {
      const refused = await assertRejects(() => client.deleteVolume("c1"), BallastError);
      assertEquals(refused.code, "FAILED_PRECONDITION");
      assertEquals(refused.status, 412);
      await client.deleteVolume("c1", { force: true });
    } finally {
      conn.close();
    }
    assertEquals(await client.listVolumes(), []);
  } finally {
    await close();
  }
});

Deno.test("BallastClient: API errors come back with their code, message and details", async () => {
  const { client, close } = await startHttpNode();
  try {
    const missing = await assertRejects(() => client.getVolume("nope"), BallastError);
    assertEquals([missing.code, missing.message], ["NOT_FOUND", 'volume "nope" not found']);
    const bad = await assertRejects(
      () => client.createVolume({ name: "v", size: 1000 }),
      BallastError,
      "between 1 MiB and 1 PiB",
    );
    assertEquals([bad.code, bad.details?.field], ["INVALID_ARGUMENT", "size"]);
    await client.createVolume({ name: "v", size: "1MiB" });
    const dup = await assertRejects(() => client.createVolume({ name: "v", size: "1MiB" }));
    assertEquals((dup as BallastError).code, "ALREADY_EXISTS");
  } finally {
    await close();
  }
});

Deno.test("BallastClient: an unreachable node is UnavailableError with a clear message", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const url = `http://127.0.0.1:${(l.addr as Deno.NetAddr).port}`;
  l.close();
  const err = await assertRejects(() => new BallastClient(url).listVolumes(), UnavailableError);
  assertEquals(err.code, "UNAVAILABLE");
  assertEquals(
    err.message,
    `cannot reach the Ballast API at ${url}: connection refused; is \`ballast serve\` running?`,
  );
  assertThrows(() => new BallastClient("localhost:5705"), BallastError, "invalid API URL");
  assertThrows(() => new BallastClient("ftp://x"), BallastError, "http://");
});
