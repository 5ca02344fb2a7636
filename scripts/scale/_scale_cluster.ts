/**
 * The cluster scripts/scale/scale_sim.ts measures: one real etcd (plaintext, loopback) and N
 * `ballast serve --etcd` nodes with TLS (the first makes the cluster CA, the others join
 * with tokens), each kept small (one data thread, a capped V8 heap). Every process writes
 * its output to a log file in the run directory, never to a pipe, so a slow reader cannot
 * stall a node; {@link LogTail} reads the files as they grow.
 *
 * Every process started here is tracked and killed by {@link killAll}, which the script
 * calls on exit, on error and on Ctrl-C.
 * @module
 */

import { fileURLToPath } from "node:url";
import { BallastClient } from "../../mod/mod.ts";

/** The repository root (cwd of every spawned process). */
export const ROOT: string = fileURLToPath(new URL("../..", import.meta.url));
const MAIN_TS = `${ROOT}main.ts`;

/** A process started by this module, with its output in `logFile`. */
export interface Proc {
  name: string;
  pid: number;
  logFile: string;
  child: Deno.ChildProcess;
  exited(): boolean;
}

const running = new Set<Proc>();

/** SIGKILLs every process still running and waits for each to exit. */
export async function killAll(): Promise<void> {
  const procs = [...running];
  running.clear();
  for (const p of procs) {
    try {
      p.child.kill("SIGKILL");
    } catch { /* already gone */ }
  }
  await Promise.all(procs.map((p) => p.child.status.catch(() => {})));
}

/** Starts `cmd args` with stdout and stderr appended to `logFile`; the pid is cmd's own. */
function spawn(name: string, logFile: string, cmd: string, args: string[]): Proc {
  const child = new Deno.Command("sh", {
    args: ["-c", 'exec "$@" >>"$BALLAST_SCALE_LOG" 2>&1', "sh", cmd, ...args],
    cwd: ROOT,
    env: { NO_COLOR: "1", BALLAST_SCALE_LOG: logFile },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  let done = false;
  const proc: Proc = { name, pid: child.pid, logFile, child, exited: () => done };
  running.add(proc);
  child.status.then(() => {
    done = true;
    running.delete(proc);
  });
  return proc;
}

/** Kills `p` with SIGKILL and waits until it has exited. */
export async function kill9(p: Proc): Promise<void> {
  try {
    p.child.kill("SIGKILL");
  } catch { /* already gone */ }
  await p.child.status;
}

/** Reads a log file as it grows, line by line, from where the last read stopped. */
export class LogTail {
  readonly #path: string;
  #offset = 0;
  #rest = "";
  readonly #decoder = new TextDecoder();

  constructor(path: string) {
    this.#path = path;
  }

  /** The complete lines written since the last call. */
  async read(): Promise<string[]> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(this.#path);
    } catch {
      return [];
    }
    try {
      await file.seek(this.#offset, Deno.SeekMode.Start);
      const buf = new Uint8Array(1 << 20);
      let text = "";
      for (;;) {
        const n = await file.read(buf);
        if (n === null) break;
        this.#offset += n;
        text += this.#decoder.decode(buf.subarray(0, n), { stream: true });
      }
      const lines = (this.#rest + text).split("\n");
      this.#rest = lines.pop() ?? "";
      return lines;
    } finally {
      file.close();
    }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function freePort(): number {
  // Below the ephemeral range (32768-), so that no outgoing connection takes it meanwhile.
  for (let i = 0; i < 1000; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch { /* in use */ }
  }
  throw new Error("no free port found in 20000-31999");
}

export interface Etcd {
  proc: Proc;
  /** Client URL, http://127.0.0.1:PORT (also serves /metrics). */
  url: string;
}

/** Starts one etcd member on loopback with its data in `dir`/etcd; waits until it answers. */
export async function startEtcd(dir: string): Promise<Etcd> {
  for (let attempt = 1;; attempt++) {
    const url = `http://127.0.0.1:${freePort()}`;
    const peer = `http://127.0.0.1:${freePort()}`;
    const logFile = `${dir}/etcd.log`;
    const proc = spawn("etcd", logFile, "etcd", [
      "--name=scale",
      `--data-dir=${dir}/etcd`,
      `--listen-client-urls=${url}`,
      `--advertise-client-urls=${url}`,
      `--listen-peer-urls=${peer}`,
      `--initial-advertise-peer-urls=${peer}`,
      `--initial-cluster=scale=${peer}`,
      "--initial-cluster-state=new",
      "--log-level=warn",
      "--logger=zap",
    ]);
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && !proc.exited()) {
      try {
        const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
        const body = await res.json() as { health?: string };
        if (body.health === "true") return { proc, url };
      } catch { /* not yet */ }
      await sleep(100);
    }
    await kill9(proc);
    const log = await Deno.readTextFile(logFile).catch(() => "");
    if (attempt < 3 && log.includes("address already in use")) {
      await Deno.remove(`${dir}/etcd`, { recursive: true }).catch(() => {});
      continue;
    }
    throw new Error(`etcd did not become healthy; its log:\n${log.slice(-4000)}`);
  }
}

export interface NodeOptions {
  etcdUrl: string;
  leaseTtlS: number;
  /** V8 old-generation cap in MiB (0: V8's default). */
  heapMiB: number;
  /** `serve --crash-detection`. */
  crashDetection: boolean;
}

export interface Node {
  name: string;
  proc: Proc;
  dataDir: string;
  /** https://127.0.0.1:PORT */
  api: string;
  tail: LogTail;
}

/** Starts node `name` and waits (up to `timeoutMs`) for its "ballast ready" line. */
export async function startNode(
  dir: string,
  name: string,
  o: NodeOptions,
  joinToken?: string,
  timeoutMs = 180_000,
): Promise<Node> {
  const dataDir = `${dir}/${name}`;
  await Deno.mkdir(dataDir, { recursive: true });
  const v8 = o.heapMiB > 0 ? [`--v8-flags=--max-old-space-size=${o.heapMiB}`] : [];
  const proc = spawn(name, `${dir}/${name}.log`, Deno.execPath(), [
    "run",
    "-A",
    ...v8,
    MAIN_TS,
    "serve",
    "--data-dir",
    dataDir,
    "--api-listen",
    "127.0.0.1:0",
    "--nbd-listen",
    "127.0.0.1:0",
    "--peer-listen",
    "127.0.0.1:0",
    "--etcd",
    o.etcdUrl,
    "--node-name",
    name,
    "--node-lease-ttl",
    `${o.leaseTtlS}s`,
    "--data-workers",
    "1",
    "--log-level",
    "info",
    "--tls",
    "on",
    "--crash-detection",
    o.crashDetection ? "on" : "off",
    ...(joinToken ? ["--join", joinToken] : []),
  ]);
  const tail = new LogTail(proc.logFile);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const line of await tail.read()) {
      if (!line.includes('"ballast ready"')) continue;
      const api = (JSON.parse(line) as { api: string }).api;
      return { name, proc, dataDir, api, tail };
    }
    if (proc.exited()) break;
    await sleep(200);
  }
  await kill9(proc);
  const log = await Deno.readTextFile(proc.logFile).catch(() => "");
  throw new Error(`node ${name} did not get ready; its log ends:\n${log.slice(-4000)}`);
}

/** An API client of `node` with the admin credentials of the first node's data dir. */
export async function adminClient(node: Node, adminDataDir: string): Promise<BallastClient> {
  const read = (f: string) => Deno.readTextFile(`${adminDataDir}/pki/${f}`);
  return new BallastClient(node.api, {
    caCertPem: await read("ca-bundle.crt"),
    certPem: await read("admin.crt"),
    keyPem: await read("admin.key"),
    timeoutMs: 120_000,
  });
}

/** Resident memory of `pid` in MiB (VmRSS in /proc/PID/status); NaN once it is gone. */
export function rssMiB(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1];
    return kb === undefined ? NaN : Number(kb) / 1024;
  } catch {
    return NaN;
  }
}

/** CPU seconds `pid` has used (utime + stime in /proc/PID/stat, 100 ticks a second); NaN once gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return NaN;
  }
}

/** Runs `fn` over `items` with at most `limit` calls in flight; results in input order. */
export async function pool<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
