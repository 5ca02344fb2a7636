// deno-lint-ignore-file no-console
/**
 * The README's quick start, run as written. Its shell blocks marked `<!-- quickstart-test -->`
 * (and docs/API.md's marked `<!-- api-test -->`) are extracted and run one after another with
 * `bash -e -o pipefail`, each from a copy of the checkout, against the node that the block marked
 * `<!-- quickstart-test: serve -->` starts (`deno task start`, so the quick start's own ports and
 * data dir). Everything happens in a network namespace with only loopback (the quick start's fixed
 * ports cannot collide with anyone else's) and with HOME in a temporary directory, so nothing is
 * written into the checkout. Each block must exit 0, and its key outputs are checked (EXPECT).
 * Blocks marked `: root` (nbdfuse, losetup, mount) run when this machine allows, else they are
 * reported as ignored with the reason.
 * @module
 */

import { assert, assertEquals, assertThrows, fail } from "../_assert.ts";
import { type DocBlock, DocBlockError, markedBlocks } from "./_doc_blocks.ts";
import { e2eTest, REPO_ROOT, requireTools, run, type RunResult } from "./_harness.ts";
import { loopbackNetns, netnsUnavailable } from "./_netns.ts";

Deno.test("markedBlocks() returns the marked sh blocks only, with their kind and line", () => {
  const md = [
    "# T", // 1
    "<!-- quickstart-test: serve -->", // 2
    "```sh", // 3
    "deno task start", // 4
    "```", // 5
    "```sh", // 6: not marked
    "rm -rf /", // 7
    "```", // 8
    "<!-- quickstart-test -->", // 9
    "", // 10
    "```bash", // 11
    "echo a", // 12
    "echo b", // 13
    "```", // 14
    "<!-- other-test -->", // 15
    "```sh", // 16
    "echo other", // 17
    "```", // 18
  ].join("\n");
  assertEquals(markedBlocks(md, "quickstart-test", "R.md"), [
    { file: "R.md", line: 3, kind: "serve", text: "deno task start\n" },
    { file: "R.md", line: 11, kind: "", text: "echo a\necho b\n" },
  ]);
  assertEquals(markedBlocks(md, "other-test").map((b) => b.text), ["echo other\n"]);
});

Deno.test("markedBlocks() refuses a marker without a sh block and a block never closed", () => {
  const noBlock = "<!-- quickstart-test -->\nsome prose\n```sh\nls\n```\n";
  const e1 = assertThrows(() => markedBlocks(noBlock, "quickstart-test", "R.md"), DocBlockError);
  assertEquals([e1.file, e1.line], ["R.md", 1]);
  const unclosed = "text\n<!-- quickstart-test -->\n```sh\nls\n";
  const e2 = assertThrows(() => markedBlocks(unclosed, "quickstart-test", "R.md"), DocBlockError);
  assertEquals(e2.line, 3);
});

/** A check on the output of every block whose text matches `when`. */
interface Expect {
  what: string;
  when: RegExp;
  out?: RegExp;
  notOut?: RegExp;
}

const EXPECT: Expect[] = [
  { what: "nbdinfo shows db1's 10 GiB", when: /^nbdinfo /m, out: /export-size:\s+10737418240\b/ },
  { what: "qemu-io reads 1 MiB back", when: /^qemu-io /m, out: /read 1048576\/1048576 bytes/ },
  { what: "qemu-io reads the pattern", when: /^qemu-io /m, notOut: /Pattern verification failed/ },
  {
    what: "volume get shows the 1 MiB written",
    when: /^ballast volume get db1/m,
    out: /Allocated:\s+1 MiB/,
  },
  {
    what: "ca issue writes an nbd-client bundle",
    when: /^ballast ca issue /m,
    out: /Role:\s+nbd-client/,
  },
  { what: "the filesystem is mounted and written", when: /^mkfs\.ext4 /m, out: /db1-mnt/ },
  { what: "fio writes 16 MiB", when: /^fio /m, out: /WRITE: bw=.*io=16\.0MiB/ },
  { what: "the volume is deleted", when: /^ballast volume delete db1/m, out: /"db1" deleted/ },
  { what: "the API is healthy", when: /\/v1\/health$/m, out: /"status":"ok"/ },
  { what: "the API resizes db1", when: /-X PATCH .*20GiB/, out: /"sizeBytes":21474836480\b/ },
];

/** The quick start's fixed addresses: free in a fresh namespace, checked on the host otherwise. */
const QUICKSTART_PORTS = [5705, 10809, 10810];
const NS = `ballast-readme-${Deno.pid}`;
const NETNS_SKIP = await netnsUnavailable(NS);
const PORTS_SKIP = NETNS_SKIP === undefined ? undefined : portsTaken(QUICKSTART_PORTS);
const ROOT_SKIP = await rootBlocksUnavailable();
const READY_TIMEOUT_MS = 60_000;
const BLOCK_TIMEOUT_MS = 45_000;

function portsTaken(ports: number[]): string | undefined {
  const taken = ports.filter((port) => {
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return false;
    } catch {
      return true;
    }
  });
  return taken.length ? `${NETNS_SKIP}, and port(s) ${taken.join(", ")} are in use` : undefined;
}

/** Why the `: root` blocks (nbdfuse + losetup + mount) cannot run here, or undefined. */
async function rootBlocksUnavailable(): Promise<string | undefined> {
  if (Deno.uid() !== 0) return "needs root (losetup, mount)";
  const tools = requireTools(["nbdfuse", "losetup", "mkfs.ext4", "mountpoint", "fusermount3"]);
  if (tools) return tools;
  try {
    Deno.statSync("/dev/fuse");
  } catch {
    return "no /dev/fuse";
  }
  const loop = await run("losetup", ["-f"]);
  return loop.code === 0 ? undefined : `no free loop device (losetup -f: ${loop.stderr.trim()})`;
}

/**
 * Run after a `: root` block in its shell (same mount namespace), whatever happened: unmounts
 * what is still mounted under HOME, detaches loop devices backed by files there, then unmounts
 * FUSE, so a failed block leaves no mount, loop device or nbdfuse behind.
 */
const ROOT_CLEANUP = `trap 'rc=$?
findmnt -rn -o TARGET,FSTYPE | awk -v h="$HOME/" 'index($1,h)==1 && $2 !~ /^fuse/ {print $1}' \\
  | sort -r | xargs -r -n1 umount -l
losetup -l -n -O NAME,BACK-FILE | awk -v h="$HOME/" 'index($2,h)==1 {print $1}' | xargs -r -n1 losetup -d
findmnt -rn -o TARGET,FSTYPE | awk -v h="$HOME/" 'index($1,h)==1 && $2 ~ /^fuse/ {print $1}' \\
  | xargs -r -n1 fusermount3 -u -z
exit $rc' EXIT
`.replaceAll("'index", `'"'"'index`).replaceAll("}'", `}'"'"'`);

/** A fresh world: a copy of the checkout (tracked and untracked files), an empty HOME, a PATH. */
async function makeWorld(): Promise<{ root: string; co: string; env: Record<string, string> }> {
  const root = await Deno.makeTempDir({ prefix: "ballast-readme-" });
  const co = `${root}/checkout`;
  const files = await run("git", ["ls-files", "-z", "-c", "-o", "--exclude-standard"]);
  assertEquals(files.code, 0, `git ls-files: ${files.stderr}`);
  for (const f of files.stdout.split("\0").filter((f) => f !== "")) {
    const to = `${co}/${f}`;
    await Deno.mkdir(to.slice(0, to.lastIndexOf("/")), { recursive: true });
    await Deno.copyFile(`${REPO_ROOT}/${f}`, to).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err; // deleted in the work tree
    });
  }
  await Deno.mkdir(`${root}/home`);
  await Deno.mkdir(`${root}/bin`);
  // `ballast` as the README's alias (`deno run -A main.ts` from the checkout), or BALLAST_BIN.
  const bin = Deno.env.get("BALLAST_BIN");
  const program = bin
    ? `"${bin.startsWith("/") ? bin : `${Deno.cwd()}/${bin}`}"`
    : "deno run -A main.ts";
  await Deno.writeTextFile(`${root}/bin/ballast`, `#!/bin/sh\nexec ${program} "$@"\n`, {
    mode: 0o755,
  });
  const info = await run(Deno.execPath(), ["info", "--json"]);
  const env = {
    PATH: [
      `${root}/bin`,
      Deno.execPath().slice(0, Deno.execPath().lastIndexOf("/")),
      "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ].join(":"),
    HOME: `${root}/home`,
    // The npm packages the tests already fetched (the namespace has no network).
    DENO_DIR: JSON.parse(info.stdout).denoDir,
    NO_COLOR: "1",
  };
  return { root, co, env };
}

/** The output checks that apply to `block`, counted in `seen`. */
function checkOutput(block: DocBlock, r: RunResult, seen: Set<Expect>): void {
  const out = r.stdout + r.stderr;
  for (const e of EXPECT.filter((e) => e.when.test(block.text))) {
    seen.add(e);
    if (e.out && !e.out.test(out)) fail(`${e.what}: expected ${e.out} in the output:\n${out}`);
    if (e.notOut?.test(out)) fail(`${e.what}: did not expect ${e.notOut} in the output:\n${out}`);
  }
}

e2eTest(
  "README quick start and docs/API.md examples run as written against `deno task start`",
  { tools: ["git", "bash", "setsid", "nbdinfo", "qemu-io", "fio", "curl"], skip: PORTS_SKIP },
  async (t) => {
    const readme = markedBlocks(
      await Deno.readTextFile(`${REPO_ROOT}/README.md`),
      "quickstart-test",
      "README.md",
    );
    const api = markedBlocks(
      await Deno.readTextFile(`${REPO_ROOT}/docs/API.md`),
      "api-test",
      "docs/API.md",
    );
    const serve = readme.filter((b) => b.kind === "serve");
    assertEquals(serve.length, 1, "README.md marks one block `<!-- quickstart-test: serve -->`");
    const blocks = [...readme.filter((b) => b.kind !== "serve"), ...api];
    for (const b of blocks) {
      assert(["", "root"].includes(b.kind), `${b.file}:${b.line}: unknown kind "${b.kind}"`);
    }
    assert(api.length > 0, "docs/API.md marks a block `<!-- api-test -->`");

    const w = await makeWorld();
    const before = new Set([...Deno.readDirSync(w.co)].map((e) => e.name));
    await using ns = NETNS_SKIP === undefined ? await loopbackNetns(NS) : undefined;
    const wrap = ns?.wrap ?? [];
    const inWorld = (args: string[]) => ({
      cmd: [...wrap, ...args][0],
      args: [...wrap, ...args].slice(1),
    });

    // The serve block, in its own process group (setsid), so that nothing of it can outlive the test.
    const s = inWorld(["setsid", "bash", "-c", serve[0].text]);
    const server = new Deno.Command(s.cmd, {
      args: s.args,
      cwd: w.co,
      clearEnv: true,
      env: w.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let logs = "";
    const pumps = [server.stdout, server.stderr].map(async (stream) => {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) logs += chunk;
    });
    let exited = false;
    const status = server.status.finally(() => exited = true);
    try {
      const deadline = Date.now() + READY_TIMEOUT_MS;
      while (!logs.includes("ballast ready") && !exited && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert(
        logs.includes("ballast ready"),
        `README.md:${serve[0].line} did not start a node:\n${logs}`,
      );
      console.log(logs.split("\n").find((l) => l.includes("ballast ready")));

      const seen = new Set<Expect>();
      for (const b of blocks) {
        const name = `${b.file}:${b.line}${b.kind ? ` (${b.kind})` : ""}: ${b.text.split("\n")[0]}`;
        if (b.kind === "root" && ROOT_SKIP) {
          console.log(`not run: ${b.file}:${b.line}: ${ROOT_SKIP}`);
          EXPECT.filter((e) => e.when.test(b.text)).forEach((e) => seen.add(e));
          await t.step({ name: `${name} [skipped: ${ROOT_SKIP}]`, ignore: true, fn: () => {} });
          continue;
        }
        const passed = await t.step(name, async () => {
          const script = (b.kind === "root" ? ROOT_CLEANUP : "") + b.text;
          const c = inWorld(["bash", "-e", "-o", "pipefail", "-c", script]);
          const r = await run(c.cmd, c.args, {
            cwd: w.co,
            clearEnv: true,
            env: w.env,
            timeoutMs: BLOCK_TIMEOUT_MS,
          });
          assertEquals(
            r.code,
            0,
            `${b.file}:${b.line} exited ${r.code}:\n${b.text}\n--- output:\n${r.stdout}${r.stderr}`,
          );
          checkOutput(b, r, seen);
        });
        if (!passed) break;
      }
      const unchecked = EXPECT.filter((e) => !seen.has(e)).map((e) => e.what);
      assertEquals(
        unchecked,
        [],
        "every check has a block in README.md or docs/API.md that shows it",
      );
      const written = [...Deno.readDirSync(w.co)].map((e) => e.name).filter((n) => !before.has(n));
      assertEquals(written, [".ballast"], "the examples write into the checkout only .ballast/");
    } finally {
      // SIGTERM to `deno task` alone, which passes it on to the node (a signal to the whole
      // group would reach the node twice: "second signal: exiting immediately").
      if (!exited) Deno.kill(server.pid, "SIGTERM");
      const t0 = Date.now();
      while (!exited && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 100));
      try {
        Deno.kill(-server.pid, "SIGKILL"); // whatever is left of the group (none when all went well)
      } catch {
        // the group is empty
      }
      await status;
      await Promise.all(pumps);
      await Deno.remove(w.root, { recursive: true }).catch(() => {});
    }
    assert(logs.includes("ballast stopped"), `SIGTERM stopped the node:\n${logs.slice(-2000)}`);
  },
);
