/**
 * What a node's JSON log says about NBD clients and deletes (issue 10 item 21), read from a
 * real `ballast serve` with two data workers and the plaintext local-attach listener, driven
 * by real nbdinfo: every connection has its own id across listeners and workers, every line
 * of a connection names its listener, a client leaving is logged at info with why, and a
 * delete is logged once, with the node. Also: starting from a source checkout prints no npm
 * build-script warning (deno.json denies protobufjs's postinstall, which etcd3 pulls in).
 */

import { assert, assertEquals } from "../_assert.ts";
import { cli, e2eTest, freePort, MAIN_TS, REPO_ROOT, run, startBallast } from "./_harness.ts";

interface Line {
  level: string;
  msg: string;
  node?: string;
  conn?: number;
  listener?: string;
  worker?: number;
  volume?: string;
  reason?: string;
}

/** The JSON lines of a node's output (anything else, e.g. deno's own notes, left out). */
function jsonLines(text: string): Line[] {
  return text.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as Line);
}

e2eTest(
  "node log: unique connection ids across listeners and workers, the listener named, disconnects at info, one 'volume deleted' with the node",
  { tools: ["nbdinfo"] },
  async () => {
    const localPort = freePort();
    const node = await startBallast({
      args: [
        "--node-name",
        "logs-n1",
        "--data-workers",
        "2",
        "--nbd-local-listen",
        `127.0.0.1:${localPort}`,
      ],
    });
    try {
      const made = await cli(["volume", "create", "lg", "--size", "16MiB"], { api: node.api });
      assertEquals(made.code, 0, made.stderr);
      const uris = [
        node.nbdUri("lg"),
        `nbd://127.0.0.1:${localPort}/lg`,
        node.nbdUri("lg"),
        `nbd://127.0.0.1:${localPort}/lg`,
      ];
      for (const uri of uris) {
        const r = await run("nbdinfo", ["--size", uri]);
        assertEquals([r.code, r.stdout.trim()], [0, String(16 * 2 ** 20)], r.stderr);
      }
      const gone = await cli(["volume", "delete", "lg"], { api: node.api });
      assertEquals(gone.code, 0, gone.stderr);

      // The lines are written by the main thread (workers hand theirs over): wait for them.
      const deadline = Date.now() + 10_000;
      let lines = jsonLines(node.logs());
      const left = () => lines.filter((l) => l.msg === "client disconnected");
      while (left().length < uris.length && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        lines = jsonLines(node.logs());
      }
      const attached = lines.filter((l) => l.msg === "client attached");
      assertEquals(attached.length, uris.length, JSON.stringify(attached));
      const ids = attached.map((l) => l.conn);
      assertEquals(new Set(ids).size, uris.length, `distinct connection ids: ${ids}`);
      assertEquals(
        attached.map((l) => l.listener),
        ["nbd", "local", "nbd", "local"],
        "each line names the listener that accepted the connection",
      );
      assert(attached.every((l) => l.worker === 1 || l.worker === 2), JSON.stringify(attached));
      assertEquals(left().length, uris.length, JSON.stringify(left()));
      for (const l of left()) {
        assertEquals([l.level, l.volume, l.reason], ["info", "lg", "client sent NBD_CMD_DISC"]);
        assert(ids.includes(l.conn), `a disconnect of a known connection: ${JSON.stringify(l)}`);
        assert(l.listener === "nbd" || l.listener === "local", JSON.stringify(l));
      }
      const deleted = lines.filter((l) => l.msg === "volume deleted");
      assertEquals(deleted.length, 1, JSON.stringify(deleted));
      assertEquals([deleted[0].node, deleted[0].volume, deleted[0].level], [
        "logs-n1",
        "lg",
        "info",
      ]);
      assert(!node.logs().includes("Ignored build scripts"), "no npm build-script warning");
    } finally {
      await node.stop();
    }
  },
);

/**
 * A raw NBD client on a Unix socket (python3): fixed newstyle, NBD_OPT_EXPORT_NAME, then
 * eight 32 MiB READs in one go (doc/proto.md "Transmission phase"); once the first reply
 * bytes arrive it closes the socket without reading the rest, so the server's writes of the
 * remaining 256 MiB (far more than any socket buffer) fail with EPIPE.
 */
const LEAVE_MID_REPLY = `
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
def take(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c: raise SystemExit("server closed")
        b += c
    return b
take(18)
s.sendall(struct.pack(">I", 3))
name = sys.argv[2].encode()
s.sendall(b"IHAVEOPT" + struct.pack(">II", 1, len(name)) + name)
take(10)
s.sendall(b"".join(struct.pack(">IHHQQI", 0x25609513, 0, 0, i, 0, 32 << 20) for i in range(8)))
take(1 << 20)
s.close()
print("left")
`;

e2eTest(
  "node log: a client that leaves in the middle of a reply on the Unix socket is a disconnect, not an error",
  { tools: ["python3", "nbdinfo"] },
  async () => {
    const node = await startBallast({
      args: ["--node-name", "logs-n2", "--data-workers", "2"],
    });
    try {
      const made = await cli(["volume", "create", "lv", "--size", "64MiB"], { api: node.api });
      assertEquals(made.code, 0, made.stderr);
      const sock = `${node.dataDir}/nbd.sock`;
      const r = await run("python3", ["-c", LEAVE_MID_REPLY, sock, "lv"]);
      assertEquals([r.code, r.stdout.trim()], [0, "left"], r.stderr);
      assert(await node.logged("client disconnected"), node.logs());
      const ended = jsonLines(node.logs()).filter((l) => l.msg === "client disconnected");
      assertEquals(ended.length, 1, JSON.stringify(ended));
      assertEquals([ended[0].level, ended[0].volume], ["info", "lv"], JSON.stringify(ended[0]));
      const errors = jsonLines(node.logs()).filter((l) => l.level === "error");
      assertEquals(errors, [], "a client leaving is not an error");
      // The server goes on serving: the same client, well-behaved, gets the data.
      const again = await run("nbdinfo", ["--size", `nbd+unix:///lv?socket=${sock}`]);
      assertEquals([again.code, again.stdout.trim()], [0, String(64 * 2 ** 20)], again.stderr);
    } finally {
      await node.stop();
    }
  },
);

e2eTest(
  "starting from a source checkout prints no npm build-script warning, even where deno has not warned before",
  { ballast: false },
  async () => {
    // Deno warns once per package and cache (a `.scripts-warned-*` marker in the package's
    // folder): every start warns where the marker cannot be written (a read-only cache, a
    // fresh one). A copy of this cache's npm packages without the markers stands for that.
    const info = await run(Deno.execPath(), ["info", "--json"]);
    const denoDir = (JSON.parse(info.stdout) as { denoDir: string }).denoDir;
    const dir = await Deno.makeTempDir({ prefix: "ballast-denodir-" });
    try {
      const cp = await run("cp", ["-r", `${denoDir}/npm`, `${dir}/npm`]);
      assertEquals(cp.code, 0, cp.stderr);
      const find = await run("find", [dir, "-name", ".scripts-warned-*", "-delete"]);
      assertEquals(find.code, 0, find.stderr);
      const r = await run(Deno.execPath(), ["run", "--cached-only", "-A", MAIN_TS, "--help"], {
        cwd: REPO_ROOT,
        env: { DENO_DIR: dir, NO_COLOR: "1" },
        timeoutMs: 120_000,
      });
      assertEquals(r.code, 0, r.stderr);
      assert(!r.stderr.includes("Ignored build scripts"), r.stderr);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
