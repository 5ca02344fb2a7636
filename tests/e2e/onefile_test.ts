// deno-lint-ignore-file no-console
/**
 * The one-file program (`deno task compile`, README "Building one file") runs with no source
 * tree, no package cache and no network: built once here (or taken from BALLAST_BIN), started
 * from an empty directory with HOME and DENO_DIR pointing at fresh empty folders, inside a
 * network namespace that has only a loopback interface. `serve` starts, the same file's CLI
 * creates a volume, nbdinfo and qemu-io read and write it. The self-extracting kind's
 * unpacking is checked too: two first starts at once, a cache directory that cannot be
 * written, a damaged file.
 * @module
 */

import { assert, assertEquals } from "../_assert.ts";
import { cli, e2eTest, REPO_ROOT, run, startBallast } from "./_harness.ts";
import { netnsUnavailable } from "./_netns.ts";

function assertStringIncludes(s: string, part: string): void {
  assert(s.includes(part), `expected ${JSON.stringify(part)} in:\n${s}`);
}
function assertMatch(s: string, re: RegExp): void {
  assert(re.test(s), `expected ${re} to match:\n${s}`);
}

const NS = `ballast-onefile-${Deno.pid}`;
const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const NETNS_SKIP = await netnsUnavailable(NS);

/**
 * The kind of program the tests get, known before building: BALLAST_BIN's (an sh script is
 * the self-extracting kind), else what `deno task compile` will make (deno-compile only with
 * a local denort base, scripts/compile.ts).
 */
async function expectedKind(): Promise<string> {
  const bin = Deno.env.get("BALLAST_BIN");
  if (bin) {
    const head = new Uint8Array(2);
    using f = await Deno.open(bin);
    await f.read(head);
    return new TextDecoder().decode(head) === "#!" ? "self-extracting" : "deno-compile";
  }
  if (Deno.env.get("DENORT_BIN")) return "deno-compile";
  const info = await new Deno.Command(Deno.execPath(), { args: ["info", "--json"] }).output();
  const denoDir = JSON.parse(new TextDecoder().decode(info.stdout)).denoDir;
  const zip = `${denoDir}/dl/release/v${Deno.version.deno}/denort-${Deno.build.target}.zip`;
  try {
    Deno.statSync(zip);
    return "deno-compile";
  } catch {
    return "self-extracting";
  }
}
const KIND = await expectedKind();
const SFX_SKIP = KIND === "self-extracting"
  ? undefined
  : `the program is the ${KIND} kind, not self-extracting`;

let built: Promise<{ bin: string; kind: string }> | undefined;
let buildDir: string | undefined;
globalThis.addEventListener("unload", () => {
  if (buildDir) Deno.removeSync(buildDir, { recursive: true });
});

/** The program under test: BALLAST_BIN, or one `deno task compile` builds now (once per run). */
function program(): Promise<{ bin: string; kind: string }> {
  built ??= (async () => {
    let bin = Deno.env.get("BALLAST_BIN");
    if (bin) {
      if (!bin.startsWith("/")) bin = `${Deno.cwd()}/${bin}`;
    } else {
      buildDir = await Deno.makeTempDir({ prefix: "ballast-onefile-" });
      bin = `${buildDir}/ballast`;
      const started = performance.now();
      const r = await run(Deno.execPath(), ["run", "-A", "scripts/compile.ts", "--output", bin], {
        timeoutMs: 180_000,
      });
      assertEquals(r.code, 0, `deno task compile failed:\n${r.stdout}\n${r.stderr}`);
      const secs = ((performance.now() - started) / 1000).toFixed(1);
      console.log(`built ${bin} in ${secs} s: ${r.stdout.trim()}`);
    }
    return { bin, kind: KIND };
  })();
  return built;
}

/** A fresh, empty world for one start: working dir, HOME, DENO_DIR. */
async function emptyWorld(): Promise<{ root: string; cwd: string; home: string; denoDir: string }> {
  const root = await Deno.makeTempDir({ prefix: "ballast-onefile-world-" });
  const w = { root, cwd: `${root}/cwd`, home: `${root}/home`, denoDir: `${root}/deno_dir` };
  for (const d of [w.cwd, w.home, w.denoDir]) await Deno.mkdir(d);
  return w;
}

async function entries(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

e2eTest(
  "the one-file program serves NBD in a loopback-only network namespace",
  { tools: ["ip", "nbdinfo", "qemu-io"], skip: NETNS_SKIP },
  async () => {
    const { bin, kind } = await program();
    const w = await emptyWorld();
    const ns = await run("ip", ["netns", "add", NS]);
    assertEquals(ns.code, 0, ns.stderr);
    try {
      await run("ip", ["netns", "exec", NS, "ip", "link", "set", "lo", "up"]);
      const links = await run("ip", ["netns", "exec", NS, "ip", "-o", "link", "show"]);
      assertEquals(links.stdout.trim().split("\n").length, 1, `only lo: ${links.stdout}`);
      assertMatch(links.stdout, /^1: lo:/);

      const netnsExec = ["netns", "exec", NS];
      const wrap = ["ip", ...netnsExec];
      const env = { PATH, HOME: w.home, DENO_DIR: w.denoDir };
      const inNs = { bin, wrap, clearEnv: true, env, cwd: w.cwd };

      // First start unpacks (self-extracting); later starts do not.
      let t = performance.now();
      const first = await cli(["version", "--client", "-o", "json"], inNs);
      const firstMs = performance.now() - t;
      assertEquals(first.code, 0, first.stderr);
      assertEquals(JSON.parse(first.stdout).client.build, kind);
      t = performance.now();
      const later = await cli(["version", "--client"], inNs);
      const laterMs = performance.now() - t;
      assertEquals(later.code, 0, later.stderr);
      console.log(
        `${kind}: ${(Deno.statSync(bin).size / 2 ** 20).toFixed(1)} MiB; ` +
          `\`version\` first start ${firstMs.toFixed(0)} ms, later ${laterMs.toFixed(0)} ms`,
      );

      await using b = await startBallast({ ...inNs, readyTimeoutMs: 60_000 });
      const created = await cli(["volume", "create", "air", "--size", "64MiB"], {
        ...inNs,
        api: b.api,
      });
      assertEquals(created.code, 0, created.stderr);
      const versions = JSON.parse(
        (await cli(["version", "-o", "json"], { ...inNs, api: b.api })).stdout,
      );
      assertEquals(versions.server.build, kind);
      assertEquals(versions.server.version, versions.client.version);

      const uri = b.nbdUri("air");
      const info = await run("ip", [...netnsExec, "nbdinfo", "--json", uri]);
      assertEquals(info.code, 0, info.stderr);
      assertEquals(JSON.parse(info.stdout).exports[0]["export-size"], 64 * 2 ** 20);
      const write = await run("ip", [
        ...netnsExec,
        "qemu-io",
        "-f",
        "raw",
        "-c",
        "write -P 0xa5 1M 3M",
        uri,
      ]);
      assertEquals(write.code, 0, write.stderr);
      assertStringIncludes(write.stdout, "wrote 3145728/3145728 bytes");
      // A new connection reads back the pattern, and zeros around it.
      const read = await run("ip", [
        ...netnsExec,
        "qemu-io",
        "-f",
        "raw",
        "-c",
        "read -P 0xa5 1M 3M",
        "-c",
        "read -P 0 0 1M",
        "-c",
        "read -P 0 4M 1M",
        uri,
      ]);
      assertEquals(read.code, 0, read.stderr);
      assert(!/Pattern verification failed/.test(read.stdout + read.stderr), read.stdout);
      assertStringIncludes(read.stdout, "read 3145728/3145728 bytes");

      // The NBD connections were served by the data worker pool (Workers load from the file).
      assert(
        /"component":"data-pool".*"msg":"client attached"/.test(b.logs()),
        "a data worker served the NBD clients",
      );

      // Nothing went to the given DENO_DIR or the working directory; the unpacked copy is in HOME.
      assertEquals(await entries(w.denoDir), []);
      assertEquals(await entries(w.cwd), []);
      if (kind === "self-extracting") {
        const unpacked = await entries(`${w.home}/.cache/ballast`);
        assertEquals(unpacked.length, 1, `one unpacked build: ${unpacked}`);
      }
      const stopped = await b.stop();
      assertEquals(stopped.forced, false, "serve stopped on SIGTERM");
    } finally {
      await run("ip", ["netns", "delete", NS]);
      await Deno.remove(w.root, { recursive: true }).catch(() => {});
    }
  },
);

/** Runs the built file with a clean environment; `env` on top of PATH. */
async function runBin(bin: string, args: string[], env: Record<string, string>, cwd = REPO_ROOT) {
  return await run(bin, args, { clearEnv: true, env: { PATH, ...env }, cwd, timeoutMs: 120_000 });
}

e2eTest(
  "self-extracting: two first starts at once unpack one copy",
  { skip: SFX_SKIP },
  async () => {
    const { bin } = await program();
    const cache = await Deno.makeTempDir({ prefix: "ballast-onefile-cache-" });
    try {
      const env = { BALLAST_CACHE_DIR: cache };
      const both = await Promise.all([
        runBin(bin, ["version", "--client", "-o", "json"], env),
        runBin(bin, ["version", "--client", "-o", "json"], env),
      ]);
      for (const r of both) {
        assertEquals(r.code, 0, r.stderr);
        assertEquals(JSON.parse(r.stdout).client.build, "self-extracting");
      }
      const names = await entries(cache);
      assertEquals(names.length, 1, `one unpacked copy and no temporary leftovers: ${names}`);
      assertMatch(names[0], /^\d+\.\d+\.\d+-[0-9a-f]{16}$/);
    } finally {
      await Deno.remove(cache, { recursive: true });
    }
  },
);

e2eTest("self-extracting: a cache directory that cannot be made is a clear error", {
  skip: SFX_SKIP,
}, async () => {
  const { bin } = await program();
  const dir = await Deno.makeTempDir({ prefix: "ballast-onefile-ro-" });
  try {
    await Deno.writeTextFile(`${dir}/file`, "not a directory");
    const r = await runBin(bin, ["version"], { BALLAST_CACHE_DIR: `${dir}/file/cache` });
    assertEquals(r.code, 73, r.stderr);
    assertStringIncludes(r.stderr, `${dir}/file/cache`);
    assertStringIncludes(r.stderr, "BALLAST_CACHE_DIR");
    const none = await runBin(bin, ["version"], {});
    assertEquals(none.code, 73, none.stderr);
    assertStringIncludes(none.stderr, "HOME");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Why a small tmpfs cannot be mounted in a mount namespace here, or undefined. */
async function tmpfsUnavailable(): Promise<string | undefined> {
  const r = await run("unshare", ["-m", "sh", "-c", "mount -t tmpfs -o size=1m t /mnt"]);
  return r.code === 0 ? undefined : `cannot mount a tmpfs in a mount namespace: ${r.stderr.trim()}`;
}

e2eTest(
  "self-extracting: a cache disk too small to unpack into is one clear line, not tar's thousands",
  {
    skip: SFX_SKIP ?? await tmpfsUnavailable(),
  },
  async () => {
    const { bin } = await program();
    const dir = await Deno.makeTempDir({ prefix: "ballast-onefile-full-" });
    try {
      // A 4 MiB file system: the runtime alone is far larger.
      const r = await run("unshare", [
        "-m",
        "sh",
        "-c",
        `mount -t tmpfs -o size=4m t ${dir} && exec env -i PATH=${PATH} ` +
        `BALLAST_CACHE_DIR=${dir}/cache ${bin} version`,
      ], { timeoutMs: 120_000 });
      assertEquals(r.code, 73, r.stderr);
      assertStringIncludes(r.stderr, "failed (disk full?)");
      const lines = r.stderr.trim().split("\n");
      assert(lines.length <= 3, `a line or two, not tar's complaints: ${lines.length} lines`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

e2eTest("self-extracting: a damaged file or unpacked copy is refused before it runs", {
  skip: SFX_SKIP,
}, async () => {
  const { bin } = await program();
  const dir = await Deno.makeTempDir({ prefix: "ballast-onefile-damaged-" });
  try {
    const copy = `${dir}/ballast`;
    await Deno.copyFile(bin, copy);
    {
      using f = await Deno.open(copy, { read: true, write: true });
      const size = (await f.stat()).size;
      const byte = new Uint8Array(1);
      await f.seek(size - 1000, Deno.SeekMode.Start);
      await f.read(byte);
      byte[0] ^= 0xff;
      await f.seek(size - 1000, Deno.SeekMode.Start);
      await f.write(byte);
    }
    const r = await runBin(copy, ["version"], { BALLAST_CACHE_DIR: `${dir}/cache` });
    assertEquals(r.code, 65, r.stderr);
    assertStringIncludes(r.stderr, "is damaged");
    assertEquals(await entries(`${dir}/cache`), [], "nothing left unpacked");

    // An unpacked copy that lost files is named, not run.
    const good = await runBin(bin, ["version", "--client"], { BALLAST_CACHE_DIR: `${dir}/cache` });
    assertEquals(good.code, 0, good.stderr);
    const [unpacked] = await entries(`${dir}/cache`);
    await Deno.remove(`${dir}/cache/${unpacked}/deno`);
    const broken = await runBin(bin, ["version"], { BALLAST_CACHE_DIR: `${dir}/cache` });
    assertEquals(broken.code, 65, broken.stderr);
    assertStringIncludes(broken.stderr, `${dir}/cache/${unpacked} is incomplete`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
