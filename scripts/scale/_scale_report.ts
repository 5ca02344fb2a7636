/**
 * The summary scripts/scale/scale_sim.ts prints: failover times, etcd at rest and during the
 * storm, and each node's memory, as plain-text tables.
 * @module
 */
// deno-lint-ignore-file no-console

import type { Window } from "./_scale_etcd.ts";

/** The q-quantile (0..1) of `values` by nearest rank; NaN when empty. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(q * sorted.length)));
  return sorted[rank - 1];
}

export interface Spread {
  n: number;
  p50: number;
  p90: number;
  max: number;
}

export function spread(values: readonly number[]): Spread {
  return {
    n: values.length,
    p50: quantile(values, 0.5),
    p90: quantile(values, 0.9),
    max: values.length ? Math.max(...values) : NaN,
  };
}

const s = (ms: number) => Number.isFinite(ms) ? (ms / 1000).toFixed(2) : "-";
const f = (v: number, d = 1) => Number.isFinite(v) ? v.toFixed(d) : "-";

function table(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i])).join("  ");
  console.log(line(head));
  for (const r of rows) console.log(line(r));
}

export interface FailoverFigures {
  groups: number;
  /** kill -9 -> first node logged the victim's lease expired. */
  detectMs: number;
  /** kill -> new master's record change won (etcd CAS). */
  cas: Spread;
  /** kill -> new master exported the volume. */
  served: Spread;
  lastVolume: string;
  boundMs: number;
  withinBound: number;
  /** Groups in which the victim was a replica: kill -> its `down` entry written. */
  replicaGroups: number;
  replicaDown: Spread;
  missing: string[];
}

export function printFailover(f: FailoverFigures): void {
  console.log(
    `\nFailover of the ${f.groups} groups the victim mastered (seconds after kill -9; ` +
      `first lease expiry seen after ${s(f.detectMs)} s):`,
  );
  table(["", "n", "p50", "p90", "max (last)"], [
    ["new master's CAS won", String(f.cas.n), s(f.cas.p50), s(f.cas.p90), s(f.cas.max)],
    ["new master serving", String(f.served.n), s(f.served.p50), s(f.served.p90), s(f.served.max)],
    [
      "victim marked down (replica groups)",
      String(f.replicaDown.n),
      s(f.replicaDown.p50),
      s(f.replicaDown.p90),
      s(f.replicaDown.max),
    ],
  ]);
  console.log(
    `last group served: ${f.lastVolume} after ${s(f.served.max)} s; ` +
      `${f.withinBound}/${f.groups} within the bound (lease TTL + 2 s = ${s(f.boundMs)} s)` +
      (f.missing.length ? `; NOT failed over: ${f.missing.slice(0, 10).join(", ")}` : ""),
  );
}

export function printEtcd(rest: Window, storm: Window, peak: { requestsPerS: number }): void {
  console.log(
    `\netcd (one member): at rest over ${f(rest.seconds)} s, ` +
      `storm over ${f(storm.seconds)} s (kill -9 to the last group changed + 2 s)`,
  );
  const methods = [...new Set([...Object.keys(rest.byMethod), ...Object.keys(storm.byMethod)])]
    .sort();
  const row = (name: string, r: number, st: number, total: number): string[] => [
    name,
    f(r, 2),
    f(st, 2),
    f(total, 0),
  ];
  const rows = [
    row("all gRPC requests", rest.rates.requests, storm.rates.requests, storm.requests),
    ...methods.map((m) =>
      row(
        `  ${m}`,
        rest.rates.byMethod[m] ?? 0,
        storm.rates.byMethod[m] ?? 0,
        storm.byMethod[m] ?? 0,
      )
    ),
    ...["puts", "txns", "ranges", "proposals", "watchEvents"].map((k) =>
      row(
        `mvcc/raft ${k}`,
        rest.rates.counters[k] ?? 0,
        storm.rates.counters[k] ?? 0,
        storm.counters[k] ?? 0,
      )
    ),
    row(
      "KiB sent to clients",
      (rest.rates.counters.sentBytes ?? 0) / 1024,
      (storm.rates.counters.sentBytes ?? 0) / 1024,
      (storm.counters.sentBytes ?? 0) / 1024,
    ),
  ];
  table(["", "rest /s", "storm /s", "storm total"], rows);
  console.log(
    `peak 1 s step in the storm: ${f(peak.requestsPerS)} requests/s; ` +
      `etcd holds ${rest.gauges.keys} keys, ${rest.gauges.watchers} watchers, ` +
      `${f(rest.gauges.dbInUseBytes / 1048576)} MiB db in use`,
  );
}

export interface MemoryRow {
  node: string;
  copies: number;
  masters: number;
  startMiB: number;
  restMiB: number;
  afterMiB: number;
  /** Share of one core used over the rest window and over the storm window. */
  restCpuPct: number;
  stormCpuPct: number;
}

export function printMemory(
  rows: MemoryRow[],
  etcd: { restMiB: number; restCpuPct: number; stormCpuPct: number },
): void {
  console.log(
    "\nEach node: resident memory (VmRSS, MiB) after start (no volumes), at rest and after the " +
      "storm;\nCPU (% of one core) over the rest window and over the storm window",
  );
  table(
    ["node", "copies", "masters", "RSS start", "rest", "after", "CPU rest", "storm"],
    rows.map((r) => [
      r.node,
      String(r.copies),
      String(r.masters),
      f(r.startMiB),
      f(r.restMiB),
      f(r.afterMiB),
      f(r.restCpuPct),
      f(r.stormCpuPct),
    ]),
  );
  const live = rows.filter((r) => Number.isFinite(r.afterMiB));
  const sum = (k: keyof MemoryRow) => rows.reduce((a, r) => a + (Number(r[k]) || 0), 0);
  console.log(
    `total ${f(sum("restMiB"), 0)} MiB at rest (mean ${f(sum("restMiB") / rows.length)}, ` +
      `max ${f(Math.max(...rows.map((r) => r.restMiB)))}); ` +
      `after the storm max ${f(Math.max(...live.map((r) => r.afterMiB)))}; CPU at rest ` +
      `${f(sum("restCpuPct"))}% in all, in the storm ${f(sum("stormCpuPct"))}%; etcd ` +
      `${f(etcd.restMiB)} MiB, CPU ${f(etcd.restCpuPct)}% at rest, ${
        f(etcd.stormCpuPct)
      }% in the storm`,
  );
}
