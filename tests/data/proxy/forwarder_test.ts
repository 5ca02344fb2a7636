/**
 * Forwarding (data/proxy/) against real in-process data planes on loopback: two "masters"
 * serving the same volume from their own files, and a front plane that holds no copy and
 * forwards. A real libnbd client attached to the front reads and writes the master's copy;
 * a Forwarder holds requests while no master can be reached and sends them to the master the
 * directory names next; with nobody to take over, held requests fail with EIO within the
 * failover bound.
 */

import pino from "pino";
import * as C from "../../../data/nbd/constants.ts";
import { type RunningDataPlane, startDataPlane } from "../../../data/local_plane.ts";
import { createLogger, silentLogger } from "../../../control/common/mod.ts";
import {
  Directory,
  type DirectoryEntry,
  Forwarder,
  RemoteExports,
  Upstream,
  upstreamConnector,
} from "../../../data/proxy/mod.ts";
import { ExportTable, type ForwardedReply } from "../../../data/exports.ts";
import { assert, assertEquals } from "../../_assert.ts";
import { frozenRelay } from "./_frozen_relay.ts";

const MiB = 1024 * 1024;
const VOL = "fwd";
const UUID = crypto.randomUUID();

function testLogger() {
  const level = Deno.env.get("BALLAST_TEST_LOG");
  return level ? createLogger({ level: level as "debug" }) : silentLogger();
}

interface Plane {
  plane: RunningDataPlane;
  dir: string;
}

async function startPlane(
  name: string,
  withVolume: boolean,
  logger = testLogger(),
): Promise<Plane> {
  const dir = await Deno.makeTempDir({ prefix: `ballast-fwd-${name}-` });
  const plane = await startDataPlane({
    dataDir: dir,
    nbdListen: { host: "127.0.0.1", port: 0 },
    logger,
    nodeName: name,
  });
  if (withVolume) {
    await plane.createVolume({ name: VOL, uuid: UUID, sizeBytes: 16 * MiB, description: "" });
  }
  return { plane, dir };
}

async function stopPlane(p: Plane): Promise<void> {
  await p.plane.close().catch(() => {});
  await Deno.remove(p.dir, { recursive: true }).catch(() => {});
}

function entry(master: string, address: string, epoch: number): DirectoryEntry {
  return { name: VOL, uuid: UUID, sizeBytes: 16 * MiB, master, address, epoch, masterDown: false };
}

/** The bytes at `offset` of a plane's copy, read from its file. */
async function copyBytes(p: Plane, offset: number, length: number): Promise<Uint8Array> {
  const f = await Deno.open(`${p.dir}/volumes/${UUID}.vol`);
  try {
    await f.seek(offset, Deno.SeekMode.Start);
    const b = new Uint8Array(length);
    let at = 0;
    while (at < length) at += (await f.read(b.subarray(at))) ?? length;
    return b;
  } finally {
    f.close();
  }
}

/** A port nothing listens on (bound, then closed). */
function deadAddress(): string {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return `127.0.0.1:${port}`;
}

/** `p`, or a failure naming `what` if it does not settle within `ms`. */
async function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

function submit(f: Forwarder, type: number, offset: number, data?: Uint8Array) {
  return new Promise<ForwardedReply>((resolve) => {
    const length = data?.length ?? (type === C.NBD_CMD_FLUSH ? 0 : 4096);
    f.submit({ type, flags: 0, offset, length, ...(data ? { data } : {}) }, resolve);
  });
}

/** A logger whose JSON lines go to `lines`. */
function capture(lines: string[]) {
  return pino({ level: "info" }, { write: (l: string) => lines.push(l) });
}

/** Why the clients of a plane logging to `lines` disconnected, once one did (10 s bound). */
async function disconnectReasons(lines: string[]): Promise<string[]> {
  const reasons = () =>
    lines.map((l) => JSON.parse(l)).filter((l) => l.msg === "client disconnected").map((l) =>
      l.reason as string
    );
  const deadline = Date.now() + 10_000;
  while (reasons().length === 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  return reasons();
}

/**
 * Planes a and b, each holding a copy of the volume, and a Forwarder for it whose directory
 * names a (epoch 1); everything is stopped after `fn`.
 */
async function withTwoMasters(
  fn: (a: Plane, b: Plane, dir: Directory, f: Forwarder) => Promise<void>,
  options: { eioGraceMs?: number; aLog?: string[] } = {},
): Promise<void> {
  const { aLog, ...forwarderOptions } = options;
  const a = await startPlane("a", true, aLog && capture(aLog));
  const b = await startPlane("b", true);
  const dir = new Directory();
  dir.set([entry("a", a.plane.nbdAddress, 1)]);
  const f = new Forwarder({
    name: VOL,
    directory: dir,
    connect: upstreamConnector({ tls: () => undefined }),
    log: testLogger(),
    ...forwarderOptions,
  });
  try {
    await fn(a, b, dir, f);
  } finally {
    f.close();
    await stopPlane(a);
    await stopPlane(b);
  }
}

Deno.test("attach anywhere: a real NBD client attached to a node without a copy reads and writes the master's copy through it", async () => {
  const master = await startPlane("m", true);
  const front = await startPlane("f", false);
  try {
    front.plane.setDirectory!([entry("m", master.plane.nbdAddress, 1)]);
    const [host, port] = front.plane.nbdAddress.split(":");
    const py = `
import sys, nbd
MiB = 1024 * 1024
h = nbd.NBD(); h.connect_uri(sys.argv[1])
assert h.get_size() == 16 * 1024 * 1024, h.get_size()
# Advertised as the master advertises it (FAST_ZERO included), and honoured there.
assert h.can_fast_zero() and h.can_trim() and h.can_fua() and h.can_multi_conn()
h.pwrite(b"\\x5a" * 65536, 1048576, nbd.CMD_FLAG_FUA)
h.zero(4096, 2097152, nbd.CMD_FLAG_FAST_ZERO)
h.flush()
assert h.pread(65536, 1048576) == b"\\x5a" * 65536
# Pipelined WRITEs of several sizes with their own bytes (the forwarding node holds each
# payload in a pooled buffer until the master answered), then one of 9 MiB (gathered in pieces).
writes = [(4096 * i, 4096, i + 1) for i in range(64)]
writes += [(4 * MiB + MiB * i, MiB, 0x80 + i) for i in range(12)]
for rnd in range(2):
    for off, n, v in writes:
        h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray([(v + rnd) % 256]) * n), off)
    while h.aio_in_flight() > 0:
        h.poll(-1)
for off, n, v in writes:
    assert h.pread(n, off) == bytes([(v + 1) % 256]) * n, (off, n)
h.pwrite(b"\\xc3" * (9 * MiB), 4 * MiB)
assert h.pread(9 * MiB, 4 * MiB) == b"\\xc3" * (9 * MiB)
try:
    h.pread(4096, 16 * 1024 * 1024)
    print("no error")
except nbd.Error as e:
    print("EINVAL" if e.errnum == 22 else e.string)
`;
    const out = await new Deno.Command("/usr/bin/python3", {
      args: ["-c", py, `nbd://${host}:${port}/${VOL}`],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
    assertEquals(text, "EINVAL", "an out-of-range READ is refused by the front itself");
    assertEquals(await copyBytes(master, MiB, 65536), new Uint8Array(65536).fill(0x5a));
    assertEquals((await copyBytes(master, 2 * MiB, 4096)).some((b) => b !== 0), false);
  } finally {
    await stopPlane(front);
    await stopPlane(master);
  }
});

Deno.test("Forwarder: requests held while no master can be reached go to the master the directory names next, in order", () =>
  withTwoMasters(async (a, b, dir, f) => {
    const first = await submit(f, C.NBD_CMD_WRITE, 0, new Uint8Array(4096).fill(1));
    assertEquals(first.error, 0);
    assertEquals((await copyBytes(a, 0, 4096))[0], 1, "the first write reached master a");
    // Master a is gone and the directory names a node nobody answers at: requests are held.
    dir.set([entry("a", deadAddress(), 2)]);
    let answered = 0;
    const held = [
      submit(f, C.NBD_CMD_WRITE, 8192, new Uint8Array(4096).fill(2)),
      submit(f, C.NBD_CMD_WRITE, 8192, new Uint8Array(4096).fill(3)), // same block, later
      submit(f, C.NBD_CMD_FLUSH, 0),
    ].map((p) => p.then((r) => (answered++, r)));
    await new Promise((r) => setTimeout(r, 1_000));
    assertEquals(answered, 0, "nothing answered while no master can be reached");
    // A new master (b, epoch 3): the held requests go there, in the order they were sent.
    dir.set([entry("b", b.plane.nbdAddress, 3)]);
    const replies = await within(30_000, Promise.all(held), "the held requests' replies");
    assertEquals(replies.map((r) => r.error), [0, 0, 0]);
    assertEquals((await copyBytes(b, 8192, 4096))[0], 3, "the later write of the block wins");
    assertEquals((await copyBytes(a, 8192, 4096))[0], 0, "nothing held went to master a");
    const read = await submit(f, C.NBD_CMD_READ, 8192);
    assertEquals([read.error, read.data?.[0]], [0, 3]);
  }));

const aLog: string[] = [];
Deno.test("Forwarder: a replaced master's ESHUTDOWN is held and the request goes to the next master, unlike an EIO; it disconnects from that master softly", () =>
  withTwoMasters(async (a, b, dir, f) => {
    assertEquals((await submit(f, C.NBD_CMD_WRITE, 0, new Uint8Array(4096).fill(1))).error, 0);
    // Master a learns that another member was promoted (its lease is fenced): it answers
    // ESHUTDOWN, and this node has not yet heard of the new master.
    a.plane.exports.lookup(VOL)!.lease.fence(true);
    let answered: ForwardedReply | undefined;
    const write = submit(f, C.NBD_CMD_WRITE, 4096, new Uint8Array(4096).fill(2)).then((r) =>
      answered = r
    );
    await new Promise((r) => setTimeout(r, 1_000));
    assertEquals(answered, undefined, "held, not failed, while the directory names a");
    // "If the client receives an NBD_ESHUTDOWN error it MUST initiate a soft disconnect."
    assertEquals((await disconnectReasons(aLog))[0], "client sent NBD_CMD_DISC");
    // Connecting to a again, the forwarder is refused at GO (fenced): new clients of this
    // node are told so (RemoteExports) while the directory names a.
    const deadline = Date.now() + 10_000;
    while (dir.refusal(VOL) === undefined && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    assert(dir.refusal(VOL)?.includes("a member has seen a newer epoch"), dir.refusal(VOL));
    dir.set([entry("b", b.plane.nbdAddress, 2)]);
    assertEquals(dir.refusal(VOL), undefined, "b is another master");
    const r = await within(30_000, write, "the held write's reply");
    assertEquals(r.error, 0, r.message);
    assertEquals((await copyBytes(b, 4096, 4096))[0], 2, "the write reached the new master");
    assertEquals((await copyBytes(a, 4096, 4096))[0], 0, "the replaced master changed nothing");
  }, { eioGraceMs: 200, aLog })); // an EIO would reach the client after 0.2 s

Deno.test("Forwarder: with no master to send them to, held requests fail with EIO within the failover bound, and a closed forwarder fails the rest", async () => {
  const dir = new Directory();
  dir.set([entry("gone", deadAddress(), 1)]);
  const f = new Forwarder({
    name: VOL,
    directory: dir,
    connect: upstreamConnector({ tls: () => undefined }),
    log: testLogger(),
    failoverMs: 1_500,
  });
  try {
    const t0 = performance.now();
    const r = await within(30_000, submit(f, C.NBD_CMD_WRITE, 0, new Uint8Array(4096)), "EIO");
    assertEquals(r.error, C.NBD_EIO);
    assert(/reachable/.test(r.message ?? ""), r.message);
    assert(performance.now() - t0 >= 1_500, "not before the bound");
    const late = submit(f, C.NBD_CMD_READ, 0);
    f.close();
    assertEquals((await late).error, C.NBD_EIO);
  } finally {
    f.close();
  }
});

Deno.test("Forwarder: a master that stops answering on an open connection is given up after the stall bound; unreachable, the request fails with EIO within the failover bound, and once it answers again requests go through", async () => {
  const a = await startPlane("a", true);
  const relay = frozenRelay(a.plane.nbdAddress);
  const dir = new Directory();
  dir.set([entry("a", relay.address, 1)]);
  const lines: string[] = [];
  const f = new Forwarder({
    name: VOL,
    directory: dir,
    connect: upstreamConnector({ tls: () => undefined, timeoutMs: 500 }),
    log: capture(lines),
    stallMs: 1_000,
    failoverMs: 1_500,
  });
  try {
    const block = new Uint8Array(4096).fill(5);
    assertEquals((await within(10_000, submit(f, C.NBD_CMD_WRITE, 0, block), "a write")).error, 0);
    relay.freeze();
    // Without the stall bound this waits for TCP to give up on the connection (minutes).
    const r = await within(30_000, submit(f, C.NBD_CMD_WRITE, 4096, block), "EIO");
    assertEquals(r.error, C.NBD_EIO);
    assert(lines.some((l) => l.includes("the master did not answer")), "the stall is logged");
    relay.thaw();
    const again = await within(30_000, submit(f, C.NBD_CMD_WRITE, 8192, block), "a write");
    assertEquals(again.error, 0);
    assertEquals(await copyBytes(a, 8192, 4096), block);
  } finally {
    f.close();
    relay.close();
    await stopPlane(a);
  }
});

Deno.test("Upstream: negotiates with a Ballast data plane and refuses an export it does not serve", async () => {
  const m = await startPlane("m", true);
  try {
    const [host, port] = m.plane.nbdAddress.split(":");
    const up = await Upstream.connect({ host, port: Number(port), exportName: VOL });
    assertEquals(up.size, 16 * MiB);
    assert((up.transmissionFlags & C.NBD_FLAG_SEND_FLUSH) !== 0);
    up.close();
    let refused = "";
    try {
      (await Upstream.connect({ host, port: Number(port), exportName: "nope" })).close();
    } catch (err) {
      refused = (err as Error).message;
    }
    assert(/refused export "nope"/.test(refused), refused);
  } finally {
    await stopPlane(m);
  }
});

Deno.test("Upstream: close() ends with a soft disconnect (NBD_CMD_DISC), as the protocol asks of a client", async () => {
  const lines: string[] = [];
  const m = await startPlane("m", true, capture(lines));
  try {
    const [host, port] = m.plane.nbdAddress.split(":");
    const up = await Upstream.connect({ host, port: Number(port), exportName: VOL });
    const flushed = new Promise<number>((r) =>
      up.send({ type: C.NBD_CMD_FLUSH, flags: 0, offset: 0, length: 0 }, (reply) => r(reply.error))
    );
    assertEquals(await flushed, 0);
    up.close();
    assertEquals(await disconnectReasons(lines), ["client sent NBD_CMD_DISC"]);
  } finally {
    await stopPlane(m);
  }
});

Deno.test("Upstream: pipelined WRITEs and READs of every size get their own bytes back, with or without a buffer of their own", async () => {
  const m = await startPlane("m", true);
  try {
    const [host, port] = m.plane.nbdAddress.split(":");
    const up = await Upstream.connect({ host, port: Number(port), exportName: VOL });
    // Sizes around the batching and chunk boundaries: small requests share writes and reads,
    // large ones span many socket reads.
    const sizes = [1, 512, 4096, 65535, 65536, 65537, 300_000, MiB, 3 * MiB];
    const pattern = (n: number, seed: number) =>
      Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) % 251);
    const call = (req: Parameters<Upstream["send"]>[0]) =>
      new Promise<{ error: number; data?: Uint8Array }>((resolve) =>
        up.send(req, (r) => resolve({ error: r.error, data: r.data?.slice() }))
      );
    let offset = 0;
    const placed = sizes.map((n, seed) => {
      const at = offset;
      offset += n + 4096;
      return { at, data: pattern(n, seed) };
    });
    const writes = placed.map((p) =>
      call({ type: C.NBD_CMD_WRITE, flags: 0, offset: p.at, length: p.data.length, data: p.data })
    );
    assertEquals((await Promise.all(writes)).map((r) => r.error), sizes.map(() => 0));
    // Every READ twice in one pipeline: once into a buffer of its own, once lent.
    const reads = placed.flatMap((p) => {
      const into = new Uint8Array(p.data.length);
      const req = { type: C.NBD_CMD_READ, flags: 0, offset: p.at, length: p.data.length };
      return [
        call({ ...req, into }).then((r) => ({ r, got: into, want: p.data })),
        call(req).then((r) => ({ r, got: r.data!, want: p.data })),
      ];
    });
    for (const { r, got, want } of await Promise.all(reads)) {
      assertEquals(r.error, 0);
      assertEquals(got.length, want.length);
      assert(got.every((b, i) => b === want[i]), `a READ of ${want.length} bytes got other bytes`);
    }
    // An error reply carries no data, and the connection goes on.
    const bad = await call({ type: C.NBD_CMD_READ, flags: 0, offset: 16 * MiB, length: 4096 });
    assertEquals(bad.error, C.NBD_EINVAL);
    const again = await call({ type: C.NBD_CMD_READ, flags: 0, offset: 0, length: 1 });
    assertEquals([again.error, again.data?.[0]], [0, placed[0].data[0]]);
    up.close();
  } finally {
    await stopPlane(m);
  }
});

Deno.test("RemoteExports: a volume nobody can serve now is not attachable, and absent() says why", () => {
  const dir = new Directory();
  const remote = new RemoteExports(dir, upstreamConnector({ tls: () => undefined }));
  dir.set([entry("a", "127.0.0.1:1", 1)]);
  assertEquals(remote.absent(VOL), undefined, "servable");
  assert(remote.lookup(VOL) !== undefined);
  dir.set([{ ...entry("a", "127.0.0.1:1", 1), unavailable: true }]);
  assertEquals(remote.lookup(VOL), undefined);
  assertEquals(remote.names(), []);
  const gone = remote.absent(VOL);
  assertEquals(gone?.uuid, UUID);
  assert(gone?.reason.startsWith(`volume "${VOL}" is unavailable: no member`), gone?.reason);
  assertEquals(remote.absent("other"), undefined, "unknown");
  // A copy its node could not open: the record's reason.
  dir.set([{
    ...entry("a", "127.0.0.1:1", 1),
    unavailable: true,
    why: "node a could not open it",
  }]);
  assert(remote.absent(VOL)?.reason.includes("unavailable: node a could not open it"), "why");
  remote.update();
});

Deno.test("ExportTable.cutRevoked(): a revoked client's forwarded connections are cut too, not only local ones", () => {
  const dir = new Directory();
  const remote = new RemoteExports(dir, upstreamConnector({ tls: () => undefined }));
  dir.set([entry("a", "127.0.0.1:1", 1)]);
  const table = new ExportTable();
  table.remote = (name) => remote.lookup(name);
  table.remoteAttached = () => remote.attached();
  const cut: string[] = [];
  const attach = (serial: string) => ({
    clientSerial: serial,
    abort: (why: string) => cut.push(why),
  });
  const forwarded = table.find(VOL)!;
  forwarded.attachments.add(attach("0a"));
  forwarded.attachments.add(attach("0b"));
  assertEquals(table.cutRevoked(new Set(["0a"])), 1);
  assertEquals(cut, ["client certificate 0a was revoked"]);
});

Deno.test("LiveExport.unavailable: set while its lease is fenced (the handshake then refuses it), clear otherwise", () => {
  const dir = new Directory();
  const remote = new RemoteExports(dir, upstreamConnector({ tls: () => undefined }));
  dir.set([entry("a", "127.0.0.1:1", 1)]);
  const e = remote.lookup(VOL)!;
  assertEquals(e.unavailable, undefined);
  e.lease.fence(true);
  assert(e.unavailable?.includes("a member has seen a newer epoch"), e.unavailable);
  e.lease.fence(false);
  assertEquals(e.unavailable, undefined);
});

Deno.test("RemoteExports: a volume whose master refused a forwarder as unavailable (fenced) takes no new client while that master stands; another master clears it", () => {
  const dir = new Directory();
  const remote = new RemoteExports(dir, upstreamConnector({ tls: () => undefined }));
  const e1 = entry("a", "127.0.0.1:1", 1);
  dir.set([e1]);
  assert(remote.lookup(VOL) !== undefined);
  dir.refused(e1, "master a refuses it: fenced");
  assertEquals(remote.lookup(VOL), undefined);
  assertEquals(remote.names(), []);
  assertEquals(
    remote.absent(VOL)?.reason,
    `volume "${VOL}" is unavailable: master a refuses it: fenced`,
  );
  dir.set([entry("b", "127.0.0.1:2", 2)]);
  assert(remote.lookup(VOL) !== undefined, "a new master: the refusal was of the old one");
  assertEquals(remote.absent(VOL), undefined);
  remote.update();
});
