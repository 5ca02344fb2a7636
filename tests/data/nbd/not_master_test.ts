/**
 * What a master that another member replaced answers (docs/CLUSTER.md, "What a replaced master
 * answers"), on a real in-process data plane over loopback: once its read lease learned it was
 * fenced (data/replication/lease.ts), every READ, WRITE and TRIM fails with ESHUTDOWN, not
 * EIO, and changes nothing, on the main thread and on a data worker (which sees the lease in
 * shared memory). ESHUTDOWN is what lets a forwarding node hold the request for the next master
 * instead of failing it (data/proxy/forwarder.ts).
 * @module
 */

import * as C from "../../../data/nbd/constants.ts";
import { startDataPlane } from "../../../data/local_plane.ts";
import { silentLogger } from "../../../control/common/mod.ts";
import { assertEquals } from "../../_assert.ts";
import { RawClient } from "./_raw_client.ts";

const SIZE = 1024 * 1024;

for (const onWorker of [false, true]) {
  Deno.test(`a fenced master answers ESHUTDOWN and changes nothing (${onWorker ? "data worker" : "main thread"})`, async () => {
    const spec = { name: "fenced", uuid: crypto.randomUUID(), sizeBytes: SIZE, description: "" };
    const dir = await Deno.makeTempDir({ prefix: "ballast-fenced-" });
    const plane = await startDataPlane({
      dataDir: dir,
      nbdListen: { host: "127.0.0.1", port: 0 },
      logger: silentLogger(),
      nodeName: "old-master",
      ...(onWorker ? { dataWorkers: { min: 1, max: 1 } } : {}),
    });
    let c: RawClient | undefined;
    try {
      await plane.createVolume(spec);
      c = await RawClient.open(plane.nbdAddress, spec.name);
      const payload = (byte: number) => new Uint8Array(4096).fill(byte);
      await c.request({
        type: C.NBD_CMD_WRITE,
        handle: 1n,
        offset: 0,
        length: 4096,
        payload: payload(7),
      });
      assertEquals((await c.readReply()).error, 0, "served while the lease holds");

      plane.exports.lookup(spec.name)!.lease.fence(true);
      await c.request({ type: C.NBD_CMD_READ, handle: 2n, offset: 0, length: 4096 });
      const read = await c.readReply(0);
      assertEquals([read.handle, read.error], [2n, C.NBD_ESHUTDOWN]);
      await c.request({
        type: C.NBD_CMD_WRITE,
        handle: 3n,
        offset: 0,
        length: 4096,
        payload: payload(9),
      });
      assertEquals((await c.readReply()).error, C.NBD_ESHUTDOWN);
      await c.request({ type: C.NBD_CMD_TRIM, handle: 4n, offset: 0, length: 4096 });
      assertEquals((await c.readReply()).error, C.NBD_ESHUTDOWN);

      plane.exports.lookup(spec.name)!.lease.fence(false);
      await c.request({ type: C.NBD_CMD_READ, handle: 5n, offset: 0, length: 4096 });
      const after = await c.readReply(4096);
      assertEquals(
        [after.error, after.data![0], after.data![4095]],
        [0, 7, 7],
        "the refused write and trim changed nothing",
      );
    } finally {
      await c?.close();
      await plane.close();
      await Deno.remove(dir, { recursive: true });
    }
  });
}
