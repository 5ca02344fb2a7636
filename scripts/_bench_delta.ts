// deno-lint-ignore-file no-console
/**
 * Delta Sync for `deno task bench --replicas ...` (issue 12): a volume of --size with one
 * replica, written in full; then, each time with the replica's node killed (SIGKILL) and the
 * master told so: --change-pct of the volume changed by random 4 KiB writes, the same share
 * by sequential 1 MiB writes, and a full seed (the replica's copy replaced by an empty file of
 * the same size and its hash list removed, so every region differs); the node started again
 * and timed until the master lists it in sync. Bytes compared, sent, zeroed and hash bytes
 * come from the master's "resync finished" and "resync stopped" log lines (every attempt
 * since the restart, summed). Client latency (fio clat p99) of a
 * rate-limited 4k random read/write load is measured with every member in sync and during a
 * second full seed.
 * @module
 */

import type { Volume } from "../mod/mod.ts";
import { clatP99Ms, fio, MIB, precondition } from "./_bench_fio.ts";
import type { Options } from "./_bench_options.ts";
import { type BenchCluster, until } from "./_bench_cluster.ts";
import type { BenchRun } from "./_bench_run.ts";

/** One resync, as measured. */
interface Resync {
  change: string;
  changedBytes: number;
  /** From the master's "resync finished" line. */
  comparedBytes: number;
  sentBytes: number;
  zeroedBytes: number;
  hashBytes: number;
  /** Passes of the attempt that finished. */
  passes: number;
  /** Resyncs that got as far as comparing ("resync started"); all of them are summed. */
  attempts: number;
  /** The finished attempt's time; from the first attempt's start when there were several. */
  resyncMs: number;
  /** From starting the node to the master listing it in sync (node start included). */
  restartToInSyncMs: number;
  /** From SIGKILL to the record listing the member out of sync. */
  detectMs: number;
}

interface Latency {
  readP99Ms: number;
  writeP99Ms: number;
  readIops: number;
  writeIops: number;
  seconds: number;
}

export interface DeltaReport {
  sizeBytes: number;
  master: string;
  replica: string;
  fillMiBps: number;
  resyncs: Resync[];
  latencyInSync?: Latency;
  latencyDuringSeed?: Latency & { resyncLastedThrough: boolean };
}

const READ_IOPS = 1000;
const WRITE_IOPS = 1000;

export async function runDelta(
  run: BenchRun,
  cluster: BenchCluster,
  opts: Options,
): Promise<{ failures: number; report?: DeltaReport }> {
  const size = opts.deltaSizeBytes;
  console.error(`bench: Delta Sync on a ${size / MIB} MiB volume with 1 replica`);
  let report: DeltaReport | undefined;
  try {
    const v = await cluster.createVolume("delta", size, 1);
    const replica = v.members!.find((m) => m !== v.master)!;
    const uri = cluster.localUri(v);
    const t0 = performance.now();
    await precondition(uri, size / MIB);
    const fillMiBps = size / MIB / ((performance.now() - t0) / 1000);
    console.error(
      `bench: delta: master ${v.master}, replica ${replica}; written once at ` +
        `${fillMiBps.toFixed(0)} MiB/s (replicated)`,
    );
    report = { sizeBytes: size, master: v.master, replica, fillMiBps, resyncs: [] };
    const changed = Math.max(4096, Math.round(size * opts.changePct / 100 / 4096) * 4096);
    const changedSeq = Math.max(MIB, Math.round(changed / MIB) * MIB);
    const seqOffset = Math.floor((size - changedSeq) * 0.37 / MIB) * MIB;
    const pct = `${opts.changePct}%`;
    report.latencyInSync = await latency(uri, opts.runtime);
    console.error(`bench: delta: latency, all in sync: ${fmtLatency(report.latencyInSync)}`);
    const cases: [string, number, () => Promise<void>][] = [
      [
        `${pct} by random 4 KiB writes`,
        changed,
        () => fioWrite(uri, ["--rw=randwrite", "--bs=4k", "--iodepth=32", `--io_size=${changed}`]),
      ],
      [`${pct} by sequential 1 MiB writes`, changedSeq, () =>
        fioWrite(uri, [
          "--rw=write",
          "--bs=1M",
          "--iodepth=8",
          `--offset=${seqOffset}`,
          `--size=${changedSeq}`,
        ])],
      ["full seed (copy emptied)", size, () => emptyCopy(cluster, v, replica)],
    ];
    for (const [change, bytes, apply] of cases) {
      if (run.interrupted) return { failures: 0 };
      const r = await resync(cluster, v, replica, change, bytes, apply);
      report.resyncs.push(r);
      console.error(`bench: delta: ${describe(r)}`);
    }
    const seed = report.resyncs[report.resyncs.length - 1];
    const seconds = Math.max(1, Math.min(opts.runtime, Math.floor(seed.resyncMs * 0.7 / 1000)));
    let during: Latency | undefined;
    let lastedThrough = false;
    const r = await resync(
      cluster,
      v,
      replica,
      "full seed, client load running",
      size,
      () => emptyCopy(cluster, v, replica),
      async (inSync) => {
        during = await latency(uri, seconds);
        lastedThrough = !inSync();
      },
    );
    report.resyncs.push(r);
    if (during) report.latencyDuringSeed = { ...during, resyncLastedThrough: lastedThrough };
    console.error(`bench: delta: ${describe(r)}`);
    printDelta(report, opts);
    await cluster.client().deleteVolume("delta", { force: true });
    return { failures: 0, report };
  } catch (err) {
    console.error(`bench: Delta Sync FAILED: ${(err as Error).message}`);
    if (report) printDelta(report, opts); // what was measured before
    return { failures: 1, report };
  }
}

async function fioWrite(uri: string, args: string[]): Promise<void> {
  await fio([
    "--name=change",
    "--ioengine=nbd",
    `--uri=${uri}`,
    "--refill_buffers",
    "--output-format=json",
    ...args,
  ], 600_000);
}

/** The replica's copy replaced by a sparse file of the same size, its hash list removed. */
async function emptyCopy(cluster: BenchCluster, v: Volume, replica: string): Promise<void> {
  const path = `${cluster.nodes.get(replica)!.dataDir}/volumes/${v.uuid}.vol`;
  await Deno.truncate(path, 0);
  await Deno.truncate(path, v.sizeBytes);
  for (const f of [`${path}.hashes`, `${path}.al`]) await Deno.remove(f).catch(() => {});
}

/**
 * Kills the replica's node, waits until the record has it out of sync, applies `change`,
 * starts the node again and waits until the master lists it in sync; `during` runs once the
 * master logged that the resync started (it is told whether the member is in sync yet).
 */
async function resync(
  cluster: BenchCluster,
  v: Volume,
  replica: string,
  change: string,
  changedBytes: number,
  apply: () => Promise<void>,
  during?: (inSync: () => boolean) => Promise<void>,
): Promise<Resync> {
  const master = cluster.nodes.get(v.master)!;
  const t0 = performance.now();
  await cluster.kill(replica);
  await until(`${replica} out of sync`, 60_000, async () => {
    const cur = await cluster.client(v.master).getVolume(v.name);
    return !(cur.inSync ?? []).includes(replica);
  });
  const detectMs = performance.now() - t0;
  await apply();
  const logOffset = (await Deno.stat(master.logFile)).size;
  const t1 = performance.now();
  await cluster.start(replica);
  let inSync = false;
  let duringError: unknown;
  const started = () =>
    logSince(master.logFile, logOffset).then((lines) =>
      lines.some((l) => l.msg?.startsWith("resync started") && l.replica === replica)
    );
  const watch = async () => {
    if (!during) return;
    await until("resync started", 120_000, started);
    await during(() => inSync);
  };
  const watching = watch().catch((err) => duringError = err);
  await until(`${replica} in sync again`, 1_800_000, async () => {
    const cur = await cluster.client(v.master).getVolume(v.name);
    return (cur.inSync ?? []).includes(replica);
  });
  inSync = true;
  const restartToInSyncMs = performance.now() - t1;
  await watching;
  if (duringError) throw duringError;
  // Every attempt since the restart counts: one can copy much and then stop (a client write
  // to the member failed, the in-sync CAS failed), and the next finds little left to copy.
  const lines = (await logSince(master.logFile, logOffset)).filter((l) => l.replica === replica);
  const is = (l: LogLine, prefix: string) => l.msg?.startsWith(prefix) ?? false;
  const last = lines.filter((l) => is(l, "resync finished")).pop();
  if (!last) throw new Error(`${v.master} logged no "resync finished" for ${replica}`);
  const ends = lines.filter((l) => is(l, "resync finished") || is(l, "resync stopped"));
  const sum = (k: string) => ends.reduce((n, l) => n + (Number(l[k]) || 0), 0);
  const starts = lines.filter((l) => is(l, "resync started"));
  const span = Date.parse(String(last.time)) - Date.parse(String(starts[0]?.time));
  return {
    change,
    changedBytes,
    comparedBytes: sum("comparedBytes"),
    sentBytes: sum("sentBytes"),
    zeroedBytes: sum("zeroedBytes"),
    hashBytes: sum("hashBytes"),
    passes: Number(last.passes),
    attempts: starts.length,
    resyncMs: starts.length > 1 && Number.isFinite(span) ? span : Number(last.ms),
    restartToInSyncMs,
    detectMs,
  };
}

type LogLine = Record<string, unknown> & { msg?: string; replica?: string };

async function logSince(file: string, offset: number): Promise<LogLine[]> {
  const data = await Deno.readFile(file);
  const lines: LogLine[] = [];
  for (const line of new TextDecoder().decode(data.subarray(offset)).split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      lines.push(JSON.parse(line));
    } catch { /* a line still being written */ }
  }
  return lines;
}

/** fio 4k random reads and writes, 1000 IOPS each, QD4, `seconds` long: p99 latencies. */
async function latency(uri: string, seconds: number): Promise<Latency> {
  const { json } = await fio([
    "--name=latency",
    "--ioengine=nbd",
    `--uri=${uri}`,
    "--rw=randrw",
    "--rwmixread=50",
    "--bs=4k",
    "--iodepth=4",
    `--rate_iops=${READ_IOPS},${WRITE_IOPS}`,
    "--time_based",
    `--runtime=${seconds}`,
    "--output-format=json",
  ], (seconds + 120) * 1000);
  const j = (json.jobs as Record<string, Record<string, number>>[])[0];
  return {
    readP99Ms: clatP99Ms(j.read),
    writeP99Ms: clatP99Ms(j.write),
    readIops: Number(j.read.iops),
    writeIops: Number(j.write.iops),
    seconds,
  };
}

function fmtLatency(l: Latency): string {
  return `p99 read ${l.readP99Ms.toFixed(2)} ms, write ${l.writeP99Ms.toFixed(2)} ms ` +
    `(${l.readIops.toFixed(0)} + ${l.writeIops.toFixed(0)} IOPS, ${l.seconds} s)`;
}

const mib = (b: number) => (b / MIB).toFixed(1);

function describe(r: Resync): string {
  return `${r.change}: changed ${mib(r.changedBytes)} MiB, sent ${mib(r.sentBytes)} MiB, ` +
    `hashes ${mib(r.hashBytes)} MiB, resync ${(r.resyncMs / 1000).toFixed(1)} s, start to in ` +
    `sync ${(r.restartToInSyncMs / 1000).toFixed(1)} s`;
}

function printDelta(d: DeltaReport, opts: Options): void {
  console.log(
    `\nDelta Sync: a ${mib(d.sizeBytes)} MiB volume with 1 replica (master ${d.master}, ` +
      `replica ${d.replica}), written in full first (${
        d.fillMiBps.toFixed(0)
      } MiB/s replicated); ` +
      `each row: replica's node SIGKILLed, the change made through the master, node started ` +
      `again; figures from the master's "resync finished"/"resync stopped" log lines, every ` +
      `attempt since the restart summed${
        opts.resyncRate ? `; --resync-rate ${opts.resyncRate}` : ""
      }\n`,
  );
  const rows = d.resyncs.map((r) => [
    r.change,
    mib(r.changedBytes),
    mib(r.comparedBytes),
    mib(r.sentBytes),
    mib(r.zeroedBytes),
    mib(r.hashBytes),
    `${(r.sentBytes / r.changedBytes).toFixed(2)}x`,
    `${(100 * r.hashBytes / d.sizeBytes).toFixed(2)}%`,
    `${r.attempts}/${r.passes}`,
    (r.resyncMs / 1000).toFixed(1),
    (r.restartToInSyncMs / 1000).toFixed(1),
    (r.sentBytes / MIB / (r.resyncMs / 1000)).toFixed(0),
    (r.detectMs / 1000).toFixed(1),
  ]);
  const header = [
    "change",
    "changed MiB",
    "compared MiB",
    "sent MiB",
    "zeroed MiB",
    "hash MiB",
    "sent/changed",
    "hash/volume",
    "attempts/passes",
    "resync s",
    "start->in sync s",
    "sent MiB/s",
    "kill->out of sync s",
  ];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of rows) console.log(line(r));
  const seed = d.resyncs.find((r) => r.change.startsWith("full seed ("));
  for (const r of d.resyncs.filter((x) => !x.change.startsWith("full seed"))) {
    const bound = 2 * r.changedBytes + r.hashBytes;
    console.log(
      `- ${r.change}: sent ${mib(r.sentBytes)} MiB ${
        r.sentBytes <= bound ? "<=" : "> (NOT met)"
      } ` +
        `2 x changed + hashes (${mib(bound)} MiB); hashes ${
          (100 * r.hashBytes / d.sizeBytes).toFixed(2)
        }% of the volume (goal <= 1%)` +
        (seed
          ? `; against the full seed: ${(100 * r.sentBytes / seed.sentBytes).toFixed(1)}% of its ` +
            `bytes, ${(100 * r.resyncMs / seed.resyncMs).toFixed(1)}% of its time`
          : ""),
    );
  }
  if (seed) {
    console.log(
      `- full seed: ${(seed.sentBytes / MIB / (seed.resyncMs / 1000)).toFixed(0)} MiB/s ` +
        `(${mib(seed.sentBytes)} MiB in ${(seed.resyncMs / 1000).toFixed(1)} s)`,
    );
  }
  if (d.latencyInSync && d.latencyDuringSeed) {
    const a = d.latencyInSync;
    const b = d.latencyDuringSeed;
    console.log(
      `- client latency, 4k randrw ${READ_IOPS}+${WRITE_IOPS} IOPS QD4: all in sync ` +
        `${fmtLatency(a)}; during a full seed ${fmtLatency(b)}: p99 read ` +
        `${(b.readP99Ms / a.readP99Ms).toFixed(2)}x, write ${
          (b.writeP99Ms / a.writeP99Ms).toFixed(2)
        }x` +
        (b.resyncLastedThrough ? "" : " (the resync ended before the load did)"),
    );
  }
}
