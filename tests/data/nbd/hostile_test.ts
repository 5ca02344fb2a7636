/**
 * Hostile and broken clients against a real in-process data plane on loopback.
 * Every case ends by proving the server still serves a second, well-behaved
 * connection. Spec references are to NetworkBlockDevice/nbd doc/proto.md.
 * @module
 */

import * as C from "../../../data/nbd/constants.ts";
import { type RunningDataPlane, startDataPlane } from "../../../data/local_plane.ts";
import { createLogger, silentLogger } from "../../../control/common/mod.ts";
import { OP_READ } from "../../../data/stats.ts";
import { assert, assertEquals } from "../../_assert.ts";
import { kernelBufferBytes, untilStalled } from "../../_backpressure.ts";
import {
  concat,
  goPayload,
  optionBytes,
  RawClient,
  type Reply,
  requestBytes,
  TimeoutError,
} from "./_raw_client.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 128 * MiB;
/** One byte more than the largest READ/WRITE accepted (C.MAX_REQUEST_SIZE, 64 MiB). */
const TOO_BIG = C.MAX_REQUEST_SIZE + 1;
const VOL = "vol";
const enc = new TextEncoder();
const dec = new TextDecoder();

interface PlaneOptions {
  requestTimeoutMs?: number;
  handshakeTimeoutMs?: number;
}

/** BALLAST_TEST_LOG=debug shows the server's log lines on stderr. */
function testLogger() {
  const level = Deno.env.get("BALLAST_TEST_LOG");
  return level ? createLogger({ level: level as "debug" }) : silentLogger();
}

async function withPlane(
  fn: (plane: RunningDataPlane) => Promise<void>,
  opts: PlaneOptions = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ballast-hostile-" });
  const plane = await startDataPlane({
    dataDir: dir,
    nbdListen: { host: "127.0.0.1", port: 0 },
    logger: testLogger(),
    nodeName: "hostile",
    ...opts,
  });
  try {
    await plane.createVolume({
      name: VOL,
      uuid: crypto.randomUUID(),
      sizeBytes: SIZE,
      description: "hostile test volume",
    });
    await fn(plane);
  } finally {
    await plane.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Deterministic bytes for a seed. */
function pattern(length: number, seed: number): Uint8Array {
  const b = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

/** Polls `pred` (a cap so a broken server fails the test instead of hanging it). */
async function eventually(pred: () => boolean, what: string, capMs = 10_000): Promise<void> {
  const deadline = Date.now() + capMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new TimeoutError(`${what}: not true within ${capMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

let probe = 0;

/**
 * A fresh, well-behaved connection writes a unique pattern, reads it back and
 * disconnects cleanly: the server survived whatever came before.
 */
async function assertServes(plane: RunningDataPlane): Promise<void> {
  probe++;
  const offset = 48 * MiB + (probe % 64) * 64 * KiB + 7;
  const data = pattern(10_000, 7000 + probe);
  const c = await RawClient.open(plane.nbdAddress, VOL, { structured: probe % 2 === 0 });
  try {
    assertEquals(await c.write(offset, data, 0x5e5e0001n), 0, "probe write");
    assertEquals(await c.read(offset, data.length, 0x5e5e0002n), data, "probe read");
    await c.disconnect();
    assertEquals((await c.expectClosed()).length, 0, "no bytes after DISC");
  } finally {
    await c.close();
  }
}

/** Opens a transmission-phase connection. */
function open(plane: RunningDataPlane, structured = false): Promise<RawClient> {
  return RawClient.open(plane.nbdAddress, VOL, { structured });
}

/** Runs `fn` with a client, always closing it. */
async function using(
  c: RawClient | Promise<RawClient>,
  fn: (c: RawClient) => Promise<void>,
): Promise<void> {
  const client = await c;
  try {
    await fn(client);
  } finally {
    await client.close();
  }
}

// ---- handshake phase ("Fixed newstyle negotiation") ------------------------------------

Deno.test("hostile: unknown client flags make the server close", async () => {
  await withPlane(async (plane) => {
    await using(RawClient.connect(plane.nbdAddress), async (c) => {
      await c.handshake(C.NBD_FLAG_C_FIXED_NEWSTYLE | 0x100);
      assertEquals((await c.expectClosed()).length, 0);
    });
    await eventually(() => plane.openConnections() === 0, "connection released");
    await assertServes(plane);
  });
});

Deno.test("hostile: a bad option magic makes the server close", async () => {
  await withPlane(async (plane) => {
    await using(RawClient.connect(plane.nbdAddress), async (c) => {
      await c.handshake();
      const bad = optionBytes(C.NBD_OPT_LIST);
      bad[0] ^= 0xff;
      await c.send(bad);
      assertEquals((await c.expectClosed()).length, 0);
    });
    await assertServes(plane);
  });
});

Deno.test("hostile: a 1 MiB option gets NBD_REP_ERR_TOO_BIG and the connection still works", async () => {
  await withPlane(async (plane) => {
    await using(RawClient.connect(plane.nbdAddress), async (c) => {
      await c.handshake();
      await c.sendOption(C.NBD_OPT_GO, new Uint8Array(1 * MiB).fill(0x41));
      const r = await c.readOptionReply();
      assertEquals([r.option, r.type], [C.NBD_OPT_GO, C.NBD_REP_ERR_TOO_BIG]);
      // Still in sync: LIST and GO work on the same connection.
      const list = await c.option(C.NBD_OPT_LIST);
      assertEquals(list.map((x) => x.type), [C.NBD_REP_SERVER, C.NBD_REP_ACK]);
      const n = await c.go(VOL);
      assertEquals(n.size, SIZE);
      assertEquals(await c.write(4096, pattern(512, 1)), 0);
      assertEquals(await c.read(4096, 512), pattern(512, 1));
    });
    await assertServes(plane);
  });
});

Deno.test("hostile: an over-long NBD_OPT_EXPORT_NAME makes the server close", async () => {
  await withPlane(async (plane) => {
    await using(RawClient.connect(plane.nbdAddress), async (c) => {
      await c.handshake();
      await c.send(optionBytes(C.NBD_OPT_EXPORT_NAME, new Uint8Array(C.MAX_OPTION_LENGTH + 1)));
      assertEquals((await c.expectClosed()).length, 0);
    });
    await assertServes(plane);
  });
});

Deno.test("hostile: garbage instead of a handshake makes the server close", async () => {
  await withPlane(async (plane) => {
    for (
      const garbage of [
        enc.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]), // TLS ClientHello
        pattern(4096, 99),
      ]
    ) {
      await using(RawClient.connect(plane.nbdAddress), async (c) => {
        await c.readExact(18); // greeting
        await c.send(garbage);
        await c.expectClosed();
      });
    }
    // Valid client flags, then garbage where the first option should be.
    await using(RawClient.connect(plane.nbdAddress), async (c) => {
      await c.handshake();
      await c.send(pattern(64, 5));
      assertEquals((await c.expectClosed()).length, 0);
    });
    await eventually(() => plane.openConnections() === 0, "connections released");
    await assertServes(plane);
  });
});

Deno.test("hostile: a client that disconnects mid-option or before its flags is cleaned up", async () => {
  await withPlane(async (plane) => {
    // Half an option header.
    let c = await RawClient.connect(plane.nbdAddress);
    await c.handshake();
    await c.send(optionBytes(C.NBD_OPT_GO, goPayload(VOL)).subarray(0, 10));
    await c.close();
    // A full header announcing 100 bytes, then 10 of them.
    c = await RawClient.connect(plane.nbdAddress);
    await c.handshake();
    await c.send(concat(optionBytes(C.NBD_OPT_GO, new Uint8Array(100)).subarray(0, 26)));
    await c.close();
    // Two bytes of client flags.
    c = await RawClient.connect(plane.nbdAddress);
    await c.readExact(18);
    await c.send(new Uint8Array([0, 0]));
    await c.close();
    await eventually(() => plane.openConnections() === 0, "connections released");
    await assertServes(plane);
  });
});

Deno.test("hostile: NBD_OPT_EXPORT_NAME for an unknown export closes without a reply", async () => {
  await withPlane(async (plane) => {
    await using(RawClient.connect(plane.nbdAddress), async (c) => {
      await c.handshake();
      await c.sendOption(C.NBD_OPT_EXPORT_NAME, enc.encode("no-such-volume"));
      assertEquals((await c.expectClosed()).length, 0);
    });
    // The same name through GO is a polite ERR_UNKNOWN, and GO on the real one follows.
    await using(RawClient.connect(plane.nbdAddress), async (c) => {
      await c.handshake();
      const r = await c.option(C.NBD_OPT_GO, goPayload("no-such-volume"));
      assertEquals(r.map((x) => x.type), [C.NBD_REP_ERR_UNKNOWN]);
      assertEquals((await c.go(VOL)).size, SIZE);
    });
    await assertServes(plane);
  });
});

Deno.test("hostile: a client that never sends its flags is closed after the handshake timeout", async () => {
  await withPlane(async (plane) => {
    await using(RawClient.connect(plane.nbdAddress), async (c) => {
      await c.readExact(18);
      assertEquals((await c.expectClosed()).length, 0);
    });
    await assertServes(plane);
  }, { handshakeTimeoutMs: 1000 });
});

// ---- transmission phase ("Transmission", "Request types", "Error values") -------------

Deno.test("hostile: a bad request magic disconnects, after replying to the valid requests before it", async () => {
  await withPlane(async (plane) => {
    await using(open(plane), async (c) => {
      const bad = requestBytes({ type: C.NBD_CMD_READ, handle: 2n, offset: 0, length: 512 });
      bad.set([0xde, 0xad, 0xbe, 0xef], 0);
      await c.send(concat(
        requestBytes({ type: C.NBD_CMD_READ, handle: 1n, offset: 0, length: 512 }),
        bad,
        requestBytes({ type: C.NBD_CMD_READ, handle: 3n, offset: 0, length: 512 }),
      ));
      const r = await c.readReply(512);
      assertEquals([r.handle, r.error, r.data.length], [1n, 0, 512]);
      assertEquals((await c.expectClosed()).length, 0, "nothing after the bad magic");
    });
    await assertServes(plane);
  });
});

/** Sends `bad`, expects one error reply, then proves the same connection still works. */
async function rejectAndContinue(
  c: RawClient,
  bad: Uint8Array,
  handle: bigint,
  error: number,
): Promise<Reply> {
  const follow = pattern(700, Number(handle & 0xffffn));
  // The bad request and a good WRITE+READ go in one segment: the server must stay in sync.
  await c.send(concat(
    bad,
    requestBytes({
      type: C.NBD_CMD_WRITE,
      handle: handle + 1n,
      offset: 8 * MiB + 3,
      length: follow.length,
      payload: follow,
    }),
    requestBytes({ type: C.NBD_CMD_READ, handle: handle + 2n, offset: 8 * MiB + 3, length: 700 }),
  ));
  const r = await c.readReply();
  assertEquals([r.handle, r.error], [handle, error], "reply to the bad request");
  const w = await c.readReply();
  assertEquals([w.handle, w.error], [handle + 1n, 0], "reply to the following WRITE");
  const rd = await c.readReply(700);
  assertEquals([rd.handle, rd.error], [handle + 2n, 0], "reply to the following READ");
  assertEquals(rd.data, follow);
  return r;
}

Deno.test("hostile: an unknown command gets EINVAL and the connection continues", async () => {
  await withPlane(async (plane) => {
    for (const structured of [false, true]) {
      await using(open(plane, structured), async (c) => {
        let h = 0x100n;
        for (const type of [8, 9, 0xff, 0xffff]) {
          const bad = requestBytes({ type, handle: h, offset: 0, length: 512 });
          const r = await rejectAndContinue(c, bad, h, C.NBD_EINVAL);
          if (structured) {
            assertEquals(r.chunks, [C.NBD_REPLY_TYPE_ERROR]);
            assert(r.message?.includes(`unknown command ${type}`), r.message);
          }
          h += 0x10n;
        }
      });
    }
    await assertServes(plane);
  });
});

Deno.test("hostile: unknown or misplaced flags get EINVAL; a refused WRITE's payload is skipped", async () => {
  await withPlane(async (plane) => {
    await using(open(plane), async (c) => {
      const cases = [
        { type: C.NBD_CMD_READ, flags: 1 << 7, length: 512 },
        { type: C.NBD_CMD_READ, flags: C.NBD_CMD_FLAG_DF, length: 512 }, // DF without structured
        { type: C.NBD_CMD_READ, flags: C.NBD_CMD_FLAG_REQ_ONE, length: 512 },
        { type: C.NBD_CMD_TRIM, flags: C.NBD_CMD_FLAG_NO_HOLE, length: 4096 },
        { type: C.NBD_CMD_FLUSH, flags: 0x8000, length: 0 },
      ];
      let h = 0x200n;
      for (const spec of cases) {
        await rejectAndContinue(
          c,
          requestBytes({ ...spec, handle: h, offset: 0 }),
          h,
          C.NBD_EINVAL,
        );
        h += 0x10n;
      }
      // A WRITE with a bad flag: its 4 KiB payload must be consumed, not parsed as requests.
      const payload = new Uint8Array(4096);
      for (let i = 0; i + 28 <= payload.length; i += 28) {
        payload.set(requestBytes({ type: C.NBD_CMD_DISC, handle: 0n, length: 0 }), i);
      }
      const badWrite = requestBytes({
        type: C.NBD_CMD_WRITE,
        flags: 1 << 9,
        handle: h,
        offset: 0,
        length: payload.length,
        payload,
      });
      await rejectAndContinue(c, badWrite, h, C.NBD_EINVAL);
      assertEquals(await c.read(0, 4096), new Uint8Array(4096), "refused WRITE wrote nothing");
    });
    await assertServes(plane);
  });
});

Deno.test("hostile: READ past the end gets EINVAL, WRITE past the end ENOSPC with its payload skipped", async () => {
  await withPlane(async (plane) => {
    for (const structured of [false, true]) {
      await using(open(plane, structured), async (c) => {
        const read = requestBytes({
          type: C.NBD_CMD_READ,
          handle: 0x300n,
          offset: SIZE - 256,
          length: 512,
        });
        const r = await rejectAndContinue(c, read, 0x300n, C.NBD_EINVAL);
        if (structured) assert(r.message?.includes("beyond the export size"), r.message);

        const write = requestBytes({
          type: C.NBD_CMD_WRITE,
          handle: 0x310n,
          offset: SIZE - 256,
          length: 512,
          payload: pattern(512, 3),
        });
        await rejectAndContinue(c, write, 0x310n, C.NBD_ENOSPC);
        // Nothing of the refused WRITE landed in the last 256 bytes.
        assertEquals(await c.read(SIZE - 256, 256), new Uint8Array(256));
        // Exactly at the end is fine.
        assertEquals(await c.write(SIZE - 256, pattern(256, 4)), 0);
        assertEquals(await c.read(SIZE - 256, 256), pattern(256, 4));
        assertEquals(await c.write(SIZE - 256, new Uint8Array(256)), 0);
      });
    }
    await assertServes(plane);
  });
});

Deno.test("hostile: offset 2^64-1 is refused (EINVAL for READ/CACHE, ENOSPC for WRITE/TRIM/WRITE_ZEROES)", async () => {
  await withPlane(async (plane) => {
    await using(open(plane, true), async (c) => {
      const top = 2n ** 64n - 1n;
      const table: [number, number, number][] = [
        [C.NBD_CMD_READ, 1, C.NBD_EINVAL],
        [C.NBD_CMD_READ, 4096, C.NBD_EINVAL], // wraps around 2^64
        [C.NBD_CMD_CACHE, 4096, C.NBD_EINVAL],
        [C.NBD_CMD_WRITE, 1, C.NBD_ENOSPC],
        [C.NBD_CMD_WRITE, 4096, C.NBD_ENOSPC],
        [C.NBD_CMD_TRIM, 4096, C.NBD_ENOSPC],
        [C.NBD_CMD_WRITE_ZEROES, 4096, C.NBD_ENOSPC],
      ];
      let h = 0x400n;
      for (const [type, length, error] of table) {
        const payload = type === C.NBD_CMD_WRITE ? pattern(length, 9) : undefined;
        const bad = requestBytes({ type, handle: h, offset: top, length, payload });
        await rejectAndContinue(c, bad, h, error);
        h += 0x10n;
      }
      // 2^53 (beyond what a double holds exactly) is refused too, not rounded into range.
      const at53 = requestBytes({ type: C.NBD_CMD_READ, handle: h, offset: 2n ** 53n, length: 1 });
      await rejectAndContinue(c, at53, h, C.NBD_EINVAL);
    });
    await assertServes(plane);
  });
});

Deno.test("hostile: READ of 64 MiB + 1 (over the 64 MiB limit) gets EINVAL without data, EOVERFLOW with DF", async () => {
  await withPlane(async (plane) => {
    for (const structured of [false, true]) {
      await using(open(plane, structured), async (c) => {
        const big = requestBytes({
          type: C.NBD_CMD_READ,
          handle: 0x500n,
          offset: 0,
          length: TOO_BIG,
        });
        await rejectAndContinue(c, big, 0x500n, C.NBD_EINVAL);
        if (structured) {
          // "don't fragment": the one case where EOVERFLOW is the answer.
          const df = requestBytes({
            type: C.NBD_CMD_READ,
            flags: C.NBD_CMD_FLAG_DF,
            handle: 0x501n,
            offset: 0,
            length: TOO_BIG,
          });
          await rejectAndContinue(c, df, 0x501n, C.NBD_EOVERFLOW);
        }
        // 32 MiB exactly is allowed.
        const data = await c.read(0, C.MAX_BLOCK_SIZE, 0x510n);
        assertEquals(data.length, C.MAX_BLOCK_SIZE);
      });
    }
    await assertServes(plane);
  });
});

Deno.test("hostile: WRITE of 64 MiB + 1 gets EINVAL, its payload is drained and the connection stays in sync", async () => {
  await withPlane(async (plane) => {
    await using(open(plane), async (c) => {
      const length = TOO_BIG;
      const header = requestBytes({ type: C.NBD_CMD_WRITE, handle: 0x600n, offset: 0, length });
      await c.send(header);
      // The payload is made of valid-looking requests: parsing it would desync the stream.
      const payload = new Uint8Array(length);
      const fake = requestBytes({ type: C.NBD_CMD_WRITE, handle: 0xbadn, offset: 0, length: 0 });
      for (let i = 0; i + 28 <= length; i += 1 * MiB) payload.set(fake, i);
      for (let off = 0; off < length; off += 4 * MiB) {
        await c.send(payload.subarray(off, Math.min(off + 4 * MiB, length)));
      }
      const r = await c.readReply();
      assertEquals([r.handle, r.error], [0x600n, C.NBD_EINVAL]);
      await rejectAndContinue(
        c,
        requestBytes({ type: 0xffff, handle: 0x610n, length: 0 }),
        0x610n,
        C.NBD_EINVAL,
      );
      assertEquals(c.buffered, 0, "no stray replies");
      assertEquals(await c.read(0, 4096), new Uint8Array(4096), "oversized WRITE wrote nothing");
    });
    await assertServes(plane);
  });
});

Deno.test("hostile: READ and WRITE just over the advertised 32 MiB and at the 64 MiB limit are accepted, streamed, and read back whole", async () => {
  await withPlane(async (plane) => {
    for (const structured of [false, true]) {
      await using(open(plane, structured), async (c) => {
        let whole: Uint8Array = new Uint8Array(0);
        for (const [length, offset] of [[C.MAX_BLOCK_SIZE + 1, 1], [C.MAX_REQUEST_SIZE, 0]]) {
          whole = pattern(length, length + (structured ? 1 : 0));
          assertEquals(await c.write(offset, whole, 0x520n), 0, `WRITE of ${length}`);
          assertEquals(await c.read(offset, length, 0x521n), whole, `READ of ${length}`);
        }
        // A streamed WRITE with FUA is answered only once flushed, like any other.
        const fua = pattern(C.STREAM_THRESHOLD + 4096, 7);
        assertEquals(await c.write(5 * MiB, fua, 0x522n, C.NBD_CMD_FLAG_FUA), 0);
        assertEquals(await c.read(5 * MiB, fua.length, 0x523n), fua);
        // Requests after the streamed ones are parsed where they start.
        assertEquals(await c.read(0, 4096, 0x524n), whole.subarray(0, 4096));
      });
    }
    await assertServes(plane);
  });
});

Deno.test("hostile: a streamed WRITE refused by validation (past the end) has its payload skipped and the stream stays in step", async () => {
  await withPlane(async (plane) => {
    await using(open(plane), async (c) => {
      const length = C.STREAM_THRESHOLD + 1;
      const header = requestBytes({
        type: C.NBD_CMD_WRITE,
        handle: 0x530n,
        offset: SIZE - 4096,
        length,
      });
      const payload = new Uint8Array(length);
      const fake = requestBytes({ type: C.NBD_CMD_WRITE, handle: 0xbadn, offset: 0, length: 0 });
      for (let i = 0; i + 28 <= length; i += 1 * MiB) payload.set(fake, i);
      await c.send(concat(header, payload));
      const r = await c.readReply();
      assertEquals([r.handle, r.error], [0x530n, C.NBD_ENOSPC]);
      assertEquals(await c.read(SIZE - 4096, 4096, 0x531n), new Uint8Array(4096));
      assertEquals(c.buffered, 0, "no stray replies");
    });
    await assertServes(plane);
  });
});

Deno.test("hostile: a WRITE whose payload never arrives does not stall others and is closed by the request timeout", async () => {
  await withPlane(async (plane) => {
    const stuck = await open(plane);
    const idle = await open(plane);
    try {
      const header = requestBytes({
        type: C.NBD_CMD_WRITE,
        handle: 0x700n,
        offset: 16 * MiB,
        length: 64 * KiB,
      });
      await stuck.send(concat(header, pattern(1000, 1)));
      // Other connections work while it waits.
      await assertServes(plane);
      // The stuck one is closed by the watchdog, with no reply for the half-sent WRITE.
      assertEquals((await stuck.expectClosed()).length, 0);
      // A connection that was merely idle for as long is not.
      assertEquals(idle.ended, false, "idle connection closed by the request timeout");
      assertEquals(await idle.read(16 * MiB, 1000), new Uint8Array(1000), "nothing written");
    } finally {
      await stuck.close();
      await idle.close();
    }
    await assertServes(plane);
  }, { requestTimeoutMs: 1500 });
});

Deno.test("hostile: half a request header is closed by the request timeout", async () => {
  await withPlane(async (plane) => {
    await using(open(plane), async (c) => {
      await c.send(requestBytes({ type: C.NBD_CMD_READ, handle: 1n, length: 512 }).subarray(0, 10));
      assertEquals((await c.expectClosed()).length, 0);
    });
    await assertServes(plane);
  }, { requestTimeoutMs: 1500 });
});

// Regression: the payload of an oversized WRITE being discarded counts as an incomplete
// request for the watchdog (it used to look idle and was never closed).
Deno.test("hostile: an oversized WRITE whose payload never arrives is closed by the request timeout", async () => {
  await withPlane(async (plane) => {
    await using(open(plane), async (c) => {
      await c.send(requestBytes({ type: C.NBD_CMD_WRITE, handle: 0x780n, length: TOO_BIG }));
      await c.send(new Uint8Array(1000));
      const r = await c.readReply();
      assertEquals([r.handle, r.error], [0x780n, C.NBD_EINVAL]);
      assertEquals((await c.expectClosed()).length, 0);
    });
    await assertServes(plane);
  }, { requestTimeoutMs: 1500 });
});

/**
 * Sends `bytes` one at a time every `gapMs` until the server closes the connection or
 * they run out. Returns how many were sent before the server closed, or -1 if it never did.
 */
async function trickle(c: RawClient, bytes: Uint8Array, gapMs: number): Promise<number> {
  for (let i = 0; i < bytes.length; i++) {
    if (c.ended) return i;
    try {
      await c.send(bytes.subarray(i, i + 1));
    } catch {
      return i; // reset by the server
    }
    await new Promise((r) => setTimeout(r, gapMs));
  }
  return -1;
}

// Regression: requestTimeoutMs runs from when a request started arriving, not from the last
// byte, so a client trickling one byte at a time (slowloris) is closed.
Deno.test("hostile: a request trickled one byte at a time is still closed by the request timeout", async () => {
  await withPlane(async (plane) => {
    await using(open(plane), async (c) => {
      const write = requestBytes({
        type: C.NBD_CMD_WRITE,
        handle: 0x790n,
        offset: 0,
        length: 40,
        payload: new Uint8Array(40),
      });
      // 68 bytes 150 ms apart: about 10 s, several times the 1.5 s limit.
      const sent = await trickle(c, write, 150);
      assert(sent !== -1, "the server let a 68-byte request take 10 s under a 1.5 s limit");
      await c.expectClosed();
    });
    await assertServes(plane);
  }, { requestTimeoutMs: 1500 });
});

// Regression: handshakeTimeoutMs runs from accept, so a client that keeps sending options
// must still finish negotiating in time.
Deno.test("hostile: a client that keeps negotiating is closed by the handshake timeout", async () => {
  await withPlane(async (plane) => {
    await using(RawClient.connect(plane.nbdAddress), async (c) => {
      await c.handshake();
      // NBD_OPT_LIST every 300 ms for about 6 s, four times the 1.5 s limit.
      let closed = false;
      for (let i = 0; i < 20 && !closed; i++) {
        try {
          await c.sendOption(C.NBD_OPT_LIST);
          await c.readOptionReply();
          await c.readOptionReply();
        } catch {
          closed = true;
        }
        await new Promise((r) => setTimeout(r, 300));
      }
      assert(closed || c.ended, "the server let a client negotiate for 6 s under a 1.5 s limit");
    });
    await assertServes(plane);
  }, { handshakeTimeoutMs: 1500 });
});

/** MAX_QUEUED_OUT in data/nbd/connection.ts: reply bytes a connection may queue. */
const OUTPUT_LIMIT = 64 * MiB;

// Regression: MAX_QUEUED_OUT (64 MiB) is enforced before each request, so a client that
// sends many 32 MiB READ headers without reading replies cannot make the server allocate
// 32 MiB per 28-byte header. This case asks for 768 MiB, or for twice the bound below if
// this machine's kernel buffers make that more.
Deno.test("hostile: pipelined 32 MiB READs from a client that does not read replies stay within the output limit", async () => {
  await withPlane(async (plane) => {
    // What the server may hold: its queue, a reply being read from the store and one being
    // built, and replies already handed to a kernel that can absorb this much (their buffers
    // may not be collected yet).
    const bound = OUTPUT_LIMIT + 2 * C.MAX_BLOCK_SIZE + await kernelBufferBytes();
    const count = Math.max(24, Math.ceil((2 * bound) / C.MAX_BLOCK_SIZE));
    // A bare socket that negotiates blind and never reads: replies pile up at the server.
    const [host, port] = plane.nbdAddress.split(":");
    const conn = await Deno.connect({ hostname: host, port: Number(port) });
    try {
      const flags = new Uint8Array([0, 0, 0, C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES]);
      const reads = Array.from(
        { length: count },
        (_, i) =>
          requestBytes({
            type: C.NBD_CMD_READ,
            handle: BigInt(i),
            offset: 0,
            length: C.MAX_BLOCK_SIZE,
          }),
      );
      const before = Deno.memoryUsage().external;
      const all = concat(flags, optionBytes(C.NBD_OPT_GO, goPayload(VOL)), ...reads);
      for (let off = 0; off < all.length;) off += await conn.write(all.subarray(off));
      // Judge once the server has run what it will (reads executed stop changing).
      const stats = plane.volumeStats().find((s) => s.volume === VOL)!;
      await untilStalled(() => stats.ops[OP_READ], count);
      const executed = stats.ops[OP_READ];
      assert(
        executed < count,
        `the server executed all ${count} READs for a client that reads none`,
      );
      const grown = Deno.memoryUsage().external - before;
      assert(
        grown <= bound,
        `server buffered ${Math.round(grown / MiB)} MiB of replies for a client that reads none ` +
          `(${executed} of ${count} READs executed; at most ${
            Math.round(bound / MiB)
          } MiB may be held)`,
      );
    } finally {
      conn.close();
    }
    await assertServes(plane);
  });
});

Deno.test("hostile: clients that vanish mid-header or mid-WRITE-payload leave nothing behind and count as no protocol error", async () => {
  await withPlane(async (plane) => {
    const full = requestBytes({
      type: C.NBD_CMD_WRITE,
      handle: 0x800n,
      offset: 20 * MiB,
      length: 256 * KiB,
      payload: pattern(256 * KiB, 8),
    });
    for (const cut of [1, 27, 28, 28 + 1, 28 + 128 * KiB, full.length - 1]) {
      const c = await open(plane);
      await c.send(full.subarray(0, cut));
      await c.close();
    }
    await eventually(() => plane.openConnections() === 0, "connections released");
    await using(open(plane), async (c) => {
      assertEquals(await c.read(20 * MiB, 256 * KiB), new Uint8Array(256 * KiB), "partial WRITE");
    });
    await assertServes(plane);
    // A client gone mid-message broke no rule: nothing counted as a protocol error.
    assertEquals(plane.volumeStats().find((s) => s.volume === VOL)!.protocolErrors, 0);
  });
});

Deno.test("hostile: 200 pipelined requests in one write get 200 replies with matching handles", async () => {
  await withPlane(async (plane) => {
    for (const structured of [false, true]) {
      await using(open(plane, structured), async (c) => {
        // Region B is written first; the pipeline reads it while writing region A.
        const base = structured ? 30 * MiB : 10 * MiB;
        const bData = pattern(100 * 512, structured ? 2 : 1);
        assertEquals(await c.write(base + 1 * MiB, bData), 0);

        const parts: Uint8Array[] = [];
        const expectRead = new Map<bigint, Uint8Array>();
        const hi = 0xfeedface00000000n;
        for (let i = 0; i < 100; i++) {
          const wh = hi | BigInt(2 * i);
          const rh = hi | BigInt(2 * i + 1);
          parts.push(requestBytes({
            type: C.NBD_CMD_WRITE,
            flags: i % 10 === 0 ? C.NBD_CMD_FLAG_FUA : 0,
            handle: wh,
            offset: base + i * 512,
            length: 512,
            payload: pattern(512, 1000 + i),
          }));
          const type = i % 25 === 0 ? C.NBD_CMD_FLUSH : C.NBD_CMD_READ;
          parts.push(requestBytes({
            type,
            handle: rh,
            offset: type === C.NBD_CMD_FLUSH ? 0 : base + 1 * MiB + i * 512,
            length: type === C.NBD_CMD_FLUSH ? 0 : 512,
          }));
          if (type === C.NBD_CMD_READ) expectRead.set(rh, bData.slice(i * 512, (i + 1) * 512));
        }
        await c.send(concat(...parts));

        const seen = new Map<bigint, Reply>();
        for (let i = 0; i < 200; i++) {
          const r = await c.readReply((h) => (expectRead.has(h) ? 512 : 0));
          assert(!seen.has(r.handle), `duplicate reply for handle 0x${r.handle.toString(16)}`);
          seen.set(r.handle, r);
        }
        assertEquals(seen.size, 200);
        for (let i = 0; i < 200; i++) {
          const r = seen.get(hi | BigInt(i));
          assert(r, `no reply for handle ${i}`);
          assertEquals(r.error, 0, `handle ${i}`);
          const want = expectRead.get(hi | BigInt(i));
          if (want) assertEquals(r.data, want, `READ data for handle ${i}`);
        }
        for (let i = 0; i < 100; i += 33) {
          assertEquals(await c.read(base + i * 512, 512), pattern(512, 1000 + i));
        }
      });
    }
    await assertServes(plane);
  });
});

Deno.test("hostile: NBD_CMD_DISC with requests in flight sends their replies before closing", async () => {
  await withPlane(async (plane) => {
    await using(open(plane), async (c) => {
      await c.send(concat(
        requestBytes({
          type: C.NBD_CMD_WRITE,
          flags: C.NBD_CMD_FLAG_FUA,
          handle: 1n,
          offset: 24 * MiB,
          length: 64 * KiB,
          payload: pattern(64 * KiB, 21),
        }),
        requestBytes({ type: C.NBD_CMD_FLUSH, handle: 2n, length: 0 }),
        requestBytes({ type: C.NBD_CMD_READ, handle: 3n, offset: 24 * MiB, length: 4096 }),
        requestBytes({
          type: C.NBD_CMD_WRITE,
          handle: 4n,
          offset: 25 * MiB,
          length: 4096,
          payload: pattern(4096, 22),
        }),
        requestBytes({ type: C.NBD_CMD_FLUSH, handle: 5n, length: 0 }),
        requestBytes({ type: C.NBD_CMD_DISC, handle: 6n, length: 0 }),
      ));
      const got = new Map<bigint, Reply>();
      for (let i = 0; i < 5; i++) {
        const r = await c.readReply((h) => (h === 3n ? 4096 : 0));
        got.set(r.handle, r);
      }
      assertEquals([...got.keys()].sort(), [1n, 2n, 3n, 4n, 5n]);
      assertEquals([...got.values()].map((r) => r.error), [0, 0, 0, 0, 0]);
      assertEquals(got.get(3n)!.data, pattern(64 * KiB, 21).slice(0, 4096));
      assertEquals((await c.expectClosed()).length, 0, "no reply to DISC itself");
    });
    await using(open(plane), async (c) => {
      assertEquals(await c.read(25 * MiB, 4096), pattern(4096, 22));
    });
    await assertServes(plane);
  });
});

Deno.test("hostile: BLOCK_STATUS without a negotiated context gets EINVAL, with one it answers", async () => {
  await withPlane(async (plane) => {
    await using(open(plane, true), async (c) => {
      const bs = requestBytes({ type: C.NBD_CMD_BLOCK_STATUS, handle: 0x900n, length: 4096 });
      await rejectAndContinue(c, bs, 0x900n, C.NBD_EINVAL);
    });
    await using(RawClient.open(plane.nbdAddress, VOL, { baseAllocation: true }), async (c) => {
      await c.request({
        type: C.NBD_CMD_BLOCK_STATUS,
        flags: C.NBD_CMD_FLAG_REQ_ONE,
        handle: 0x910n,
        offset: 0,
        length: 1 * MiB,
      });
      const r = await c.readReply();
      assertEquals(r.chunks, [C.NBD_REPLY_TYPE_BLOCK_STATUS]);
      assertEquals(r.status, [[1 * MiB, C.NBD_STATE_HOLE | C.NBD_STATE_ZERO]]);
    });
    await assertServes(plane);
  });
});

// ---- a real client with strict mode off (libnbd) ---------------------------------------

/**
 * Debian's nbdsh runs `python3 -m nbd` from PATH; a python3 from pyenv or a venv
 * earlier on PATH lacks the nbd module, so the system one goes first.
 */
const NBDSH_ENV = { PATH: `/usr/bin:${Deno.env.get("PATH") ?? ""}` };
const NBDSH_MISSING = await nbdshMissing();
if (NBDSH_MISSING) {
  // deno-lint-ignore no-console
  console.warn(`hostile_test: skipping the libnbd cases: ${NBDSH_MISSING}`);
}

async function nbdshMissing(): Promise<string | undefined> {
  try {
    const out = await new Deno.Command("nbdsh", {
      args: ["-c", "import nbd; nbd.NBD().set_strict_mode(0)"],
      env: NBDSH_ENV,
      stdout: "null",
      stderr: "piped",
    }).output();
    return out.success ? undefined : `nbdsh does not work: ${dec.decode(out.stderr).trim()}`;
  } catch (err) {
    return `nbdsh not found (${(err as Error).name}); install python3-libnbd`;
  }
}

/** libnbd with every client-side check off: errors come from the server, as errno. */
const NBDSH_SCRIPT = `
import json, os, nbd
h.set_request_structured_replies(os.environ["STRUCTURED"] == "1")
h.connect_uri(os.environ["URI"])
h.set_strict_mode(0)
size = h.get_size()
out = {"structured": h.get_structured_replies_negotiated(), "size": size}
def attempt(name, f):
    try:
        f()
        out[name] = "ok"
    except nbd.Error as e:
        out[name] = e.errno  # the errno name libnbd got from the server
attempt("pread_past_end", lambda: h.pread(512, size - 256))
attempt("pread_offset_2_63", lambda: h.pread(512, 2**63))
attempt("pwrite_past_end", lambda: h.pwrite(b"x" * 512, size - 256))
attempt("trim_past_end", lambda: h.trim(8192, size - 4096))
attempt("zero_past_end", lambda: h.zero(8192, size - 4096))
attempt("pread_zero_length", lambda: h.pread(0, 4096))
attempt("pread_unknown_flag", lambda: h.pread(512, 0, 1 << 7))
attempt("flush_ok", lambda: h.flush())
attempt("pwrite_ok", lambda: h.pwrite(b"y" * 512, 0))
out["read_back"] = h.pread(512, 0) == b"y" * 512
h.shutdown()
print(json.dumps(out))
`;

for (const structured of [true, false]) {
  Deno.test({
    name:
      `hostile: libnbd with strict mode off sees EINVAL/ENOSPC as errno (structured=${structured})`,
    ignore: NBDSH_MISSING !== undefined,
    fn: async () => {
      await withPlane(async (plane) => {
        const out = await new Deno.Command("nbdsh", {
          args: ["-c", NBDSH_SCRIPT],
          env: {
            ...NBDSH_ENV,
            URI: `nbd://${plane.nbdAddress}/${VOL}`,
            STRUCTURED: structured ? "1" : "0",
          },
          stdout: "piped",
          stderr: "piped",
        }).output();
        const stderr = dec.decode(out.stderr);
        assertEquals(out.code, 0, `nbdsh failed: ${stderr}`);
        assertEquals(JSON.parse(dec.decode(out.stdout)), {
          structured,
          size: SIZE,
          pread_past_end: "EINVAL",
          pread_offset_2_63: "EINVAL",
          pwrite_past_end: "ENOSPC",
          trim_past_end: "ENOSPC",
          zero_past_end: "ENOSPC",
          pread_zero_length: "EINVAL",
          pread_unknown_flag: "EINVAL",
          flush_ok: "ok",
          pwrite_ok: "ok",
          read_back: true,
        });
        await assertServes(plane);
      });
    },
  });
}
