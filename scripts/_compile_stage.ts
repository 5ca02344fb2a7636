// deno-lint-ignore-file no-console
/**
 * The staging step of `deno task compile`: a copy of the program's source with the build
 * facts baked into mod/build.ts, and a Deno directory holding every npm package the program
 * and its data workers load, so the result needs neither the checkout nor the network.
 * Both kinds of build (deno compile and the self-extracting file) start from it.
 * @module
 */

import { cpSync } from "node:fs";
import type { BuildKind } from "../mod/build.ts";

/** The flags the program runs with, as `deno task start` does (permissions, unstable features). */
export const RUN_FLAGS: readonly string[] = ["--allow-all"];

/** The program's entry point and the modules loaded at run time that the module graph does not show. */
export const ENTRY = "main.ts";
export const WORKER_ENTRIES: readonly string[] = ["data/pool/worker.ts"];

/** What a build copies from the checkout (everything the program imports or reads). */
const SOURCES = ["main.ts", "mod", "control", "data", "ca", "deno.json", "deno.lock"];

/** A staging directory: `app/` (source), `deno_dir/` (npm packages). */
export interface Stage {
  dir: string;
  app: string;
  denoDir: string;
  commit: string | null;
  builtAt: string;
}

async function text(cmd: string, args: string[], cwd: string): Promise<string | null> {
  try {
    const out = await new Deno.Command(cmd, { args, cwd, stdin: "null", stderr: "null" })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
  } catch {
    return null;
  }
}

/** HEAD of the checkout at `root`, "-dirty" when tracked files have changes; null without git. */
export async function gitCommit(root: string): Promise<string | null> {
  const head = await text("git", ["rev-parse", "HEAD"], root);
  if (!head) return null;
  const dirty = await text("git", ["status", "--porcelain", "--untracked-files=no"], root);
  return dirty ? `${head}-dirty` : head;
}

/** The build time: SOURCE_DATE_EPOCH (seconds) when set, for reproducible builds, else now. */
export function buildTime(): string {
  const epoch = Deno.env.get("SOURCE_DATE_EPOCH");
  if (epoch === undefined) return new Date().toISOString().replace(/\.\d+Z$/, "Z");
  if (!/^\d+$/.test(epoch)) throw new Error(`SOURCE_DATE_EPOCH=${epoch} is not whole seconds`);
  return new Date(Number(epoch) * 1000).toISOString().replace(/\.\d+Z$/, "Z");
}

/** The builder's DENO_DIR (from `deno info --json`). */
export async function builderDenoDir(root: string): Promise<string> {
  const out = await text(Deno.execPath(), ["info", "--json"], root);
  if (!out) throw new Error("`deno info --json` failed: cannot find the Deno directory");
  return JSON.parse(out).denoDir;
}

/** "@scope/name@1.2.3_peer@4" -> ["@scope/name", "1.2.3"] */
function splitLockKey(key: string): [string, string] {
  const at = key.indexOf("@", 1);
  if (at < 0) throw new Error(`deno.lock: npm entry ${JSON.stringify(key)} has no version`);
  return [key.slice(0, at), key.slice(at + 1).split("_")[0]];
}

/**
 * Copies the npm packages deno.lock names from the builder's cache into `denoDir`, so the
 * build needs no network when the builder has run the program before. Returns how many of
 * them were missing there.
 */
async function seedNpm(root: string, denoDir: string): Promise<number> {
  const lock = JSON.parse(await Deno.readTextFile(`${root}/deno.lock`));
  const from = `${await builderDenoDir(root)}/npm/registry.npmjs.org`;
  const to = `${denoDir}/npm/registry.npmjs.org`;
  let missing = 0;
  for (const key of Object.keys(lock.npm ?? {})) {
    const [name, version] = splitLockKey(key);
    try {
      cpSync(`${from}/${name}/${version}`, `${to}/${name}/${version}`, { recursive: true });
    } catch {
      missing++;
    }
  }
  return missing;
}

/** Runs deno with DENO_DIR=`denoDir`; throws with its output when it fails. */
async function deno(args: string[], cwd: string, denoDir: string): Promise<void> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { DENO_DIR: denoDir, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    stdin: "null",
  }).output();
  if (!out.success) {
    const err = new TextDecoder().decode(out.stderr);
    throw new Error(`deno ${args.join(" ")} failed (exit ${out.code}):\n${err}`);
  }
}

/** Builds the staging directory `dir` (emptied first) from the checkout at `root`. */
export async function stage(root: string, dir: string, kind: BuildKind): Promise<Stage> {
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  const app = `${dir}/app`;
  const denoDir = `${dir}/deno_dir`;
  await Deno.mkdir(app, { recursive: true });
  for (const s of SOURCES) cpSync(`${root}/${s}`, `${app}/${s}`, { recursive: true });
  const st: Stage = { dir, app, denoDir, commit: await gitCommit(root), builtAt: buildTime() };
  const buildTs = `${app}/mod/build.ts`;
  await Deno.writeTextFile(buildTs, buildModule(await Deno.readTextFile(buildTs), kind, st));

  const missing = await seedNpm(root, denoDir);
  if (missing > 0) {
    console.error(
      `compile: ${missing} npm package(s) of deno.lock not in the local Deno cache; ` +
        `deno cache fetches them from the registry`,
    );
  }
  // With every package seeded this reads no network (the lock pins versions and integrity).
  await deno(
    ["cache", "--quiet", "--frozen", "--config", "deno.json", ENTRY, ...WORKER_ENTRIES],
    app,
    denoDir,
  );
  // Only the packages travel: the other caches are keyed by absolute paths and are rebuilt
  // where the program runs.
  for await (const e of Deno.readDir(denoDir)) {
    if (e.name !== "npm") await Deno.remove(`${denoDir}/${e.name}`, { recursive: true });
  }
  return st;
}

/** The line of mod/build.ts that says what the build is; the build replaces it. */
const BUILD_LINE = /^export const BUILD: BuildInfo = .*;$/m;

/** mod/build.ts (`source`, the checkout's) with the build's facts baked in. */
function buildModule(source: string, kind: BuildKind, st: Stage): string {
  if (!BUILD_LINE.test(source)) {
    throw new Error(`mod/build.ts has no line matching ${BUILD_LINE}: cannot bake the build in`);
  }
  const info = { kind, commit: st.commit, builtAt: st.builtAt };
  return source.replace(
    BUILD_LINE,
    `export const BUILD: BuildInfo = ${JSON.stringify(info)}; // baked by scripts/compile.ts`,
  );
}
