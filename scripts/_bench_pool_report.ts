// deno-lint-ignore-file no-console
/**
 * The tables of `deno task bench --data-workers ...` (scripts/_bench_pool.ts): throughput of
 * each --data-workers value plaintext and TLS with its ratio to the first value and to
 * nbdkit file; server CPU per million 4k requests or
 * per GiB; the pool's size; RSS; and issue 11's targets checked.
 * @module
 */

import type { Job } from "./_bench_fio.ts";
import type { Options } from "./_bench_options.ts";
import { fmtValue, median } from "./_bench_report.ts";

export interface PoolCell {
  values: number[];
  /** The round of each value (a failed job leaves its round out). */
  rounds: number[];
  cpuPer: number[];
  /** The same for fio, the client, on the same cores. */
  clientCpuPer: number[];
  /** The same for the server's busiest thread alone. */
  topThreadPer: number[];
  peakMiB: number[];
  workers: string[];
  errors: string[];
}

/** Per Ballast: its largest pool and RSS after the jobs, then after idling until it shrank. */
export interface RssReport {
  workers: string;
  /** The largest pool seen: /metrics before and after every job, and the log's resize lines. */
  maxPool: number;
  /** VmRSS right after the last job of the run. */
  rssMiB: number;
  /** VmRSS once the pool was at its minimum (or the deadline passed), settleSeconds later. */
  idleRssMiB: number;
  idlePool: number;
  /** Seconds from the end of the run's jobs until /metrics showed the pool at its minimum. */
  idleSeconds: number;
  settleSeconds: number;
  /** Resize lines in the log over the whole run. */
  grows: number;
  shrinks: number;
  /** From this Ballast's own last job to its last shrink line; undefined: no shrink after it. */
  shrinkSeconds?: number;
}

export interface PoolRow {
  job: Job;
  conns: number;
}

type Cells = Map<string, PoolCell>;

function med(
  cells: Cells,
  row: PoolRow,
  server: string,
  k: "values" | "cpuPer" | "clientCpuPer" | "topThreadPer",
): number {
  const c = cells.get(`${row.job.id}|${row.conns}|${server}`);
  return c ? median(c[k]) : NaN;
}

function ratio(a: number, b: number): number {
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : NaN;
}

function fr(r: number): string {
  return Number.isFinite(r) ? `${r.toFixed(2)}x` : "-";
}

function printRows(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of rows) console.log(line(r));
}

export function printPool(
  opts: Options,
  rows: PoolRow[],
  cells: Cells,
  servers: string[],
  rss: RssReport[],
): void {
  const ws = opts.dataWorkers!;
  const base = ws[0];
  const nbdkit = servers.includes("nbdkit");
  const v = (r: PoolRow, s: string) => med(cells, r, s, "values");
  const text = (r: PoolRow, s: string) => {
    const c = cells.get(`${r.job.id}|${r.conns}|${s}`);
    if (c && c.values.length === 0 && c.errors.length > 0) return "FAILED";
    return fmtValue(v(r, s), r.job.unit);
  };
  console.log(
    `\nfio nbd engine, ${opts.runtime} s + ${opts.ramp} s ramp per job` +
      (opts.rounds > 1 ? `, median of ${opts.rounds} rounds` : "") +
      `; connections spread over ${opts.volumes} volumes of ${opts.sizeMiB} MiB; ` +
      `w=N: ballast --data-workers N (plaintext: the local listener; TLS: STARTTLS + client ` +
      `certificate); ratios to w=${base}${
        nbdkit ? " and to nbdkit file (dir=)" : ""
      }; pool size: ` +
      `workers before->after each job (/metrics)\n`,
  );
  const others = ws.slice(1);
  for (const t of ["", " TLS"]) {
    console.log(t ? "\nTLS (STARTTLS, client certificate verified)" : "plaintext");
    printRows(
      [
        "job",
        "conns",
        ...ws.map((w) => `w=${w}${t}`),
        ...others.map((w) => `${w}/${base}`),
        ...(nbdkit ? [`nbdkit${t}`, ...ws.map((w) => `${w}/nbdkit`)] : []),
        "pool size",
      ],
      rows.map((r) => [
        r.job.title,
        String(r.conns),
        ...ws.map((w) => text(r, `w=${w}${t}`)),
        ...others.map((w) => fr(ratio(v(r, `w=${w}${t}`), v(r, `w=${base}${t}`)))),
        ...(nbdkit
          ? [
            text(r, `nbdkit${t}`),
            ...ws.map((w) => fr(ratio(v(r, `w=${w}${t}`), v(r, `nbdkit${t}`)))),
          ]
          : []),
        // The pool sizes of the values compared with the first; a single value's own.
        (others.length > 0 ? others : ws).map((w) =>
          `${w}: ${
            [...new Set(cells.get(`${r.job.id}|${r.conns}|w=${w}${t}`)?.workers ?? [])].join(",") ||
            "-"
          }`
        ).join(" "),
      ]),
    );
  }

  console.log(
    `\nserver CPU seconds per million requests (4k jobs) or per GiB (1 MiB jobs), after the ramp ` +
      `(in brackets: its busiest thread alone); peak RSS MiB of each ballast over its plaintext ` +
      `and TLS jobs`,
  );
  printRows(
    ["job", "conns", "unit", ...servers, ...ws.map((w) => `peak MiB w=${w}`)],
    rows.map((r) => [
      r.job.title,
      String(r.conns),
      r.job.unit === "IOPS" ? "s/M req" : "s/GiB",
      ...servers.map((s) => {
        const x = med(cells, r, s, "cpuPer");
        const t = med(cells, r, s, "topThreadPer");
        if (!Number.isFinite(x)) return "-";
        return Number.isFinite(t) ? `${x.toFixed(2)} (${t.toFixed(2)})` : x.toFixed(2);
      }),
      ...ws.map((w) => {
        const peaks = [w, `${w} TLS`].flatMap((s) =>
          cells.get(`${r.job.id}|${r.conns}|w=${s}`)?.peakMiB ?? []
        );
        return peaks.length > 0 ? Math.max(...peaks).toFixed(0) : "-";
      }),
    ]),
  );

  printCeiling(rows, cells, servers, ws);
  if (opts.rounds > 1) printRounds(opts, rows, cells);
  console.log("");
  for (const x of rss) {
    const peaks = [...cells.entries()].filter(([k]) =>
      k.endsWith(`|w=${x.workers}`) || k.endsWith(`|w=${x.workers} TLS`)
    ).flatMap(([, c]) => c.peakMiB);
    const shrink = x.shrinkSeconds === undefined
      ? "no shrink after its last job"
      : `its last shrink ${x.shrinkSeconds.toFixed(1)} s after its last job`;
    console.log(
      `w=${x.workers}: peak RSS ${peaks.length ? Math.max(...peaks).toFixed(0) : "-"} MiB ` +
        `over the jobs (${pool(x.maxPool)} at most), RSS ${x.rssMiB.toFixed(0)} MiB after the ` +
        `jobs; ${pool(x.idlePool)} ${x.idleSeconds} s after the run's jobs ended, idle RSS ${
          x.idleRssMiB.toFixed(0)
        } MiB ${x.settleSeconds} s later; resizes in its log: ${x.grows} grow(s), ` +
        `${x.shrinks} shrink(s), ${shrink}`,
    );
  }
  verdicts(opts, rows, v, cells);
}

/** Every round's figures and ratio to the first --data-workers value, and the ratios' spread. */
function printRounds(opts: Options, rows: PoolRow[], cells: Cells): void {
  const ws = opts.dataWorkers!;
  const base = ws[0];
  console.log(
    `\nper round (odd rounds ran the servers in table order, even rounds in reverse): ` +
      `each value, then the ratio to w=${base} of the same round; med = median of the ` +
      `per-round ratios, range = their lowest and highest`,
  );
  for (const w of ws.slice(1)) {
    const out: string[][] = [];
    for (const r of rows) {
      for (const t of ["", " TLS"]) {
        const a = cells.get(`${r.job.id}|${r.conns}|w=${base}${t}`);
        const b = cells.get(`${r.job.id}|${r.conns}|w=${w}${t}`);
        if (!a || !b) continue;
        const ratios: number[] = [];
        const each = Array.from({ length: opts.rounds }, (_, i) => {
          const x = a.values[a.rounds.indexOf(i + 1)];
          const y = b.values[b.rounds.indexOf(i + 1)];
          const q = ratio(y, x);
          if (Number.isFinite(q)) ratios.push(q);
          const f = (n: number | undefined) => n === undefined ? "-" : fmtValue(n, r.job.unit);
          return `${f(x)}/${f(y)} ${fr(q)}`;
        });
        out.push([
          `${r.job.title} x${r.conns}${t}`,
          ...each,
          fr(median(ratios)),
          ratios.length ? `${fr(Math.min(...ratios))}-${fr(Math.max(...ratios))}` : "-",
        ]);
      }
    }
    printRows(
      [
        `w=${base}/w=${w}, ${w}/${base}`,
        ...Array.from({ length: opts.rounds }, (_, i) => `round ${i + 1}`),
        "med",
        "range",
      ],
      out,
    );
  }
}

function pool(n: number): string {
  return Number.isFinite(n) && n > 0 ? `${n} worker(s)` : "main thread";
}

/** Issue 11's targets, for every --data-workers value against the first, met or not. */
function verdicts(
  opts: Options,
  rows: PoolRow[],
  v: (r: PoolRow, s: string) => number,
  cells: Cells,
): void {
  const ws = opts.dataWorkers!;
  const base = ws[0];
  for (const w of ws.slice(1)) {
    const lines: string[] = [];
    const slower: string[] = [];
    for (const r of rows) {
      for (const t of ["", " TLS"]) {
        const x = ratio(v(r, `w=${w}${t}`), v(r, `w=${base}${t}`));
        if (Number.isFinite(x) && x < 0.95) {
          slower.push(`${r.job.title} x${r.conns}${t} ${x.toFixed(2)}x`);
        }
      }
    }
    lines.push(
      `no job more than 5% slower than w=${base}: ${
        slower.length === 0 ? "met" : `NOT met (${slower.join("; ")})`
      }`,
    );
    const four = rows.filter((r) => r.conns === 4);
    const tls1m = four.filter((r) => r.job.bs === "1M").map((r) => {
      const x = ratio(v(r, `w=${w} TLS`), v(r, `w=${base} TLS`));
      const most = ceiling(cells, r, `w=${w} TLS`, `w=${base} TLS`);
      return `${r.job.title} ${fr(x)}${x >= 1.3 ? "" : " (NOT met)"} (ceiling here ${fr(most)})`;
    });
    if (tls1m.length > 0) lines.push(`TLS 1 MiB x4 >= 1.3x w=${base}: ${tls1m.join("; ")}`);
    const vsN = four.flatMap((r) =>
      ["", " TLS"].map((t) => {
        const x = ratio(v(r, `w=${w}${t}`), v(r, `nbdkit${t}`));
        const goal = r.job.bs === "4k" ? 1.2 : 1.0;
        return Number.isFinite(x)
          ? `${r.job.title}${t} ${fr(x)}${x >= goal ? "" : ` (NOT met, goal ${goal}x)`}`
          : "";
      }).filter(Boolean)
    );
    if (vsN.length > 0) {
      lines.push(`x4 against nbdkit (4k >= 1.2x, 1 MiB >= 1.0x): ${vsN.join("; ")}`);
    }
    console.log(`\nissue 11 targets, w=${w} against w=${base}:`);
    for (const l of lines) console.log(`- ${l}`);
  }
}

/**
 * fio's own CPU per unit, and what the cores could give at best: fio and the server share
 * them, so a job can move at most CORES / (server + fio CPU per unit) with every core busy
 * (the ceiling), shown as a ratio to the first --data-workers value's measured figure. A
 * target above that ratio cannot be reached on this machine whatever the server does.
 */
function printCeiling(rows: PoolRow[], cells: Cells, servers: string[], ws: string[]): void {
  const cores = navigator.hardwareConcurrency;
  console.log(
    `
fio's own CPU per unit (s/M req or s/GiB, after the ramp), and the ceiling on ${cores} ` +
      `cores: ${cores} / (server + fio CPU per unit), as a ratio to w=${ws[0]}'s measured value`,
  );
  // A single thread cannot use every core: the ceiling is for the other values only.
  const pool = servers.filter((s) => s.startsWith("w=") && !s.startsWith(`w=${ws[0]}`));
  printRows(
    ["job", "conns", ...servers.map((s) => `fio ${s}`), ...pool.map((s) => `ceiling ${s}`)],
    rows.map((r) => [
      r.job.title,
      String(r.conns),
      ...servers.map((s) => {
        const f = med(cells, r, s, "clientCpuPer");
        return Number.isFinite(f) ? f.toFixed(2) : "-";
      }),
      ...pool.map((s) => fr(ceiling(cells, r, s, s.replace(/^w=[^ ]+/, `w=${ws[0]}`)))),
    ]),
  );
}

/** `server`'s ceiling on this machine's cores (printCeiling) over `base`'s measured value. */
function ceiling(cells: Cells, r: PoolRow, server: string, base: string): number {
  const per = med(cells, r, server, "cpuPer") + med(cells, r, server, "clientCpuPer");
  const scale = r.job.unit === "IOPS" ? 1e6 : 1024;
  return ratio(navigator.hardwareConcurrency / per * scale, med(cells, r, base, "values"));
}
