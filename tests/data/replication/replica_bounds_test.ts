/**
 * A real ReplicaService on a real copy refuses, with STATUS_RANGE and at once, the requests
 * whose numbers would make it work for minutes on its one thread: a TREE level far above the
 * tree (it walked every level up to it), and HASHES of more blocks than one region or deep
 * HASHES of more regions than a verification asks (a peer's u32 counts). The node answered
 * nothing else meanwhile (a helper's malformed frame froze one for 40 s).
 */

import pino from "pino";
import { assert, assertEquals } from "../../_assert.ts";
import { CopyEpochs, CopyHashes, ReplicaService } from "../../../data/replication/mod.ts";
import {
  decodeReply,
  encodeRequest,
  F_DEEP,
  MAX_PINGS,
  replyMessage,
  type Request,
  STATUS_OK,
  STATUS_RANGE,
  T_HASHES,
  T_PINGS,
  T_TREE,
} from "../../../data/replication/wire.ts";

const VOLUME = "0a1b2c3d-0000-4000-8000-0000000000d1";
const log = pino({ level: "silent" });

Deno.test("ReplicaService refuses a TREE level above its tree, fine HASHES beyond one region and deep HASHES of many regions; the sane ones are answered", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ballast-bounds-" });
  const path = `${dir}/copy.vol`;
  try {
    const f = await Deno.open(path, { create: true, write: true });
    await f.truncate(4 * 1024 * 1024);
    f.close();
    const epochs = new CopyEpochs();
    await epochs.raise(path, 1);
    const svc = new ReplicaService(
      { pathOf: (u) => (u === VOLUME ? path : undefined), hashes: new CopyHashes(log) },
      epochs,
      log,
    );
    let id = 0;
    const send = async (r: Record<string, unknown>) => {
      const frame = encodeRequest(
        { volume: VOLUME, epoch: 1, flags: 0, ...r, id: ++id } as Request,
      );
      const reply = decodeReply(await svc.handle(frame, log));
      return { status: reply.status, body: reply.body, message: replyMessage(reply) };
    };
    const tree = await send({ type: T_TREE, level: 0xffffffff, first: 0, count: 0 });
    assertEquals(tree.status, STATUS_RANGE);
    assert(tree.message.includes("level 4294967295 of a tree of"), tree.message);
    const fine = await send({ type: T_HASHES, first: 0, count: 100_000, regionBytes: 4096 });
    assertEquals(fine.status, STATUS_RANGE, fine.message);
    const bytes = await send({ type: T_HASHES, first: 0, count: 1 << 20, regionBytes: 1 });
    assertEquals(bytes.status, STATUS_RANGE, "a million 1-byte blocks: " + bytes.message);
    const pings = await svc.handle(
      encodeRequest({
        type: T_PINGS,
        id: ++id,
        volume: "00000000-0000-0000-0000-000000000000",
        epoch: 0,
        flags: 0,
        entries: Array.from({ length: MAX_PINGS + 1 }, () => ({ volume: VOLUME, epoch: 1 })),
      } as Request),
      log,
    );
    assert(decodeReply(pings).status !== STATUS_OK, "more PINGS entries than a replica takes");
    const deep = await send({
      type: T_HASHES,
      flags: F_DEEP,
      first: 0,
      count: 4,
      regionBytes: 1024 * 1024,
    });
    assertEquals(deep.status, STATUS_OK, deep.message);
    // What a resync asks (one region in 4 KiB blocks) and a root are answered.
    const block = await send({ type: T_HASHES, first: 256, count: 256, regionBytes: 4096 });
    assertEquals([block.status, block.body.length], [STATUS_OK, 256 * 16]);
    const root = await send({ type: T_TREE, level: 1, first: 0, count: 1 });
    assertEquals(root.status, STATUS_OK, root.message);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
