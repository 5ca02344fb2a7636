/**
 * A place to run documentation examples as a new user would: a copy of the checkout, an empty
 * HOME, `ballast` on the PATH as the README's alias (`deno run -A main.ts`, or BALLAST_BIN), the
 * Deno cache the tests already filled (so no network is needed), and optionally a network
 * namespace so the examples' fixed ports collide with no one. Shell snippets run with
 * `bash -e -o pipefail`; a node started by a snippet runs in its own process group.
 * @module
 */

import { assertEquals } from "../_assert.ts";
import { REPO_ROOT, requireTools, run, type RunResult } from "./_harness.ts";

/** A fresh copy of the checkout with its own HOME and PATH. */
export interface DocWorld {
  /** Temporary directory holding everything; removed by dispose. */
  root: string;
  /** The copy of the checkout: examples run from here. */
  checkout: string;
  /** The whole environment the examples see. */
  env: Record<string, string>;
  /** A command line to run the examples under (`ip netns exec NS`), or []. */
  wrap: string[];
}

/** Copies the checkout (tracked and untracked, not ignored files) and makes HOME and PATH. */
export async function makeDocWorld(wrap: string[]): Promise<DocWorld> {
  const root = await Deno.makeTempDir({ prefix: "ballast-docs-" });
  const checkout = `${root}/checkout`;
  const files = await run("git", ["ls-files", "-z", "-c", "-o", "--exclude-standard"]);
  assertEquals(files.code, 0, `git ls-files: ${files.stderr}`);
  for (const f of files.stdout.split("\0").filter((f) => f !== "")) {
    const to = `${checkout}/${f}`;
    await Deno.mkdir(to.slice(0, to.lastIndexOf("/")), { recursive: true });
    await Deno.copyFile(`${REPO_ROOT}/${f}`, to).catch((err) => {
      if (!(err instanceof Deno.errors.NotFound)) throw err; // deleted in the work tree
    });
  }
  await Deno.mkdir(`${root}/home`);
  await Deno.mkdir(`${root}/bin`);
  const bin = Deno.env.get("BALLAST_BIN");
  const program = bin
    ? `"${bin.startsWith("/") ? bin : `${Deno.cwd()}/${bin}`}"`
    : "deno run -A main.ts";
  await Deno.writeTextFile(`${root}/bin/ballast`, `#!/bin/sh\nexec ${program} "$@"\n`, {
    mode: 0o755,
  });
  const info = await run(Deno.execPath(), ["info", "--json"]);
  const deno = Deno.execPath();
  const env = {
    PATH: `${root}/bin:${deno.slice(0, deno.lastIndexOf("/"))}:` +
      "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: `${root}/home`,
    DENO_DIR: JSON.parse(info.stdout).denoDir,
    NO_COLOR: "1",
  };
  return { root, checkout, env, wrap };
}

/** Runs `script` with `bash -e -o pipefail` from the world's checkout. */
export async function runScript(
  w: DocWorld,
  script: string,
  timeoutMs = 45_000,
): Promise<RunResult> {
  const line = [...w.wrap, "bash", "-e", "-o", "pipefail", "-c", script];
  return await run(line[0], line.slice(1), {
    cwd: w.checkout,
    clearEnv: true,
    env: w.env,
    timeoutMs,
  });
}

/** A node started by a documentation snippet. */
export interface DocNode {
  logs(): string;
  /** Ctrl-C, as a terminal sends it (SIGINT to the group); SIGKILL to what is left after 20 s. */
  stop(): Promise<void>;
}

/**
 * Runs `script` (e.g. `deno task start`) in its own process group and waits until it logs
 * "ballast ready"; throws with its output if it exits or stays silent for `readyTimeoutMs`.
 */
export async function startDocNode(
  w: DocWorld,
  script: string,
  readyTimeoutMs = 60_000,
): Promise<DocNode> {
  const line = [...w.wrap, "setsid", "bash", "-c", script];
  const child = new Deno.Command(line[0], {
    args: line.slice(1),
    cwd: w.checkout,
    clearEnv: true,
    env: w.env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let logs = "";
  const pumps = [child.stdout, child.stderr].map(async (stream) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) logs += chunk;
  });
  let exited = false;
  const status = child.status.finally(() => exited = true);
  const until = async (done: () => boolean, ms: number) => {
    const deadline = Date.now() + ms;
    while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  };
  const stop = async () => {
    // A terminal's Ctrl-C: SIGINT to every process of the group (`deno task` and the node).
    if (!exited) Deno.kill(-child.pid, "SIGINT");
    await until(() => exited, 20_000);
    try {
      Deno.kill(-child.pid, "SIGKILL"); // whatever is left of the group (nothing when all went well)
    } catch {
      // the group is empty
    }
    await status;
    await Promise.all(pumps);
  };
  await until(() => logs.includes("ballast ready") || exited, readyTimeoutMs);
  if (!logs.includes("ballast ready")) {
    await stop();
    throw new Error(`\`${script.trim()}\` did not start a node:\n${logs}`);
  }
  return { logs: () => logs, stop };
}

/** Why snippets that mount (nbdfuse + losetup + mount, as root) cannot run here, or undefined. */
export async function mountsUnavailable(): Promise<string | undefined> {
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
 * Put before a snippet that mounts: on exit, whatever happened, its shell (same mount namespace)
 * unmounts what is still mounted under HOME, detaches loop devices backed by files there, then
 * unmounts FUSE, so a failed snippet leaves no mount, loop device or nbdfuse behind.
 */
export const MOUNT_CLEANUP = `doc_test_cleanup() {
  local rc=$?
  set +e
  findmnt -rn -o TARGET,FSTYPE | awk -v h="$HOME/" 'index($1, h) == 1 && $2 !~ /^fuse/ {print $1}' |
    sort -r | xargs -r -n1 umount -l
  losetup -l -n -O NAME,BACK-FILE | awk -v h="$HOME/" 'index($2, h) == 1 {print $1}' |
    xargs -r -n1 losetup -d
  findmnt -rn -o TARGET,FSTYPE | awk -v h="$HOME/" 'index($1, h) == 1 && $2 ~ /^fuse/ {print $1}' |
    xargs -r -n1 fusermount3 -u -z
  exit $rc
}
trap doc_test_cleanup EXIT
`;
