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
 *                   [--tls] [--json FILE] [--dir DIR]
 *
 * Ballast runs with `--tls off` (plaintext on loopback). With --tls every server
 * (default ballast and nbdkit) runs twice, plaintext and with TLS required and a
 * client certificate verified (ballast's default; `nbdkit --tls=require
 * --tls-verify-peer`; qemu-nbd with tls-creds-x509), all certificates from the
 * TLS Ballast's internal CA, and the table shows each server's TLS/plain ratio
 * and ballast TLS over the others' TLS. fio cannot pass a certificate directory
 * to libnbd, so for the run the client certificate is installed in libnbd's
 * default directory (/etc/pki/libnbd for root), and the files that were there
 * are put back at the end, on failure and on Ctrl-C.
 *
 * Every file is written in full once (1 MiB sequential writes through NBD)
 * before the jobs, so reads hit real data. With --rounds N each figure is the
 * median of N. Only compare figures from one run: the machine sets the ceiling
 * (fio itself uses most of a core on 4k QD32).
 *
 * Two more modes (`--help` lists their options):
 *
 *   deno task bench --data-workers 1,2,auto [--conns 1,4,8] [--volumes 4]   (issue 11)
 *       scripts/_bench_pool.ts: one Ballast per data worker pool setting, plaintext and TLS,
 *       against nbdkit file; connections spread over several volumes.
 *   deno task bench --replicas 0,1,2 [--size 4GiB] [--baseline REF]         (issue 12)
 *       scripts/_bench_repl.ts and _bench_delta.ts: a local cluster (scripts/_bench_cluster.ts),
 *       one volume per replica count, then Delta Sync and client latency during a resync.
 * @module
 */

import {
  cpuSeconds,
  JOBS,
  MIB,
  peakRssMiB,
  precondition,
  resetPeakRss,
  runJob,
  setClockTicks,
} from "./_bench_fio.ts";
import { haveTool, lastLines, toolVersion } from "./_bench_proc.ts";
import {
  type Cell,
  fmtValue,
  median,
  printTable,
  printTlsTable,
  printTlsVerdict,
  tlsSummary,
} from "./_bench_report.ts";
import {
  type BallastServer,
  issueBenchCerts,
  type Server,
  type ServerKind,
  serverName,
  startServer,
  type TlsMaterial,
} from "./_bench_servers.ts";
import { type InstalledCerts, installLibnbdCerts, libnbdCertDir } from "./_bench_tls.ts";
import { type Options, parseOptions } from "./_bench_options.ts";
import { runPoolBench } from "./_bench_pool.ts";
import { runReplBench } from "./_bench_repl.ts";

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

/** The servers to run, in interleaving order: each kind plain, then (with --tls) TLS. */
function variants(opts: Options): { kind: ServerKind; tls: boolean }[] {
  return opts.servers.flatMap((kind) =>
    opts.tls ? [{ kind, tls: false }, { kind, tls: true }] : [{ kind, tls: false }]
  );
}

async function main(): Promise<number> {
  const opts = parseOptions();
  if (opts.dataWorkers) return await runPoolBench(opts);
  if (opts.replicas) return await runReplBench(opts);
  const needed = ["fio", ...opts.servers.filter((s) => s !== "ballast")];
  const missing: string[] = [];
  for (const t of needed) if (!await haveTool(t)) missing.push(t);
  if (missing.length > 0) {
    console.error(`bench: missing ${missing.join(", ")}; run scripts/setup.sh`);
    return 1;
  }
  setClockTicks(Number(await toolVersion("getconf", ["CLK_TCK"])));

  const dir = await Deno.makeTempDir({ prefix: "ballast-bench-", dir: opts.dir });
  const sizeBytes = opts.sizeMiB * MIB;
  const servers: Server[] = [];
  const failedToStart: Record<string, string> = {};
  const cells = new Map<string, Cell>();
  let certs: InstalledCerts | undefined;
  let material: TlsMaterial | undefined;
  const restoreCerts = (): boolean => {
    if (!certs) return true;
    try {
      certs.restore();
      console.error(
        `bench: restored libnbd's certificate directory ${certs.dir}` +
          (certs.replaced.length > 0 ? ` (put back ${certs.replaced.join(", ")})` : ""),
      );
      return true;
    } catch (err) {
      console.error(`bench: ${(err as Error).message}`);
      return false;
    }
  };
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    cleaning ??= (async () => {
      const restored = restoreCerts();
      await Promise.all(servers.map((s) => s.proc.stop()));
      if (!restored) console.error(`bench: keeping ${dir}: it holds the certificate backup`);
      else if (!opts.keep) await Deno.remove(dir, { recursive: true }).catch(() => {});
    })();
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    console.error("\nbench: interrupted, stopping servers");
    cleanup().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);

  const versions = {
    deno: Deno.version.deno,
    fio: await toolVersion("fio", ["--version"]),
    nbdkit: await toolVersion("nbdkit", ["--version"]),
    "qemu-nbd": await toolVersion("qemu-nbd", ["--version"]),
  };
  const toRun = variants(opts);
  console.error(
    `bench: ${opts.jobs.length} jobs x ${toRun.map((v) => serverName(v.kind, v.tls)).join(", ")}` +
      ` x ${opts.rounds} round(s), ${opts.runtime} s + ${opts.ramp} s ramp each, ` +
      `${opts.sizeMiB} MiB files in ${dir}`,
  );
  console.error(
    `bench: ${versions.fio}, ${versions.nbdkit}, ${versions["qemu-nbd"]}, deno ${versions.deno}`,
  );

  let failures = 0;
  try {
    // With --tls the TLS Ballast starts first: its CA issues every other certificate.
    const startOrder = opts.tls
      ? [
        { kind: "ballast" as const, tls: true },
        ...toRun.filter((v) => !(v.kind === "ballast" && v.tls)),
      ]
      : toRun;
    for (const { kind, tls } of startOrder) {
      if (interrupted) break;
      const name = serverName(kind, tls);
      let s: Server | undefined;
      try {
        if (tls && kind !== "ballast" && !material) {
          throw new Error("no TLS certificates (ballast+tls did not start)");
        }
        const t0 = performance.now();
        s = await startServer(kind, tls, dir, sizeBytes, opts, material);
        console.error(
          `bench: ${name} started (pid ${s.proc.child.pid}, ${s.uri}): ${s.proc.command}`,
        );
        if (kind === "ballast" && tls) {
          material = await issueBenchCerts(s as BallastServer, dir);
          console.error(
            `bench: issued nbd-client certificate bench into ${material.clientDir}; ` +
              `nbdkit/qemu-nbd TLS use ${material.serverDir} (ballast+tls's CA bundle, node cert and key)`,
          );
          console.error(
            `bench: INSTALLING the client certificate in libnbd's default directory ` +
              `${libnbdCertDir()} (fio cannot name one); the files there now are backed up ` +
              `and restored when the bench ends`,
          );
          certs = installLibnbdCerts(material.clientDir, `${dir}/libnbd-backup`);
          console.error(
            `bench: installed ${certs.dir}/{ca-cert,client-cert,client-key}.pem` +
              (certs.replaced.length > 0
                ? `; originals of ${certs.replaced.join(", ")} backed up in ${certs.backupDir}`
                : "; nothing was there before"),
          );
        }
        console.error(`bench: ${name}: preconditioning (writing all ${opts.sizeMiB} MiB once)...`);
        await precondition(s.uri, opts.sizeMiB);
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
    // Interleave in table order (each kind plain, then TLS), whatever the start order was.
    const order = toRun.map((v) => serverName(v.kind, v.tls));
    servers.sort((a, b) => order.indexOf(a.name) - order.indexOf(b.name));
    failures += await measure(opts, servers, cells, () => interrupted);
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
    await cleanup();
  }
  if (interrupted) return 130;

  console.log(
    `\nfio nbd engine, ${opts.runtime} s + ${opts.ramp} s ramp per job, ${opts.sizeMiB} MiB files` +
      (opts.rounds > 1 ? `, median of ${opts.rounds} rounds` : "") +
      `; CPU s = server utime+stime over the job incl. ramp; peak = server VmHWM during the job` +
      (opts.tls
        ? `\nTLS = STARTTLS required with a verified client certificate; ` +
          `X TLS/plain = X's TLS figure over its plaintext figure; bTLS/nTLS = ballast TLS over nbdkit TLS (q: qemu-nbd)`
        : "") +
      "\n",
  );
  if (opts.tls) {
    printTlsTable(opts.jobs, cells, opts.servers);
    if (opts.servers.includes("nbdkit")) printTlsVerdict(opts.jobs, cells);
  } else printTable(opts.jobs, cells);
  for (const [name, msg] of Object.entries(failedToStart)) {
    console.log(`\n${name}: failed to start: ${msg.split("\n")[0]}`);
  }
  if (opts.json) await writeJson(opts, versions, servers, failedToStart, cells);
  return failures > 0 ? 1 : 0;
}

/** Runs every job on every server, interleaved, for every round; returns the failure count. */
async function measure(
  opts: Options,
  servers: Server[],
  cells: Map<string, Cell>,
  interrupted: () => boolean,
): Promise<number> {
  let failures = 0;
  for (let round = 1; round <= opts.rounds; round++) {
    for (const job of opts.jobs) {
      for (const s of servers) {
        if (interrupted()) return failures;
        const key = `${job.id}|${s.name}`;
        const cell = cells.get(key) ?? { values: [], cpu: [], peakMiB: [], errors: [] };
        cells.set(key, cell);
        const tag = `[${round}/${opts.rounds}] ${job.title.padEnd(26)} ${s.name.padEnd(12)}`;
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
          if (interrupted()) return failures; // fio got the Ctrl-C too
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
  return failures;
}

async function writeJson(
  opts: Options,
  versions: Record<string, string>,
  servers: Server[],
  failedToStart: Record<string, string>,
  cells: Map<string, Cell>,
): Promise<void> {
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
      kind: s.kind,
      tls: s.tls,
      uri: s.uri,
      file: s.file,
      command: s.proc.command,
    })),
    results,
    ...(opts.tls ? { tls: tlsSummary(opts.jobs, cells, opts.servers) } : {}),
  };
  await Deno.writeTextFile(opts.json!, JSON.stringify(report, null, 2) + "\n");
  console.log(`\nbench: results written to ${opts.json}`);
}

Deno.exit(await main());
