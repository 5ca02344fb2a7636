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

/** utime + stime of a process (all its threads) in seconds. */
export function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
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
  return { value, raw: j };
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
