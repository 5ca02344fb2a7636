/**
 * Replication sessions (data/replication/wire.ts, "Sessions"): the session in every request's
 * header, its order across the wrap, and a real ReplicaService on a real copy refusing the
 * changes of an older session once a master started a new one, while those of the new
 * session, and of a newer epoch, are applied.
 */

import pino from "pino";
import { assert, assertEquals } from "../../_assert.ts";
import { CopyEpochs, CopyHashes, ReplicaService } from "../../../data/replication/mod.ts";
import {
  decodeReply,
  decodeRequest,
  decodeSession,
  encodeRequest,
  encodeSession,
  F_FUA,
  MAX_SESSION,
  nextSession,
  type Request,
  sessionOlder,
  STATUS_OK,
  STATUS_STALE_SESSION,
  T_SESSION,
  T_TRIM,
  T_WRITE,
  T_ZERO,
} from "../../../data/replication/wire.ts";

const VOLUME = "0a1b2c3d-0000-4000-8000-0000000000c1";
const log = pino({ level: "silent" });

Deno.test("the session travels in every request's header; a reused frame does not keep an old one", () => {
  const data = new Uint8Array(4096).fill(7);
  const head = { id: 3, volume: VOLUME, epoch: 4, flags: 0 };
  const cases: Request[] = [
    { type: T_WRITE, ...head, offset: 8192, data, session: 0xfffe },
    { type: T_TRIM, ...head, offset: 0, length: 4096, session: 2 },
    { type: T_ZERO, ...head, offset: 0, length: 4096, session: 1 },
    { type: T_SESSION, ...head },
  ];
  for (const r of cases) assertEquals(decodeRequest(encodeRequest(r)).session, r.session ?? 0);
  const into = new Uint8Array(8192);
  encodeRequest(cases[0], into);
  const again = encodeRequest({ type: T_WRITE, ...head, offset: 0, data }, into);
  assertEquals(decodeRequest(again).session, 0, "a frame of the pool, used again untagged");
  assertEquals(decodeSession(encodeSession(0xabcd)), 0xabcd);
});

Deno.test("sessions order: 0 is older than any; a wrap from the last to 1 is newer", () => {
  assertEquals(nextSession(0), 1);
  assertEquals(nextSession(41), 42);
  assertEquals(nextSession(MAX_SESSION), 1);
  assert(sessionOlder(0, 1) && sessionOlder(0, MAX_SESSION));
  assert(!sessionOlder(1, 0) && !sessionOlder(5, 5) && !sessionOlder(0, 0));
  assert(sessionOlder(41, 42) && !sessionOlder(42, 41));
  assert(sessionOlder(MAX_SESSION, 1), "1 came after the wrap");
  assert(!sessionOlder(1, MAX_SESSION));
  assert(sessionOlder(MAX_SESSION - 3, 2) && !sessionOlder(2, MAX_SESSION - 3));
});

Deno.test("ReplicaService: once a new session began, changes of an older one are refused and change nothing; the new session's and a newer epoch's are applied", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ballast-sessions-" });
  const path = `${dir}/copy.vol`;
  try {
    const f = await Deno.open(path, { create: true, write: true });
    await f.truncate(1024 * 1024);
    f.close();
    const epochs = new CopyEpochs();
    await epochs.raise(path, 3);
    const svc = new ReplicaService(
      { pathOf: (u) => (u === VOLUME ? path : undefined), hashes: new CopyHashes(log) },
      epochs,
      log,
    );
    let id = 0;
    const send = async (r: Record<string, unknown>) =>
      decodeReply(await svc.handle(encodeRequest({ ...r, id: ++id } as unknown as Request), log));
    const head = { volume: VOLUME, flags: 0 };
    const write = (epoch: number, session: number, fill: number) =>
      send({ type: T_WRITE, ...head, epoch, session, offset: 0, data: block(fill) });
    const onDisk = async () => (await Deno.readFile(path)).subarray(0, 4096)[0];

    // No session yet: anything of the epoch goes (what a master of an older version sends).
    assertEquals((await write(3, 0, 1)).status, STATUS_OK);
    assertEquals((await write(3, 0, 2)).status, STATUS_OK, "the open copy's fast path");
    assertEquals(await onDisk(), 2);

    const first = await send({ type: T_SESSION, ...head, epoch: 3 });
    assertEquals([first.status, decodeSession(first.body)], [STATUS_OK, 1]);
    // A change sent before, on a link given up, arriving now: refused, the copy unchanged.
    const late = await write(3, 0, 9);
    assertEquals(late.status, STATUS_STALE_SESSION);
    assertEquals(await onDisk(), 2);
    for (const type of [T_TRIM, T_ZERO] as const) {
      const r = await send({ type, ...head, epoch: 3, session: 0, offset: 0, length: 4096 });
      assertEquals(r.status, STATUS_STALE_SESSION, `${type}`);
    }
    const fua = await send({
      type: T_WRITE,
      ...head,
      flags: F_FUA, // not the fast path
      epoch: 3,
      session: 0,
      offset: 0,
      data: block(9),
    });
    assertEquals(fua.status, STATUS_STALE_SESSION, "with FUA");
    assertEquals(await onDisk(), 2, "neither TRIM, ZERO nor a FUA WRITE of the old session");
    assertEquals((await write(3, 1, 3)).status, STATUS_OK);
    assertEquals(await onDisk(), 3);

    const second = await send({ type: T_SESSION, ...head, epoch: 3 });
    assertEquals(decodeSession(second.body), 2);
    assertEquals((await write(3, 1, 8)).status, STATUS_STALE_SESSION);
    assertEquals(await onDisk(), 3);

    // A new master (epoch 4) starts without a session: its changes are applied, and the
    // old session of epoch 3 means nothing to it.
    assertEquals((await write(4, 0, 4)).status, STATUS_OK);
    assertEquals(await onDisk(), 4);
    const fourth = await send({ type: T_SESSION, ...head, epoch: 4 });
    assertEquals(decodeSession(fourth.body), 1, "sessions begin again at a new epoch");
    assertEquals((await write(4, 0, 5)).status, STATUS_STALE_SESSION);
    assertEquals((await write(4, 1, 6)).status, STATUS_OK);
    assertEquals(await onDisk(), 6);
    svc.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function block(fill: number): Uint8Array {
  return new Uint8Array(4096).fill(fill);
}
