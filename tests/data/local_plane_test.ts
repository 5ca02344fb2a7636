/**
 * The local data plane's handling of copies a node holds without exporting them
 * (a group's replicas): growing them by uuid, keeping one an interrupted create left,
 * and uuid-checked deletes. Real files on a temp dir, real NBD listener.
 */

import { silentLogger } from "../../control/common/mod.ts";
import { startDataPlane } from "../../data/mod.ts";
import { NotFoundError } from "../../mod/errors.ts";
import { assertEquals, assertRejects } from "../_assert.ts";

const MiB = 2 ** 20;
const UUID_A = "00000000-0000-4000-8000-00000000000a";
const UUID_B = "00000000-0000-4000-8000-00000000000b";

async function withPlane(
  fn: (p: Awaited<ReturnType<typeof startDataPlane>>, dir: string) => Promise<void>,
) {
  const dir = await Deno.makeTempDir({ prefix: "ballast-plane-" });
  const plane = await startDataPlane({
    dataDir: dir,
    nbdListen: { host: "127.0.0.1", port: 0 },
    logger: silentLogger(),
    nodeName: "n1",
  });
  try {
    await fn(plane, dir);
  } finally {
    await plane.close();
    await Deno.remove(dir, { recursive: true });
  }
}

const size = (path: string) => Deno.stat(path).then((s) => s.size, () => -1);
const spec = (uuid: string, sizeBytes: number) => ({ name: "v", uuid, sizeBytes, description: "" });

Deno.test("resizeVolume() with a uuid grows a copy that is not exported, and never shrinks it", async () => {
  await withPlane(async (plane, dir) => {
    const file = `${dir}/volumes/${UUID_A}.vol`;
    await plane.createVolume(spec(UUID_A, 4 * MiB), { export: false });
    assertEquals(await plane.resizeVolume("v", 8 * MiB, { uuid: UUID_A }), 4 * MiB);
    assertEquals(await size(file), 8 * MiB);
    assertEquals(await plane.resizeVolume("v", 4 * MiB, { uuid: UUID_A }), 8 * MiB, "no shrink");
    assertEquals(await size(file), 8 * MiB);
    assertEquals(plane.volumeStatus("v"), undefined, "still not exported");
    // Without a uuid only an export can be resized; a missing copy is NOT_FOUND.
    await assertRejects(() => plane.resizeVolume("v", 16 * MiB), NotFoundError);
    await assertRejects(() => plane.resizeVolume("v", 16 * MiB, { uuid: UUID_B }), NotFoundError);
    assertEquals(await size(`${dir}/volumes/${UUID_B}.vol`), -1, "nothing created");
  });
});

Deno.test("resizeVolume() of an export grows its file and never shrinks it", async () => {
  await withPlane(async (plane, dir) => {
    await plane.createVolume(spec(UUID_A, 4 * MiB));
    assertEquals(await plane.resizeVolume("v", 8 * MiB, { uuid: UUID_A }), 4 * MiB);
    assertEquals(await plane.resizeVolume("v", 2 * MiB), 8 * MiB);
    assertEquals(await size(`${dir}/volumes/${UUID_A}.vol`), 8 * MiB);
  });
});

Deno.test("createVolume(export: false) keeps a copy of the same uuid left by an interrupted create", async () => {
  await withPlane(async (plane, dir) => {
    const file = `${dir}/volumes/${UUID_A}.vol`;
    await plane.createVolume(spec(UUID_A, 4 * MiB), { export: false });
    await plane.createVolume(spec(UUID_A, 8 * MiB), { export: false });
    assertEquals(await size(file), 8 * MiB);
    // An exported create still refuses to reuse a file.
    await assertRejects(() => plane.createVolume(spec(UUID_A, 8 * MiB)));
  });
});

Deno.test("deleteVolume() with a uuid leaves an export of the same name with another uuid alone", async () => {
  await withPlane(async (plane, dir) => {
    await plane.createVolume(spec(UUID_A, 4 * MiB));
    await plane.deleteVolume("v", { force: true, uuid: UUID_B });
    assertEquals(await size(`${dir}/volumes/${UUID_A}.vol`), 4 * MiB);
    assertEquals(plane.volumeStatus("v")?.connections, 0, "still exported");
    await plane.deleteVolume("v", { force: true, uuid: UUID_A });
    assertEquals(await size(`${dir}/volumes/${UUID_A}.vol`), -1);
  });
});

for (const workers of [undefined, { min: 1, max: 1 }]) {
  const on = workers ? "data workers" : "the main thread";
  Deno.test(`NBD clients wait for acceptAfter before the greeting (${on}); then it comes`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "ballast-plane-" });
    let open = () => {};
    const acceptAfter = new Promise<void>((r) => open = r);
    const plane = await startDataPlane({
      dataDir: dir,
      nbdListen: { host: "127.0.0.1", port: 0 },
      logger: silentLogger(),
      nodeName: "n1",
      acceptAfter,
      ...(workers ? { dataWorkers: workers } : {}),
    });
    const [host, port] = [
      plane.nbdAddress.replace(/:\d+$/, ""),
      Number(/\d+$/.exec(plane.nbdAddress)![0]),
    ];
    const conn = await Deno.connect({ hostname: host, port });
    try {
      const greeting = new Uint8Array(18);
      const read = conn.read(greeting);
      const early = await Promise.race([
        read,
        new Promise((r) => setTimeout(() => r("none"), 300)),
      ]);
      assertEquals(early, "none", "no greeting before the node knows its volumes");
      open();
      assertEquals(await read, 18);
      assertEquals(new TextDecoder().decode(greeting.subarray(0, 8)), "NBDMAGIC");
    } finally {
      conn.close();
      await plane.close();
      await Deno.remove(dir, { recursive: true });
    }
  });
}
