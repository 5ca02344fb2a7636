/**
 * SIGTERM with NBD clients attached, plain and TLS ("Terminating the transmission phase"):
 * every request a client had in flight is executed and answered before its connection
 * closes, requests sent afterwards get ESHUTDOWN (and are not executed), an idle client does
 * not hold the node up, and the node exits 0 within a bound. A libnbd client (python3-libnbd)
 * keeps 16 FUA writes in flight and records what happened to each.
 */

import { assert, assertEquals } from "../_assert.ts";
import { PYTHON, waitFor } from "./_cluster.ts";
import { admin, issue } from "./_cluster_tls.ts";
import { type BallastProcess, cli, e2eTest, run, startBallast } from "./_harness.ts";

/**
 * Keeps 16 writes (64 KiB, FUA) in flight, each to its own slot, stamped with its sequence
 * number; writes "ready" once 16 are outstanding. Stops issuing at the first error, waits
 * for what is outstanding, then disconnects. Prints JSON: acked slots, ESHUTDOWN'd slots,
 * and any other failure (a transport error: an in-flight request that was not answered).
 */
const CLIENT_PY = `
import errno, json, sys, time, nbd
uri, ready = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.set_uri_allow_local_file(True)
h.connect_uri(uri)
BLOCK = 65536
slots = h.get_size() // BLOCK
inflight = {}
acked, shut, other = [], [], []
seq = 0
stop = False
signalled = False
while True:
    while not stop and len(inflight) < 16 and seq < slots:
        data = seq.to_bytes(8, "big") * (BLOCK // 8)
        c = h.aio_pwrite(data, seq * BLOCK, flags=nbd.CMD_FLAG_FUA)
        inflight[c] = (seq, data)
        seq += 1
    if not signalled and len(inflight) >= 16:
        open(ready, "w").write(str(seq))
        signalled = True
    if not inflight:
        break
    try:
        h.poll(-1)
    except nbd.Error as e:
        other += [[s, "poll: " + str(e.string)] for s, _ in inflight.values()]
        break
    for c in list(inflight):
        try:
            if h.aio_command_completed(c):
                acked.append(inflight.pop(c)[0])
        except nbd.Error as e:
            s, _ = inflight.pop(c)
            stop = True
            if e.errnum == errno.ESHUTDOWN:
                shut.append(s)
            else:
                other.append([s, str(e.string)])
try:
    h.shutdown()
except nbd.Error:
    pass
print(json.dumps({"acked": acked, "eshutdown": shut, "other": other, "issued": seq}))
`;

/** Reads slot `seq` of each list and says which do not hold what they should. */
const VERIFY_PY = `
import json, sys, nbd
uri, expect = sys.argv[1], json.loads(sys.argv[2])
h = nbd.NBD()
h.set_uri_allow_local_file(True)
h.connect_uri(uri)
BLOCK = 65536
bad = []
for s in expect["acked"]:
    if h.pread(BLOCK, s * BLOCK) != s.to_bytes(8, "big") * (BLOCK // 8):
        bad.append(["acked write missing", s])
for s in expect["eshutdown"]:
    if h.pread(BLOCK, s * BLOCK) != bytes(BLOCK):
        bad.append(["refused write was executed", s])
print(json.dumps(bad))
`;

interface ClientResult {
  acked: number[];
  eshutdown: number[];
  other: [number, string][];
  issued: number;
}

/** Runs the writer against `uri`, SIGTERMs `b` once 16 writes are in flight. */
async function writeThroughShutdown(b: BallastProcess, uri: string, tmp: string) {
  const ready = `${tmp}/ready`;
  const client = run(PYTHON, ["-c", CLIENT_PY, uri, ready], { timeoutMs: 120_000 });
  await waitFor("16 writes in flight", async () => {
    try {
      await Deno.stat(ready);
      return true;
    } catch {
      return false;
    }
  }, { timeoutMs: 60_000, everyMs: 20 });
  const t0 = Date.now();
  const exit = await b.stop();
  const stopMs = Date.now() - t0;
  const c = await client;
  assertEquals(c.code, 0, c.stdout + c.stderr);
  const result: ClientResult = JSON.parse(c.stdout);
  return { exit, stopMs, result };
}

async function verify(uri: string, r: ClientResult): Promise<void> {
  const v = await run(PYTHON, ["-c", VERIFY_PY, uri, JSON.stringify(r)]);
  assertEquals(v.code, 0, v.stdout + v.stderr);
  assertEquals(JSON.parse(v.stdout), [], "every acknowledged write is there, no refused one");
}

for (const tls of [false, true]) {
  const kind = tls ? "TLS" : "plaintext";
  e2eTest(
    `SIGTERM with ${kind} writes in flight: each is answered, later ones get ESHUTDOWN and do not run, the node exits 0`,
    { tools: [PYTHON, "nbdinfo"] },
    async () => {
      const tmp = await Deno.makeTempDir({ prefix: "ballast-shutdown-" });
      const b = await startBallast({ tls, dataDir: `${tmp}/data` });
      let b2: BallastProcess | undefined;
      let certDir: string | undefined;
      try {
        // 4096 slots: the writer cannot run out before the shutdown refuses it.
        const create = ["volume", "create", "v", "--size", "256MiB"];
        const made = tls ? await admin(b, create) : await cli(create, { api: b.api });
        assertEquals(made.code, 0, made.stderr);
        let uriOf = (x: BallastProcess) => x.nbdUri("v");
        if (tls) {
          const cert = await issue(b, "writer", ["--role", "nbd-client", "--volumes", "v"]);
          certDir = cert.dir;
          uriOf = (x) => `nbds://${x.nbdHost}:${x.nbdPort}/v?tls-certificates=${cert.dir}`;
        }
        const { exit, stopMs, result } = await writeThroughShutdown(b, uriOf(b), tmp);
        // deno-lint-ignore no-console
        console.log(
          `[shutdown ${kind}] stopped in ${stopMs} ms: ${result.acked.length} acked, ` +
            `${result.eshutdown.length} ESHUTDOWN, ${result.other.length} other, ` +
            `${result.issued} issued`,
        );
        assertEquals(exit, { code: 0, signal: null, forced: false });
        assertEquals(result.other, [], "an in-flight request was not answered");
        assert(result.acked.length > 0, "no write was acknowledged before the shutdown");
        // The writer kept 16 in flight until refused: the node must have refused some.
        assert(result.eshutdown.length > 0, "the node kept serving writes after SIGTERM");
        assertEquals(
          result.acked.length + result.eshutdown.length,
          result.issued,
          "every write issued was answered",
        );
        b2 = await startBallast({ tls, dataDir: b.dataDir });
        await verify(uriOf(b2), result);
      } finally {
        await b2?.stop();
        await Deno.remove(tmp, { recursive: true });
        if (certDir) await Deno.remove(certDir, { recursive: true });
      }
    },
  );
}

e2eTest(
  "SIGTERM with an idle TLS client and an idle plaintext client attached: the node exits 0 at once",
  { tools: [PYTHON, "nbdinfo"] },
  async () => {
    const b = await startBallast({ tls: true, args: ["--nbd-local-listen", "127.0.0.1:0"] });
    assertEquals((await admin(b, ["volume", "create", "v", "--size", "64MiB"])).code, 0);
    const cert = await issue(b, "idle", ["--role", "nbd-client", "--volumes", "v"]);
    const local = /"nbdLocal":"127\.0\.0\.1:(\d+)"/.exec(b.logs());
    assert(local, "the ready line names the local listener");
    // Each client connects, says so, then waits without sending anything.
    const hold = (uri: string, flag: string) =>
      run(PYTHON, [
        "-c",
        `import sys, time, nbd
h = nbd.NBD()
h.set_uri_allow_local_file(True)
h.connect_uri(sys.argv[1])
open(sys.argv[2], "w").write("1")
try:
    h.poll(30000)
    h.pread(512, 0)
    print("still served")
except nbd.Error as e:
    print("closed", e.string)`,
        uri,
        flag,
      ], { timeoutMs: 60_000 });
    const tmp = await Deno.makeTempDir({ prefix: "ballast-idle-" });
    try {
      const clients = [
        hold(`nbds://${b.nbdHost}:${b.nbdPort}/v?tls-certificates=${cert.dir}`, `${tmp}/tls`),
        hold(`nbd://127.0.0.1:${local[1]}/v`, `${tmp}/plain`),
      ];
      for (const f of ["tls", "plain"]) {
        await waitFor(`${f} client attached`, async () => {
          try {
            await Deno.stat(`${tmp}/${f}`);
            return true;
          } catch {
            return false;
          }
        }, { timeoutMs: 60_000, everyMs: 20 });
      }
      const t0 = Date.now();
      const exit = await b.stop();
      const ms = Date.now() - t0;
      // deno-lint-ignore no-console
      console.log(`[shutdown idle] the node stopped in ${ms} ms with two idle clients`);
      // Not forced: it exited before the harness's SIGKILL after 15 s.
      assertEquals(exit, { code: 0, signal: null, forced: false });
      for (const c of await Promise.all(clients)) {
        assert(c.stdout.startsWith("closed"), `client: ${c.stdout}${c.stderr}`);
      }
    } finally {
      await Deno.remove(tmp, { recursive: true });
      await Deno.remove(cert.dir, { recursive: true });
    }
  },
);
