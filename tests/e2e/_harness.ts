/**
 * Helpers for end-to-end tests that drive real processes: a `ballast serve`
 * on loopback with a temporary data directory, the `ballast` CLI, and
 * external NBD clients (nbdinfo, qemu-io, fio, nbdsh...).
 *
 * Tests that need a tool which is not installed are registered as ignored,
 * with the missing tool named in the test name, never as a silent pass:
 *
 *     e2eTest("qemu-io reads back what it wrote", { tools: ["qemu-io"] }, async () => {
 *       await using b = await startBallast();
 *       ...
 *     });
 *
 * Set BALLAST_BIN=/path/to/dist/ballast to drive a compiled binary instead of
 * `deno run -A main.ts`.
 * @module
 */

import { fileURLToPath } from "node:url";

/** Absolute path of the repository root (the folder holding deno.json). */
export const REPO_ROOT: string = fileURLToPath(new URL("../../", import.meta.url)).replace(
  /\/$/,
  "",
);
/** Absolute path of the product entry point. */
export const MAIN_TS: string = `${REPO_ROOT}/main.ts`;

const READY_MSG = "ballast ready";
const DEFAULT_READY_TIMEOUT_MS = 30_000;
const DEFAULT_STOP_TIMEOUT_MS = 15_000;
const DEFAULT_RUN_TIMEOUT_MS = 60_000;
const LOG_TAIL_CHARS = 8_000;

// ---------------------------------------------------------------------------
// Tools on PATH
// ---------------------------------------------------------------------------

/** Whether `name` is an executable file on PATH (or, if it contains "/", at that path). */
export function haveTool(name: string): boolean {
  const candidates = name.includes("/")
    ? [name]
    : (Deno.env.get("PATH") ?? "").split(":").filter((d) => d !== "").map((d) => `${d}/${name}`);
  for (const path of candidates) {
    try {
      const st = Deno.statSync(path);
      if (st.isFile && st.mode !== null && (st.mode & 0o111) !== 0) return true;
    } catch {
      // not here; try the next directory
    }
  }
  return false;
}

/**
 * Returns undefined when every tool is on PATH, otherwise a reason naming the
 * missing ones, for `Deno.test({ ignore })` and the test name.
 */
export function requireTools(tools: readonly string[]): string | undefined {
  const missing = tools.filter((t) => !haveTool(t));
  if (missing.length === 0) return undefined;
  return `missing tool${missing.length > 1 ? "s" : ""}: ${
    missing.join(", ")
  } (scripts/setup.sh installs them)`;
}

/** Returns undefined when main.ts exists (or BALLAST_BIN is set), otherwise why not. */
export function requireBallast(): string | undefined {
  const bin = Deno.env.get("BALLAST_BIN");
  if (bin) return haveTool(bin) ? undefined : `BALLAST_BIN=${bin} is not an executable file`;
  try {
    Deno.statSync(MAIN_TS);
    return undefined;
  } catch {
    return `${MAIN_TS} does not exist`;
  }
}

/** Why a test cannot run for lack of `paths`, or undefined when they all exist. */
function requirePaths(paths: string[]): string | undefined {
  const missing = paths.filter((p) => {
    try {
      Deno.statSync(p);
      return false;
    } catch {
      return true;
    }
  });
  return missing.length > 0 ? `${missing.join(", ")} missing on this machine` : undefined;
}

/** Options of {@link e2eTest}. */
export interface E2eTestOptions {
  /** External tools the test runs; the test is ignored, with the reason in its name, when any is missing. */
  tools?: string[];
  /** Whether the test needs the ballast entry point (default true). */
  ballast?: boolean;
  /** Device or other files the test needs (e.g. /dev/fuse); ignored with the reason if absent. */
  paths?: string[];
  /** A reason this test cannot run here (found by the caller); the test is ignored with it. */
  skip?: string;
  /** Passed on to Deno.test. */
  sanitizeOps?: boolean;
  /** Passed on to Deno.test. */
  sanitizeResources?: boolean;
}

/**
 * Registers a Deno test that is ignored (reason appended to its name, so the
 * runner prints it next to "ignored") when a needed tool or main.ts is missing.
 */
export function e2eTest(
  name: string,
  opts: E2eTestOptions,
  fn: (t: Deno.TestContext) => Promise<void> | void,
): void {
  const reasons = [
    opts.skip,
    requireTools(opts.tools ?? []),
    requirePaths(opts.paths ?? []),
    opts.ballast === false ? undefined : requireBallast(),
  ].filter((r): r is string => r !== undefined);
  const ignore = reasons.length > 0;
  Deno.test({
    name: ignore ? `${name} [skipped: ${reasons.join("; ")}]` : name,
    ignore,
    sanitizeOps: opts.sanitizeOps,
    sanitizeResources: opts.sanitizeResources,
    fn,
  });
}

// ---------------------------------------------------------------------------
// Running external commands
// ---------------------------------------------------------------------------

/** Options of {@link run}. */
export interface RunOptions {
  /** Kill the command (SIGKILL) after this many ms; default 60 s. */
  timeoutMs?: number;
  /** Return `timedOut: true` instead of throwing when the timeout hits. */
  allowTimeout?: boolean;
  /** Extra environment variables (added to this process's environment). */
  env?: Record<string, string>;
  /** Start from an empty environment (only `env`), not this process's. */
  clearEnv?: boolean;
  /** Working directory; default the repository root. */
  cwd?: string;
  /** Data written to the command's standard input (closed afterwards); default no stdin. */
  stdin?: string | Uint8Array;
}

/** What a finished command left behind. */
export interface RunResult {
  /** Exit status; 128 + signal number when killed by a signal. */
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/**
 * Runs `cmd args...` to completion and returns its exit status and output. A
 * command that is not installed, or that outlives `timeoutMs`, throws an
 * error naming it (with its stderr), unless `allowTimeout` is set.
 */
export async function run(
  cmd: string,
  args: readonly string[],
  opts: RunOptions = {},
): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_RUN_TIMEOUT_MS;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(cmd, {
      args: [...args],
      cwd: opts.cwd ?? REPO_ROOT,
      clearEnv: opts.clearEnv,
      env: opts.env,
      stdin: opts.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error(`${cmd}: command not found on PATH (scripts/setup.sh installs tools)`, {
        cause: err,
      });
    }
    throw err;
  }
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }, timeoutMs);
  try {
    const output = child.output();
    if (opts.stdin !== undefined) {
      const data = typeof opts.stdin === "string"
        ? new TextEncoder().encode(opts.stdin)
        : opts.stdin;
      const writer = child.stdin.getWriter();
      try {
        await writer.write(data);
        await writer.close();
      } catch {
        // the command exited without reading all its input; its status tells the story
      }
    }
    const out = await output;
    const decoder = new TextDecoder();
    const result: RunResult = {
      code: out.code,
      signal: out.signal,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
      timedOut,
    };
    if (timedOut && !opts.allowTimeout) {
      throw new Error(
        `${cmd} ${args.join(" ")}: timed out after ${timeoutMs} ms; stderr:\n${
          tail(result.stderr)
        }`,
      );
    }
    return result;
  } finally {
    clearTimeout(timer);
  }
}

/** A free TCP port on 127.0.0.1 (see tests/_ports.ts). */
export { freePort } from "../_ports.ts";

// ---------------------------------------------------------------------------
// The ballast server
// ---------------------------------------------------------------------------

/** Options of {@link startBallast}. */
export interface StartOptions {
  /** Data directory to use (kept afterwards); default a fresh temp dir removed by stop(). */
  dataDir?: string;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Extra arguments after `serve ...` (a repeated flag overrides the default). */
  args?: string[];
  /** API listen address; default 127.0.0.1:0 (a free port). */
  apiListen?: string;
  /** NBD listen address; default 127.0.0.1:0 (a free port). */
  nbdListen?: string;
  /** How long to wait for the ready line; default 30 s. */
  readyTimeoutMs?: number;
  /** Run with TLS on every endpoint (default off: plaintext on loopback). */
  tls?: boolean;
  /** Entry script run with `deno run -A`; default main.ts (tests of the harness use a fake). */
  entry?: string;
  /** The ballast program to run (a built file); default BALLAST_BIN, else `deno run main.ts`. */
  bin?: string;
  /** A command line to run ballast under, e.g. `["ip", "netns", "exec", NS]`. */
  wrap?: string[];
  /** Working directory; default the repository root. */
  cwd?: string;
  /** Start from an empty environment (only `env` and NO_COLOR), not this process's. */
  clearEnv?: boolean;
}

/** A running `ballast serve`. */
export interface BallastProcess {
  /** Base URL of the HTTP API, e.g. http://127.0.0.1:41234. */
  readonly api: string;
  readonly nbdHost: string;
  readonly nbdPort: number;
  readonly dataDir: string;
  readonly pid: number;
  /** nbd://host:port/name for an export (volume) name. */
  nbdUri(name: string): string;
  /** Everything the process wrote to stdout and stderr so far. */
  logs(): string;
  /**
   * Whether the logs include `text` within `timeoutMs` (default 15 s). A line logged after the
   * effect a test saw still travels through a pipe, so a test waits for it rather than reading
   * `logs()` at once.
   */
  logged(text: string | RegExp, timeoutMs?: number): Promise<boolean>;
  /** Whether the process has exited. */
  exited(): boolean;
  /** Sends a signal (default SIGKILL) and waits until the process has exited. Keeps the data dir. */
  kill(signal?: Deno.Signal): Promise<void>;
  /** Sends a signal and returns at once (SIGSTOP, SIGCONT). */
  signal(signal: Deno.Signal): void;
  /**
   * SIGTERM, waits for exit (SIGKILL after 15 s, then `forced` is true), and
   * removes the data dir if the harness made it.
   */
  stop(): Promise<{ code: number; signal: Deno.Signal | null; forced: boolean }>;
  /**
   * Stops the process (SIGTERM) and starts a new one on the same data dir,
   * by default on the same API and NBD ports, so clients can reconnect.
   */
  restart(opts?: { samePorts?: boolean }): Promise<BallastProcess>;
  [Symbol.asyncDispose](): Promise<void>;
}

interface InternalStart extends StartOptions {
  ownsDataDir?: boolean;
}

/** BALLAST_BIN, made absolute (tests run commands from other directories). */
function envBin(): string | undefined {
  const bin = Deno.env.get("BALLAST_BIN");
  return bin && !bin.startsWith("/") ? `${Deno.cwd()}/${bin}` : bin || undefined;
}

/**
 * The command line that starts ballast with `args`: `bin` (default BALLAST_BIN) or main.ts
 * under deno, after the `wrap` command line when given.
 */
function ballastCommand(
  args: string[],
  o: { entry?: string; bin?: string; wrap?: string[] } = {},
): { cmd: string; args: string[] } {
  const bin = o.bin ?? (o.entry === undefined ? envBin() : undefined);
  const line = bin ? [bin, ...args] : [Deno.execPath(), "run", "-A", o.entry ?? MAIN_TS, ...args];
  const full = [...(o.wrap ?? []), ...line];
  return { cmd: full[0], args: full.slice(1) };
}

/** Splits "host:port" or "[v6]:port". */
function splitHostPort(addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(":");
  const port = Number(addr.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new Error(`bad host:port address in ballast ready line: ${JSON.stringify(addr)}`);
  }
  return { host: addr.slice(0, i), port };
}

/** Finds the ready line (JSON, or the pretty format) in the log text; undefined if not there yet. */
export function parseReadyLine(text: string): { api: string; nbd: string } | undefined {
  for (const line of text.split("\n")) {
    if (!line.includes(READY_MSG)) continue;
    try {
      const rec = JSON.parse(line);
      if (
        rec && rec.msg === READY_MSG && typeof rec.api === "string" && typeof rec.nbd === "string"
      ) {
        return { api: rec.api, nbd: rec.nbd };
      }
    } catch {
      const api = /\bapi=(\S+)/.exec(line)?.[1];
      const nbd = /\bnbd=(\S+)/.exec(line)?.[1];
      if (api && nbd) return { api, nbd };
    }
  }
  return undefined;
}

function tail(s: string, n = LOG_TAIL_CHARS): string {
  return s.length <= n ? s : `...${s.slice(s.length - n)}`;
}

/**
 * Starts `ballast serve` on loopback with ports picked by the OS and waits
 * (30 s by default) for its "ballast ready" log line. Rejects with the output
 * so far if the process exits or stays silent.
 */
export async function startBallast(opts: StartOptions = {}): Promise<BallastProcess> {
  return await start(opts);
}

async function start(opts: InternalStart): Promise<BallastProcess> {
  const ownsDataDir = opts.dataDir === undefined || opts.ownsDataDir === true;
  const dataDir = opts.dataDir ?? await Deno.makeTempDir({ prefix: "ballast-e2e-" });
  const serveArgs = [
    "serve",
    "--data-dir",
    dataDir,
    "--api-listen",
    opts.apiListen ?? "127.0.0.1:0",
    "--nbd-listen",
    opts.nbdListen ?? "127.0.0.1:0",
    "--log-level",
    "debug",
    // Plaintext on loopback unless the test is about TLS (then the node creates its CA).
    "--tls",
    opts.tls ? "on" : "off",
    ...(opts.args ?? []),
  ];
  const { cmd, args } = ballastCommand(serveArgs, opts);
  const child = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd ?? REPO_ROOT,
    clearEnv: opts.clearEnv,
    env: { NO_COLOR: "1", ...opts.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();

  let logText = "";
  let onOutput: () => void = () => {};
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      logText += chunk;
      onOutput();
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  let exitStatus: Deno.CommandStatus | undefined;
  const status = child.status.then(async (s) => {
    exitStatus = s;
    await pumps;
    onOutput();
    return s;
  });

  const removeDir = async () => {
    if (ownsDataDir) await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  };

  // Wait for the ready line, an exit, or the timeout.
  const readyTimeoutMs = opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const ready = await new Promise<{ api: string; nbd: string } | string>((resolve) => {
    onOutput = () => {
      const found = parseReadyLine(logText);
      if (found) resolve(found);
      else if (exitStatus) {
        resolve(`ballast exited (code ${exitStatus.code}) before logging "${READY_MSG}"`);
      }
    };
    timer = setTimeout(
      () => resolve(`ballast did not log "${READY_MSG}" within ${readyTimeoutMs} ms`),
      readyTimeoutMs,
    );
    onOutput();
  });
  clearTimeout(timer);
  onOutput = () => {};

  if (typeof ready === "string") {
    if (!exitStatus) {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }
    await status;
    await removeDir();
    throw new Error(
      `${ready}\ncommand: ${cmd} ${args.join(" ")}\noutput so far:\n${tail(logText)}`,
    );
  }

  let nbd: { host: string; port: number };
  try {
    nbd = splitHostPort(ready.nbd);
  } catch (err) {
    child.kill("SIGKILL");
    await status;
    await removeDir();
    throw err;
  }
  const apiUrl = new URL(ready.api);
  const apiListenNow = `${apiUrl.hostname}:${apiUrl.port}`;

  let stopped = false;
  const waitExit = async (ms: number): Promise<boolean> => {
    let t: ReturnType<typeof setTimeout> | undefined;
    const timedOut = await Promise.race([
      status.then(() => false),
      new Promise<boolean>((r) => t = setTimeout(() => r(true), ms)),
    ]);
    clearTimeout(t);
    return !timedOut;
  };
  const signalAndWait = async (signal: Deno.Signal) => {
    if (!exitStatus) {
      try {
        child.kill(signal);
      } catch {
        // exited meanwhile
      }
    }
    await status;
  };
  const terminate = async () => {
    let forced = false;
    if (!exitStatus) {
      try {
        child.kill("SIGTERM");
      } catch {
        // exited meanwhile
      }
      if (!await waitExit(DEFAULT_STOP_TIMEOUT_MS)) {
        forced = true;
        await signalAndWait("SIGKILL");
      }
    }
    const s = await status;
    return { code: s.code, signal: s.signal, forced };
  };

  const proc: BallastProcess = {
    api: ready.api,
    nbdHost: nbd.host,
    nbdPort: nbd.port,
    dataDir,
    pid: child.pid,
    nbdUri: (name: string) => `nbd://${nbd.host}:${nbd.port}/${encodeURIComponent(name)}`,
    logs: () => logText,
    logged: async (text: string | RegExp, timeoutMs = 15_000) => {
      const seen = () => typeof text === "string" ? logText.includes(text) : text.test(logText);
      const deadline = Date.now() + timeoutMs;
      while (!seen() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      return seen();
    },
    exited: () => exitStatus !== undefined,
    kill: (signal: Deno.Signal = "SIGKILL") => signalAndWait(signal),
    signal: (signal: Deno.Signal) => {
      if (!exitStatus) child.kill(signal);
    },
    stop: async () => {
      const result = await terminate();
      if (!stopped) {
        stopped = true;
        await removeDir();
      }
      return result;
    },
    restart: async (ropts: { samePorts?: boolean } = {}) => {
      await terminate();
      stopped = true; // the new process owns the data dir from now on
      const samePorts = ropts.samePorts ?? true;
      return await start({
        ...opts,
        dataDir,
        ownsDataDir,
        apiListen: samePorts ? apiListenNow : opts.apiListen,
        nbdListen: samePorts ? `${nbd.host}:${nbd.port}` : opts.nbdListen,
      });
    },
    [Symbol.asyncDispose]: async () => {
      if (!stopped) await proc.stop();
    },
  };
  return proc;
}

// ---------------------------------------------------------------------------
// The ballast CLI
// ---------------------------------------------------------------------------

/** Options of {@link cli}: those of {@link run} plus the API URL and the program. */
export interface CliOptions extends RunOptions {
  /** Appended as `--api URL` unless the arguments already have --api. */
  api?: string;
  /** The ballast program to run (a built file); default BALLAST_BIN, else `deno run main.ts`. */
  bin?: string;
  /** A command line to run ballast under, e.g. `["ip", "netns", "exec", NS]`. */
  wrap?: string[];
}

/**
 * Runs `deno run -A main.ts ...args` (or BALLAST_BIN) from the repository root,
 * e.g. `cli(["volume", "create", "v1", "--size", "1GiB"], { api: b.api })`.
 */
export async function cli(args: string[], opts: CliOptions = {}): Promise<RunResult> {
  const full = opts.api !== undefined && !args.some((a) => a === "--api" || a.startsWith("--api="))
    ? [...args, "--api", opts.api]
    : args;
  const { cmd, args: cmdArgs } = ballastCommand(full, opts);
  return await run(cmd, cmdArgs, { ...opts, env: { NO_COLOR: "1", ...opts.env } });
}
