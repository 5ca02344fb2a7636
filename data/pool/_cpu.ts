/**
 * How busy a thread is, from what the kernel accounts for it: the time it ran and the time it
 * was ready to run but waited for a core (/proc/self/task/TID/schedstat; where that file is
 * missing, utime + stime from .../stat and no wait). Sampled by the main thread for every
 * data worker; it counts everything the thread does, TLS and syscalls included, where timing
 * the request loop would miss the TLS layer. A worker learns its own thread id with gettid
 * (through FFI) and reports it once. sizing.ts turns two readings into a busy ratio.
 * @module
 */

/** Linux syscall numbers of gettid. */
const SYS_GETTID: Record<string, number> = { x86_64: 186, aarch64: 178 };
/** USER_HZ: the unit of utime and stime (100 on every Linux this runs on). */
const CLOCK_TICKS_PER_SECOND = 100;

let lib: Deno.DynamicLibrary<{ syscall: { parameters: ["i64"]; result: "i64" } }> | undefined;

/** The calling thread's id, or 0 where it cannot be had. */
export function currentThreadId(): number {
  const nr = SYS_GETTID[Deno.build.arch];
  if (nr === undefined) return 0;
  try {
    lib ??= Deno.dlopen("libc.so.6", { syscall: { parameters: ["i64"], result: "i64" } });
    return Number(lib.symbols.syscall(BigInt(nr)));
  } catch {
    return 0;
  }
}

/** Seconds a thread ran and waited on a run queue, since it started. */
export interface ThreadTimes {
  run: number;
  wait: number;
}

/** Thread `tid` of this process's times, or undefined if it is gone. */
export function threadTimes(tid: number): ThreadTimes | undefined {
  try {
    const t = parseSchedstat(Deno.readTextFileSync(`/proc/self/task/${tid}/schedstat`));
    if (t !== undefined) return t;
  } catch {
    // no schedstat (a kernel without CONFIG_SCHED_INFO), or the thread is gone
  }
  const cpu = threadCpuSeconds(tid);
  return cpu === undefined ? undefined : { run: cpu, wait: 0 };
}

/** A schedstat line: nanoseconds on a CPU, nanoseconds waiting on a run queue, time slices. */
export function parseSchedstat(text: string): ThreadTimes | undefined {
  const [run, wait] = text.trim().split(/\s+/).map(Number);
  if (!Number.isFinite(run) || !Number.isFinite(wait)) return undefined;
  return { run: run / 1e9, wait: wait / 1e9 };
}

/** CPU seconds thread `tid` of this process has used, or undefined if it is gone. */
export function threadCpuSeconds(tid: number): number | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/self/task/${tid}/stat`);
  } catch {
    return undefined;
  }
  return parseCpuSeconds(text);
}

/** utime + stime of a /proc stat line, in seconds (the command name may hold spaces). */
export function parseCpuSeconds(stat: string): number | undefined {
  const after = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields from 3 (state) on: utime is field 14, stime 15, i.e. after[11] and after[12].
  const utime = Number(after[11]);
  const stime = Number(after[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return (utime + stime) / CLOCK_TICKS_PER_SECOND;
}

/** The CPUs this process may use: its affinity mask, capped by a cgroup v2 quota. */
export function usableCores(): number {
  let cores = navigator.hardwareConcurrency || 1;
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    const list = /Cpus_allowed_list:\s*(\S+)/.exec(status)?.[1];
    if (list) cores = Math.min(cores, countCpuList(list));
  } catch { /* not Linux: keep the hardware count */ }
  try {
    const [quota, period] = Deno.readTextFileSync("/sys/fs/cgroup/cpu.max").trim().split(/\s+/);
    if (quota !== "max" && Number(period) > 0) {
      cores = Math.min(cores, Math.max(1, Math.floor(Number(quota) / Number(period))));
    }
  } catch { /* no cgroup v2 quota */ }
  return Math.max(1, cores);
}

/** CPUs in a list such as "0-3,8,10-11". */
export function countCpuList(list: string): number {
  let n = 0;
  for (const part of list.split(",")) {
    const [a, b] = part.split("-").map(Number);
    if (!Number.isInteger(a)) continue;
    n += b === undefined ? 1 : Math.max(0, b - a + 1);
  }
  return Math.max(1, n);
}
