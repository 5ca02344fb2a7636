// deno-lint-ignore-file no-console
/**
 * `deno task compile [--kind auto|deno-compile|self-extracting] [--output PATH]`: builds the
 * one-file `dist/ballast` from a staged copy of the source (_compile_stage.ts: build facts
 * baked into mod/build.ts, npm packages in a private Deno directory), then runs
 * `ballast version -o json` to prove it starts and reports the right kind of build.
 *
 * - deno-compile: `deno compile`, which needs a runtime base (denort) that it normally
 *   downloads from Deno's download host. A local base is used from env DENORT_BIN (the
 *   denort binary itself, not `deno`) or $DENO_DIR/dl/release/v<deno version>/denort-<target>.zip.
 * - self-extracting (_compile_sfx.ts): the pinned Deno runtime, the program and its npm
 *   packages in one file that unpacks itself on first start. Needs no base.
 *
 * `auto` (the default) makes deno-compile when a base is found, else self-extracting;
 * `--kind deno-compile` without a base exits 1 naming both places a base can be.
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import type { BuildKind } from "../mod/build.ts";
import { VERSION } from "../mod/version.ts";
import { ENTRY, RUN_FLAGS, type Stage, stage, WORKER_ENTRIES } from "./_compile_stage.ts";
import { packSelfExtracting } from "./_compile_sfx.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
const DENO = Deno.execPath();
const DEFAULT_OUTPUT = "dist/ballast";

const USAGE = `Usage: deno task compile [--kind auto|deno-compile|self-extracting] [--output PATH]

Builds the one-file Ballast program (default ${DEFAULT_OUTPUT}).
  --kind KIND     auto (default): deno-compile when a denort base is found
                  (DENORT_BIN, or the release zip in DENO_DIR), else self-extracting
  --output PATH   where to write the program (default ${DEFAULT_OUTPUT})
  -h, --help      show this help
`;

function fail(message: string): never {
  console.error(`compile: ${message}`);
  Deno.exit(1);
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

async function output(cmd: string, args: string[], env?: Record<string, string>) {
  // A base that is really the full deno binary would sit in the REPL: never wait forever.
  return await new Deno.Command(cmd, {
    args,
    cwd: ROOT,
    env,
    stdin: "null",
    signal: AbortSignal.timeout(120_000),
  }).output();
}

/** Where deno compile will find its runtime base, or undefined with the paths looked at. */
async function findDenort(): Promise<{ found?: string; looked: string[] }> {
  const looked: string[] = [];
  const envBin = Deno.env.get("DENORT_BIN");
  if (envBin) {
    if (!await isFile(envBin)) fail(`DENORT_BIN=${envBin} is not a file`);
    if ((await Deno.realPath(envBin)) === (await Deno.realPath(DENO))) {
      fail(
        `DENORT_BIN=${envBin} is the full deno binary; that does not work as a base ` +
          `(the compiled program would start the REPL). Point it at a denort binary.`,
      );
    }
    return { found: `DENORT_BIN=${envBin}`, looked };
  }
  looked.push("DENORT_BIN (not set)");
  const info = await output(DENO, ["info", "--json"]);
  if (!info.success) {
    fail(`deno info --json failed:\n${new TextDecoder().decode(info.stderr)}`);
  }
  const denoDir: string = JSON.parse(new TextDecoder().decode(info.stdout)).denoDir;
  const zip = `${denoDir}/dl/release/v${Deno.version.deno}/denort-${Deno.build.target}.zip`;
  if (await isFile(zip)) return { found: zip, looked };
  looked.push(zip);
  return { looked };
}

function noBase(looked: string[]): never {
  fail(
    [
      `no local deno runtime base (denort) for deno ${Deno.version.deno} ${Deno.build.target}.`,
      `deno compile would try to download it, which does not work here. Provide one of:`,
      `  1. DENORT_BIN=/path/to/denort  (a denort binary of deno ${Deno.version.deno}; the full deno binary does not work)`,
      `  2. ${looked[looked.length - 1]}`,
      `     (the denort-${Deno.build.target}.zip release asset, in DENO_DIR from 'deno info --json')`,
      `or build the self-extracting kind instead (--kind self-extracting, or --kind auto).`,
    ].join("\n"),
  );
}

/**
 * `deno compile` of the staged source, with the stage's Deno directory (the npm packages are
 * there, so nothing is fetched); a base found as the release zip is copied in beside them.
 */
async function denoCompile(st: Stage, base: string, out: string): Promise<void> {
  if (!base.startsWith("DENORT_BIN=")) {
    const dl = `${st.denoDir}/dl/release/v${Deno.version.deno}`;
    await Deno.mkdir(dl, { recursive: true });
    await Deno.copyFile(base, `${dl}/${base.slice(base.lastIndexOf("/") + 1)}`);
  }
  const args = [
    "compile",
    ...RUN_FLAGS,
    "--frozen",
    "--config",
    `${st.app}/deno.json`,
    "--output",
    out,
    ...WORKER_ENTRIES.flatMap((f) => ["--include", `${st.app}/${f}`]),
    `${st.app}/${ENTRY}`,
  ];
  console.error(`compile: deno ${args.join(" ")}`);
  const status = await new Deno.Command(DENO, {
    args,
    cwd: st.app,
    env: { DENO_DIR: st.denoDir, DENO_NO_UPDATE_CHECK: "1" },
    stdin: "null",
  }).spawn().status;
  if (!status.success) fail(`deno compile failed (exit ${status.code})`);
}

/** Runs `out version -o json` (with a throwaway unpack directory) and checks what it reports. */
async function proveStarts(out: string, kind: BuildKind): Promise<void> {
  const cache = await Deno.makeTempDir({ prefix: "ballast-compile-check-" });
  try {
    const check = await output(out, ["version", "--client", "-o", "json"], {
      BALLAST_CACHE_DIR: cache,
    });
    const stdout = new TextDecoder().decode(check.stdout);
    const stderr = new TextDecoder().decode(check.stderr);
    let client: { version?: string; build?: string } = {};
    try {
      client = JSON.parse(stdout).client ?? {};
    } catch {
      // reported below
    }
    if (!check.success || client.version !== VERSION || client.build !== kind) {
      fail(
        `${out} version -o json did not report version ${VERSION}, build ${kind} ` +
          `(exit ${check.code})\nstdout: ${stdout}\nstderr: ${stderr}`,
      );
    }
  } finally {
    await Deno.remove(cache, { recursive: true }).catch(() => {});
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      kind: { type: "string", default: "auto" },
      output: { type: "string", default: DEFAULT_OUTPUT },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const want = values.kind;
  if (want !== "auto" && want !== "deno-compile" && want !== "self-extracting") {
    fail(`--kind ${want} is not one of auto, deno-compile, self-extracting`);
  }
  const out = values.output.startsWith("/") ? values.output : `${ROOT}/${values.output}`;
  const started = performance.now();

  let kind: BuildKind = "self-extracting";
  let base = "";
  if (want !== "self-extracting") {
    const denort = await findDenort();
    if (denort.found) {
      kind = "deno-compile";
      base = denort.found;
      console.error(`compile: using runtime base ${denort.found}`);
    } else if (want === "deno-compile") {
      noBase(denort.looked);
    } else {
      console.error(
        `compile: no denort base (DENORT_BIN, ${denort.looked.at(-1)}): ` +
          `building the self-extracting kind`,
      );
    }
  }

  await Deno.mkdir(out.slice(0, out.lastIndexOf("/")) || "/", { recursive: true });
  const stageDir = await Deno.makeTempDir({ prefix: "ballast-stage-" });
  try {
    const st = await stage(ROOT, stageDir, kind);
    if (kind === "deno-compile") {
      await denoCompile(st, base, out);
    } else {
      const { digest } = await packSelfExtracting(st, VERSION, out);
      console.error(`compile: payload sha256 ${digest}`);
    }
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  } finally {
    await Deno.remove(stageDir, { recursive: true }).catch(() => {});
    await Deno.remove(`${stageDir}.payload.tgz`).catch(() => {});
  }

  await proveStarts(out, kind);
  const size = (await Deno.stat(out)).size;
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  console.log(
    `compile: built ${out}: ${kind}, ${(size / 2 ** 20).toFixed(1)} MiB, in ${secs} s`,
  );
}

await main();
