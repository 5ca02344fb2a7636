/**
 * A new group master's takeover of its own copy (data/_copies.ts Takeovers), on a real data
 * plane with a real replica service: fencing claims the node's own copy first, so that an
 * old master's PING that arrives while the other members are being fenced (a frozen master
 * that resumed) is refused and grants that master no read lease, which would make the new
 * master wait longer before it serves (docs/CLUSTER.md, "No stale reads: the lease").
 * @module
 */

import { silentLogger } from "../../control/common/mod.ts";
import { CopyEpochs, startDataPlane } from "../../data/mod.ts";
import { Takeovers } from "../../data/_copies.ts";
import {
  decodePingStatuses,
  decodeReply,
  encodeRequest,
  pingsRequest,
  STATUS_OK,
  STATUS_STALE_EPOCH,
} from "../../data/replication/wire.ts";
import { assertEquals } from "../_assert.ts";

Deno.test("a new master claims its own copy before fencing the members: the old master's PING is refused from then on and grants nothing", async () => {
  const log = silentLogger();
  const dir = await Deno.makeTempDir({ prefix: "ballast-takeover-" });
  const plane = await startDataPlane({
    dataDir: dir,
    nbdListen: { host: "127.0.0.1", port: 0 },
    logger: log,
    nodeName: "n2",
  });
  try {
    const spec = { name: "t", uuid: crypto.randomUUID(), sizeBytes: 1 << 20, description: "" };
    await plane.createVolume(spec, { export: false });
    const path = plane.copyPath!(spec.uuid)!;
    const svc = plane.replicaService(log);
    const ping = async (epoch: number) => {
      const frame = encodeRequest({ ...pingsRequest([{ volume: spec.uuid, epoch }]), id: epoch });
      const reply = decodeReply(await svc.handle(frame, log));
      assertEquals(reply.status, STATUS_OK);
      return decodePingStatuses(reply.body, 1)[0];
    };
    // This node is a replica of the master at epoch 1, which it answers.
    assertEquals(await ping(1), STATUS_OK);
    const granted = plane.epochs.lastGranted(path);
    // Promoted at epoch 2: fencing (no member to ask here) claims the own copy at once.
    await plane.fence!(spec.uuid, 2, []);
    assertEquals(await plane.epochs.get(path), 2, "the own copy records the new epoch first");
    assertEquals(await ping(1), STATUS_STALE_EPOCH, "the old master is refused from now on");
    assertEquals(plane.epochs.lastGranted(path), granted, "and was granted nothing more");
    // Then the export: it serves at epoch 2 (after the old lease, counted from `granted`).
    await plane.openVolume(spec, {
      replication: { epoch: 2, targets: [], onReplicasFailed: () => Promise.resolve() },
    });
    assertEquals(await plane.epochs.get(path), 2);
    assertEquals(plane.exports.lookup("t")?.uuid, spec.uuid, "exported");
  } finally {
    await plane.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a copy claimed at an epoch and never served there is a takeover again after a restart (the old lease waited out, the copies compared); one served there is a restart of its master", async () => {
  const log = silentLogger();
  const dir = await Deno.makeTempDir({ prefix: "ballast-takeover-" });
  const path = `${dir}/c.vol`;
  try {
    await Deno.writeFile(path, new Uint8Array(0));
    // Each CopyEpochs and Takeovers below stands for one process of the node.
    const process = () => {
      const epochs = new CopyEpochs();
      return { epochs, takeovers: new Takeovers(epochs, log) };
    };
    // A replica at epoch 1 (it answered that master), promoted at 2: a takeover; it serves.
    let p = process();
    await p.epochs.raise(path, 1);
    assertEquals(await p.takeovers.complete(path, { epoch: 2 }), {
      succeeds: true,
      resumed: false,
    });
    assertEquals(await p.epochs.served(path), 2);
    assertEquals((await Deno.readTextFile(`${path}.served`)).trim(), "2", "recorded on disk");
    // Restarted, still master at 2: it served at 2, nobody to wait for.
    p = process();
    assertEquals(await p.takeovers.complete(path, { epoch: 2 }), {
      succeeds: false,
      resumed: true,
    });
    // Promoted at 3: it claims the copy (fencing) and dies before serving.
    p = process();
    await p.takeovers.claim(path, 3);
    assertEquals(await p.epochs.served(path), 2);
    // Restarted, the record names it master at 3: the takeover was never completed, so the
    // master of epoch 2 may still hold a read lease: waited out, as any takeover.
    p = process();
    assertEquals(await p.takeovers.complete(path, { epoch: 3 }), {
      succeeds: true,
      resumed: true,
    });
    assertEquals(await p.epochs.served(path), 3);
    // The record cannot be written (here its temporary file's name is taken by a directory;
    // a full disk alike): the master serves all the same, and waits at its next restart.
    await Deno.mkdir(`${path}.served.tmp`);
    p = process();
    assertEquals(await p.takeovers.complete(path, { epoch: 4 }), {
      succeeds: true,
      resumed: false,
    });
    assertEquals(await p.epochs.served(path), 3, "not recorded");
    p = process();
    assertEquals((await p.takeovers.complete(path, { epoch: 4 })).succeeds, true, "waits again");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
