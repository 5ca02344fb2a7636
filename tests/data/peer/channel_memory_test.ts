/**
 * A node whose peer connection is not read keeps its memory bounded while the other node
 * pushes 1 GiB at it, whichever end of the connection it is: the receiving node runs in its
 * own process (_peer_sink.ts) so that its resident memory can be read from /proc. And a
 * connection aborted while that node does not read leaves nothing behind in the kernel to be
 * delivered later.
 */
import { openPki } from "../../../ca/mod.ts";
import {
  connectPeer,
  listenPeer,
  nodeVerifier,
  type PeerConnection,
} from "../../../data/peer/mod.ts";
import pino from "pino";
import { assert, assertEquals, fail } from "../../_assert.ts";

const MiB = 1024 * 1024;
const TOTAL = 1024; // MiB pushed
/** Sends in flight at once from the test (its own memory is not what is measured). */
const WINDOW = 32;

/** A child process's resident memory now, MiB. */
async function rssMiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]) / 1024;
}

/** Reads JSON lines from a child's stdout. */
function jsonLines(stream: ReadableStream<Uint8Array>): () => Promise<Record<string, unknown>> {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  return async () => {
    while (!buf.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the sink ended its output (after ${JSON.stringify(buf)})`);
      buf += value;
    }
    const i = buf.indexOf("\n");
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    return JSON.parse(line);
  };
}

/** Starts _peer_sink.ts with `args`: its process, its next JSON line, its stdin. */
function spawnSink(args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./_peer_sink.ts", import.meta.url).pathname, ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  return { child, next: jsonLines(child.stdout), stdin: child.stdin.getWriter() };
}

/** Ends a sink from spawnSink(). */
async function stopSink(
  child: Deno.ChildProcess,
  stdin: WritableStreamDefaultWriter<Uint8Array>,
): Promise<void> {
  await stdin.close().catch(() => {});
  try {
    child.kill("SIGKILL");
  } catch { /* already gone */ }
  await child.status;
}

for (const role of ["listen", "connect"] as const) {
  const who = role === "listen" ? "listening" : "connecting";
  Deno.test(`a ${who} node that does not read keeps its memory bounded while a peer pushes 1 GiB, then takes all of it`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "ballast-peer-memory-" });
    const pki = await openPki(dir, { nodeName: "a", ipAddresses: ["127.0.0.1"] });
    const issued = await pki.issue({ role: "node", name: "b", ipAddresses: ["127.0.0.1"] });
    const b = { key: issued.keyPem!, cert: issued.certPem, ca: pki.trustBundlePem() };
    const credsFile = `${dir}/b.json`;
    await Deno.writeTextFile(credsFile, JSON.stringify(b));
    const logger = pino({ level: "warn" });

    // The test is node b when the sink listens, node a when the sink connects.
    let sinkPort = "0";
    let listener: Awaited<ReturnType<typeof listenPeer>> | undefined;
    const accepted = Promise.withResolvers<PeerConnection>();
    if (role === "connect") {
      listener = await listenPeer({
        host: "127.0.0.1",
        port: 0,
        credentials: () => pki.credentials("node"),
        verify: nodeVerifier(pki, "clientAuth"),
        onConnection: (c) => accepted.resolve(c),
        logger,
      });
      sinkPort = listener.address.split(":").at(-1)!;
    }
    const { child, next, stdin } = spawnSink([role, dir, credsFile, sinkPort]);
    try {
      let conn: PeerConnection;
      if (role === "listen") {
        const { port } = await next();
        conn = await connectPeer({
          host: "127.0.0.1",
          port: Number(port),
          expectNode: "a",
          credentials: () => b,
          verify: nodeVerifier(pki, "serverAuth"),
          logger,
        });
      } else {
        conn = await accepted.promise;
      }
      assertEquals((await next()).connected, true);

      // Push 1 GiB in 1 MiB frames, WINDOW at a time, while the sink reads nothing.
      const frame = new Uint8Array(MiB).fill(0x5a);
      let sent = 0;
      let issuedSends = 0;
      let failure: unknown;
      const pump = (async () => {
        const inflight = new Set<Promise<void>>();
        while (issuedSends < TOTAL) {
          const p: Promise<void> = conn.send(frame).then(() => {
            sent++;
            inflight.delete(p);
          });
          inflight.add(p);
          issuedSends++;
          if (inflight.size >= WINDOW) await Promise.race(inflight);
        }
        await Promise.all(inflight);
      })().catch((err) => (failure = err));

      let peak = 0;
      let last = -1;
      let since = Date.now();
      const start = Date.now();
      while (true) {
        peak = Math.max(peak, await rssMiB(child.pid));
        if (failure) throw failure;
        if (sent === TOTAL) break;
        if (sent !== last) [last, since] = [sent, Date.now()];
        else if (Date.now() - since >= 1000) break; // held back
        if (Date.now() - start > 60_000) fail(`no stall and no end within 60 s (${sent} MiB)`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const heldBack = sent;
      const peakHeld = peak;
      // Measured 2026-12-04 on this kind of machine: held back after 5-9 MiB with the sink at
      // about 80 MiB, and 155 MiB at most while it then took the 1 GiB; with
      // BALLAST_TLS_DIRECT_READS=off (pausing does not stop node:tls reading) the sink took
      // the whole 1 GiB without reading, and its RSS grew past 1 GiB.
      assert(heldBack < TOTAL, `the sink took all ${TOTAL} MiB without reading`);
      assert(peak < 256, `the sink's RSS reached ${peak.toFixed(0)} MiB holding ${heldBack} MiB`);

      // Now it reads: everything arrives.
      await stdin.write(new TextEncoder().encode("read\n"));
      while (sent < TOTAL) {
        peak = Math.max(peak, await rssMiB(child.pid));
        if (failure) throw failure;
        if (Date.now() - start > 120_000) fail(`only ${sent} of ${TOTAL} MiB sent in 120 s`);
        await new Promise((r) => setTimeout(r, 50));
      }
      await pump;
      conn.close();
      const done = await next();
      assertEquals(done, { received: TOTAL * MiB, frames: TOTAL });
      assert(peak < 256, `the sink's RSS reached ${peak.toFixed(0)} MiB while reading`);
      // deno-lint-ignore no-console
      console.error(
        `[peer memory, ${who} sink] held back after ${heldBack} MiB, RSS up to ${
          peakHeld.toFixed(0)
        } MiB; peak RSS while taking 1 GiB ${peak.toFixed(0)} MiB`,
      );
      assertEquals((await child.status).code, 0);
    } finally {
      await stopSink(child, stdin);
      await listener?.close();
      await Deno.remove(dir, { recursive: true });
    }
  });
}

/**
 * This process's TCP sockets connected to 127.0.0.1:`port` (from /proc/net/tcp): state (hex,
 * 01 established, 04 FIN_WAIT1) and bytes in the send queue.
 */
async function socketsTo(port: number): Promise<{ state: string; sendQueue: number }[]> {
  const inodes = new Set<string>();
  for await (const fd of Deno.readDir("/proc/self/fd")) {
    const target = await Deno.readLink(`/proc/self/fd/${fd.name}`).catch(() => "");
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m) inodes.add(m[1]);
  }
  const out: { state: string; sendQueue: number }[] = [];
  const want = port.toString(16).toUpperCase().padStart(4, "0");
  for (const line of (await Deno.readTextFile("/proc/net/tcp")).split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[2] !== `0100007F:${want}`) continue;
    // An orphaned socket (closed by this process, still sending) has inode 0.
    if (f[9] !== "0" && !inodes.has(f[9])) continue;
    out.push({ state: f[3], sendQueue: parseInt(f[4].split(":")[0], 16) });
  }
  return out;
}

Deno.test("abort() of a connection whose peer does not read drops what the kernel still holds: nothing is left to reach the peer later, as after close() it would be", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ballast-peer-abort-" });
  const pki = await openPki(dir, { nodeName: "a", ipAddresses: ["127.0.0.1"] });
  const issued = await pki.issue({ role: "node", name: "b", ipAddresses: ["127.0.0.1"] });
  const b = { key: issued.keyPem!, cert: issued.certPem, ca: pki.trustBundlePem() };
  const logger = pino({ level: "warn" });
  const { child, next, stdin } = spawnSink(["listen", dir]);
  try {
    const port = Number((await next()).port);
    const conn = await connectPeer({
      host: "127.0.0.1",
      port,
      expectNode: "a",
      credentials: () => b,
      verify: nodeVerifier(pki, "serverAuth"),
      logger,
    });
    assertEquals((await next()).connected, true);
    // Frames until the sends stall: the peer's window is full and the kernel holds the rest.
    const frame = new Uint8Array(MiB).fill(0x5a);
    const deadline = Date.now() + 60_000;
    let sent = 0;
    let last = -1;
    let since = Date.now();
    for (let i = 0; i < WINDOW; i++) conn.send(frame).then(() => sent++, () => {});
    while (sent !== last || Date.now() - since < 1000) {
      if (Date.now() > deadline) fail(`sends did not stall within 60 s (${sent} MiB)`);
      if (sent !== last) [last, since] = [sent, Date.now()];
      await new Promise((r) => setTimeout(r, 50));
    }
    const held = await socketsTo(port);
    assert(
      held.some((s) => s.state === "01" && s.sendQueue > 0),
      `nothing held unsent in the kernel after ${sent} MiB: ${JSON.stringify(held)}`,
    );
    const unsent = held.find((s) => s.state === "01")!.sendQueue;
    conn.abort();
    let left = await socketsTo(port);
    while (left.length > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      left = await socketsTo(port);
    }
    // After close() the socket stays, orphaned in FIN_WAIT1 with its send queue, for as long
    // as the peer does not read (checked: the test fails with close() here).
    assertEquals(left, [], `the connection's socket is still there, holding bytes to send`);
    await stdin.write(new TextEncoder().encode("read\n"));
    const end = await next();
    assert(typeof end.received === "number", JSON.stringify(end));
    // deno-lint-ignore no-console
    console.error(
      `[peer abort] ${unsent} bytes were queued in the kernel when aborted; the peer then ` +
        `got ${end.received} bytes in ${end.frames} frames${
          end.error ? `, then: ${end.error}` : ""
        }`,
    );
  } finally {
    await stopSink(child, stdin);
    await Deno.remove(dir, { recursive: true });
  }
});
