// deno-lint-ignore-file no-console
/**
 * `deno task compile`: builds the single `dist/ballast` binary with
 * `deno compile`, then runs `dist/ballast version` to prove it starts.
 *
 * `deno compile` needs a runtime base (denort) that it normally downloads from
 * Deno's download host, which may be unreachable. This script therefore checks
 * first that a local base exists, in one of two places:
 *   1. env DENORT_BIN=/path/to/denort (the denort binary itself, not `deno`), or
 *   2. $DENO_DIR/dl/release/v<deno version>/denort-<target>.zip
 *      (DENO_DIR as reported by `deno info --json`).
 * With neither, it exits 1 naming both.
 * @module
 */

import { fileURLToPath } from "node:url";
import { VERSION } from "../mod/version.ts";

/**
 * Files loaded at run time that the module graph does not show (Workers via
 * `new Worker(new URL(...))`, assets read with Deno.readFile). Paths are
 * relative to the repository root; each becomes an `--include`.
 */
const INCLUDES: string[] = [
  // "data/_conn_worker.ts",
];

const ENTRY = "main.ts";
const OUTPUT = "dist/ballast";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DENO = Deno.execPath();

function fail(message: string): never {
  console.error(`compile: ${message}`);
  Deno.exit(1);
}

async function exists(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile;
  } catch {
    return false;
  }
}

async function output(cmd: string, args: string[]): Promise<Deno.CommandOutput> {
  // A base that is really the full deno binary would sit in the REPL: never wait forever.
  return await new Deno.Command(cmd, {
    args,
    cwd: ROOT,
    stdin: "null",
    signal: AbortSignal.timeout(60_000),
  }).output();
}

/** Where deno compile will find its runtime base, or undefined with the paths looked at. */
async function findDenort(): Promise<{ found?: string; looked: string[] }> {
  const looked: string[] = [];
  const envBin = Deno.env.get("DENORT_BIN");
  if (envBin) {
    if (!await exists(envBin)) fail(`DENORT_BIN=${envBin} is not a file`);
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
  if (await exists(zip)) return { found: zip, looked };
  looked.push(zip);
  return { looked };
}

async function main(): Promise<void> {
  Deno.chdir(ROOT);
  const denort = await findDenort();
  if (!denort.found) {
    fail(
      [
        `no local deno runtime base (denort) for deno ${Deno.version.deno} ${Deno.build.target}.`,
        `deno compile would try to download it, which does not work here. Provide one of:`,
        `  1. DENORT_BIN=/path/to/denort  (a denort binary of deno ${Deno.version.deno}; the full deno binary does not work)`,
        `  2. ${denort.looked[denort.looked.length - 1]}`,
        `     (the denort-${Deno.build.target}.zip release asset, in DENO_DIR from 'deno info --json')`,
      ].join("\n"),
    );
  }
  console.error(`compile: using runtime base ${denort.found}`);

  if (!await exists(ENTRY)) fail(`${ROOT}${ENTRY} does not exist`);
  for (const inc of INCLUDES) {
    if (!await exists(inc)) fail(`included file ${inc} does not exist (see INCLUDES)`);
  }

  await Deno.mkdir("dist", { recursive: true });
  const args = [
    "compile",
    "--allow-all",
    "--output",
    OUTPUT,
    ...INCLUDES.flatMap((f) => ["--include", f]),
    ENTRY,
  ];
  console.error(`compile: deno ${args.join(" ")}`);
  const status = await new Deno.Command(DENO, {
    args,
    cwd: ROOT,
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn().status;
  if (!status.success) fail(`deno compile failed (exit ${status.code})`);

  // Prove the binary starts: `ballast version` must print the release version.
  const check = await output(`${ROOT}${OUTPUT}`, ["version"]);
  const out = new TextDecoder().decode(check.stdout);
  const err = new TextDecoder().decode(check.stderr);
  if (!check.success || !out.includes(VERSION)) {
    fail(
      `${OUTPUT} version did not print ${VERSION} (exit ${check.code})\n` +
        `stdout: ${out}\nstderr: ${err}`,
    );
  }
  const size = (await Deno.stat(OUTPUT)).size;
  console.log(
    `compile: built ${OUTPUT} (${(size / 2 ** 20).toFixed(1)} MiB); version: ${out.trim()}`,
  );
}

await main();
