// deno-lint-ignore-file no-console
/**
 * `deno task scale`: how a failover storm costs grow with the cluster, simulated on one
 * machine. Starts one real etcd and N small TLS nodes (`--data-workers 1`, a capped V8 heap,
 * lease TTL 3 s) on loopback, creates V replicated volumes through the API, waits until every
 * one is served by its master, measures etcd at rest, then `kill -9`s the node that masters
 * closest to V/N of them and measures the storm:
 *
 * - per group the victim mastered: kill -> the new master's CAS of the group record, and
 *   kill -> the new master exporting the volume (from the nodes' logs, so that measuring costs
 *   etcd nothing); p50, p90 and the last one; and for groups where the victim was a replica,
 *   kill -> its `down` entry written;
 * - etcd's gRPC requests by method, mvcc puts/txns, raft proposals, watch events and bytes
 *   sent, at rest and during the storm (etcd's own /metrics, sampled every second);
 * - every node's resident memory (VmRSS) after start, at rest and after the storm, and that of
 *   an observer: one more node, cordoned before the first volume, that holds no copy but
 *   follows every volume record like the others (what the records alone cost a node).
 *
 *   deno task scale [--nodes 20] [--volumes 2000] [--size 16MiB] [--replicas 2]
 *                   [--dir DIR] [--json FILE] [--keep] [--no-observer]
 *
 * Everything runs in a fresh directory under --dir (default /dev/shm), removed at
 * the end, on error and on Ctrl-C (--keep keeps it, with every process's log). All processes
 * started are killed on exit.
 * @module
 */

import type { BallastClient, BallastError, Volume } from "../../mod/mod.ts";
import { defaultDir, type Options, parseOptions, USAGE } from "./_scale_options.ts";
import {
  adminClient,
  cpuSeconds,
  kill9,
  killAll,
  type Node,
  pool,
  rssMiB,
  startEtcd,
  startNode,
} from "./_scale_cluster.ts";
import { peakOf, type Sample, scrape, windowOf } from "./_scale_etcd.ts";
import { ClusterLog } from "./_scale_logs.ts";
import {
  type FailoverFigures,
  type MemoryRow,
  printEtcd,
  printFailover,
  printMemory,
  spread,
} from "./_scale_report.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (msg: string) => console.error(`scale: ${msg}`);
const loadavg = () => Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
/** Per process, the CPU used between two readings as % of one core. */
const pct = (a: number[], b: number[], ms: number) => a.map((v, i) => (b[i] - v) / ms * 1e5);
const nodeName = (i: number) => `n${String(i + 1).padStart(2, "0")}`;
const volName = (i: number) => `s${String(i + 1).padStart(5, "0")}`;

/** The observer's name: a node cordoned before any volume exists, so it holds no copy. */
const OBSERVER = "obs";

/**
 * Starts the first node, then the others with join tokens, a few at a time, then the
 * observer (cordoned) when asked for; waits until every one is ready.
 */
async function startNodes(dir: string, o: Options, etcdUrl: string): Promise<Node[]> {
  const nodeOpts = {
    etcdUrl,
    leaseTtlS: o.leaseTtlS,
    heapMiB: o.heapMiB,
    crashDetection: o.crashDetection,
  };
  const first = await startNode(dir, nodeName(0), nodeOpts);
  const admin = await adminClient(first, first.dataDir);
  try {
    const rest = Array.from({ length: o.nodes - 1 }, (_, i) => nodeName(i + 1));
    if (o.observer) rest.push(OBSERVER);
    const others = await pool(rest, 4, async (name) => {
      const { token } = await admin.createJoinToken("1h");
      const node = await startNode(dir, name, nodeOpts, token);
      log(`${name} ready (pid ${node.proc.pid})`);
      return node;
    });
    if (o.observer) await admin.cordonNode(OBSERVER, "scale_sim observer: holds no copy");
    for (;;) {
      const ready = (await admin.listNodes()).filter((n) => n.state === "ready").length;
      if (ready === o.nodes) break;
      await sleep(500);
    }
    return [first, ...others];
  } finally {
    admin.close();
  }
}

/**
 * Creates the volumes through every node's API in turn. A failed create is tried again (up to
 * 5 times, through the next node); one that already exists (an earlier try did it) counts as
 * made; one that still fails is left out and counted.
 */
async function createVolumes(
  clients: BallastClient[],
  o: Options,
): Promise<{ made: Map<string, Volume>; failed: number }> {
  const names = Array.from({ length: o.volumes }, (_, i) => volName(i));
  const made = new Map<string, Volume>();
  let failed = 0;
  const started = Date.now();
  await pool(names, o.concurrency, async (name, i) => {
    for (let attempt = 1;; attempt++) {
      const client = clients[(i + attempt - 1) % clients.length];
      try {
        const v = await client.createVolume({ name, size: o.sizeBytes, replicas: o.replicas });
        made.set(name, v);
        break;
      } catch (err) {
        if ((err as BallastError).code === "ALREADY_EXISTS") {
          made.set(name, await client.getVolume(name));
          break;
        }
        const why = (err as Error).message.slice(0, 300);
        if (attempt >= 5) {
          log(`create ${name} failed ${attempt} times (${why}); left out`);
          failed++;
          break;
        }
        log(`create ${name} failed (${why}); again`);
        await sleep(2000);
      }
    }
    if (made.size % 100 === 0) {
      log(`${made.size}/${o.volumes} volumes created (${((Date.now() - started) / 1000) | 0} s)`);
    }
  });
  return { made, failed };
}

/** Polls the logs until `done()` or `timeoutMs`; returns whether it was done. */
async function until(
  logs: ClusterLog,
  done: () => boolean,
  timeoutMs: number,
  every?: () => Promise<void>,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    await logs.poll();
    if (done()) return true;
    if (Date.now() > deadline) return false;
    await (every ? Promise.all([every(), sleep(1000)]) : sleep(250));
  }
}

async function main(o: Options): Promise<number> {
  const dir = await Deno.makeTempDir({ dir: o.dir ?? defaultDir(), prefix: "ballast-scale-" });
  let cleaning: Promise<void> | undefined;
  const cleanup = () =>
    cleaning ??= (async () => {
      await killAll();
      if (o.keep) log(`kept ${dir}`);
      else await Deno.remove(dir, { recursive: true }).catch(() => {});
    })();
  const onSignal = () => {
    log("interrupted; stopping every process");
    cleanup().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    return await simulate(o, dir);
  } finally {
    await cleanup();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
}

async function simulate(o: Options, dir: string): Promise<number> {
  const startedAt = new Date().toISOString();
  const loadBefore = loadavg();
  log(
    `${o.nodes} nodes${o.observer ? " and a cordoned observer" : ""}, ` +
      `${o.volumes} volumes x ${o.replicas + 1} copies in ${dir}`,
  );
  const etcd = await startEtcd(dir);
  const t0 = Date.now();
  const nodes = await startNodes(dir, o, etcd.url);
  const startS = (Date.now() - t0) / 1000;
  log(`${nodes.length} nodes ready in ${startS.toFixed(1)} s`);
  await sleep(3000);
  const startRss = nodes.map((n) => rssMiB(n.proc.pid));
  const clients = await Promise.all(nodes.map((n) => adminClient(n, nodes[0].dataDir)));
  const logs = new ClusterLog(nodes);
  try {
    const t1 = Date.now();
    const { made, failed: createFailed } = await createVolumes(clients, o);
    const createS = (Date.now() - t1) / 1000;
    log(`${made.size} volumes created in ${createS.toFixed(1)} s; waiting until all are served`);
    const unserved = () => [...made.values()].filter((v) => !logs.firstExport(v.name, 1, v.master));
    if (!await until(logs, () => unserved().length === 0, 300_000)) {
      log(`not served after 5 min, going on without: ${unserved().map((v) => v.name)}`);
    }
    const servedS = (Date.now() - t1) / 1000;
    await sleep(5000);

    // The cluster at rest: who masters what, etcd's idle rates, memory.
    const before = await clients[0].listVolumes();
    const masters = new Map<string, Volume[]>();
    const copies = new Map<string, number>();
    for (const v of before) {
      masters.set(v.master, [...masters.get(v.master) ?? [], v]);
      for (const m of v.members ?? []) copies.set(m, (copies.get(m) ?? 0) + 1);
    }
    const target = o.volumes / o.nodes;
    const victim = nodes.slice(1).filter((n) => n.name !== OBSERVER).reduce((best, n) =>
      Math.abs((masters.get(n.name)?.length ?? 0) - target) <
          Math.abs((masters.get(best.name)?.length ?? 0) - target)
        ? n
        : best
    );
    const victimGroups = masters.get(victim.name) ?? [];
    const replicaGroups = before.filter((v) =>
      v.master !== victim.name && (v.members ?? []).includes(victim.name)
    );
    log(`at rest for ${o.restS} s (load ${loadavg()})`);
    const pids = [...nodes.map((n) => n.proc.pid), etcd.proc.pid];
    const cpu = () => pids.map(cpuSeconds);
    const restA = await scrape(etcd.url);
    const restCpuA = cpu();
    await sleep(o.restS * 500);
    const restRss = nodes.map((n) => rssMiB(n.proc.pid));
    const etcdRestRss = rssMiB(etcd.proc.pid);
    await sleep(o.restS * 500);
    const restB = await scrape(etcd.url);
    const restCpu = pct(restCpuA, cpu(), restB.at - restA.at);
    const rest = windowOf(restA, restB);

    // The storm.
    log(
      `kill -9 ${victim.name}: master of ${victimGroups.length} groups, ` +
        `replica in ${replicaGroups.length}`,
    );
    await logs.poll();
    const samples: Sample[] = [await scrape(etcd.url)];
    const stormCpuA = cpu();
    const killedAt = Date.now();
    await kill9(victim.proc);
    const failedOver = (v: Volume) => logs.firstExport(v.name, v.epoch + 1);
    const newMasterCas = (v: Volume) =>
      logs.firstCas(v.name, killedAt, (c) => c.master !== victim.name && c.epoch > v.epoch);
    const downCas = (v: Volume) =>
      logs.firstCas(v.name, killedAt, (c) => c.down.includes(victim.name));
    // Done when every group the victim mastered is served again and every group it was a
    // replica in names it down; the latter is waited for at most 10 s more (a group whose
    // master changed before the kill may never write it), so that the window stays the storm.
    let allServedAt = 0;
    const stormDone = () => {
      if (!victimGroups.every(failedOver)) return false;
      allServedAt ||= Date.now();
      return replicaGroups.every((v) => downCas(v) !== undefined) ||
        Date.now() - allServedAt > 10_000;
    };
    const ended = await until(logs, stormDone, o.timeoutS * 1000, async () => {
      samples.push(await scrape(etcd.url));
    });
    await sleep(2000);
    samples.push(await scrape(etcd.url));
    await logs.poll();
    const storm = windowOf(samples[0], samples[samples.length - 1]);
    const stormCpu = pct(stormCpuA, cpu(), samples[samples.length - 1].at - samples[0].at);
    const afterRss = nodes.map((n) => rssMiB(n.proc.pid));
    const etcdAfterRss = rssMiB(etcd.proc.pid);

    // Cross-check with the API: every group the victim mastered has a new master.
    const api = clients.find((_, i) => nodes[i] !== victim)!;
    const after = new Map((await api.listVolumes()).map((v) => [v.name, v]));
    const missing = victimGroups.filter((v) => {
      const now = after.get(v.name);
      return !now || now.master === victim.name || now.epoch <= v.epoch || !failedOver(v);
    }).map((v) => v.name);

    const servedMs = victimGroups.flatMap((v) => {
      const e = failedOver(v);
      return e ? [e.at - killedAt] : [];
    });
    const last = victimGroups.reduce<{ name: string; ms: number }>((acc, v) => {
      const e = failedOver(v);
      return e && e.at - killedAt > acc.ms ? { name: v.name, ms: e.at - killedAt } : acc;
    }, { name: "-", ms: -1 });
    const boundMs = (o.leaseTtlS + 2) * 1000;
    const failover: FailoverFigures = {
      groups: victimGroups.length,
      detectMs: (logs.leaseExpired.get(victim.name) ?? NaN) - killedAt,
      cas: spread(victimGroups.flatMap((v) => {
        const c = newMasterCas(v);
        return c ? [c.at - killedAt] : [];
      })),
      served: spread(servedMs),
      lastVolume: last.name,
      boundMs,
      withinBound: servedMs.filter((ms) => ms <= boundMs).length,
      replicaGroups: replicaGroups.length,
      replicaDown: spread(replicaGroups.flatMap((v) => {
        const c = downCas(v);
        return c ? [c.at - killedAt] : [];
      })),
      missing,
    };
    const memory: MemoryRow[] = nodes.map((n, i) => ({
      node: n.name + (n === victim ? " (killed)" : ""),
      copies: copies.get(n.name) ?? 0,
      masters: masters.get(n.name)?.length ?? 0,
      startMiB: startRss[i],
      restMiB: restRss[i],
      afterMiB: afterRss[i],
      restCpuPct: restCpu[i],
      stormCpuPct: stormCpu[i],
    }));
    const etcdUse = {
      restMiB: etcdRestRss,
      afterMiB: etcdAfterRss,
      restCpuPct: restCpu[nodes.length],
      stormCpuPct: stormCpu[nodes.length],
    };
    const peak = peakOf(samples);
    // Leases of live nodes seen expiring: the machine starved a node past its TTL.
    const flaps = (from: number, to: number) =>
      new Set(
        logs.expiries.filter((e) => e.peer !== victim.name && e.at >= from && e.at < to)
          .map((e) => e.peer),
      ).size;
    const flapped = { beforeKill: flaps(0, killedAt), storm: flaps(killedAt, Infinity) };
    const promotedBefore = before.filter((v) => v.epoch > 1).length;
    // What one group touched by the failure cost etcd (the victim's groups and those it was
    // a replica in), and how many watch events one write fanned out to.
    const touched = victimGroups.length + replicaGroups.length;
    const perGroup = {
      requests: storm.requests / touched,
      txns: (storm.byMethod["KV.Txn"] ?? 0) / touched,
      ranges: (storm.byMethod["KV.Range"] ?? 0) / touched,
      puts: (storm.counters.puts ?? 0) / touched,
      watchEventsPerPut: (storm.counters.watchEvents ?? 0) / (storm.counters.puts || 1),
      sentKiBPerPut: (storm.counters.sentBytes ?? 0) / 1024 / (storm.counters.puts || 1),
    };
    const loadAfter = loadavg();

    console.log(
      `\nBallast scale simulation, ${startedAt}: ${o.nodes} nodes, ${o.volumes} volumes ` +
        `(${o.replicas} replicas, ${o.sizeBytes / 1048576} MiB), lease TTL ${o.leaseTtlS} s, ` +
        `load average ${loadBefore} before, ${loadAfter} after`,
    );
    console.log(
      `nodes started in ${startS.toFixed(1)} s; ${made.size} volumes created in ` +
        `${createS.toFixed(1)} s (${(made.size / createS).toFixed(1)}/s` +
        `${createFailed ? `, ${createFailed} failed 5 times and left out` : ""}), ` +
        `all served after ${servedS.toFixed(1)} s`,
    );
    printFailover(failover);
    printEtcd(rest, storm, peak);
    console.log(
      `per group touched (${touched}): ${perGroup.requests.toFixed(1)} requests ` +
        `(${perGroup.txns.toFixed(1)} Txn, ${perGroup.ranges.toFixed(1)} Range), ` +
        `${perGroup.puts.toFixed(2)} puts; per put ${perGroup.watchEventsPerPut.toFixed(1)} ` +
        `watch events, ${perGroup.sentKiBPerPut.toFixed(1)} KiB sent`,
    );
    printMemory(memory, etcdUse);
    console.log(
      `\nlive nodes whose lease some node saw expire: ${flapped.beforeKill} before the kill, ` +
        `${flapped.storm} during the storm; ${promotedBefore} groups had changed master before ` +
        `the kill`,
    );
    if (!ended) console.log(`\nthe storm did not end within ${o.timeoutS} s`);

    if (o.json) {
      const report = {
        startedAt,
        command: `deno task scale ${Deno.args.join(" ")}`.trim(),
        options: o,
        loadavg: { before: loadBefore, after: loadAfter },
        nodesStartS: startS,
        createS,
        created: made.size,
        createFailed,
        servedS,
        victim: victim.name,
        flapped,
        promotedBefore,
        failover,
        etcd: { rest, storm, peak, perGroup, ...etcdUse },
        memory,
      };
      await Deno.writeTextFile(o.json, JSON.stringify(report, null, 2) + "\n");
      log(`wrote ${o.json}`);
    }
    return ended && missing.length === 0 ? 0 : 1;
  } finally {
    for (const c of clients) c.close();
  }
}

if (import.meta.main) {
  let options: Options;
  try {
    options = parseOptions(Deno.args);
  } catch (err) {
    console.error(`scale: ${(err as Error).message}\n\n${USAGE}`);
    Deno.exit(2);
  }
  try {
    Deno.exit(await main(options));
  } catch (err) {
    console.error(`scale: ${(err as Error).stack ?? err}`);
    Deno.exit(1);
  }
}
