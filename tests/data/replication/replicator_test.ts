/**
 * The master's Replicator with a WRITE whose data is borrowed (the NBD connection's input
 * buffer, overwritten by the next read): every replica gets the bytes as they were when
 * send() was called, on an open link, on a link still opening, and for a large WRITE sent by
 * reference from a pooled buffer that is reused once the socket wrote it, and for many small
 * WRITEs in flight at once, each in a pooled frame of its own; each carrying the target's
 * session. Real peer channel:
 * TLS on 127.0.0.1 with a real PKI; the replica end decodes each frame and answers OK.
 */
import pino from "pino";
import { openPki } from "../../../ca/mod.ts";
import {
  connectPeer,
  listenPeer,
  nodeVerifier,
  type PeerConnection,
} from "../../../data/peer/mod.ts";
import { PeerLinks, Replicator } from "../../../data/replication/mod.ts";
import { decodeRequest, encodeReply, STATUS_OK, T_WRITE } from "../../../data/replication/wire.ts";
import { assert, assertEquals } from "../../_assert.ts";

const VOLUME = "0a1b2c3d-0000-4000-8000-00000000000a";
const log = pino({ level: "silent" });

interface Received {
  offset: number;
  data: Uint8Array;
  session: number;
}

/** A replica end ("a") that keeps a copy of every WRITE it receives; a master ("b") to it. */
async function world() {
  const dir = await Deno.makeTempDir({ prefix: "ballast-replicator-test-" });
  const pki = await openPki(dir, { nodeName: "a", ipAddresses: ["127.0.0.1"] });
  const issued = await pki.issue({ role: "node", name: "b", ipAddresses: ["127.0.0.1"] });
  const b = { key: issued.keyPem!, cert: issued.certPem, ca: pki.trustBundlePem() };
  const received: Received[] = [];
  const serving: Promise<void>[] = [];
  const serve = async (conn: PeerConnection) => {
    for await (const frame of conn.frames()) {
      const r = decodeRequest(frame);
      if (r.type === T_WRITE) {
        received.push({ offset: r.offset, data: r.data.slice(), session: r.session ?? 0 });
      }
      await conn.send(encodeReply(r.id, STATUS_OK));
    }
  };
  const listener = await listenPeer({
    host: "127.0.0.1",
    port: 0,
    credentials: () => pki.credentials("node"),
    verify: nodeVerifier(pki, "clientAuth"),
    onConnection: (c) => void serving.push(serve(c).catch(() => {})),
    logger: log,
  });
  const [host, port] = listener.address.split(":");
  const links = new PeerLinks(
    (node) =>
      connectPeer({
        host,
        port: Number(port),
        expectNode: node,
        credentials: () => b,
        verify: nodeVerifier(pki, "serverAuth"),
        timeoutMs: 5000,
      }),
    log,
  );
  const rep = new Replicator(VOLUME, links, log);
  rep.setTargets(1, [{ node: "a", address: listener.address }]);
  return {
    rep,
    links,
    received,
    async [Symbol.asyncDispose]() {
      links.closeAll();
      await listener.close();
      await Promise.all(serving);
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** `n` bytes of a pattern that differs per `seed`. */
function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed * 31) & 0xff;
  return b;
}

/** Sends `data` borrowed at `offset`, overwrites it before send()'s promise is awaited. */
async function sendBorrowed(rep: Replicator, offset: number, data: Uint8Array) {
  const result = rep.send({ type: T_WRITE, offset, data, flags: 0 }, true);
  data.fill(0xee); // what the connection's next read does to its input buffer
  const out = await result;
  assertEquals(out.failed, [], "the replica applied it");
  assertEquals(out.fenced, undefined);
}

Deno.test("a borrowed WRITE reaches the replica as it was at send(): link opening, then open", async () => {
  await using w = await world();
  assertEquals(w.links.live("a"), undefined, "no link yet: the first WRITE waits for it");
  await sendBorrowed(w.rep, 0, pattern(4096, 1));
  assert(w.links.live("a") !== undefined, "the link is open now");
  await sendBorrowed(w.rep, 4096, pattern(4096, 2));
  assertEquals(w.received.map((r) => r.offset), [0, 4096]);
  assertEquals(w.received[0].data, pattern(4096, 1), "sent while the link was opening");
  assertEquals(w.received[1].data, pattern(4096, 2), "copied into its frame on the open link");
});

Deno.test("a borrowed large WRITE goes from a pooled copy, reused only after the socket wrote it", async () => {
  await using w = await world();
  const MIB = 1024 * 1024;
  await sendBorrowed(w.rep, 0, pattern(4096, 9)); // open the link
  assertEquals(w.links.payloads.spareBytes, 0);
  await sendBorrowed(w.rep, MIB, pattern(MIB, 3));
  assertEquals(w.links.payloads.spareBytes, MIB, "the copy went back to the pool");
  // Several in flight at once: each has its own buffer while the socket holds it.
  const datas = [4, 5, 6].map((seed) => pattern(MIB, seed));
  await Promise.all(datas.map((d, i) => sendBorrowed(w.rep, (2 + i) * MIB, d)));
  const byOffset = new Map(w.received.map((r) => [r.offset, r.data]));
  assertEquals(byOffset.get(MIB), pattern(MIB, 3));
  for (const [i, seed] of [4, 5, 6].entries()) {
    assertEquals(byOffset.get((2 + i) * MIB), pattern(MIB, seed), `WRITE ${seed}`);
  }
  assertEquals(w.links.payloads.spareBytes, 3 * MIB, "every copy was given back once written");
});

Deno.test("small WRITEs in flight at once each keep their own pooled frame until written", async () => {
  await using w = await world();
  await sendBorrowed(w.rep, 0, pattern(4096, 7)); // open the link
  assert(w.links.frames.spareBytes > 0, "the first WRITE's frame went back to the pool");
  const datas = Array.from({ length: 64 }, (_, i) => pattern(4096, 100 + i));
  await Promise.all(datas.map((d, i) => sendBorrowed(w.rep, (1 + i) * 4096, d)));
  const byOffset = new Map(w.received.map((r) => [r.offset, r.data]));
  datas.forEach((_, i) => {
    assertEquals(byOffset.get((1 + i) * 4096), pattern(4096, 100 + i), `WRITE ${i}`);
  });
  assertEquals(w.links.frames.spareBytes % 8192, 0, "8 KiB frames, all given back");
  assert(w.links.frames.spareBytes >= 8192 * 2, "several frames were in flight at once");
});

Deno.test("a target's changes carry the session it was given, small and large, on a link opening and open; none without", async () => {
  await using w = await world();
  const address = w.rep.targets[0].address;
  w.rep.setTargets(1, [{ node: "a", address, session: 7 }]);
  await sendBorrowed(w.rep, 0, pattern(4096, 1)); // the link opens
  await sendBorrowed(w.rep, 4096, pattern(4096, 2));
  await sendBorrowed(w.rep, 1024 * 1024, pattern(1024 * 1024, 3)); // by reference
  w.rep.setTargets(1, [{ node: "a", address }]);
  await sendBorrowed(w.rep, 8192, pattern(4096, 4));
  assertEquals(w.received.map((r) => [r.offset, r.session]), [
    [0, 7],
    [4096, 7],
    [1024 * 1024, 7],
    [8192, 0],
  ]);
});

Deno.test("a member the record stopped listing while a request to it was in flight is not kept as dropped: later requests report nothing", async () => {
  const refusals: ((e: Error) => void)[] = [];
  const refuse = (e: Error) => refusals.splice(0).forEach((no) => no(e));
  const links = new PeerLinks(() => new Promise((_ok, no) => void refusals.push(no)), log);
  const rep = new Replicator(VOLUME, links, log);
  rep.setTargets(3, [{ node: "a", address: "127.0.0.1:1" }, { node: "c", address: "127.0.0.1:1" }]);
  const inFlight = rep.send({ type: T_WRITE, offset: 0, data: pattern(4096, 1), flags: 0 });
  rep.setTargets(3, [{ node: "c", address: "127.0.0.1:1" }]); // --replicas lowered: a leaves
  refuse(new Error("connection refused"));
  const out = await inFlight;
  assertEquals(out.failed.map((f) => f.node).sort(), ["a", "c"], "this request failed on both");
  // c is still listed: dropped until the record says it is out of sync; a is forgotten.
  const next = await rep.send({ type: T_WRITE, offset: 0, data: pattern(4096, 2), flags: 0 });
  assertEquals(next.failed.map((f) => f.node), ["c"]);
  assertEquals(refusals.length, 0, "no request went to either");
  rep.setTargets(3, []);
  assertEquals(rep.active, false);
  links.closeAll();
});
