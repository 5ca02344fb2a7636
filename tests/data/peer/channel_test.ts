/**
 * The peer channel with real TLS handshakes on 127.0.0.1 and a real PKI in a temp dir:
 * node "a" (openPki) and node "b" (issued by a's CA) talk; everyone else is refused, and
 * refusals never disturb the connections already running.
 */
import * as net from "node:net";
import * as tls from "node:tls";
import pino from "pino";
import {
  createRootCa,
  exportPrivateKeyPem,
  generateKeyPair,
  issueLeaf,
  normalizeSerial,
  openPki,
  type Pki,
  x509,
} from "../../../ca/mod.ts";
import {
  connectPeer,
  type ConnectPeerOptions,
  listenPeer,
  type ListenPeerOptions,
  MAX_FRAME_BYTES,
  nodeVerifier,
  type PeerConnection,
  PeerError,
  type PeerErrorCode,
  type PeerListener,
  RECEIVE_HIGH_WATER,
  SEND_HIGH_WATER,
} from "../../../data/peer/mod.ts";
import { FrameDecoder, frameHeader, FrameTooLargeError } from "../../../data/peer/_framing.ts";
import { assert, assertEquals, fail } from "../../_assert.ts";
import { kernelBufferBytes, untilStalled } from "../../_backpressure.ts";

type Creds = { key: string; cert: string; ca: string };

/** Log records (parsed pino JSON lines) of level warn and above. */
function captureLogger(): {
  logger: ListenPeerOptions["logger"];
  records: Record<string, unknown>[];
} {
  const records: Record<string, unknown>[] = [];
  const logger = pino({ level: "warn" }, {
    write: (s: string) => void records.push(JSON.parse(s)),
  });
  return { logger, records };
}

/** A FIFO whose next() waits (with a deadline) for the next item. */
class Inbox<T> {
  #items: T[] = [];
  #waiters: ((v: T) => void)[] = [];
  push(v: T): void {
    const w = this.#waiters.shift();
    if (w) w(v);
    else this.#items.push(v);
  }
  get size(): number {
    return this.#items.length;
  }
  next(ms = 5000): Promise<T> {
    if (this.#items.length > 0) return Promise.resolve(this.#items.shift()!);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`nothing arrived within ${ms} ms`)), ms);
      this.#waiters.push((v) => {
        clearTimeout(t);
        resolve(v);
      });
    });
  }
}

/** Reads frames of `conn` into an inbox; `done` settles when the stream ends or throws. */
function reader(conn: PeerConnection): { inbox: Inbox<Uint8Array>; done: Promise<unknown> } {
  const inbox = new Inbox<Uint8Array>();
  const done = (async () => {
    for await (const f of conn.frames()) inbox.push(new Uint8Array(f));
  })().then(() => "end", (err) => err);
  return { inbox, done };
}

const enc = new TextEncoder();
const dec = new TextDecoder();

interface World extends AsyncDisposable {
  pki: Pki;
  /** Node b's credentials (issued by a's CA). */
  b: Creds & { serial: string };
  /** Node a's credentials, read from the PKI at each call (renewal). */
  a: () => Creds;
  listener: PeerListener;
  /** Connections the listener accepted. */
  accepted: Inbox<PeerConnection>;
  records: Record<string, unknown>[];
  port: number;
  /** connectPeer to the listener as `creds`, expecting node a unless told otherwise. */
  connect(creds: Creds, more?: Partial<ConnectPeerOptions>): Promise<PeerConnection>;
  /** Serials (normalized) of the server certificates seen by connect(). */
  serverSerials: string[];
}

async function world(listen: Partial<ListenPeerOptions> = {}): Promise<World> {
  const dir = await Deno.makeTempDir({ prefix: "ballast-peer-test-" });
  const pki = await openPki(dir, { nodeName: "a", ipAddresses: ["127.0.0.1"] });
  const issued = await pki.issue({ role: "node", name: "b", ipAddresses: ["127.0.0.1"] });
  const b = {
    key: issued.keyPem!,
    cert: issued.certPem,
    ca: pki.trustBundlePem(),
    serial: normalizeSerial(issued.cert.serialNumber),
  };
  const a = () => pki.credentials("node");
  const accepted = new Inbox<PeerConnection>();
  const { logger, records } = captureLogger();
  const listener = await listenPeer({
    host: "127.0.0.1",
    port: 0,
    credentials: a,
    verify: nodeVerifier(pki, "clientAuth"),
    onConnection: (c) => accepted.push(c),
    logger,
    ...listen,
  });
  const port = Number(listener.address.split(":").at(-1));
  const serverSerials: string[] = [];
  const serverCheck = nodeVerifier(pki, "serverAuth");
  return {
    pki,
    b,
    a,
    listener,
    accepted,
    records,
    port,
    serverSerials,
    connect: (creds, more = {}) =>
      connectPeer({
        host: "127.0.0.1",
        port,
        expectNode: "a",
        credentials: () => creds,
        verify: (der) => {
          serverSerials.push(
            normalizeSerial(new x509.X509Certificate(new Uint8Array(der)).serialNumber),
          );
          return serverCheck(der);
        },
        timeoutMs: 5000,
        ...more,
      }),
    async [Symbol.asyncDispose]() {
      await listener.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Awaits `p` and asserts it rejects with a PeerError of `code` whose message matches. */
async function refused(
  p: Promise<unknown>,
  code: PeerErrorCode,
  message?: RegExp,
): Promise<PeerError> {
  try {
    await p;
  } catch (err) {
    assert(err instanceof PeerError, `expected a PeerError, got ${err}`);
    assertEquals(err.code, code, err.message);
    if (message) assert(message.test(err.message), `message ${JSON.stringify(err.message)}`);
    return err;
  }
  fail("expected a refusal, but it succeeded");
}

/** Asserts a warn record whose msg matches arrived (within a second). */
async function logged(records: Record<string, unknown>[], msg: RegExp, reason?: RegExp) {
  for (let i = 0; i < 50; i++) {
    if (
      records.some((r) =>
        msg.test(String(r.msg)) && (!reason || reason.test(String(r.reason ?? "")))
      )
    ) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  fail(`no log line ${msg} ${reason ?? ""}; got ${JSON.stringify(records)}`);
}

/** Sends `text` from one side and expects it on the other. */
async function roundTrip(
  from: PeerConnection,
  to: { inbox: Inbox<Uint8Array> },
  text: string,
): Promise<void> {
  await from.send(enc.encode(text));
  assertEquals(dec.decode(await to.inbox.next()), text);
}

/** A raw TCP client: sends `bytes` (if any) and resolves when the server drops it. */
function rawClient(port: number, bytes?: Uint8Array, ms = 5000): Promise<"closed" | "open"> {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1", () => {
      if (bytes) s.write(bytes);
    });
    s.on("data", () => {});
    s.on("error", () => {});
    const t = setTimeout(() => {
      s.destroy();
      resolve("open");
    }, ms);
    s.on("close", () => {
      clearTimeout(t);
      resolve("closed");
    });
  });
}

// ---------------------------------------------------------------------------------------
// Framing, pure

Deno.test("FrameDecoder reassembles frames split anywhere and returns whole ones as views", () => {
  const frames = [new Uint8Array(0), enc.encode("hello"), new Uint8Array(70_000).fill(7)];
  const wire: number[] = [];
  for (const f of frames) wire.push(...frameHeader(f.length), ...f);
  const bytes = new Uint8Array(wire);
  for (const step of [1, 2, 3, 5, 4096, bytes.length]) {
    const d = new FrameDecoder();
    const out: Uint8Array[] = [];
    for (let i = 0; i < bytes.length; i += step) out.push(...d.push(bytes.subarray(i, i + step)));
    assertEquals(out, frames, `chunks of ${step}`);
    assert(!d.partial);
  }
  const d = new FrameDecoder();
  assertEquals(d.push(frameHeader(3)), []);
  assert(d.partial, "a header without its payload is partial");
});

Deno.test("FrameDecoder reuses a recycled large frame's buffer, and only a recycled one", () => {
  const big = (fill: number, n = 100_000) => new Uint8Array(n).fill(fill);
  const wire = (f: Uint8Array) => new Uint8Array([...frameHeader(f.length), ...f]);
  const d = new FrameDecoder();
  // Split across chunks, so each frame is assembled in a buffer of the decoder's.
  const feed = (f: Uint8Array) => {
    const w = wire(f);
    return [...d.push(w.subarray(0, 10)), ...d.push(w.subarray(10))];
  };
  const [a] = feed(big(1));
  assertEquals(a, big(1));
  const [b] = feed(big(2));
  assert(b.buffer !== a.buffer, "a frame still in use is not overwritten");
  d.recycle(a);
  d.recycle(a); // twice: ignored
  const [c] = feed(big(3, 90_000));
  assert(c.buffer === a.buffer, "the recycled buffer holds the next large frame");
  assertEquals(c, big(3, 90_000));
  assertEquals(b, big(2), "the frame not recycled is intact");
  const [e] = feed(big(4));
  assert(e.buffer !== a.buffer && e.buffer !== b.buffer, "each buffer is handed out once");
  const [small] = feed(big(5, 1000));
  d.recycle(small);
  const [small2] = feed(big(6, 1000));
  assert(small2.buffer !== small.buffer, "small frames are not pooled");
  assertEquals(small, big(5, 1000));
});

Deno.test("FrameDecoder rejects an announced length above the limit", () => {
  for (
    const [limit, header] of [
      [MAX_FRAME_BYTES, [0xff, 0xff, 0xff, 0xff]],
      [MAX_FRAME_BYTES, [...frameHeader(MAX_FRAME_BYTES + 1)]],
      [1024, [...frameHeader(1025)]],
    ] as const
  ) {
    const d = new FrameDecoder(limit);
    try {
      d.push(new Uint8Array(header));
      fail(`limit ${limit}: accepted ${header}`);
    } catch (err) {
      assert(err instanceof FrameTooLargeError, String(err));
      assertEquals(err.limit, limit);
    }
  }
  assertEquals(new FrameDecoder(1024).push(new Uint8Array([0, 0, 4, 0])), []);
  // limitNext(): a tighter limit for the next frame only (the greeting).
  const d = new FrameDecoder(1024);
  d.limitNext(8);
  assertEquals(d.push(new Uint8Array([0, 0, 0, 2, 1, 2, 0, 0, 0, 9])), [new Uint8Array([1, 2])]);
  const g = new FrameDecoder(1024);
  g.limitNext(8);
  try {
    g.push(frameHeader(9));
    fail("accepted a 9-byte first frame");
  } catch (err) {
    assert(err instanceof FrameTooLargeError && err.limit === 8, String(err));
  }
});

// ---------------------------------------------------------------------------------------
// Real handshakes

Deno.test("nodes a and b exchange frames both ways and each sees the other's node name", async () => {
  await using w = await world();
  const client = await w.connect(w.b);
  const server = await w.accepted.next();
  assertEquals(client.peerNode, "a");
  assertEquals(server.peerNode, "b");
  assertEquals(client.remote, w.listener.address);
  assert(server.remote.startsWith("127.0.0.1:"), server.remote);
  const fromClient = reader(server);
  const fromServer = reader(client);

  await roundTrip(client, fromClient, "b to a");
  await roundTrip(server, fromServer, "a to b");
  // Empty and large frames, many in flight at once, arrive whole and in order.
  const big = new Uint8Array(3 * 1024 * 1024).map((_, i) => i % 251);
  await Promise.all([
    client.send(new Uint8Array(0)),
    client.send(big),
    ...Array.from({ length: 100 }, (_, i) => client.send(enc.encode(`#${i}`))),
  ]);
  assertEquals((await fromClient.inbox.next()).length, 0);
  assertEquals(await fromClient.inbox.next(), big);
  for (let i = 0; i < 100; i++) assertEquals(dec.decode(await fromClient.inbox.next()), `#${i}`);
  // A frame given as head and payload arrives as one, small (copied with the other frames of
  // its turn) or large (the payload written by reference).
  const head = enc.encode("head:");
  await Promise.all([
    client.send(head, enc.encode("small")),
    client.send(head, big),
    client.send(enc.encode("after")),
  ]);
  assertEquals(dec.decode(await fromClient.inbox.next()), "head:small");
  assertEquals(await fromClient.inbox.next(), new Uint8Array([...head, ...big]));
  assertEquals(dec.decode(await fromClient.inbox.next()), "after");

  client.close();
  assertEquals(await fromClient.done, "end", "a clean close ends the other side's frames()");
  assertEquals(await fromServer.done, "end");
  await refused(client.send(enc.encode("late")), "closed");
  assertEquals(w.records, [], "nothing to warn about");
});

Deno.test("frames of mixed sizes over many turns arrive whole and in order (send buffers reused, large payloads queued)", async () => {
  await using w = await world();
  const client = await w.connect(w.b);
  const server = await w.accepted.next();
  const fromClient = reader(server);
  // Frame k: a 4-byte index head, then a payload of a size that cycles through small, just
  // under and over the by-reference size, and 1 MiB, filled with a pattern of k.
  const sizes = [0, 1, 4093, 20_000, 65_535, 65_536, 300_000, 1024 * 1024];
  const frame = (k: number) => {
    const head = new Uint8Array(4);
    new DataView(head.buffer).setUint32(0, k);
    const payload = new Uint8Array(sizes[k % sizes.length]).map((_, i) => (i + k) % 253);
    return { head, payload };
  };
  let k = 0;
  for (let turn = 0; turn < 12; turn++) {
    const sent = Array.from({ length: 10 + turn }, () => frame(k++));
    await Promise.all(sent.map((f) => client.send(f.head, f.payload)));
  }
  for (let i = 0; i < k; i++) {
    const got = await fromClient.inbox.next();
    const want = frame(i);
    assertEquals(got.length, 4 + want.payload.length, `frame ${i}`);
    assertEquals(new DataView(got.buffer, got.byteOffset).getUint32(0), i);
    assertEquals(got.subarray(4), want.payload, `payload of frame ${i}`);
  }
  client.close();
});

Deno.test("frames up to 64 MiB pass; send() refuses bigger ones", async () => {
  await using w = await world();
  const client = await w.connect(w.b);
  const server = await w.accepted.next();
  const max = new Uint8Array(MAX_FRAME_BYTES);
  max[0] = 1;
  max[MAX_FRAME_BYTES - 1] = 2;
  const fromClient = reader(server);
  await client.send(max);
  const got = await fromClient.inbox.next(10_000);
  assertEquals([got.length, got[0], got[MAX_FRAME_BYTES - 1]], [MAX_FRAME_BYTES, 1, 2]);
  try {
    await client.send(new Uint8Array(MAX_FRAME_BYTES + 1));
    fail("sent a frame above the limit");
  } catch (err) {
    assert(err instanceof RangeError, String(err));
  }
  client.close();
});

const MiB = 1024 * 1024;

for (const side of ["client", "server"] as const) {
  Deno.test(`a ${side} that stops reading holds back the sender with bounded buffers; sends resume when it reads`, async () => {
    await using w = await world();
    const client = await w.connect(w.b);
    const server = await w.accepted.next();
    const [receiver, sender] = side === "client" ? [client, server] : [server, client];
    // Whatever the kernel can absorb, plus what both ends may hold in user space.
    const bound = await kernelBufferBytes() + RECEIVE_HIGH_WATER + 2 * MiB + SEND_HIGH_WATER +
      MiB + 4 * MiB;
    const total = Math.ceil((2 * bound) / MiB);
    // Frame i is a 1 MiB view of one buffer that starts with i (big-endian u32).
    const stamps = new Uint8Array(MiB + 4 * total);
    const view = new DataView(stamps.buffer);
    for (let i = total - 1; i >= 0; i--) view.setUint32(4 * i, i);
    let sent = 0;
    const sends = Array.from(
      { length: total },
      (_, i) => sender.send(stamps.subarray(4 * i, 4 * i + MiB)).then(() => void sent++),
    );

    await untilStalled(() => sent, total);
    assert(sent < total, `all ${total} MiB were taken by a peer that reads nothing`);
    assert(
      sent * MiB <= bound,
      `${sent} MiB sent to a peer that reads nothing; at most ${bound / MiB} MiB may be buffered`,
    );
    const held = receiver.queued().received;
    assert(
      held <= RECEIVE_HIGH_WATER + 2 * MiB,
      `the receiver holds ${held} bytes for a reader that reads nothing`,
    );
    assertEquals(sender.queued().sending >= (total - sent) * MiB, true);

    // Reading resumes the sender; every frame arrives, in order.
    let read = 0;
    for await (const f of receiver.frames()) {
      assertEquals(f.length, MiB);
      assertEquals(new DataView(f.buffer, f.byteOffset, 4).getUint32(0), read);
      if (++read === total) break;
    }
    await Promise.all(sends);
    assertEquals(sent, total);
    assertEquals(sender.queued(), { received: 0, sending: 0 });
    client.close();
  });
}

Deno.test("a client with an admin or nbd-client certificate is refused (role)", async () => {
  await using w = await world();
  const nbd = await w.pki.issue({ role: "nbd-client", name: "vm", volumes: ["*"] });
  const clients = {
    admin: { ...w.pki.credentials("admin"), ca: w.pki.trustBundlePem() },
    "nbd-client": { key: nbd.keyPem!, cert: nbd.certPem, ca: w.pki.trustBundlePem() },
  };
  for (const [role, creds] of Object.entries(clients)) {
    await refused(
      w.connect(creds),
      "refused",
      new RegExp(`refused this node: .*has role ${role}; this endpoint accepts node`),
    );
    await logged(w.records, /peer refused: certificate/, new RegExp(`role ${role}`));
  }
  assertEquals(w.accepted.size, 0, "no connection reached the application");
  const ok = await w.connect(w.b);
  assertEquals((await w.accepted.next()).peerNode, "b", "the listener still serves nodes");
  ok.close();
});

Deno.test("a client with a foreign-CA node certificate is refused", async () => {
  await using w = await world();
  const other = await createRootCa({ commonName: "Somebody Else" });
  const keys = await generateKeyPair();
  const cert = await issueLeaf(
    { cert: other.cert, key: other.keys.privateKey },
    keys.publicKey,
    { role: "node", name: "b", ipAddresses: ["127.0.0.1"] },
  );
  const intruder = {
    key: await exportPrivateKeyPem(keys.privateKey),
    cert: cert.toString("pem"),
    ca: w.pki.trustBundlePem(), // it trusts a; a must not trust it
  };
  await refused(w.connect(intruder), "refused", /closed the connection/);
  await logged(w.records, /peer TLS handshake failed/);
  assertEquals(w.accepted.size, 0);
});

Deno.test("a client that does not trust the server's CA refuses it", async () => {
  await using w = await world();
  const other = await createRootCa({ commonName: "Somebody Else" });
  await refused(
    w.connect({ ...w.b, ca: other.cert.toString("pem") }),
    "untrusted",
    /^peer 127\.0\.0\.1:\d+ is untrusted: /,
  );
});

Deno.test("a revoked node certificate is refused at the next handshake", async () => {
  await using w = await world();
  const first = await w.connect(w.b);
  (await w.accepted.next()).close();
  first.close();
  await w.pki.revoke(w.b.serial);
  await refused(w.connect(w.b), "refused", /refused this node: .*is revoked/);
  await logged(w.records, /peer refused: certificate/, /revoked/);
  assertEquals(w.accepted.size, 0);
});

Deno.test("expectNode mismatch is refused on the client side, even with a valid node certificate", async () => {
  await using w = await world();
  const err = await refused(
    w.connect(w.b, { expectNode: "c" }),
    "wrong-node",
    /^peer 127\.0\.0\.1:\d+ presented node "a", expected "c"$/,
  );
  assertEquals([err.expected, err.presented], ["c", "a"]);

  // b listening with its own valid certificate cannot pose as a.
  const posing = await listenPeer({
    host: "127.0.0.1",
    port: 0,
    credentials: () => w.b,
    verify: nodeVerifier(w.pki, "clientAuth"),
    onConnection: (c) => c.close(),
    logger: captureLogger().logger,
  });
  try {
    await refused(
      connectPeer({
        host: "127.0.0.1",
        port: Number(posing.address.split(":")[1]),
        expectNode: "a",
        credentials: w.a,
        verify: nodeVerifier(w.pki, "serverAuth"),
      }),
      "wrong-node",
      /presented node "b", expected "a"/,
    );
  } finally {
    await posing.close();
  }
  assertEquals(w.accepted.size, 0, "the server never handed out the unconfirmed connection");
});

Deno.test("garbage, plaintext and idle TCP clients are dropped; an established peer keeps working", async () => {
  await using w = await world({ handshakeTimeoutMs: 500 });
  const client = await w.connect(w.b);
  const server = await w.accepted.next();
  const fromClient = reader(server);
  const fromServer = reader(client);

  const garbage = new Uint8Array(512).map((_, i) => (i * 37 + 11) & 0xff);
  assertEquals(await rawClient(w.port, garbage), "closed");
  assertEquals(await rawClient(w.port, enc.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n")), "closed");
  // A ClientHello record header that never continues, and a client that sends nothing.
  assertEquals(await rawClient(w.port, new Uint8Array([0x16, 3, 1, 2, 0, 1])), "closed");
  assertEquals(await rawClient(w.port), "closed");
  await logged(w.records, /peer TLS handshake failed/);

  await roundTrip(client, fromClient, "still here");
  await roundTrip(server, fromServer, "and back");
  const again = await w.connect(w.b);
  assertEquals((await w.accepted.next()).peerNode, "b", "new peers are still accepted");
  again.close();
  client.close();
});

Deno.test("a TCP connection closed before sending a byte (another node's crash check) is no warning", async () => {
  await using w = await world();
  for (let i = 0; i < 3; i++) {
    const probe = await Deno.connect({ hostname: "127.0.0.1", port: w.port });
    probe.close();
  }
  // Garbage after them is still a warning: the records are in order, so once it is logged,
  // the earlier probes' lines (if any) would be there too.
  assertEquals(await rawClient(w.port, enc.encode("hello")), "closed");
  await logged(w.records, /peer TLS handshake failed/);
  assertEquals(w.records.length, 1, JSON.stringify(w.records));
});

/** A node:tls client with valid credentials that speaks no greeting, or a wrong one. */
function rawTlsClient(port: number, creds: Creds, first?: Uint8Array): Promise<string> {
  return new Promise((resolve) => {
    let said = "";
    const s = tls.connect({
      host: "127.0.0.1",
      port,
      ...creds,
      checkServerIdentity: () => undefined,
    }, () => {
      if (first) s.write(first);
    });
    s.on("data", (d: Uint8Array) => (said += dec.decode(d.subarray(4))));
    s.on("error", () => {});
    s.on("close", () => resolve(said));
  });
}

Deno.test("an authenticated node that sends a bad greeting, or none, is dropped", async () => {
  await using w = await world({ handshakeTimeoutMs: 500 });
  const client = await w.connect(w.b);
  const server = await w.accepted.next();
  const fromClient = reader(server);

  const v2 = enc.encode(JSON.stringify({ hello: "ballast-peer/2" }));
  assertEquals(
    await rawTlsClient(w.port, w.b, new Uint8Array([...frameHeader(v2.length), ...v2])),
    JSON.stringify({ refused: 'unsupported protocol "ballast-peer/2"' }),
  );
  await logged(w.records, /peer refused: greeting/, /unsupported protocol/);
  assertEquals(await rawTlsClient(w.port, w.b, frameHeader(MAX_FRAME_BYTES)), "");
  assertEquals(await rawTlsClient(w.port, w.b), "", "silent: dropped after the timeout");
  await logged(w.records, /no greeting in time/);
  assertEquals(w.accepted.size, 0);
  await roundTrip(client, fromClient, "unaffected");
  client.close();
});

Deno.test("an oversized frame closes only that connection", async () => {
  await using w = await world({ maxFrameBytes: 1024 });
  const c1 = await w.connect(w.b);
  const s1 = await w.accepted.next();
  const c2 = await w.connect(w.b);
  const s2 = await w.accepted.next();
  const in1 = reader(s1);
  const in2 = reader(s2);
  const back1 = reader(c1);
  const back2 = reader(c2);

  await roundTrip(c1, in1, "fits");
  await c1.send(new Uint8Array(1024)).then(() => in1.inbox.next()); // exactly the limit
  await c1.send(new Uint8Array(1025)).catch(() => {});
  const err = await in1.done;
  assert(err instanceof PeerError && err.code === "protocol", `server side: ${err}`);
  assert(/1025-byte frame, above the 1024-byte limit/.test(err.message), err.message);
  const clientEnd = await back1.done;
  assert(clientEnd === "end" || clientEnd instanceof PeerError, `client side: ${clientEnd}`);
  await refused(c1.send(enc.encode("after")), "closed");
  await logged(w.records, /oversized frame/);

  await roundTrip(c2, in2, "other connection");
  await roundTrip(s2, back2, "still fine");

  // The same on the client side: a's frame above b's limit closes b's connection.
  const c3 = await w.connect(w.b, { maxFrameBytes: 16 });
  const s3 = await w.accepted.next();
  const back3 = reader(c3);
  await s3.send(new Uint8Array(17)).catch(() => {});
  const e3 = await back3.done;
  assert(e3 instanceof PeerError && e3.code === "protocol", String(e3));
  c2.close();
});

Deno.test("reload() keeps live connections and new connections present the new certificate", async () => {
  await using w = await world();
  const oldSerial = normalizeSerial(w.pki.local("node")!.cert.serialNumber);
  const c1 = await w.connect(w.b);
  const s1 = await w.accepted.next();
  const in1 = reader(s1);
  const back1 = reader(c1);
  assertEquals(w.serverSerials, [oldSerial]);

  const renewed = await w.pki.renew("node", { newKey: true });
  const newSerial = normalizeSerial(renewed.serialNumber);
  assert(newSerial !== oldSerial);
  w.listener.reload();

  const c2 = await w.connect(w.b);
  const s2 = await w.accepted.next();
  assertEquals(w.serverSerials, [oldSerial, newSerial], "the new handshake used the new cert");
  assertEquals(c2.peerNode, "a");
  const in2 = reader(s2);
  await roundTrip(c2, in2, "new");
  await roundTrip(c1, in1, "old connection lives on");
  await roundTrip(s1, back1, "both ways");
  c1.close();
  c2.close();
});

Deno.test("connectPeer: unreachable and silent peers fail with clear errors", async () => {
  const { logger } = captureLogger();
  const dir = await Deno.makeTempDir({ prefix: "ballast-peer-test-" });
  try {
    const pki = await openPki(dir, { nodeName: "a", ipAddresses: ["127.0.0.1"] });
    const base = {
      host: "127.0.0.1",
      expectNode: "b",
      credentials: () => pki.credentials("node"),
      verify: nodeVerifier(pki, "serverAuth"),
      logger,
    };
    // A port nobody listens on: bind one, note it, close it.
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", () => r()));
    const freePort = (probe.address() as net.AddressInfo).port;
    await new Promise((r) => probe.close(r));
    await refused(
      connectPeer({ ...base, port: freePort }),
      "unreachable",
      /^cannot connect to peer 127\.0\.0\.1:\d+/,
    );

    // A TCP server that accepts and never answers.
    const held: net.Socket[] = [];
    const silent = net.createServer((s) => void held.push(s));
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", () => r()));
    const port = (silent.address() as net.AddressInfo).port;
    try {
      await refused(
        connectPeer({ ...base, port, timeoutMs: 300 }),
        "timeout",
        /^peer 127\.0\.0\.1:\d+: no TLS handshake within 300 ms$/,
      );
    } finally {
      for (const s of held) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("listener close() ends the connections it accepted", async () => {
  await using w = await world();
  const client = await w.connect(w.b);
  await w.accepted.next();
  const back = reader(client);
  await w.listener.close();
  const end = await back.done;
  assert(end === "end" || end instanceof PeerError, String(end));
  await refused(w.connect(w.b), "unreachable");
});

Deno.test("options are checked before any work", async () => {
  const base = {
    host: "127.0.0.1",
    port: 1,
    expectNode: "a",
    credentials: () => ({ key: "", cert: "", ca: "" }),
    verify: () => Promise.resolve({ ok: false as const, reason: "x" }),
  };
  for (
    const [bad, msg] of [
      [{ port: 70000 }, /port must be an integer in \[0, 65535\], got 70000/],
      [{ expectNode: "" }, /expectNode must be a non-empty node name/],
      [{ timeoutMs: 0 }, /timeoutMs must be a positive number/],
      [{ maxFrameBytes: MAX_FRAME_BYTES + 1 }, /maxFrameBytes must be an integer/],
    ] as const
  ) {
    try {
      await connectPeer({ ...base, ...bad });
      fail(`accepted ${JSON.stringify(bad)}`);
    } catch (err) {
      assert(msg.test((err as Error).message), (err as Error).message);
    }
  }
});
