/**
 * Local attach over a Unix socket (issue 10 item 5): `ballast serve` listens on
 * DATA_DIR/nbd.sock by default, plaintext NBD for whoever the socket file's mode and group
 * let in; real clients (nbdinfo, qemu-io) use nbd+unix:// URIs.
 */

import { assert, assertEquals } from "../_assert.ts";
import { admin } from "./_cluster_tls.ts";
import { cli, e2eTest, requireTools, run, startBallast } from "./_harness.ts";

const unixUri = (volume: string, socket: string) => `nbd+unix:///${volume}?socket=${socket}`;

/** The socket path the ready line names. */
function readySocket(logs: string): string {
  const m = /"nbdUnix":"([^"]+)"/.exec(logs);
  assert(m, "the ready line names the Unix socket");
  return m[1];
}

e2eTest(
  "the default Unix socket serves nbd+unix:// clients; a live one is never taken over, a stale one is replaced",
  { tools: ["nbdinfo", "qemu-io"] },
  async () => {
    let b = await startBallast({ tls: true });
    const dataDir = b.dataDir;
    try {
      assertEquals((await admin(b, ["volume", "create", "v", "--size", "64MiB"])).code, 0);
      const socket = readySocket(b.logs());
      assertEquals(socket, `${dataDir}/nbd.sock`);
      const info = await Deno.lstat(socket);
      assert(info.isSocket, "a socket file");
      assertEquals((info.mode! & 0o777).toString(8), "660");

      const size = await run("nbdinfo", ["--size", unixUri("v", socket)]);
      assertEquals(size.code, 0, size.stderr);
      assertEquals(size.stdout.trim(), String(64 * 2 ** 20));
      const io = await run("qemu-io", [
        "-f",
        "raw",
        "-c",
        "write -P 0xab 1M 1M",
        "-c",
        "read -P 0xab 1M 1M",
        unixUri("v", socket),
      ]);
      assertEquals(io.code, 0, io.stderr);
      assert(io.stdout.includes("read 1048576/1048576"), io.stdout);

      // A second node told to use the same socket must refuse, not steal it.
      const other = await Deno.makeTempDir({ prefix: "ballast-e2e-" });
      const second = await cli([
        "serve",
        "--data-dir",
        other,
        "--api-listen",
        "127.0.0.1:0",
        "--nbd-listen",
        "127.0.0.1:0",
        "--tls",
        "off",
        "--nbd-unix",
        socket,
      ], { timeoutMs: 30_000 });
      await Deno.remove(other, { recursive: true });
      assertEquals(second.code, 1, second.stderr);
      assert(
        (second.stdout + second.stderr).includes(`another process listens on ${socket}`),
        second.stdout + second.stderr,
      );
      const still = await run("nbdinfo", ["--size", unixUri("v", socket)]);
      assertEquals(still.code, 0, `the first node still serves: ${still.stderr}`);

      // Killed, the node leaves its socket file; the next start replaces it.
      await b.kill("SIGKILL");
      assert((await Deno.lstat(socket)).isSocket, "the dead node's socket file stays");
      b = await startBallast({ tls: true, dataDir });
      const back = await run("qemu-io", [
        "-f",
        "raw",
        "-c",
        "read -P 0xab 1M 1M",
        unixUri("v", socket),
      ]);
      assertEquals(back.code, 0, back.stderr);
      await b.stop();
      await Deno.lstat(socket).then(
        () => assert(false, "a clean stop removes the socket file"),
        (err) => assert(err instanceof Deno.errors.NotFound, String(err)),
      );
    } finally {
      await b.stop();
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  },
);

/** Why a client cannot be run as another uid here, or undefined. */
function nobodySkip(): string | undefined {
  if (Deno.uid() !== 0) return "not root: cannot run a client as another uid";
  return requireTools(["setpriv"]);
}

/** A node whose socket sits in a directory of mode `dirMode` (0755: only the socket's own mode and group decide). */
async function socketNode(extra: string[], dirMode = 0o755) {
  const dir = await Deno.makeTempDir({ prefix: "ballast-sock-" });
  await Deno.chmod(dir, dirMode);
  const socket = `${dir}/nbd.sock`;
  const b = await startBallast({ args: ["--nbd-unix", socket, ...extra] });
  assertEquals((await cli(["volume", "create", "v", "--size", "1MiB"], { api: b.api })).code, 0);
  return {
    b,
    socket,
    async [Symbol.asyncDispose]() {
      await b.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

e2eTest(
  "--nbd-unix-mode and --nbd-unix-group are applied to the socket file (main-thread path)",
  { tools: ["nbdinfo"] },
  async () => {
    await using n = await socketNode([
      "--data-workers",
      "0",
      "--nbd-unix-mode",
      "0640",
      "--nbd-unix-group",
      "65534",
    ], 0o700);
    const info = await Deno.lstat(n.socket);
    assertEquals((info.mode! & 0o777).toString(8), "640");
    assertEquals(info.gid, 65534);
    const owner = await run("nbdinfo", ["--size", unixUri("v", n.socket)]);
    assertEquals(owner.code, 0, owner.stderr);
    assertEquals(owner.stdout.trim(), String(2 ** 20));
    assert(
      n.b.logs().includes("members of group 65534 cannot reach the socket"),
      "a group that cannot enter the socket's directory is warned about",
    );
  },
);

e2eTest(
  "a user in the socket's group connects, a user outside it is refused",
  { tools: ["nbdinfo"], skip: nobodySkip() },
  async () => {
    await using n = await socketNode(["--nbd-unix-mode", "0660", "--nbd-unix-group", "65534"]);
    // uid 65534 is not the owner: the group alone lets it in, or not.
    const as = (gid: number) =>
      run("setpriv", [
        "--reuid=65534",
        `--regid=${gid}`,
        "--clear-groups",
        "nbdinfo",
        "--size",
        unixUri("v", n.socket),
      ], { env: { HOME: "/" } });
    const member = await as(65534);
    assertEquals(member.code, 0, `a member of the socket's group connects: ${member.stderr}`);
    assertEquals(member.stdout.trim(), String(2 ** 20));
    const outsider = await as(65533);
    assert(outsider.code !== 0, "a user outside the group is refused");
    assert(/permission denied/i.test(outsider.stderr), outsider.stderr);
    assert(await n.b.logged('"remote":"unix:uid=65534'), "the log names the peer's uid");
    assert(!n.b.logs().includes("cannot reach the socket"), "no warning: the group can get in");
  },
);

e2eTest(
  "out of descriptors: new NBD connections are closed at once with a warning; the node stays up and serves again once they go",
  { tools: ["nbdinfo", "bash"] },
  async () => {
    // Soft and hard limit 256: the node cannot raise it, and sheds connections from fd 192.
    const wrap = ["bash", "-c", 'ulimit -n 256 && exec "$0" "$@"'];
    await using b = await startBallast({ wrap, tls: true });
    assert(b.logs().includes('"openFiles":256'), "the ready line says the limit");
    assertEquals((await admin(b, ["volume", "create", "v", "--size", "16MiB"])).code, 0);
    const socket = readySocket(b.logs());
    const held: Deno.UnixConn[] = [];
    try {
      // Each connection the node keeps costs it two descriptors: 300 are far past its limit.
      for (let i = 0; i < 300; i++) {
        held.push(await Deno.connect({ transport: "unix", path: socket }));
      }
      await waitFor(() => b.logs().includes("closing new NBD connections"), 20_000);
      const health = await admin(b, ["version"]);
      assertEquals(health.code, 0, `the node and its API are up: ${health.stderr}`);
    } finally {
      for (const c of held) c.close();
    }
    // Once the clients left, a new one is served.
    const size = await waitForOk(() => run("nbdinfo", ["--size", unixUri("v", socket)]), 20_000);
    assertEquals(size.stdout.trim(), String(16 * 2 ** 20));

    // The API too: silent connections past its share are closed at once, and once they go it
    // answers again (out of descriptors, Deno's server would stop accepting for good).
    const api = new URL(b.api);
    const silent: Deno.TcpConn[] = [];
    try {
      for (let i = 0; i < 250; i++) {
        silent.push(await Deno.connect({ hostname: api.hostname, port: Number(api.port) }));
      }
      await new Promise((r) => setTimeout(r, 500));
    } finally {
      for (const c of silent) c.close();
    }
    await waitForOk(() => admin(b, ["version"]), 20_000);
  },
);

e2eTest(
  "out of descriptors, NBD served on the main thread (--data-workers 0): new TCP connections are closed at once; the node stays up",
  { tools: ["bash"] },
  async () => {
    const wrap = ["bash", "-c", 'ulimit -n 256 && exec "$0" "$@"'];
    await using b = await startBallast({ wrap, tls: true, args: ["--data-workers", "0"] });
    const [host, port] = [b.nbdHost, b.nbdPort];
    const held: Deno.TcpConn[] = [];
    try {
      for (let i = 0; i < 300; i++) held.push(await Deno.connect({ hostname: host, port }));
      await waitFor(() => b.logs().includes("closing new NBD connections"), 20_000);
      const up = await admin(b, ["version"]);
      assertEquals(up.code, 0, `the node and its API are up: ${up.stderr}`);
    } finally {
      for (const c of held) c.close();
    }
  },
);

async function waitFor(ok: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function waitForOk(
  f: () => Promise<{ code: number; stdout: string; stderr: string }>,
  ms: number,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const end = Date.now() + ms;
  for (;;) {
    const r = await f();
    if (r.code === 0 || Date.now() > end) {
      assertEquals(r.code, 0, r.stderr);
      return r;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
