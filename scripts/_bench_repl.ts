// deno-lint-ignore-file no-console
/**
 * `deno task bench --replicas 0,1,2` (issue 12, replication): a local cluster (one etcd, three
 * TLS nodes on loopback, scripts/_bench_cluster.ts), one volume per replica count, and
 * `nbdkit file` as the reference that keeps no hash list. fio runs through each volume's
 * master on its plaintext local-attach listener, so the figures show replication (the peer
 * channel is mutual TLS) and not the client's TLS. Jobs are interleaved over the volumes;
 * CPU is the whole cluster's (all three nodes). Then Delta Sync (scripts/_bench_delta.ts).
 * @module
 */

import { type Job, MIB, precondition, runJobWithCpu, setClockTicks } from "./_bench_fio.ts";
import type { Options } from "./_bench_options.ts";
import { freePort, haveTool, spawn, toolVersion, waitForPort } from "./_bench_proc.ts";
import { fmtValue, median } from "./_bench_report.ts";
import { BenchCluster } from "./_bench_cluster.ts";
import { runDelta } from "./_bench_delta.ts";
import { BenchRun } from "./_bench_run.ts";
import { launchBallast, ROOT_DIR } from "./_bench_servers.ts";
import { BallastClient } from "../mod/mod.ts";

interface ReplTarget {
  name: string;
  uri: string;
  /** Processes whose CPU time counts: every node, or nbdkit. */
  pids: () => number[];
  master?: string;
  /** The cluster's volume (deleted before Delta Sync). */
  volume?: string;
  /** Run before each of its jobs (the cold verify). */
  prepare?: () => Promise<void>;
}

interface ReplCell {
  values: number[];
  cpuPer: number[];
  /** fio's own CPU per unit (FioResult.clientCpuSeconds). */
  clientCpuPer: number[];
  errors: string[];
}

export async function runReplBench(opts: Options): Promise<number> {
  const tools = ["fio", "etcd", "etcdctl", "nbdinfo"];
  if (opts.servers.includes("nbdkit")) tools.push("nbdkit");
  for (const t of tools) {
    if (!await haveTool(t)) {
      console.error(`bench: missing ${t}; run scripts/setup.sh`);
      return 1;
    }
  }
  setClockTicks(Number(await toolVersion("getconf", ["CLK_TCK"])));
  const run = await BenchRun.start(opts);
  try {
    return await replBench(run, opts);
  } finally {
    await run.close();
  }
}

async function replBench(run: BenchRun, opts: Options): Promise<number> {
  const counts = opts.replicas!;
  console.error(
    `bench: replication: replicas ${counts.join(", ")} on a 3-node cluster, ${opts.sizeMiB} MiB ` +
      `volumes, ${opts.rounds} round(s) of ${opts.runtime} s + ${opts.ramp} s ramp, in ${run.dir}`,
  );
  const t0 = performance.now();
  const cluster = await BenchCluster.start(run, { resyncRate: opts.resyncRate });
  console.error(
    `bench: cluster up in ${((performance.now() - t0) / 1000).toFixed(1)} s: ` +
      [...cluster.nodes.values()].map((n) => `${n.name} pid ${n.proc.child.pid}`).join(", ") +
      ` (logs in ${run.dir}/node-*.log)`,
  );
  const sizeBytes = opts.sizeMiB * MIB;
  const targets: ReplTarget[] = [];
  for (const r of counts) {
    const v = await cluster.createVolume(`r${r}`, sizeBytes, r);
    targets.push({
      name: `replicas=${r}`,
      uri: cluster.localUri(v),
      pids: () => cluster.pids(),
      master: v.master,
      volume: `r${r}`,
    });
    console.error(
      `bench: volume r${r}: master ${v.master}, members ${v.members?.join(",") ?? "-"}`,
    );
  }
  const replicated = counts.find((r) => r > 0);
  if (opts.coldVerify && replicated !== undefined) {
    targets.push(await coldVerified(cluster, replicated, sizeBytes));
  }
  if (opts.baseline) targets.push(...await singleNodes(run, opts.baseline, sizeBytes));
  if (opts.servers.includes("nbdkit")) {
    const file = `${run.dir}/nbdkit.img`;
    using f = await Deno.open(file, { create: true, write: true });
    await f.truncate(sizeBytes);
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
    run.defer(() => proc.stop());
    await waitForPort(proc, port);
    targets.push({ name: "nbdkit", uri: `nbd://127.0.0.1:${port}/`, pids: () => [proc.child.pid] });
  }
  for (const t of targets) {
    const t1 = performance.now();
    await precondition(t.uri, opts.sizeMiB);
    const s = (performance.now() - t1) / 1000;
    console.error(
      `bench: ${t.name} written once: ${opts.sizeMiB} MiB in ${s.toFixed(1)} s ` +
        `(${(opts.sizeMiB / s).toFixed(0)} MiB/s)`,
    );
  }

  const cells = new Map<string, ReplCell>();
  let failures = 0;
  for (let round = 1; round <= opts.rounds; round++) {
    for (const job of opts.jobs) {
      for (const t of targets) {
        if (run.interrupted) return 130;
        const key = `${job.id}|${t.name}`;
        const cell = cells.get(key) ?? { values: [], cpuPer: [], clientCpuPer: [], errors: [] };
        cells.set(key, cell);
        const tag = `[${round}/${opts.rounds}] ${job.title.padEnd(18)} ${t.name.padEnd(11)}`;
        try {
          await t.prepare?.();
          const r = await runJobWithCpu(job, t.uri, opts, t.pids());
          cell.values.push(r.value);
          cell.cpuPer.push(r.serverCpuPer);
          cell.clientCpuPer.push(r.clientCpuPer);
          console.error(
            `${tag} ${fmtValue(r.value, job.unit).padStart(7)} ${job.unit}  CPU ${
              r.serverCpuPer.toFixed(2)
            } s/${job.unit === "IOPS" ? "M req" : "GiB"} (fio ${r.clientCpuPer.toFixed(2)})`,
          );
        } catch (err) {
          if (run.interrupted) return 130;
          failures++;
          cell.errors.push((err as Error).message);
          console.error(`${tag} FAILED: ${(err as Error).message}`);
        }
      }
    }
  }
  const summary = printThroughput(opts, targets, cells);
  for (const t of targets) {
    if (t.volume) await cluster.client().deleteVolume(t.volume, { force: true });
  }
  let delta: unknown;
  if (opts.delta && !run.interrupted) {
    const d = await runDelta(run, cluster, opts);
    failures += d.failures;
    delta = d.report;
  }
  if (opts.json) {
    await Deno.writeTextFile(
      opts.json,
      JSON.stringify(
        {
          date: new Date().toISOString(),
          mode: "replicas",
          options: { ...opts, jobs: opts.jobs.map((j) => j.id) },
          throughput: summary,
          cells: Object.fromEntries(cells),
          delta,
        },
        null,
        2,
      ) + "\n",
    );
  }
  return failures > 0 ? 1 : 0;
}

/**
 * A volume of `replicas` replicas whose every job runs after its copies were dropped from the
 * page cache (made durable, then POSIX_FADV_DONTNEED, by python3) and read back by `volume
 * verify --deep`: the store's own reads must not leave the cache in a shape that makes the
 * writes after them dearer (docs/BENCHMARKS.md, "Cold reads and the folios they leave").
 */
async function coldVerified(
  cluster: BenchCluster,
  replicas: number,
  sizeBytes: number,
): Promise<ReplTarget> {
  const name = `r${replicas}cold`;
  const v = await cluster.createVolume(name, sizeBytes, replicas);
  const copies = (v.members ?? []).map((m) =>
    `${cluster.nodes.get(m)!.dataDir}/volumes/${v.uuid}.vol`
  );
  console.error(`bench: volume ${name}: master ${v.master}, members ${v.members?.join(",")}`);
  return {
    name: `replicas=${replicas} cold`,
    uri: cluster.localUri(v),
    pids: () => cluster.pids(),
    master: v.master,
    volume: name,
    prepare: async () => {
      const drop = await new Deno.Command("python3", {
        args: [
          "-c",
          "import os,sys\nfor p in sys.argv[1:]:\n fd=os.open(p, os.O_RDONLY); os.fdatasync(fd); " +
          "os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)",
          ...copies,
        ],
        stderr: "piped",
      }).output();
      if (!drop.success) {
        throw new Error(
          `dropping ${name} from the cache: ${new TextDecoder().decode(drop.stderr)}`,
        );
      }
      const report = await cluster.client().verifyVolume(name, { deep: true });
      if (!report.ok) throw new Error(`verify --deep of ${name} found the copies different`);
    },
  };
}

/**
 * Single-node Ballasts (--tls off, embedded store: a volume that is no group) of this tree
 * and of commit `ref` (git archive into the run's directory), one volume each.
 */
async function singleNodes(run: BenchRun, ref: string, sizeBytes: number): Promise<ReplTarget[]> {
  const slug = (x: string) => x.replace(/[^\w.-]/g, "_");
  const tree = `${run.dir}/tree-${slug(ref)}`;
  await Deno.mkdir(tree);
  const archive = await new Deno.Command("sh", {
    args: ["-c", 'git -C "$1" archive "$2" | tar -x -C "$3"', "sh", ROOT_DIR, ref, tree],
    stderr: "piped",
  }).output();
  if (!archive.success) {
    throw new Error(`git archive ${ref}: ${new TextDecoder().decode(archive.stderr)}`);
  }
  const out: ReplTarget[] = [];
  const variants: [string, string | undefined][] = [
    ["single-node", undefined],
    [`single-node@${ref}`, tree],
  ];
  for (const [name, from] of variants) {
    const b = await launchBallast(name, `${run.dir}/${slug(name)}`, ["--tls", "off"], {
      tree: from,
      logFile: `${run.dir}/${slug(name)}.log`,
    });
    run.defer(() => b.proc.stop());
    const client = new BallastClient(b.api);
    await client.createVolume({ name: "single", size: sizeBytes });
    client.close();
    out.push({ name, uri: `nbd://${b.nbd}/single`, pids: () => [b.proc.child.pid] });
    console.error(`bench: ${name} ready (pid ${b.proc.child.pid})`);
  }
  return out;
}

function printRows(header: string[], rows: string[][]): void {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (r: string[]) =>
    r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join("  ");
  console.log(line(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const r of rows) console.log(line(r));
}

/** The throughput table and issue 12's goals; returns the medians and ratios. */
function printThroughput(
  opts: Options,
  targets: ReplTarget[],
  cells: Map<string, ReplCell>,
): Record<string, Record<string, number>> {
  const counts = opts.replicas!;
  const base = `replicas=${counts[0]}`;
  const names = targets.map((t) => t.name);
  const v = (job: Job, name: string) => median(cells.get(`${job.id}|${name}`)?.values ?? []);
  /** The nodes' and fio's CPU per unit together. */
  const allCpu = (job: Job, name: string) => {
    const c = cells.get(`${job.id}|${name}`);
    return median(c?.cpuPer ?? []) + median(c?.clientCpuPer ?? []);
  };
  const r = (
    a: number,
    b: number,
  ) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : NaN);
  const fr = (x: number) => (Number.isFinite(x) ? `${x.toFixed(2)}x` : "-");
  const others = counts.slice(1).map((c) => `replicas=${c}`);
  const nbdkit = names.includes("nbdkit");
  console.log(
    `\nfio nbd engine through each volume's master (plaintext local listener), ${opts.runtime} s + ` +
      `${opts.ramp} s ramp per job, ${opts.sizeMiB} MiB volumes` +
      (opts.rounds > 1 ? `, median of ${opts.rounds} rounds` : "") +
      `; ratios to ${base}; CPU = all three nodes (or nbdkit), s per million requests (4k) or ` +
      `per GiB (1 MiB), after the ramp, then fio's own; CPU-bound = the ratio the CPU per ` +
      `unit predicts when fio and the nodes keep every core busy, (CPU + fio) of ${base} over ` +
      `that of the other count; masters: ` +
      targets.filter((t) => t.master).map((t) => `${t.name} ${t.master}`).join(", ") + "\n",
  );
  const summary: Record<string, Record<string, number>> = {};
  printRows(
    [
      "job",
      ...names,
      ...others.map((o) => `${o.slice(9)}/${counts[0]}`),
      ...(nbdkit ? [`${counts[0]}/nbdkit`] : []),
      `CPU (${names.map((n) => n.replace("replicas=", "r")).join(" / ")})`,
      `fio CPU`,
      ...others.map((o) => `CPU-bound ${o.slice(9)}/${counts[0]}`),
    ],
    opts.jobs.map((job) => {
      const row: Record<string, number> = {};
      for (const n of names) row[n] = v(job, n);
      for (const o of others) {
        row[`${o}/${base}`] = r(v(job, o), v(job, base));
        row[`cpu-bound ${o}/${base}`] = r(allCpu(job, base), allCpu(job, o));
      }
      if (nbdkit) row[`${base}/nbdkit`] = r(v(job, base), v(job, "nbdkit"));
      summary[job.id] = row;
      return [
        job.title,
        ...names.map((n) => {
          const c = cells.get(`${job.id}|${n}`);
          return c && c.values.length === 0 && c.errors.length > 0
            ? "FAILED"
            : fmtValue(v(job, n), job.unit);
        }),
        ...others.map((o) => fr(r(v(job, o), v(job, base)))),
        ...(nbdkit ? [fr(r(v(job, base), v(job, "nbdkit")))] : []),
        names.map((n) => {
          const x = median(cells.get(`${job.id}|${n}`)?.cpuPer ?? []);
          return Number.isFinite(x) ? x.toFixed(2) : "-";
        }).join(" / "),
        names.map((n) => {
          const x = median(cells.get(`${job.id}|${n}`)?.clientCpuPer ?? []);
          return Number.isFinite(x) ? x.toFixed(2) : "-";
        }).join(" / "),
        ...others.map((o) => fr(r(allCpu(job, base), allCpu(job, o)))),
      ];
    }),
  );
  const goals: string[] = [];
  const goal = (jobId: string, count: number, min: number, what: string) => {
    const job = opts.jobs.find((j) => j.id === jobId);
    if (!job || !counts.includes(count) || count === counts[0]) return;
    const x = r(v(job, `replicas=${count}`), v(job, base));
    goals.push(
      `${what}, ${count} replica(s): ${fr(x)} (goal >= ${min}x) ${x >= min ? "met" : "NOT met"}`,
    );
  };
  goal("randwrite-4k", 1, 0.5, "4k randwrite QD32");
  goal("randwrite-4k", 2, 0.35, "4k randwrite QD32");
  goal("seqwrite-1m", 1, 0.5, "1 MiB seq write");
  for (const id of ["randread-4k", "seqread-1m"]) {
    for (const c of counts.slice(1)) {
      goal(
        id,
        c,
        0.95,
        opts.jobs.find((j) => j.id === id)?.title ?? id,
      );
    }
  }
  const w4 = opts.jobs.find((j) => j.id === "randwrite-4k");
  for (const cold of names.filter((n) => n.endsWith(" cold"))) {
    const warm = cold.slice(0, -" cold".length);
    for (const job of opts.jobs) {
      goals.push(
        `after a cold verify --deep, ${job.title}: ${cold} / ${warm} ` +
          `${fr(r(v(job, cold), v(job, warm)))} (the store's own reads should cost the writes ` +
          `after them nothing: about 1x)`,
      );
    }
  }
  if (opts.baseline) {
    const then = `single-node@${opts.baseline}`;
    for (const job of opts.jobs) {
      goals.push(
        `hash lists on a volume without replicas, ${job.title}: single-node / ${then} ` +
          `${fr(r(v(job, "single-node"), v(job, then)))}` +
          (job.id === "randwrite-4k" ? " (goal >= 0.95x)" : "") +
          `; ${base} (cluster) / single-node ${fr(r(v(job, base), v(job, "single-node")))}`,
      );
    }
  }
  if (nbdkit && w4) {
    goals.push(
      `hash tracking: Ballast has no switch to turn it off (every copy keeps its hash list); ` +
        `${base} / nbdkit file (no hash list, no Ballast at all) on 4k randwrite: ` +
        `${fr(r(v(w4, base), v(w4, "nbdkit")))}`,
    );
  }
  console.log(`\nissue 12 goals (ratios to ${base}):`);
  for (const g of goals) console.log(`- ${g}`);
  return summary;
}
