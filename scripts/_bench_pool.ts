// deno-lint-ignore-file no-console
/**
 * `deno task bench --data-workers 1,auto` (issue 11, the data worker pool): one Ballast per
 * --data-workers value, each serving --volumes volumes plaintext (its local-attach listener)
 * and over TLS (STARTTLS with a client certificate), and `nbdkit file dir=` over as many files,
 * plaintext and TLS. Every job runs with each --conns count of NBD connections spread over the
 * volumes, interleaved over all servers, so the pool's value shows where it can: several
 * connections. All Ballasts share the first one's CA (`ballast ca init` with its key), so one
 * client certificate in libnbd's default directory opens every TLS server. With --rounds N the
 * even rounds run the servers in reverse order, and the report shows every round's ratio. After
 * the jobs, pools that can shrink (auto, MIN..MAX) are watched until they are back at their
 * minimum (with a deadline) for the idle RSS; the resize lines of each Ballast's log give the
 * largest pool and how long the last shrink took after that Ballast's last job.
 * @module
 */

import type { BallastClient } from "../mod/mod.ts";
import {
  cpuSeconds,
  type Job,
  MIB,
  peakRssMiB,
  precondition,
  resetPeakRss,
  runTargets,
  setClockTicks,
  spread,
  threadCpuSeconds,
} from "./_bench_fio.ts";
import type { Options } from "./_bench_options.ts";
import { type PoolCell, type PoolRow, printPool, type RssReport } from "./_bench_pool_report.ts";
import { freePort, haveTool, type Proc, spawn, toolVersion, waitForPort } from "./_bench_proc.ts";
import { adminClient, BenchRun, metricValue } from "./_bench_run.ts";
import { ballastCli, issueBenchCerts, launchBallast, type TlsMaterial } from "./_bench_servers.ts";
import { installLibnbdCerts } from "./_bench_tls.ts";

/** One column of the tables: a server process and how it is reached. */
interface PoolServer {
  /** "w=1", "w=auto", "nbdkit", each with " TLS" for the TLS variant. */
  name: string;
  kind: "ballast" | "nbdkit";
  workers?: string;
  tls: boolean;
  uris: string[];
  proc: Proc;
  /** Ballast: for the pool's size in /metrics. */
  client?: BallastClient;
}

/** A started Ballast of the pool run (both of its variants share it). */
interface PoolBallast {
  workers: string;
  proc: Proc;
  client: BallastClient;
}

export async function runPoolBench(opts: Options): Promise<number> {
  for (const t of ["fio", ...(opts.servers.includes("nbdkit") ? ["nbdkit"] : [])]) {
    if (!await haveTool(t)) {
      console.error(`bench: missing ${t}; run scripts/setup.sh`);
      return 1;
    }
  }
  setClockTicks(Number(await toolVersion("getconf", ["CLK_TCK"])));
  const run = await BenchRun.start(opts);
  try {
    return await poolBench(run, opts);
  } finally {
    await run.close();
  }
}

async function poolBench(run: BenchRun, opts: Options): Promise<number> {
  const volumeBytes = opts.sizeMiB * MIB;
  const names = Array.from({ length: opts.volumes }, (_, i) => `pv${i}`);
  const servers: PoolServer[] = [];
  const ballasts: PoolBallast[] = [];
  let material: TlsMaterial | undefined;
  let firstPki: string | undefined;
  console.error(
    `bench: worker pool: ballast --data-workers ${opts.dataWorkers!.join(", ")}` +
      `${opts.servers.includes("nbdkit") ? " and nbdkit file" : ""}, plaintext and TLS, ` +
      `${opts.volumes} volumes of ${opts.sizeMiB} MiB each, connections ${opts.conns.join(", ")}` +
      `, ${opts.rounds} round(s) of ${opts.runtime} s + ${opts.ramp} s ramp, in ${run.dir}`,
  );
  for (const w of opts.dataWorkers!) {
    const dataDir = `${run.dir}/ballast-w${w}`;
    if (firstPki) {
      // The same CA as the first Ballast: one client certificate opens every server.
      await Deno.mkdir(dataDir, { recursive: true });
      await ballastCli([
        "ca",
        "init",
        "--data-dir",
        dataDir,
        "--ca-cert",
        `${firstPki}/ca.crt`,
        "--ca-key",
        `${firstPki}/ca.key`,
      ]);
    }
    const b = await launchBallast(`ballast w=${w}`, dataDir, [
      "--data-workers",
      w,
      "--nbd-local-listen",
      "127.0.0.1:0",
    ], { logFile: `${run.dir}/ballast-w${w}.log` });
    run.defer(() => b.proc.stop());
    const client = adminClient(b.api, dataDir);
    run.defer(() => client.close());
    for (const name of names) await client.createVolume({ name, size: volumeBytes });
    console.error(`bench: ballast --data-workers ${w} ready (pid ${b.proc.child.pid}, ${b.api})`);
    if (!firstPki) {
      firstPki = `${dataDir}/pki`;
      material = await issueBenchCerts({ api: b.api, dataDir }, run.dir);
      const certs = installLibnbdCerts(material.clientDir, `${run.dir}/libnbd-backup`);
      run.defer(() => certs.restore());
      console.error(
        `bench: INSTALLED the client certificate in libnbd's default directory ${certs.dir} ` +
          `(fio cannot name one); restored when the bench ends` +
          (certs.replaced.length > 0
            ? ` (backup of ${certs.replaced.join(", ")} in ${certs.backupDir})`
            : ""),
      );
    }
    ballasts.push({ workers: w, proc: b.proc, client });
    for (const tls of [false, true]) {
      servers.push({
        name: `w=${w}${tls ? " TLS" : ""}`,
        kind: "ballast",
        workers: w,
        tls,
        uris: names.map((n) => tls ? `nbds://${b.nbd}/${n}` : `nbd://${b.nbdLocal}/${n}`),
        proc: b.proc,
        client,
      });
    }
  }
  if (opts.servers.includes("nbdkit")) {
    const files = `${run.dir}/nbdkit-files`;
    await Deno.mkdir(files);
    for (const n of names) {
      using f = await Deno.open(`${files}/${n}`, { create: true, write: true });
      await f.truncate(volumeBytes);
    }
    for (const tls of [false, true]) {
      const port = freePort();
      const tlsArgs = tls
        ? ["--tls=require", `--tls-certificates=${material!.serverDir}`, "--tls-verify-peer"]
        : [];
      const proc = spawn(`nbdkit${tls ? "+tls" : ""}`, "nbdkit", [
        "--foreground",
        "--exit-with-parent",
        "--port",
        String(port),
        "--ipaddr",
        "127.0.0.1",
        ...tlsArgs,
        "file",
        `dir=${files}`,
      ]);
      run.defer(() => proc.stop());
      await waitForPort(proc, port);
      servers.push({
        name: `nbdkit${tls ? " TLS" : ""}`,
        kind: "nbdkit",
        tls,
        uris: names.map((n) => `${tls ? "nbds" : "nbd"}://127.0.0.1:${port}/${n}`),
        proc,
      });
    }
  }
  const t0 = performance.now();
  for (const s of servers.filter((s) => !s.tls)) {
    await Promise.all(s.uris.map((u) => precondition(u, opts.sizeMiB)));
  }
  console.error(
    `bench: every volume written once in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );

  const cells = new Map<string, PoolCell>();
  /** By --data-workers value: when that Ballast's last job ended (ms since the epoch). */
  const lastJobEnd = new Map<string, number>();
  let failures = 0;
  for (let round = 1; round <= opts.rounds; round++) {
    // Odd rounds run the servers in table order, even rounds in reverse (w=1 first, then w=2
    // first, ...), so a drift within a job's slot or an after-effect of the server before does
    // not always favour the same one.
    const order = round % 2 === 1 ? servers : [...servers].reverse();
    for (const job of opts.jobs) {
      for (const conns of opts.conns) {
        for (const s of order) {
          if (run.interrupted) return 130;
          const key = `${job.id}|${conns}|${s.name}`;
          const cell = cells.get(key) ??
            {
              values: [],
              rounds: [],
              cpuPer: [],
              clientCpuPer: [],
              topThreadPer: [],
              peakMiB: [],
              workers: [],
              errors: [],
            };
          cells.set(key, cell);
          const tag = `[${round}/${opts.rounds}] ${job.title.padEnd(18)} x${
            String(conns).padEnd(2)
          } ${s.name.padEnd(12)}`;
          try {
            const m = await measureOne(job, conns, s, volumeBytes, opts);
            cell.values.push(m.value);
            cell.rounds.push(round);
            cell.cpuPer.push(m.cpuPer);
            cell.clientCpuPer.push(m.clientCpuPer);
            cell.topThreadPer.push(m.topThreadPer);
            cell.peakMiB.push(m.peakMiB);
            if (m.workers) cell.workers.push(m.workers);
            console.error(
              `${tag} ${m.value.toFixed(job.unit === "IOPS" ? 0 : 0).padStart(7)} ${job.unit}  ` +
                `cpu ${m.cpuPer.toFixed(2)} s/${job.unit === "IOPS" ? "M req" : "GiB"} ` +
                `(busiest thread ${m.topThreadPer.toFixed(2)}, fio ${
                  m.clientCpuPer.toFixed(2)
                })  ` +
                `peak ${m.peakMiB.toFixed(0)} MiB${m.workers ? `  workers ${m.workers}` : ""}`,
            );
          } catch (err) {
            if (run.interrupted) return 130;
            failures++;
            cell.errors.push((err as Error).message);
            console.error(`${tag} FAILED: ${(err as Error).message}`);
          }
          if (s.workers !== undefined) lastJobEnd.set(s.workers, Date.now());
        }
      }
    }
  }
  const rss = await idleRss(ballasts, lastJobEnd, run.dir);
  const rows: PoolRow[] = opts.jobs.flatMap((job) => opts.conns.map((conns) => ({ job, conns })));
  printPool(opts, rows, cells, servers.map((s) => s.name), rss);
  if (opts.json) {
    await Deno.writeTextFile(
      opts.json,
      JSON.stringify(
        {
          date: new Date().toISOString(),
          mode: "data-workers",
          options: { ...opts, jobs: opts.jobs.map((j) => j.id) },
          cells: Object.fromEntries(cells),
          rss,
        },
        null,
        2,
      ) + "\n",
    );
  }
  return failures > 0 ? 1 : 0;
}

interface Measured {
  value: number;
  /** Server CPU s per million requests (4k) or per GiB (1 MiB), over the job after its ramp. */
  cpuPer: number;
  /** The same for fio (the client) on the same cores. */
  clientCpuPer: number;
  /** The same for the server's busiest thread alone (the one serving a single connection). */
  topThreadPer: number;
  peakMiB: number;
  /** Ballast: the pool's size before and after the job ("1", "1->2"). */
  workers?: string;
}

async function measureOne(
  job: Job,
  conns: number,
  s: PoolServer,
  volumeBytes: number,
  opts: Options,
): Promise<Measured> {
  const st = s.proc.exitStatus();
  if (st) throw new Error(`${s.proc.name} has exited (code ${st.code})`);
  const pid = s.proc.child.pid;
  const before = s.client ? await poolSize(s.client, s.workers) : undefined;
  resetPeakRss(pid);
  let cpuAtRamp = cpuSeconds(pid);
  let threadsAtRamp = threadCpuSeconds(pid);
  const timer = setTimeout(() => {
    cpuAtRamp = cpuSeconds(pid);
    threadsAtRamp = threadCpuSeconds(pid);
  }, opts.ramp * 1000);
  let value: number;
  let clientCpu: number;
  try {
    const r = await runTargets(job, spread(job, conns, s.uris, volumeBytes), opts);
    [value, clientCpu] = [r.value, r.clientCpuSeconds];
  } finally {
    clearTimeout(timer);
  }
  const cpu = cpuSeconds(pid) - cpuAtRamp;
  const top = busiestThread(threadsAtRamp, threadCpuSeconds(pid));
  const peakMiB = peakRssMiB(pid);
  const after = s.client ? await poolSize(s.client, s.workers) : undefined;
  const work = job.unit === "IOPS" ? value * opts.runtime / 1e6 : value * opts.runtime / 1024;
  return {
    value,
    cpuPer: cpu / work,
    clientCpuPer: clientCpu / work,
    topThreadPer: top / work,
    peakMiB,
    // NaN: the main thread (no pool in /metrics).
    workers: before === undefined || Number.isNaN(before)
      ? undefined
      : before === after
      ? `${before}`
      : `${before}->${after}`,
  };
}

/** CPU seconds of the thread that used the most between two readings of threadCpuSeconds(). */
function busiestThread(before: Map<number, number>, after: Map<number, number>): number {
  let top = 0;
  for (const [tid, secs] of after) top = Math.max(top, secs - (before.get(tid) ?? 0));
  return top;
}

/** The largest pool size seen, by --data-workers value. */
const largest = new Map<string, number>();

async function poolSize(client: BallastClient, workers?: string): Promise<number> {
  const n = metricValue(await client.metrics(), "ballast_data_workers");
  if (workers !== undefined) largest.set(workers, Math.max(largest.get(workers) ?? 0, n));
  return n;
}

/** A resize line of a Ballast's log ("data worker pool grows|shrinks: ..."). */
interface Resize {
  at: number;
  from: number;
  to: number;
  reason: string;
}

/** The pool's size at start and every resize in a Ballast's JSON log, oldest first. */
async function resizeLog(logFile: string): Promise<{ started?: number; resizes: Resize[] }> {
  let started: number | undefined;
  const resizes: Resize[] = [];
  for (const line of (await Deno.readTextFile(logFile).catch(() => "")).split("\n")) {
    if (!line.includes("data worker pool")) continue;
    try {
      const r = JSON.parse(line);
      if (typeof r.msg !== "string") continue;
      if (r.msg.startsWith("data worker pool started")) started = r.workers;
      else if (/^data worker pool (grows|shrinks)/.test(r.msg)) {
        resizes.push({ at: Date.parse(r.time), from: r.from, to: r.to, reason: r.reason });
      }
    } catch { /* not JSON */ }
  }
  return { started, resizes };
}

const SHRINK_DEADLINE_MS = 120_000;
const SETTLE_MS = 5_000;

/**
 * Per Ballast after the jobs: its RSS, then (pools that can shrink) waiting until /metrics
 * shows the pool at its minimum, with a deadline, and SETTLE_MS more for the retired workers'
 * threads to end, its idle RSS; the largest pool and the shrink time (last job to last shrink
 * line) come from the resize lines of its log.
 */
async function idleRss(
  ballasts: PoolBallast[],
  lastJobEnd: Map<string, number>,
  dir: string,
): Promise<RssReport[]> {
  console.error(
    `bench: idling until every pool has shrunk (at most ${SHRINK_DEADLINE_MS / 1000} s) ` +
      `for the idle RSS...`,
  );
  return await Promise.all(ballasts.map(async (b) => {
    const pid = b.proc.child.pid;
    const rssMiB = vmRssMiB(pid);
    const t0 = performance.now();
    // Only auto and MIN..MAX pools shrink; a fixed one (or the main thread) stays as it is.
    const min = b.workers === "auto" ? 1 : Number(/^(\d+)\.\./.exec(b.workers)?.[1] ?? NaN);
    let pool = await poolSize(b.client, b.workers);
    while (pool > min && performance.now() - t0 < SHRINK_DEADLINE_MS) {
      await new Promise((r) => setTimeout(r, 1_000));
      pool = await poolSize(b.client, b.workers);
    }
    const idleSeconds = Math.round((performance.now() - t0) / 1000);
    if (pool <= min) await new Promise((r) => setTimeout(r, SETTLE_MS));
    const log = await resizeLog(`${dir}/ballast-w${b.workers}.log`);
    const end = lastJobEnd.get(b.workers) ?? Date.now();
    const shrinks = log.resizes.filter((r) => r.at >= end && r.to < r.from);
    for (const r of log.resizes) {
      console.error(
        `bench: w=${b.workers} ${new Date(r.at).toISOString().slice(11, 19)} ` +
          `${r.from}->${r.to}: ${r.reason}`,
      );
    }
    return {
      workers: b.workers,
      maxPool: Math.max(
        largest.get(b.workers) ?? 0,
        log.started ?? 0,
        ...log.resizes.map((r) => r.to),
      ),
      rssMiB,
      idleRssMiB: vmRssMiB(pid),
      idlePool: await poolSize(b.client),
      idleSeconds,
      settleSeconds: pool <= min ? SETTLE_MS / 1000 : 0,
      grows: log.resizes.filter((r) => r.to > r.from).length,
      shrinks: log.resizes.filter((r) => r.to < r.from).length,
      shrinkSeconds: shrinks.length > 0 ? (shrinks.at(-1)!.at - end) / 1000 : undefined,
    };
  }));
}

function vmRssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return m ? Number(m[1]) / 1024 : NaN;
}
