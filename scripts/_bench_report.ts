/**
 * Result cells and the tables of scripts/bench.ts: the plain table (ballast against nbdkit
 * and qemu-nbd) and the --tls table (each server's TLS/plain ratio, ballast TLS against the
 * others' TLS).
 * @module
 */

// deno-lint-ignore-file no-console
import type { Job } from "./_bench_fio.ts";
import { ALL_SERVERS, type ServerKind, serverName } from "./_bench_servers.ts";

export interface Cell {
  values: number[];
  cpu: number[];
  peakMiB: number[];
  errors: string[];
}

/** Results by `${job.id}|${server.name}`. */
export type Cells = Map<string, Cell>;

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function fmtValue(v: number, unit: Job["unit"]): string {
  if (!Number.isFinite(v)) return "-";
  if (unit === "IOPS") return v >= 1000 ? `${(v / 1000).toFixed(1)}k` : v.toFixed(0);
  return v.toFixed(0);
}

function ratio(a: number, b: number): number {
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : NaN;
}

function fmtRatio(a: number, b: number): string {
  const r = ratio(a, b);
  return Number.isFinite(r) ? `${r.toFixed(2)}x` : "-";
}

type Metric = "values" | "cpu" | "peakMiB";

/** Median of a metric (the maximum for peak RSS); NaN when nothing was measured. */
function med(cells: Cells, job: Job, server: string, k: Metric): number {
  const c = cells.get(`${job.id}|${server}`);
  if (!c || c[k].length === 0) return NaN;
  return k === "peakMiB" ? Math.max(...c.peakMiB) : median(c[k]);
}

function valueText(cells: Cells, job: Job, server: string): string {
  const c = cells.get(`${job.id}|${server}`);
  if (c && c.values.length === 0 && c.errors.length > 0) return "FAILED";
  return fmtValue(med(cells, job, server, "values"), job.unit);
}

function joined(cells: Cells, job: Job, servers: string[], k: Metric, digits: number): string {
  return servers.map((s) => {
    const v = med(cells, job, s, k);
    return Number.isFinite(v) ? v.toFixed(digits) : "-";
  }).join(" / ");
}

function printRows(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of rows) console.log(line(r));
}

/** The plain table: every server, ballast's ratio to nbdkit and qemu-nbd, CPU s, peak RSS. */
export function printTable(jobs: Job[], cells: Cells): void {
  const all = [...ALL_SERVERS];
  const v = (job: Job, s: string) => med(cells, job, s, "values");
  printRows(
    [
      "job",
      "unit",
      ...all,
      "b/nbdkit",
      "b/qemu-nbd",
      "CPU s (b / n / q)",
      "peak MiB (b / n / q)",
    ],
    jobs.map((job) => [
      job.title,
      job.unit,
      ...all.map((s) => valueText(cells, job, s)),
      fmtRatio(v(job, "ballast"), v(job, "nbdkit")),
      fmtRatio(v(job, "ballast"), v(job, "qemu-nbd")),
      joined(cells, job, all, "cpu", 1),
      joined(cells, job, all, "peakMiB", 0),
    ]),
  );
}

const SHORT: Record<ServerKind, string> = { ballast: "b", nbdkit: "n", "qemu-nbd": "q" };

/**
 * The --tls table: per server kind plain, TLS and TLS/plain; ballast TLS over each other
 * server's TLS; CPU s and peak RSS of every server (plain and TLS, in column order).
 */
export function printTlsTable(jobs: Job[], cells: Cells, kinds: ServerKind[]): void {
  const others = kinds.filter((k) => k !== "ballast");
  const names = kinds.flatMap((k) => [serverName(k, false), serverName(k, true)]);
  const short = kinds.flatMap((k) => [SHORT[k], `${SHORT[k]}T`]).join(" / ");
  const v = (job: Job, k: ServerKind, tls: boolean) =>
    med(cells, job, serverName(k, tls), "values");
  printRows(
    [
      "job",
      "unit",
      ...kinds.flatMap((k) => [k, `${k} TLS`, `${SHORT[k]} TLS/plain`]),
      ...others.map((k) => `bTLS/${SHORT[k]}TLS`),
      `CPU s (${short})`,
      `peak MiB (${short})`,
    ],
    jobs.map((job) => [
      job.title,
      job.unit,
      ...kinds.flatMap((k) => [
        valueText(cells, job, serverName(k, false)),
        valueText(cells, job, serverName(k, true)),
        fmtRatio(v(job, k, true), v(job, k, false)),
      ]),
      ...others.map((k) => fmtRatio(v(job, "ballast", true), v(job, k, true))),
      joined(cells, job, names, "cpu", 1),
      joined(cells, job, names, "peakMiB", 0),
    ]),
  );
}

export interface TlsRow {
  job: string;
  unit: Job["unit"];
  /** By server kind: plaintext and TLS medians, TLS over plaintext. */
  servers: Record<string, { plain: number; tls: number; tlsOverPlain: number }>;
  /** Ballast's TLS median over each other kind's TLS median. */
  ballastTlsOver: Record<string, number>;
}

/** Per job and server kind: plain and TLS medians and TLS/plain; ballast TLS over the others. */
export function tlsSummary(jobs: Job[], cells: Cells, kinds: ServerKind[]): TlsRow[] {
  return jobs.map((job) => {
    const servers: TlsRow["servers"] = {};
    for (const k of kinds) {
      const plain = med(cells, job, serverName(k, false), "values");
      const tls = med(cells, job, serverName(k, true), "values");
      servers[k] = { plain, tls, tlsOverPlain: ratio(tls, plain) };
    }
    const ballastTlsOver: Record<string, number> = {};
    for (const k of kinds) {
      if (k !== "ballast") ballastTlsOver[k] = ratio(servers.ballast.tls, servers[k].tls);
    }
    return { job: job.id, unit: job.unit, servers, ballastTlsOver };
  });
}

/**
 * The bar: TLS should cost Ballast no larger fraction of its throughput than it costs
 * nbdkit. Prints, per job, whether ballast's TLS/plain is at least nbdkit's.
 */
export function printTlsVerdict(jobs: Job[], cells: Cells): void {
  const rows = tlsSummary(jobs, cells, ["ballast", "nbdkit"]);
  const worse: string[] = [];
  let compared = 0;
  for (const r of rows) {
    const b = r.servers.ballast.tlsOverPlain;
    const n = r.servers.nbdkit.tlsOverPlain;
    if (!Number.isFinite(b) || !Number.isFinite(n)) continue;
    compared++;
    if (b < n) {
      const title = jobs.find((j) => j.id === r.job)!.title;
      worse.push(`${title} (TLS/plain: ballast ${b.toFixed(2)}x, nbdkit ${n.toFixed(2)}x)`);
    }
  }
  if (compared === 0) return;
  console.log(
    `\nTLS costs ballast no larger fraction of its throughput than nbdkit in ` +
      `${compared - worse.length} of ${compared} jobs` +
      (worse.length > 0 ? `; larger in: ${worse.join("; ")}` : ""),
  );
}
