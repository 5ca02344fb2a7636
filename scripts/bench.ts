// deno-lint-ignore-file no-console
/**
 * `deno task bench`: the same fio jobs (fio's nbd engine) against Ballast,
 * `nbdkit file` and `qemu-nbd`, each serving a sparse file in one temp
 * directory, interleaved: for each job the servers run back to back, so drift
 * in the machine hits all of them alike. Prints a table with each server's
 * IOPS or MiB/s, ballast's ratio to the others, the CPU seconds each server
 * used during the job (/proc/PID/stat utime+stime) and its peak RSS (VmHWM
 * from /proc/PID/status, reset before each job through /proc/PID/clear_refs).
 *
 *   deno task bench [--servers ballast,nbdkit,qemu-nbd] [--runtime 10] [--ramp 2]
 *                   [--rounds 1] [--jobs randread-4k,...] [--size-mib 1024]
 *                   [--json FILE] [--dir DIR]
 *
 * Every file is written in full once (1 MiB sequential writes through NBD)
 * before the jobs, so reads hit real data. With --rounds N each figure is the
 * median of N. Only compare figures from one run: the machine sets the ceiling
 * (fio itself uses most of a core on 4k QD32).
 * @module
 */

import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";

type ServerName = "ballast" | "nbdkit" | "qemu-nbd";
const ALL_SERVERS: readonly ServerName[] = ["ballast", "nbdkit", "qemu-nbd"];
const EXPORT = "bench";
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const MIB = 2 ** 20;

interface Job {
  id: string;
  title: string;
  rw: "randread" | "randwrite" | "read" | "write";
  bs: string;
  iodepth: number;
  numjobs: number;
  unit: "IOPS" | "MiB/s";
}

const JOBS: readonly Job[] = [
  {
    id: "randread-4k",
    title: "4k randread QD32",
    rw: "randread",
    bs: "4k",
    iodepth: 32,
    numjobs: 1,
    unit: "IOPS",
  },
  {
    id: "randwrite-4k",
    title: "4k randwrite QD32",
    rw: "randwrite",
    bs: "4k",
    iodepth: 32,
    numjobs: 1,
    unit: "IOPS",
  },
  {
    id: "randread-4k-4conn",
    title: "4k randread QD32 x4 conn",
    rw: "randread",
    bs: "4k",
    iodepth: 32,
    numjobs: 4,
    unit: "IOPS",
  },
  {
    id: "randwrite-4k-4conn",
    title: "4k randwrite QD32 x4 conn",
    rw: "randwrite",
    bs: "4k",
    iodepth: 32,
    numjobs: 4,
    unit: "IOPS",
  },
  {
    id: "seqread-1m",
    title: "1M seq read QD8",
    rw: "read",
    bs: "1M",
    iodepth: 8,
    numjobs: 1,
    unit: "MiB/s",
  },
  {
    id: "seqwrite-1m",
    title: "1M seq write QD8",
    rw: "write",
    bs: "1M",
    iodepth: 8,
    numjobs: 1,
    unit: "MiB/s",
  },
];

const USAGE = `usage: deno task bench [options]
  --servers LIST   comma list of ${ALL_SERVERS.join(",")} (default: all)
  --jobs LIST      comma list of ${JOBS.map((j) => j.id).join(",")} (default: all)
  --runtime S      seconds per fio job, after the ramp (default 10)
  --ramp S         fio ramp_time seconds (default 2)
  --rounds N       repeat every job N times and report the median (default 1)
  --size-mib N     size of each served file/volume in MiB (default 1024)
  --json FILE      also write all results as JSON
  --dir DIR        parent of the temp directory (default: system temp dir)
  --keep           keep the temp directory
  --qemu-stock-malloc  run qemu-nbd without the glibc mmap-threshold tuning (slow 1M I/O)`;

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

interface Proc {
  name: string;
  command: string;
  child: Deno.ChildProcess;
  logs(): string;
  exitStatus(): Deno.CommandStatus | undefined;
  stop(): Promise<void>;
}

function spawn(name: string, cmd: string, args: string[], env: Record<string, string> = {}): Proc {
  const child = new Deno.Command(cmd, {
    args,
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  let text = "";
  const pump = async (s: ReadableStream<Uint8Array>) => {
    for await (const chunk of s.pipeThrough(new TextDecoderStream())) {
      text = (text + chunk).slice(-64 * 1024);
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  let status: Deno.CommandStatus | undefined;
  const done = child.status.then(async (s) => {
    status = s;
    await pumps;
  });
  return {
    name,
    command: [...Object.entries(env).map(([k, v]) => `${k}=${v}`), cmd, ...args].join(" "),
    child,
    logs: () => text,
    exitStatus: () => status,
    stop: async () => {
      if (!status) {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        const t = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch { /* gone */ }
        }, 10_000);
        await done;
        clearTimeout(t);
      }
      await done;
    },
  };
}

function lastLines(text: string, n = 15): string {
  return text.trimEnd().split("\n").slice(-n).map((l) => `    | ${l}`).join("\n");
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until something listens on 127.0.0.1:port, or throws if the process exits or time runs out. */
async function waitForPort(p: Proc, port: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const st = p.exitStatus();
    if (st) throw new Error(`${p.name} exited (code ${st.code}) before listening on port ${port}`);
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      return;
    } catch {
      await sleep(100);
    }
  }
  throw new Error(`${p.name} did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function haveTool(name: string): Promise<boolean> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    try {
      const st = await Deno.stat(`${dir}/${name}`);
      if (st.isFile && ((st.mode ?? 0) & 0o111) !== 0) return true;
    } catch { /* next */ }
  }
  return false;
}

async function toolVersion(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdin: "null" }).output();
    return new TextDecoder().decode(out.stdout).split("\n")[0].trim();
  } catch {
    return "unknown";
  }
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

interface Server {
  name: ServerName;
  uri: string;
  proc: Proc;
  file: string;
}

async function sparseFile(path: string, size: number): Promise<void> {
  const f = await Deno.open(path, { create: true, write: true, truncate: true });
  await f.truncate(size);
  f.close();
}

/**
 * qemu-nbd allocates a bounce buffer per request; for 1 MiB requests glibc
 * serves each from a fresh mmap, and the page faults cap it near 200-400 MiB/s
 * here. Raising the mmap threshold lets it reach ~2-2.5 GB/s, a fairer
 * baseline; --qemu-stock-malloc runs it without this.
 */
const QEMU_MALLOC_ENV = {
  GLIBC_TUNABLES: "glibc.malloc.mmap_threshold=67108864:glibc.malloc.trim_threshold=268435456",
};

async function startServer(
  name: ServerName,
  dir: string,
  size: number,
  opts: Options,
): Promise<Server> {
  if (name === "nbdkit") {
    const file = `${dir}/nbdkit.img`;
    await sparseFile(file, size);
    const port = freePort();
    const proc = spawn("nbdkit", "nbdkit", [
      "--foreground",
      "--exit-with-parent",
      "--port",
      String(port),
      "--ipaddr",
      "127.0.0.1",
      "file",
      file,
    ]);
    await waitOrStop(proc, () => waitForPort(proc, port));
    return { name, proc, file, uri: `nbd://127.0.0.1:${port}/${EXPORT}` };
  }
  if (name === "qemu-nbd") {
    const file = `${dir}/qemu-nbd.img`;
    await sparseFile(file, size);
    const port = freePort();
    const proc = spawn("qemu-nbd", "qemu-nbd", [
      "--format=raw",
      "--persistent",
      "--shared=8",
      `--export-name=${EXPORT}`,
      `--port=${port}`,
      "--bind=127.0.0.1",
      "--cache=writeback",
      file,
    ], opts.qemuStockMalloc ? {} : QEMU_MALLOC_ENV);
    await waitOrStop(proc, () => waitForPort(proc, port));
    return { name, proc, file, uri: `nbd://127.0.0.1:${port}/${EXPORT}` };
  }
  return await startBallast(dir, size);
}

async function waitOrStop(proc: Proc, wait: () => Promise<void>): Promise<void> {
  try {
    await wait();
  } catch (err) {
    await proc.stop();
    throw new Error(
      `${(err as Error).message}\n  command: ${proc.command}\n${lastLines(proc.logs())}`,
    );
  }
}

async function startBallast(dir: string, size: number): Promise<Server> {
  const main = `${ROOT}main.ts`;
  try {
    await Deno.stat(main);
  } catch {
    throw new Error(`${main} does not exist (run with --servers nbdkit,qemu-nbd to skip ballast)`);
  }
  const dataDir = `${dir}/ballast`;
  await Deno.mkdir(dataDir, { recursive: true });
  const deno = Deno.execPath();
  const proc = spawn("ballast", deno, [
    "run",
    "-A",
    main,
    "serve",
    "--data-dir",
    dataDir,
    "--api-listen",
    "127.0.0.1:0",
    "--nbd-listen",
    "127.0.0.1:0",
    "--log-level",
    "info",
  ]);
  let ready: { api: string; nbd: string } | undefined;
  await waitOrStop(proc, async () => {
    const deadline = Date.now() + 30_000;
    while (!ready) {
      ready = findReady(proc.logs());
      if (ready) break;
      const st = proc.exitStatus();
      if (st) throw new Error(`ballast exited (code ${st.code}) before logging "ballast ready"`);
      if (Date.now() > deadline) throw new Error(`ballast did not log "ballast ready" within 30 s`);
      await sleep(100);
    }
  });
  const api = ready!.api;
  const create = await new Deno.Command(deno, {
    args: [
      "run",
      "-A",
      main,
      "volume",
      "create",
      EXPORT,
      "--size",
      `${size / MIB}MiB`,
      "--api",
      api,
    ],
    cwd: ROOT,
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  if (!create.success) {
    await proc.stop();
    throw new Error(
      `ballast volume create ${EXPORT} failed (exit ${create.code}):\n${
        lastLines(new TextDecoder().decode(create.stderr))
      }`,
    );
  }
  return {
    name: "ballast",
    proc,
    file: `${dataDir}/volumes/*.vol`,
    uri: `nbd://${ready!.nbd}/${EXPORT}`,
  };
}

function findReady(text: string): { api: string; nbd: string } | undefined {
  for (const line of text.split("\n")) {
    if (!line.includes("ballast ready")) continue;
    try {
      const r = JSON.parse(line);
      if (typeof r.api === "string" && typeof r.nbd === "string") return { api: r.api, nbd: r.nbd };
    } catch { /* not JSON */ }
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------

let clockTicks = 100;

/** utime + stime of a process (all its threads) in seconds. */
function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

/** Resets VmHWM to the current RSS; false when the kernel refuses. */
function resetPeakRss(pid: number): boolean {
  try {
    Deno.writeTextFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

function peakRssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return m ? Number(m[1]) / 1024 : NaN;
}

interface FioResult {
  value: number;
  raw: unknown;
}

async function fio(
  args: string[],
  timeoutMs: number,
): Promise<{ json: Record<string, unknown>; stderr: string }> {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutMs);
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("fio", { args, stdin: "null", signal: ctl.signal }).output();
  } finally {
    clearTimeout(timer);
  }
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  if (ctl.signal.aborted) {
    throw new Error(`fio killed after ${timeoutMs / 1000} s timeout\n${lastLines(stderr)}`);
  }
  if (!out.success) throw new Error(`fio failed (exit ${out.code})\n${lastLines(stderr + stdout)}`);
  const start = stdout.indexOf("{");
  if (start < 0) throw new Error(`fio printed no JSON\n${lastLines(stderr + stdout)}`);
  return { json: JSON.parse(stdout.slice(start)), stderr };
}

async function runJob(job: Job, uri: string, opts: Options): Promise<FioResult> {
  const args = [
    `--name=${job.id}`,
    "--ioengine=nbd",
    `--uri=${uri}`,
    `--rw=${job.rw}`,
    `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`,
    `--numjobs=${job.numjobs}`,
    "--group_reporting",
    "--time_based",
    `--runtime=${opts.runtime}`,
    `--ramp_time=${opts.ramp}`,
    `--size=${opts.sizeMiB}M`,
    "--output-format=json",
  ];
  const { json } = await fio(args, (opts.runtime + opts.ramp + 60) * 1000);
  const j = (json.jobs as Record<string, Record<string, number>>[])[0];
  if (j.error) throw new Error(`fio job error ${j.error}`);
  const side = job.rw.includes("read") ? j.read : j.write;
  const value = job.unit === "IOPS" ? Number(side.iops) : Number(side.bw_bytes) / MIB;
  return { value, raw: j };
}

async function precondition(s: Server, sizeMiB: number): Promise<void> {
  await fio([
    "--name=precondition",
    "--ioengine=nbd",
    `--uri=${s.uri}`,
    "--rw=write",
    "--bs=1M",
    "--iodepth=8",
    `--size=${sizeMiB}M`,
    "--output-format=json",
  ], 600_000);
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

interface Options {
  servers: ServerName[];
  jobs: Job[];
  runtime: number;
  ramp: number;
  rounds: number;
  sizeMiB: number;
  json?: string;
  dir?: string;
  keep: boolean;
  qemuStockMalloc: boolean;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      servers: { type: "string", default: ALL_SERVERS.join(",") },
      jobs: { type: "string", default: JOBS.map((j) => j.id).join(",") },
      runtime: { type: "string", default: "10" },
      ramp: { type: "string", default: "2" },
      rounds: { type: "string", default: "1" },
      "size-mib": { type: "string", default: "1024" },
      json: { type: "string" },
      dir: { type: "string" },
      keep: { type: "boolean", default: false },
      "qemu-stock-malloc": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const bad = (msg: string): never => {
    console.error(`bench: ${msg}\n${USAGE}`);
    Deno.exit(2);
  };
  const servers = values.servers.split(",").map((s) => s.trim()).filter(Boolean);
  for (const s of servers) {
    if (!ALL_SERVERS.includes(s as ServerName)) bad(`unknown server ${JSON.stringify(s)}`);
  }
  const jobIds = values.jobs.split(",").map((s) => s.trim()).filter(Boolean);
  const jobs = jobIds.map((id) =>
    JOBS.find((j) => j.id === id) ?? bad(`unknown job ${JSON.stringify(id)}`)
  );
  const num = (name: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) {
      bad(`--${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    }
    return n;
  };
  if (servers.length === 0 || jobs.length === 0) bad("nothing to run");
  return {
    servers: servers as ServerName[],
    jobs,
    runtime: num("runtime", values.runtime, 1),
    ramp: num("ramp", values.ramp, 0),
    rounds: num("rounds", values.rounds, 1),
    sizeMiB: num("size-mib", values["size-mib"], 1),
    json: values.json,
    dir: values.dir,
    keep: values.keep,
    qemuStockMalloc: values["qemu-stock-malloc"],
  };
}

interface Cell {
  values: number[];
  cpu: number[];
  peakMiB: number[];
  errors: string[];
}

function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function fmtValue(v: number, unit: Job["unit"]): string {
  if (!Number.isFinite(v)) return "-";
  if (unit === "IOPS") return v >= 1000 ? `${(v / 1000).toFixed(1)}k` : v.toFixed(0);
  return v.toFixed(0);
}

function fmtRatio(a: number, b: number): string {
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}x` : "-";
}

function printTable(opts: Options, cells: Map<string, Cell>): void {
  const get = (job: Job, s: ServerName) => cells.get(`${job.id}|${s}`);
  const med = (job: Job, s: ServerName, k: "values" | "cpu" | "peakMiB") => {
    const c = get(job, s);
    if (!c || c[k].length === 0) return NaN;
    return k === "peakMiB" ? Math.max(...c.peakMiB) : median(c[k]);
  };
  const triple = (job: Job, k: "cpu" | "peakMiB", digits: number) =>
    ALL_SERVERS.map((s) => {
      const v = med(job, s, k);
      return Number.isFinite(v) ? v.toFixed(digits) : "-";
    }).join(" / ");
  const header = [
    "job",
    "unit",
    "ballast",
    "nbdkit",
    "qemu-nbd",
    "b/nbdkit",
    "b/qemu-nbd",
    "CPU s (b / n / q)",
    "peak MiB (b / n / q)",
  ];
  const rows = opts.jobs.map((job) => [
    job.title,
    job.unit,
    ...ALL_SERVERS.map((s) => {
      const c = get(job, s);
      if (c && c.values.length === 0 && c.errors.length > 0) return "FAILED";
      return fmtValue(med(job, s, "values"), job.unit);
    }),
    fmtRatio(med(job, "ballast", "values"), med(job, "nbdkit", "values")),
    fmtRatio(med(job, "ballast", "values"), med(job, "qemu-nbd", "values")),
    triple(job, "cpu", 1),
    triple(job, "peakMiB", 0),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of rows) console.log(line(r));
}

async function main(): Promise<number> {
  const opts = parseOptions();
  const needed = ["fio", ...opts.servers.filter((s) => s !== "ballast")];
  const missing: string[] = [];
  for (const t of needed) if (!await haveTool(t)) missing.push(t);
  if (missing.length > 0) {
    console.error(`bench: missing ${missing.join(", ")}; run scripts/setup.sh`);
    return 1;
  }
  const ticks = await toolVersion("getconf", ["CLK_TCK"]);
  if (Number(ticks) > 0) clockTicks = Number(ticks);

  const dir = await Deno.makeTempDir({ prefix: "ballast-bench-", dir: opts.dir });
  const sizeBytes = opts.sizeMiB * MIB;
  const servers: Server[] = [];
  const failedToStart: Record<string, string> = {};
  const cells = new Map<string, Cell>();
  const cleanup = async () => {
    await Promise.all(servers.map((s) => s.proc.stop()));
    if (!opts.keep) await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  const onSigint = () => {
    console.error("\nbench: interrupted, stopping servers");
    cleanup().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSigint);

  const versions = {
    deno: Deno.version.deno,
    fio: await toolVersion("fio", ["--version"]),
    nbdkit: await toolVersion("nbdkit", ["--version"]),
    "qemu-nbd": await toolVersion("qemu-nbd", ["--version"]),
  };
  console.error(
    `bench: ${opts.jobs.length} jobs x ${opts.servers.join(", ")} x ${opts.rounds} round(s), ` +
      `${opts.runtime} s + ${opts.ramp} s ramp each, ${opts.sizeMiB} MiB files in ${dir}`,
  );
  console.error(
    `bench: ${versions.fio}, ${versions.nbdkit}, ${versions["qemu-nbd"]}, deno ${versions.deno}`,
  );

  let failures = 0;
  try {
    for (const name of opts.servers) {
      let s: Server | undefined;
      try {
        const t0 = performance.now();
        s = await startServer(name, dir, sizeBytes, opts);
        console.error(
          `bench: ${name} started (pid ${s.proc.child.pid}, ${s.uri}): ${s.proc.command}`,
        );
        console.error(`bench: ${name}: preconditioning (writing all ${opts.sizeMiB} MiB once)...`);
        await precondition(s, opts.sizeMiB);
        servers.push(s);
        console.error(
          `bench: ${name} ready after ${((performance.now() - t0) / 1000).toFixed(1)} s`,
        );
      } catch (err) {
        failures++;
        if (s) await s.proc.stop();
        failedToStart[name] = (err as Error).message;
        console.error(`bench: ${name} FAILED TO START: ${(err as Error).message}`);
      }
    }
    if (servers.length === 0) {
      console.error("bench: no server started; nothing measured");
      return 1;
    }

    for (let round = 1; round <= opts.rounds; round++) {
      for (const job of opts.jobs) {
        for (const s of servers) {
          const key = `${job.id}|${s.name}`;
          const cell = cells.get(key) ?? { values: [], cpu: [], peakMiB: [], errors: [] };
          cells.set(key, cell);
          const tag = `[${round}/${opts.rounds}] ${job.title.padEnd(26)} ${s.name.padEnd(8)}`;
          const st = s.proc.exitStatus();
          if (st) {
            const msg = `${s.name} has exited (code ${st.code})`;
            cell.errors.push(msg);
            failures++;
            console.error(`${tag} SKIPPED: ${msg}\n${lastLines(s.proc.logs())}`);
            continue;
          }
          const pid = s.proc.child.pid;
          const hwmReset = resetPeakRss(pid);
          const cpu0 = cpuSeconds(pid);
          try {
            const r = await runJob(job, s.uri, opts);
            const cpu = cpuSeconds(pid) - cpu0;
            const peak = peakRssMiB(pid);
            cell.values.push(r.value);
            cell.cpu.push(cpu);
            cell.peakMiB.push(peak);
            console.error(
              `${tag} ${fmtValue(r.value, job.unit).padStart(7)} ${job.unit}` +
                `  cpu ${cpu.toFixed(1)} s  peak ${peak.toFixed(0)} MiB${
                  hwmReset ? "" : " (lifetime)"
                }`,
            );
          } catch (err) {
            failures++;
            cell.errors.push((err as Error).message);
            const exited = s.proc.exitStatus();
            console.error(
              `${tag} FAILED: ${(err as Error).message}` +
                (exited
                  ? `\n  ${s.name} exited (code ${exited.code}):\n${lastLines(s.proc.logs())}`
                  : ""),
            );
          }
        }
      }
    }
  } finally {
    Deno.removeSignalListener("SIGINT", onSigint);
    await cleanup();
  }

  console.log(
    `\nfio nbd engine, ${opts.runtime} s + ${opts.ramp} s ramp per job, ${opts.sizeMiB} MiB files` +
      (opts.rounds > 1 ? `, median of ${opts.rounds} rounds` : "") +
      `; CPU s = server utime+stime over the job incl. ramp; peak = server VmHWM during the job\n`,
  );
  printTable(opts, cells);
  for (const [name, msg] of Object.entries(failedToStart)) {
    console.log(`\n${name}: failed to start: ${msg.split("\n")[0]}`);
  }

  if (opts.json) {
    const results = [...cells.entries()].map(([key, c]) => {
      const [jobId, server] = key.split("|");
      const job = JOBS.find((j) => j.id === jobId)!;
      return {
        job: jobId,
        title: job.title,
        unit: job.unit,
        server,
        median: median(c.values),
        values: c.values,
        cpuSeconds: c.cpu,
        peakRssMiB: c.peakMiB,
        errors: c.errors,
      };
    });
    const report = {
      date: new Date().toISOString(),
      host: { cpus: navigator.hardwareConcurrency, os: Deno.build.target },
      options: { ...opts, jobs: opts.jobs.map((j) => j.id) },
      versions,
      jobs: opts.jobs,
      failedToStart,
      servers: servers.map((s) => ({
        name: s.name,
        uri: s.uri,
        file: s.file,
        command: s.proc.command,
      })),
      results,
    };
    await Deno.writeTextFile(opts.json, JSON.stringify(report, null, 2) + "\n");
    console.log(`\nbench: results written to ${opts.json}`);
  }
  return failures > 0 ? 1 : 0;
}

Deno.exit(await main());
