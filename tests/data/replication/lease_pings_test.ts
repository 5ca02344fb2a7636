/**
 * The batched read-lease PINGs (data/replication/lease.ts, wire.ts): the PINGS frame and its
 * reply, the plan of one PINGS per member node, the replica answering each volume as its own
 * PING would be (a real ReplicaService on real copies' epoch files), and a keeper judging
 * each answer on its own epoch and send time.
 */

import pino from "pino";
import { assert, assertEquals, assertThrows } from "../../_assert.ts";
import { CopyEpochs, CopyHashes, ReplicaService } from "../../../data/replication/mod.ts";
import { LeaseKeeper, LeasePinger, LeaseView, pingPlan } from "../../../data/replication/lease.ts";
import {
  decodePingStatuses,
  decodeReply,
  decodeRequest,
  encodeRequest,
  pingsRequest,
  STATUS_BAD_REQUEST,
  STATUS_IO,
  STATUS_NO_COPY,
  STATUS_OK,
  STATUS_STALE_EPOCH,
  T_PINGS,
} from "../../../data/replication/wire.ts";

const A = "0a1b2c3d-0000-4000-8000-000000000001";
const B = "0a1b2c3d-0000-4000-8000-000000000002";
const C = "0a1b2c3d-0000-4000-8000-000000000003";
const log = pino({ level: "silent" });

Deno.test("PINGS: every (volume, epoch) survives the frame; a short or long frame is refused", () => {
  const entries = [{ volume: A, epoch: 7 }, { volume: B, epoch: 0xffff_fffe }];
  const frame = encodeRequest({ ...pingsRequest(entries), id: 42 });
  const r = decodeRequest(frame);
  assertEquals(r.type, T_PINGS);
  assertEquals(r.id, 42);
  assertEquals(r.type === T_PINGS ? r.entries : [], entries);
  assertThrows(() => decodeRequest(frame.subarray(0, frame.length - 1)), RangeError);
  const longer = new Uint8Array(frame.length + 20);
  longer.set(frame);
  assertThrows(() => decodeRequest(longer), RangeError);
  assertEquals(decodeRequest(encodeRequest({ ...pingsRequest([]), id: 1 })).type, T_PINGS);
});

Deno.test("PINGS reply: one status per volume, and a body that does not fit is refused", () => {
  assertEquals(decodePingStatuses(Uint8Array.of(0, 1, 2), 3), [0, 1, 2]);
  assertThrows(() => decodePingStatuses(Uint8Array.of(0, 1), 3), RangeError);
});

Deno.test("pingPlan(): one entry per member node, with every volume it holds a lease for", () => {
  const m = (node: string, address = `${node}:1`) => ({ node, address });
  const plan = pingPlan([
    { members: [m("n2"), m("n3")] },
    { members: [m("n3"), m("n4", "")] },
    { members: [] },
    { members: [m("n2")] },
  ]);
  assertEquals([...plan.keys()].sort(), ["n2", "n3"], "n4 has no address: not asked");
  assertEquals(plan.get("n2"), { address: "n2:1", keepers: [0, 3] });
  assertEquals(plan.get("n3"), { address: "n3:1", keepers: [0, 1] });
});

Deno.test("ReplicaService answers PINGS per volume: OK, a stale epoch, no copy; raises newer epochs", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const paths = new Map([[A, `${dir}/a`], [B, `${dir}/b`]]);
    const epochs = new CopyEpochs();
    await epochs.raise(`${dir}/b`, 9);
    const svc = new ReplicaService(
      { pathOf: (u) => paths.get(u), hashes: new CopyHashes(log) },
      epochs,
      log,
    );
    const entries = [{ volume: A, epoch: 3 }, { volume: B, epoch: 8 }, { volume: C, epoch: 1 }];
    const reply = decodeReply(
      await svc.handle(encodeRequest({ ...pingsRequest(entries), id: 5 }), log),
    );
    assertEquals(reply.id, 5);
    assertEquals(reply.status, STATUS_OK);
    assertEquals(decodePingStatuses(reply.body, 3), [
      STATUS_OK,
      STATUS_STALE_EPOCH,
      STATUS_NO_COPY,
    ]);
    assertEquals(await epochs.get(`${dir}/a`), 3, "a newer epoch is recorded, as by a PING");
    assertEquals((await Deno.readTextFile(`${dir}/a.epoch`)).trim(), "3");
    assert(epochs.lastGranted(`${dir}/a`) !== undefined, "answering grants the lease");
    assertEquals(epochs.lastGranted(`${dir}/b`), undefined, "a refusal grants nothing");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("an unknown request type (what an older node makes of PINGS) is STATUS_BAD_REQUEST", async () => {
  const svc = new ReplicaService(
    { pathOf: () => undefined, hashes: new CopyHashes(log) },
    new CopyEpochs(),
    log,
  );
  const frame = encodeRequest({ ...pingsRequest([{ volume: A, epoch: 1 }]), id: 9 });
  frame[0] = 0x7f;
  const reply = decodeReply(await svc.handle(frame, log));
  assertEquals([reply.id, reply.status], [9, STATUS_BAD_REQUEST]);
});

Deno.test("LeaseKeeper judges each answer on its epoch and send time; a stale epoch fences", () => {
  const pinger = new LeasePinger(() => undefined, log);
  const failed: string[] = [];
  const view = new LeaseView();
  const k = new LeaseKeeper(view, {
    uuid: A,
    pinger,
    log,
    onFailed: (node) => failed.push(node),
  });
  try {
    k.set(4, [{ node: "n2", address: "n2:1" }, { node: "n3", address: "n3:1" }]);
    assertEquals(view.state(), "lapsed", "no answer yet");
    const sent = performance.now();
    k.answered("n2", 4, sent, STATUS_OK, "");
    assertEquals(view.state(), "lapsed", "n3 has not answered");
    k.answered("n3", 3, sent, STATUS_OK, "");
    assertEquals(view.state(), "lapsed", "an answer to an older epoch's PING counts for nothing");
    k.answered("n3", 4, sent, STATUS_OK, "");
    assertEquals(view.state(), "ok");
    k.missed("n3", 4, "timeout");
    assertEquals(failed, []);
    k.missed("n3", 4, "timeout");
    assertEquals(failed, ["n3"], "two misses in a row report the member");
    k.answered("n2", 4, sent, STATUS_STALE_EPOCH, "newer epoch seen");
    assertEquals(view.state(), "fenced");
    k.set(5, [{ node: "n2", address: "n2:1" }]);
    assertEquals(view.state(), "lapsed", "a new epoch clears the fence and needs answers");
  } finally {
    k.stop();
    pinger.stop();
  }
});

Deno.test("LeaseKeeper: a member that answers but cannot grant (STATUS_IO: its disk full) is reported failed as a silent one, not waited for", () => {
  const pinger = new LeasePinger(() => undefined, log);
  const failed: [string, string][] = [];
  const view = new LeaseView();
  const k = new LeaseKeeper(view, {
    uuid: A,
    pinger,
    log,
    onFailed: (node, reason) => failed.push([node, reason]),
  });
  try {
    k.set(4, [{ node: "n2", address: "n2:1" }]);
    const sent = performance.now();
    k.answered("n2", 4, sent, STATUS_IO, "no space left on device");
    assertEquals(failed, []);
    k.answered("n2", 4, sent, STATUS_IO, "no space left on device");
    assertEquals(failed, [["n2", "no space left on device"]]);
    assertEquals(view.state(), "lapsed", "nothing was granted");
  } finally {
    k.stop();
    pinger.stop();
  }
});
