/**
 * End-to-end tests of a real `ballast serve` process driven by real clients:
 * durability across kill -9, graceful SIGTERM, an ext4 filesystem on a volume,
 * nbd-client listing and fio with verification.
 */

import { assert, assertEquals } from "../_assert.ts";
import { PYTHON, waitFor } from "./_cluster.ts";
import { cli, e2eTest, run, startBallast } from "./_harness.ts";

/**
 * Writes 64 KiB blocks to distinct slots until the connection fails, recording a
 * slot in the manifest only once it is durable: at once for a FUA write, after the
 * next acknowledged FLUSH otherwise (proto.md "Ordering of messages and writes").
 */
const WRITER_PY = `
import nbd, sys, os, hashlib, json
h = nbd.NBD()
h.connect_uri(sys.argv[1])
out = open(sys.argv[2], "w")
limit = int(sys.argv[3])
pending = []
i = 0
try:
    while i < limit:
        data = os.urandom(65536)
        rec = {"off": i * 65536, "sha": hashlib.sha256(data).hexdigest()}
        if i % 3 == 0:
            h.pwrite(data, rec["off"], nbd.CMD_FLAG_FUA)
            out.write(json.dumps(rec) + "\\n")
        else:
            h.pwrite(data, rec["off"])
            pending.append(rec)
        if i % 10 == 9:
            h.flush()
            for r in pending:
                out.write(json.dumps(r) + "\\n")
            pending = []
        out.flush()
        i += 1
    h.flush()
    for r in pending:
        out.write(json.dumps(r) + "\\n")
    out.flush()
    print("done", i)
except Exception as e:
    print("stopped", i, e)
`;

/** Reads back every manifest slot; prints "ok N" or exits 1 naming the first bad slot. */
const VERIFY_PY = `
import nbd, sys, hashlib, json
h = nbd.NBD()
h.connect_uri(sys.argv[1])
n = 0
for line in open(sys.argv[2]):
    rec = json.loads(line)
    got = hashlib.sha256(h.pread(65536, rec["off"])).hexdigest()
    if got != rec["sha"]:
        print("mismatch at", rec["off"])
        sys.exit(1)
    n += 1
print("ok", n)
`;

/** Debian's python3, which has the libnbd bindings (python3-libnbd); pyenv's may not. */
/**
 * How long the writer may take to get going (python and libnbd start, connect, write):
 * a deadline only, generous for a loaded machine; the tests move on as soon as it has.
 */
const WRITER_START_MS = 60_000;

async function writeScripts(dir: string): Promise<{ writer: string; verify: string }> {
  const writer = `${dir}/writer.py`;
  const verify = `${dir}/verify.py`;
  await Deno.writeTextFile(writer, WRITER_PY);
  await Deno.writeTextFile(verify, VERIFY_PY);
  return { writer, verify };
}

async function manifestLines(path: string): Promise<number> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter((l) => l.trim()).length;
  } catch {
    return 0;
  }
}

e2eTest(
  "every write acknowledged with FUA or before a FLUSH survives kill -9 and restart",
  { tools: [PYTHON, "nbdinfo"] },
  async () => {
    const tmp = await Deno.makeTempDir({ prefix: "ballast-kill9-" });
    const b = await startBallast({ dataDir: `${tmp}/data` });
    let b2: Awaited<ReturnType<typeof b.restart>> | undefined;
    try {
      const { writer, verify } = await writeScripts(tmp);
      const created = await cli(["volume", "create", "durable", "--size", "1GiB"], { api: b.api });
      assertEquals(created.code, 0, created.stderr);
      const manifest = `${tmp}/manifest`;
      const writing = run(PYTHON, [writer, b.nbdUri("durable"), manifest, "100000"], {
        timeoutMs: 120_000,
      });
      // Let it acknowledge a good number of writes, then kill the server mid-stream.
      await waitFor("300 durable writes", async () => await manifestLines(manifest) >= 300, {
        timeoutMs: WRITER_START_MS,
        everyMs: 50,
      });
      await b.kill("SIGKILL");
      const w = await writing;
      assert(w.stdout.startsWith("stopped"), `writer should be cut off: ${w.stdout}${w.stderr}`);
      const durable = await manifestLines(manifest);
      assert(durable >= 100, `only ${durable} durable writes before the kill`);

      b2 = await startBallast({ dataDir: b.dataDir });
      const list = await cli(["volume", "get", "durable", "-o", "json"], { api: b2.api });
      assertEquals(list.code, 0, list.stderr);
      assertEquals(JSON.parse(list.stdout).sizeBytes, 1 << 30);
      const v = await run(PYTHON, [verify, b2.nbdUri("durable"), manifest]);
      assertEquals(v.code, 0, v.stdout + v.stderr);
      assertEquals(v.stdout.trim(), `ok ${durable}`);
    } finally {
      await b2?.stop();
      if (!b.exited()) await b.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

e2eTest(
  "SIGTERM finishes in-flight requests, flushes and exits 0; data written before it survives",
  { tools: [PYTHON] },
  async () => {
    const tmp = await Deno.makeTempDir({ prefix: "ballast-term-" });
    const b = await startBallast({ dataDir: `${tmp}/data` });
    let b2: Awaited<ReturnType<typeof b.restart>> | undefined;
    try {
      const { writer, verify } = await writeScripts(tmp);
      assertEquals(
        (await cli(["volume", "create", "t1", "--size", "256MiB"], { api: b.api })).code,
        0,
      );
      const manifest = `${tmp}/manifest`;
      const writing = run(PYTHON, [writer, b.nbdUri("t1"), manifest, "100000"], {
        timeoutMs: 120_000,
      });
      await waitFor("100 durable writes", async () => await manifestLines(manifest) >= 100, {
        timeoutMs: WRITER_START_MS,
        everyMs: 50,
      });
      const dataDir = b.dataDir;
      const exit = await b.stop();
      assertEquals(exit, { code: 0, signal: null, forced: false });
      const logs = b.logs();
      const w = await writing;
      assert(w.stdout.startsWith("stopped"), `writer should be stopped: ${w.stdout}`);
      assert(!logs.includes('"level":"error"'), `errors during shutdown:\n${logs.slice(-2000)}`);

      b2 = await startBallast({ dataDir });
      const v = await run(PYTHON, [verify, b2.nbdUri("t1"), manifest]);
      assertEquals(v.code, 0, v.stdout + v.stderr);
    } finally {
      await b2?.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

e2eTest(
  "an ext4 filesystem made on a volume mounts, holds files and passes fsck",
  {
    tools: ["nbdfuse", "losetup", "mkfs.ext4", "fsck.ext4", "mount", "umount", "fusermount3"],
    paths: ["/dev/fuse"],
  },
  async () => {
    const tmp = await Deno.makeTempDir({ prefix: "ballast-ext4-" });
    const fuseDir = `${tmp}/fuse`;
    const mnt = `${tmp}/mnt`;
    await Deno.mkdir(fuseDir);
    await Deno.mkdir(mnt);
    const b = await startBallast();
    let fuse: Deno.ChildProcess | undefined;
    let loop = "";
    let mounted = false;
    try {
      assertEquals(
        (await cli(["volume", "create", "fs", "--size", "512MiB"], { api: b.api })).code,
        0,
      );
      fuse = new Deno.Command("nbdfuse", {
        args: [`${fuseDir}/disk`, b.nbdUri("fs")],
        stdout: "null",
        stderr: "piped",
      }).spawn();
      await waitFor(
        "nbdfuse exposes the disk",
        async () => (await Deno.stat(`${fuseDir}/disk`)).size === 512 * 2 ** 20,
        { timeoutMs: 60_000 },
      );
      loop = (await run("losetup", ["-f", "--show", `${fuseDir}/disk`])).stdout.trim();
      assert(loop.startsWith("/dev/loop"), `losetup gave "${loop}"`);
      assertEquals((await run("mkfs.ext4", ["-q", "-F", loop])).code, 0);
      assertEquals((await run("mount", [loop, mnt])).code, 0);
      mounted = true;
      const payload = new Uint8Array(4 << 20);
      for (let o = 0; o < payload.length; o += 65536) {
        crypto.getRandomValues(payload.subarray(o, o + 65536));
      }
      await Deno.writeFile(`${mnt}/data.bin`, payload);
      await Deno.writeTextFile(`${mnt}/hello.txt`, "hello ballast\n");
      assertEquals((await run("umount", [mnt])).code, 0);
      mounted = false;
      const fsck = await run("fsck.ext4", ["-fn", loop]);
      assertEquals(fsck.code, 0, fsck.stdout + fsck.stderr);
      assertEquals((await run("mount", ["-o", "ro", loop, mnt])).code, 0);
      mounted = true;
      assertEquals(await Deno.readTextFile(`${mnt}/hello.txt`), "hello ballast\n");
      const back = await Deno.readFile(`${mnt}/data.bin`);
      assertEquals(back.length, payload.length);
      assert(back.every((x, i) => x === payload[i]), "file contents differ after remount");
    } finally {
      if (mounted) await run("umount", [mnt]);
      if (loop) await run("losetup", ["-d", loop]);
      await run("fusermount3", ["-u", fuseDir]).catch(() => undefined);
      if (fuse) {
        try {
          fuse.kill("SIGTERM");
        } catch { /* gone */ }
        await fuse.output();
      }
      await b.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

e2eTest(
  "nbd-client -l and nbdinfo --list show every volume by name",
  { tools: ["nbd-client", "nbdinfo"] },
  async () => {
    const b = await startBallast();
    try {
      for (const n of ["alpha", "beta"]) {
        assertEquals(
          (await cli(["volume", "create", n, "--size", "64MiB"], { api: b.api })).code,
          0,
        );
      }
      const l = await run("nbd-client", ["-l", b.nbdHost, String(b.nbdPort)]);
      assertEquals(l.code, 0, l.stderr);
      const names = l.stdout.split("\n").map((s) => s.trim()).filter((s) =>
        s && !s.startsWith("Negotiation")
      );
      assertEquals(names, ["alpha", "beta"]);
      const info = await run("nbdinfo", ["--list", "--json", `nbd://${b.nbdHost}:${b.nbdPort}/`]);
      assertEquals(info.code, 0, info.stderr);
      const exports = JSON.parse(info.stdout).exports as {
        "export-name": string;
        "export-size": number;
      }[];
      assertEquals(exports.map((e) => [e["export-name"], e["export-size"]]), [
        ["alpha", 64 * 2 ** 20],
        ["beta", 64 * 2 ** 20],
      ]);
    } finally {
      await b.stop();
    }
  },
);

e2eTest(
  "fio with crc32c verification passes against a served volume and /metrics counts the I/O",
  { tools: ["fio"] },
  async () => {
    const b = await startBallast();
    try {
      assertEquals(
        (await cli(["volume", "create", "fio", "--size", "256MiB"], { api: b.api })).code,
        0,
      );
      const fio = await run("fio", [
        "--name=verify",
        "--ioengine=nbd",
        `--uri=${b.nbdUri("fio")}`,
        "--rw=randwrite",
        "--bssplit=4k/50:64k/40:1m/10",
        "--iodepth=16",
        "--size=64m",
        "--verify=crc32c",
        "--verify_fatal=1",
        "--do_verify=1",
        "--verify_state_save=0",
        "--output-format=json",
      ], { timeoutMs: 120_000 });
      assertEquals(fio.code, 0, fio.stderr);
      const job = JSON.parse(fio.stdout.slice(fio.stdout.indexOf("{"))).jobs[0];
      assertEquals(job.error, 0);
      assert(job.write.io_bytes >= 64 * 2 ** 20 * 0.99, `fio wrote ${job.write.io_bytes} bytes`);
      const metrics = await (await fetch(`${b.api}/metrics`)).text();
      const writes = metrics.match(/^ballast_volume_ops_total\{volume="fio",op="write"\} (\d+)/m);
      assert(writes && Number(writes[1]) >= job.write.total_ios, `metrics: ${writes?.[0]}`);
    } finally {
      await b.stop();
    }
  },
);

e2eTest(
  "a volume whose copy cannot be opened: NBD clients and /v1/health are told why",
  { tools: ["nbdinfo"] },
  async () => {
    let b = await startBallast();
    try {
      const made = await cli(["volume", "create", "lost", "--size", "4MiB"], { api: b.api });
      assertEquals(made.code, 0, made.stderr);
      const files = [...Deno.readDirSync(`${b.dataDir}/volumes`)].filter((e) =>
        e.name.endsWith(".vol")
      );
      await b.kill("SIGTERM");
      await Deno.remove(`${b.dataDir}/volumes/${files[0].name}`);
      b = await b.restart();
      // libnbd prints the server's message in its debug output only. The node learns of the
      // failed copy from its records just after it starts: wait for it.
      let said = "";
      await waitFor("nbdinfo told why", async () => {
        const info = await run("nbdinfo", [b.nbdUri("lost")], { env: { LIBNBD_DEBUG: "1" } });
        said = info.stderr.split("\n").filter((l) => l.includes("server error")).join("\n");
        return info.code !== 0 && said.includes(`volume "lost" is unavailable: node `) &&
          said.includes("could not open its copy");
      }, { timeoutMs: 15_000 }).catch((err) => {
        throw new Error(`${err.message}; last: ${said}`);
      });
      const health = await fetch(`${b.api}/v1/health`);
      const body = await health.json();
      assertEquals([health.status, body.checks.volumes.ok], [503, false]);
      assert(body.checks.volumes.message.startsWith("1 failed here: lost (node "), body);
      // Once deleted, it is an unknown export again.
      assertEquals((await cli(["volume", "delete", "lost"], { api: b.api })).code, 0);
      const after = await run("nbdinfo", [b.nbdUri("lost")], { env: { LIBNBD_DEBUG: "1" } });
      assert(after.stderr.includes('unknown export "lost"'), after.stderr);
    } finally {
      await b.stop();
    }
  },
);

e2eTest(
  "the CLI on the node finds its API through the data directory, wherever --api-listen put it",
  {},
  async () => {
    const b = await startBallast({ tls: true });
    try {
      assertEquals(await Deno.readTextFile(`${b.dataDir}/api-url`), `${b.api}\n`);
      const r = await cli(["--data-dir", b.dataDir, "volume", "list"], {
        env: {},
      });
      assertEquals([r.code, r.stdout.trim()], [0, "No volumes."], r.stderr);
      // A stale address (a node started elsewhere by a version that does not write the file):
      // the error says where the CLI took it from.
      await Deno.writeTextFile(`${b.dataDir}/api-url`, "https://127.0.0.1:1\n");
      const stale = await cli(["--data-dir", b.dataDir, "volume", "list"], { env: {} });
      assertEquals(stale.code, 1, stale.stderr);
      assert(stale.stderr.includes(`${b.dataDir}/api-url holds`), stale.stderr);
    } finally {
      await b.stop();
    }
  },
);

e2eTest(
  "a cluster member's data directory started without --etcd is refused (exit 2), not run alone on an embedded store",
  {},
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "ballast-e2e-" });
    try {
      await Deno.mkdir(`${dir}/pki`, { mode: 0o700 });
      await Deno.writeTextFile(`${dir}/pki/cluster.kek`, "x\n", { mode: 0o600 });
      const r = await cli([
        "serve",
        "--data-dir",
        dir,
        "--api-listen",
        "127.0.0.1:0",
        "--nbd-listen",
        "127.0.0.1:0",
        "--nbd-unix",
        "off",
      ]);
      assertEquals(r.code, 2, r.stderr);
      assert(r.stderr.includes("is --etcd or BALLAST_ETCD missing?"), r.stderr);
      let made = true;
      await Deno.stat(`${dir}/state.db`).catch(() => made = false);
      assertEquals(made, false, "no embedded store was made beside the cluster copies");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
