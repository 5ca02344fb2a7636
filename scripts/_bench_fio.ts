/**
 * The fio jobs of scripts/bench.ts and the per-process measurements (CPU seconds, peak RSS).
 * @module
 */

import { lastLines } from "./_bench_proc.ts";

export const MIB = 2 ** 20;

export interface Job {
  id: string;
  title: string;
  rw: "randread" | "randwrite" | "read" | "write";
  bs: string;
  iodepth: number;
  numjobs: number;
  unit: "IOPS" | "MiB/s";
}

export const JOBS: readonly Job[] = [
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

/** What runJob and precondition need from the options. */
export interface FioOptions {
  runtime: number;
  ramp: number;
  sizeMiB: number;
}

let clockTicks = 100;

/** Sets the clock ticks per second used by cpuSeconds (getconf CLK_TCK). */
export function setClockTicks(ticks: number): void {
  if (ticks > 0) clockTicks = ticks;
}

/** utime + stime of a process (all its threads), or of its thread `tid`, in seconds. */
export function cpuSeconds(pid: number, tid?: number): number {
  const stat = Deno.readTextFileSync(
    tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`,
  );
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

/** utime + stime in seconds of each thread of a process, by thread id (threads that ended are missing). */
export function threadCpuSeconds(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const e of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      out.set(Number(e.name), cpuSeconds(pid, Number(e.name)));
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** A thread's time on a CPU and waiting for one (runnable, on the run queue), in ns. */
interface Sched {
  pid: number;
  comm: string;
  runNs: number;
  waitNs: number;
}

/** /proc/PID/task/TID/schedstat of every thread of `pids`, by "pid/tid". */
function schedstats(pids: number[]): Map<string, Sched> {
  const out = new Map<string, Sched>();
  for (const pid of pids) {
    let tasks: Deno.DirEntry[] = [];
    try {
      tasks = [...Deno.readDirSync(`/proc/${pid}/task`)];
    } catch {
      continue; // the process ended
    }
    for (const e of tasks) {
      try {
        const dir = `/proc/${pid}/task/${e.name}`;
        const [run, wait] = Deno.readTextFileSync(`${dir}/schedstat`).split(" ").map(Number);
        const comm = Deno.readTextFileSync(`${dir}/comm`).trim();
        out.set(`${pid}/${e.name}`, { pid, comm, runNs: run, waitNs: wait });
      } catch {
        // the thread ended meanwhile
      }
    }
  }
  return out;
}

/**
 * A server thread busy during a job: percent of the interval it ran, and percent it was
 * runnable but waiting for a CPU (two cores shared by fio and every node: a thread on a
 * request's path that waits delays every request behind it).
 */
export interface ThreadLoad {
  pid: number;
  thread: string;
  runPct: number;
  waitPct: number;
}

/** The threads of `before`/`after` that ran at least 10% of `seconds`, busiest first. */
function busyThreads(
  before: Map<string, Sched>,
  after: Map<string, Sched>,
  seconds: number,
): ThreadLoad[] {
  const out: ThreadLoad[] = [];
  for (const [key, b] of after) {
    const a = before.get(key);
    if (!a) continue;
    const runPct = (b.runNs - a.runNs) / 1e7 / seconds;
    if (runPct < 10) continue;
    const waitPct = (b.waitNs - a.waitNs) / 1e7 / seconds;
    out.push({ pid: b.pid, thread: b.comm, runPct, waitPct });
  }
  return out.sort((x, y) => y.runPct - x.runPct);
}

/** Resets VmHWM to the current RSS; false when the kernel refuses. */
export function resetPeakRss(pid: number): boolean {
  try {
    Deno.writeTextFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

export function peakRssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return m ? Number(m[1]) / 1024 : NaN;
}

export interface FioResult {
  value: number;
  raw: unknown;
  /**
   * CPU seconds fio itself used after its ramp, every job section together (its nbd engine
   * and libnbd, with TLS gnutls): fio's usr_cpu + sys_cpu (percent of each job's run time,
   * summed over the group) times the group's job_runtime. NaN when fio did not report them.
   */
  clientCpuSeconds: number;
}

/** fio's own CPU seconds after the ramp, from a group's JSON (FioResult.clientCpuSeconds). */
export function fioCpuSeconds(group: Record<string, unknown>): number {
  const [usr, sys, ms] = [group.usr_cpu, group.sys_cpu, group.job_runtime].map(Number);
  return (usr + sys) / 100 * ms / 1000;
}

export async function fio(
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

export async function runJob(job: Job, uri: string, opts: FioOptions): Promise<FioResult> {
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
  return { value, raw: j, clientCpuSeconds: fioCpuSeconds(j) };
}

/**
 * runJob, and the CPU per unit of work after the ramp (per million requests for IOPS jobs, per
 * GiB otherwise) of the processes `pids` (the servers) and of fio itself.
 */
export async function runJobWithCpu(
  job: Job,
  uri: string,
  opts: FioOptions,
  pids: number[],
): Promise<
  FioResult & { serverCpuPer: number; clientCpuPer: number; threads: ThreadLoad[] }
> {
  const cpu = () => pids.reduce((s, p) => s + cpuSeconds(p), 0);
  let atRamp = cpu();
  let schedAtRamp = schedstats(pids);
  let rampAt = performance.now();
  const timer = setTimeout(() => {
    atRamp = cpu();
    schedAtRamp = schedstats(pids);
    rampAt = performance.now();
  }, opts.ramp * 1000);
  const r = await runJob(job, uri, opts).finally(() => clearTimeout(timer));
  const threads = busyThreads(schedAtRamp, schedstats(pids), (performance.now() - rampAt) / 1000);
  const work = r.value * opts.runtime / (job.unit === "IOPS" ? 1e6 : 1024);
  return {
    ...r,
    serverCpuPer: (cpu() - atRamp) / work,
    clientCpuPer: r.clientCpuSeconds / work,
    threads,
  };
}

export async function precondition(uri: string, sizeMiB: number): Promise<void> {
  await fio([
    "--name=precondition",
    "--ioengine=nbd",
    `--uri=${uri}`,
    "--rw=write",
    "--bs=1M",
    "--iodepth=8",
    `--size=${sizeMiB}M`,
    "--output-format=json",
  ], 600_000);
}

/** One fio job section: a connection to `uri` working on [offsetBytes, +sizeBytes). */
export interface Target {
  uri: string;
  offsetBytes: number;
  sizeBytes: number;
}

/**
 * `conns` connections spread over the volumes at `uris` (connection i on volume i mod n).
 * Random jobs cover the whole volume on every connection; sequential ones split it between
 * the connections that share it (1 MiB aligned), so that no two stream over the same bytes.
 */
export function spread(job: Job, conns: number, uris: string[], volumeBytes: number): Target[] {
  const sequential = job.rw === "read" || job.rw === "write";
  return Array.from({ length: conns }, (_, i) => {
    const v = i % uris.length;
    const sharing = Math.floor(conns / uris.length) + (v < conns % uris.length ? 1 : 0);
    const k = Math.floor(i / uris.length);
    if (!sequential || sharing === 1) {
      return { uri: uris[v], offsetBytes: 0, sizeBytes: volumeBytes };
    }
    const part = Math.floor(volumeBytes / sharing / MIB) * MIB;
    return { uri: uris[v], offsetBytes: k * part, sizeBytes: part };
  });
}

/**
 * Runs `job` (its numjobs ignored) with one fio job section per target, reported as one
 * group; `extra` are more global fio options. The value is the group's IOPS or MiB/s.
 */
export async function runTargets(
  job: Job,
  targets: Target[],
  opts: { runtime: number; ramp: number },
  extra: string[] = [],
): Promise<FioResult> {
  const args = [
    "--ioengine=nbd",
    `--rw=${job.rw}`,
    `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`,
    "--group_reporting",
    "--time_based",
    `--runtime=${opts.runtime}`,
    `--ramp_time=${opts.ramp}`,
    "--output-format=json",
    ...extra,
    ...targets.flatMap((t, i) => [
      `--name=${job.id}-${i}`,
      `--uri=${t.uri}`,
      `--offset=${t.offsetBytes}`,
      `--size=${t.sizeBytes}`,
    ]),
  ];
  const { json } = await fio(args, (opts.runtime + opts.ramp + 60) * 1000);
  const j = (json.jobs as Record<string, Record<string, number>>[])[0];
  if (j.error) throw new Error(`fio job error ${j.error}`);
  const side = job.rw.includes("read") ? j.read : j.write;
  const value = job.unit === "IOPS" ? Number(side.iops) : Number(side.bw_bytes) / MIB;
  return { value, raw: j, clientCpuSeconds: fioCpuSeconds(j) };
}

/** The 99th percentile of completion latency in ms of one side (read or write) of a fio job. */
export function clatP99Ms(side: unknown): number {
  const p = (side as { clat_ns?: { percentile?: Record<string, number> } })?.clat_ns?.percentile;
  const v = p?.["99.000000"];
  return typeof v === "number" ? v / 1e6 : NaN;
}
