/**
 * The export write gate (DataPlane.openVolume's `writeGate`) on a real in-process
 * data plane over loopback: the first data-changing request waits for the gate,
 * reads do not, a failing gate answers EIO without touching the data (ESHUTDOWN when the
 * node is no longer the volume's master, on the main thread and on a data worker alike), and
 * once the gate has opened it is never consulted again.
 * @module
 */

import * as C from "../../../data/nbd/constants.ts";
import { type RunningDataPlane, startDataPlane } from "../../../data/local_plane.ts";
import { silentLogger } from "../../../control/common/mod.ts";
import { NotMasterError } from "../../../control/group/mod.ts";
import { assert, assertEquals } from "../../_assert.ts";
import { RawClient, TimeoutError } from "./_raw_client.ts";

const SIZE = 1024 * 1024;
const SPEC = { name: "gated", uuid: crypto.randomUUID(), sizeBytes: SIZE, description: "" };

async function withGatedVolume(
  gate: () => Promise<void>,
  fn: (plane: RunningDataPlane, client: RawClient) => Promise<void>,
  options: { onWorker?: boolean } = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ballast-gate-" });
  const plane = await startDataPlane({
    dataDir: dir,
    nbdListen: { host: "127.0.0.1", port: 0 },
    logger: silentLogger(),
    nodeName: "gate",
    ...(options.onWorker ? { dataWorkers: { min: 1, max: 1 } } : {}),
  });
  let client: RawClient | undefined;
  try {
    await plane.createVolume(SPEC, { export: false });
    await plane.openVolume(SPEC, { writeGate: gate });
    client = await RawClient.open(plane.nbdAddress, SPEC.name);
    await fn(plane, client);
  } finally {
    await client?.close();
    await plane.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function write(c: RawClient, handle: bigint, offset: number, byte: number): Promise<void> {
  return c.request({
    type: C.NBD_CMD_WRITE,
    handle,
    offset,
    length: 4096,
    payload: new Uint8Array(4096).fill(byte),
  });
}

async function readByte(c: RawClient, handle: bigint, offset: number): Promise<number> {
  await c.request({ type: C.NBD_CMD_READ, handle, offset, length: 4096 });
  const r = await c.readReply(4096);
  assertEquals([r.handle, r.error], [handle, 0]);
  return r.data![0];
}

Deno.test("write gate: the first write waits for the gate, then it and later writes complete", async () => {
  let open!: () => void;
  let calls = 0;
  const gate = () => {
    calls++;
    return new Promise<void>((r) => (open = r));
  };
  await withGatedVolume(gate, async (_plane, c) => {
    await write(c, 1n, 0, 0xaa);
    let early: unknown;
    try {
      await c.readReply(0, 300);
    } catch (err) {
      early = err;
    }
    assert(early instanceof TimeoutError, `the write was answered before the gate opened`);
    assertEquals(calls, 1);
    open();
    const r = await c.readReply();
    assertEquals([r.handle, r.error], [1n, 0]);
    await write(c, 2n, 4096, 0xbb);
    assertEquals((await c.readReply()).error, 0);
    assertEquals(calls, 1, "an open gate is not consulted again");
    assertEquals(await readByte(c, 3n, 0), 0xaa);
    assertEquals(await readByte(c, 4n, 4096), 0xbb);
  });
});

Deno.test("write gate: reads pass while it is closed", async () => {
  await withGatedVolume(() => new Promise<void>(() => {}), async (_plane, c) => {
    assertEquals(await readByte(c, 1n, 0), 0);
  });
});

Deno.test("write gate: a failing gate answers EIO, leaves the data alone and is asked again", async () => {
  let calls = 0;
  const gate = () => {
    calls++;
    return calls === 1 ? Promise.reject(new Error("control plane unavailable")) : Promise.resolve();
  };
  await withGatedVolume(gate, async (_plane, c) => {
    await write(c, 1n, 0, 0xcc);
    assertEquals((await c.readReply()).error, C.NBD_EIO);
    await c.request({ type: C.NBD_CMD_TRIM, handle: 2n, offset: 0, length: 4096 });
    assertEquals((await c.readReply()).error, 0, "the second request found the gate open");
    assertEquals(calls, 2);
    assertEquals(await readByte(c, 3n, 0), 0, "the refused write changed nothing");
    await write(c, 4n, 0, 0xdd);
    assertEquals((await c.readReply()).error, 0);
    assertEquals(await readByte(c, 5n, 0), 0xdd);
  });
});

for (const onWorker of [false, true]) {
  Deno.test(`write gate: a node that is no longer master answers ESHUTDOWN, not EIO (${onWorker ? "data worker" : "main thread"})`, async () => {
    let calls = 0;
    const gate = () => {
      calls++;
      return Promise.reject(new NotMasterError("this node is no longer master at epoch 3"));
    };
    await withGatedVolume(gate, async (_plane, c) => {
      await write(c, 1n, 0, 0xcc);
      const r = await c.readReply();
      assertEquals([r.handle, r.error], [1n, C.NBD_ESHUTDOWN]);
      assertEquals(calls, 1);
      assertEquals(await readByte(c, 2n, 0), 0, "the refused write changed nothing");
    }, { onWorker });
  });
}

Deno.test("write gate: an invalid write is refused at once, without waiting for the gate", async () => {
  let calls = 0;
  const never = () => {
    calls++;
    return new Promise<void>(() => {});
  };
  await withGatedVolume(never, async (_plane, c) => {
    // Past the end: ENOSPC (proto.md "Request types", NBD_CMD_WRITE), whatever the gate says.
    await write(c, 1n, SIZE, 0xee);
    const r = await c.readReply(0, 2_000);
    assertEquals([r.handle, r.error], [1n, C.NBD_ENOSPC]);
    await c.request({ type: C.NBD_CMD_TRIM, handle: 2n, offset: SIZE - 4096, length: 8192 });
    assertEquals((await c.readReply(0, 2_000)).error, C.NBD_ENOSPC);
    assertEquals(calls, 0, "the gate was consulted for requests the spec refuses");
  });
});
