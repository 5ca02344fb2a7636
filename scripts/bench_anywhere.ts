// deno-lint-ignore-file no-console
/**
 * `deno task bench:anywhere` (issue 13): what attach anywhere costs, and how long a client
 * attached through another node pauses when a volume's master dies.
 *
 *   deno task bench:anywhere [--runtime 10] [--ramp 2] [--rounds 1] [--size-mib 1024]
 *                            [--failovers 5] [--lease-ttl 3] [--crash-detection on|off]
 *                            [--no-forward] [--json FILE] [--dir DIR] [--keep]
 *
 * Forwarding: a local cluster (one etcd, three TLS nodes on loopback, scripts/_bench_cluster.ts),
 * one volume without replicas; the same fio jobs (4k random read and write QD32, 1 MiB
 * sequential write and read) through the plaintext local-attach listener of the volume's master
 * and of another node, which forwards every request to the master over NBD with TLS. Prints
 * each figure and the ratio forwarded/direct. All nodes share the machine's cores.
 *
 * Failover pause: four nodes with a 3 s lease TTL (--lease-ttl), crash detection on
 * (--crash-detection), a volume with 2 replicas, a libnbd client
 * writing 4 KiB blocks (4 in flight) through the node that holds no copy; the master is killed
 * with SIGKILL, the client's longest gap between two completed writes is the pause; the
 * killed node is started again and caught up before the next round. Prints each pause and
 * p50/max.
 * @module
 */

import { parseArgs } from "node:util";
import { type Job, JOBS, precondition, runJobWithCpu, setClockTicks } from "./_bench_fio.ts";
import { haveTool, toolVersion } from "./_bench_proc.ts";
import { fmtValue, median } from "./_bench_report.ts";
import { BenchCluster, until } from "./_bench_cluster.ts";
import { BenchRun } from "./_bench_run.ts";

const USAGE = `usage: deno task bench:anywhere [options]
  --runtime S      seconds per fio job, after the ramp (default 10)
  --ramp S         fio ramp_time seconds (default 2)
  --rounds N       repeat every fio job N times and report the median (default 1)
  --size-mib N     size of the forwarded volume in MiB (default 1024)
  --failovers N    master kills to measure the pause over (default 5; 0: skip)
  --lease-ttl S    the failover nodes' --node-lease-ttl in seconds (default 3)
  --crash-detection on|off
                   the failover nodes' --crash-detection (default on); off leaves each
                   death to the lease TTL, as a dead host would
  --no-forward     skip the forwarding throughput jobs
  --json FILE      also write the results as JSON
  --dir DIR        parent of the temp directory (default: system temp dir)
  --keep           keep the temp directory`;

const FORWARD_JOBS = ["randread-4k", "randwrite-4k", "seqwrite-1m", "seqread-1m"];

/** The pause writer: prints one JSON line per gap longer than 0.3 s, until the stop file. */
const PAUSE_PY = `
import sys, nbd, os, time, json
uri, stop = sys.argv[1:3]
h = nbd.NBD(); h.connect_uri(uri)
inflight = {}
seq = 0
last = time.time()
while not os.path.exists(stop) or inflight:
    while len(inflight) < 4 and not os.path.exists(stop):
        off = (seq * 7919 % 4096) * 4096
        inflight[h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(4096)), off)] = seq
        seq += 1
    h.poll(1000)
    for cookie in list(inflight):
        if h.aio_command_completed(cookie):
            del inflight[cookie]
            now = time.time()
            if now - last > 0.3:
                print(json.dumps({"start": last, "end": now}), flush=True)
            last = now
h.flush()
print(json.dumps({"done": seq}), flush=True)
`;

interface Options {
  runtime: number;
  ramp: number;
  rounds: number;
  sizeMiB: number;
  failovers: number;
  leaseTtlS: number;
  crashDetection: "on" | "off";
  forward: boolean;
  json?: string;
  dir?: string;
  keep: boolean;
}

function parse(): Options {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      runtime: { type: "string", default: "10" },
      ramp: { type: "string", default: "2" },
      rounds: { type: "string", default: "1" },
      "size-mib": { type: "string", default: "1024" },
      failovers: { type: "string", default: "5" },
      "lease-ttl": { type: "string", default: "3" },
      "crash-detection": { type: "string", default: "on" },
      "no-forward": { type: "boolean", default: false },
      json: { type: "string" },
      dir: { type: "string" },
      keep: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const num = (name: string, v: string, min: number) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) {
      console.error(`bench:anywhere: --${name} must be a whole number >= ${min}, got "${v}"`);
      console.error(USAGE);
      Deno.exit(2);
    }
    return n;
  };
  const onOff = (v: string): "on" | "off" => {
    if (v === "on" || v === "off") return v;
    console.error(`bench:anywhere: --crash-detection takes on or off, got "${v}"`);
    Deno.exit(2);
  };
  return {
    runtime: num("runtime", values.runtime, 1),
    ramp: num("ramp", values.ramp, 0),
    rounds: num("rounds", values.rounds, 1),
    sizeMiB: num("size-mib", values["size-mib"], 16),
    failovers: num("failovers", values.failovers, 0),
    leaseTtlS: num("lease-ttl", values["lease-ttl"], 1),
    crashDetection: onOff(values["crash-detection"]),
    forward: !values["no-forward"],
    json: values.json,
    dir: values.dir,
    keep: values.keep,
  };
}

/** One forwarding job's figures: values by path, and CPU per unit (nodes + fio) by path. */
interface ForwardRow {
  direct: number[];
  forwarded: number[];
  cpu: { direct?: number[]; forwarded?: number[] };
  unit: Job["unit"];
}

async function forwarding(run: BenchRun, o: Options) {
  const cluster = await BenchCluster.start(run, {});
  const v = await cluster.createVolume("fwd", o.sizeMiB * 2 ** 20, 0);
  const front = [...cluster.nodes.keys()].find((n) => n !== v.master)!;
  const direct = cluster.localUri(v);
  const forwarded = `nbd://${cluster.nodes.get(front)!.nbdLocal}/fwd`;
  console.error(`bench: volume fwd on ${v.master}; forwarded through ${front}`);
  await precondition(direct, o.sizeMiB);
  const rows: Record<string, ForwardRow> = {};
  for (let round = 1; round <= o.rounds; round++) {
    for (const id of FORWARD_JOBS) {
      const job = JOBS.find((j) => j.id === id)!;
      const row = rows[id] ??= { direct: [], forwarded: [], cpu: {}, unit: job.unit };
      for (const [via, uri] of [["direct", direct], ["forwarded", forwarded]] as const) {
        if (run.interrupted) return rows;
        const r = await runJobWithCpu(job, uri, o, cluster.pids());
        const [nodes, fio] = [r.serverCpuPer, r.clientCpuPer];
        row[via].push(r.value);
        (row.cpu[via] ??= []).push(nodes + fio);
        const nodeOf = (pid: number) =>
          [...cluster.nodes].find(([, n]) => n.proc.child.pid === pid)?.[0] ?? String(pid);
        const busy = r.threads.slice(0, 3).map((t) =>
          `${nodeOf(t.pid)} ${t.thread} ran ${t.runPct.toFixed(0)}% waited ${t.waitPct.toFixed(0)}%`
        );
        console.error(
          `[${round}/${o.rounds}] ${job.title.padEnd(18)} ${via.padEnd(9)} ` +
            `${fmtValue(r.value, job.unit).padStart(7)} ${job.unit}  CPU per ` +
            `${job.unit === "IOPS" ? "M req" : "GiB"}: nodes ${nodes.toFixed(2)} s, fio ` +
            `${fio.toFixed(2)} s; busiest threads (of the run, and waiting for a CPU): ` +
            busy.join(", "),
        );
      }
    }
  }
  console.log(
    `\nAttach anywhere: through the master's node vs through another node. CPU: the nodes' and ` +
      `fio's together after the ramp, s per million requests (4k) or per GiB (1 MiB); CPU-bound: ` +
      `the ratio that CPU predicts when fio and the nodes keep every core busy (direct over ` +
      `forwarded)`,
  );
  console.log(
    `${"job".padEnd(20)}${"direct".padStart(12)}${"forwarded".padStart(12)}  ratio` +
      `${"CPU direct".padStart(12)}${"forwarded".padStart(11)}  CPU-bound`,
  );
  for (const [id, row] of Object.entries(rows)) {
    const d = median(row.direct);
    const f = median(row.forwarded);
    const [cd, cf] = [median(row.cpu.direct ?? []), median(row.cpu.forwarded ?? [])];
    console.log(
      `${JOBS.find((j) => j.id === id)!.title.padEnd(20)}${fmtValue(d, row.unit).padStart(12)}${
        fmtValue(f, row.unit).padStart(12)
      }  ${(f / d).toFixed(2)}x${cd.toFixed(2).padStart(12)}${cf.toFixed(2).padStart(11)}  ` +
        `${(cd / cf).toFixed(2)}x`,
    );
  }
  return rows;
}

async function failovers(run: BenchRun, o: Options) {
  const cluster = await BenchCluster.start(run, {
    nodes: 4,
    leaseTtl: `${o.leaseTtlS}s`,
    crashDetection: o.crashDetection,
  });
  const v = await cluster.createVolume("fo", 64 * 2 ** 20, 2);
  const front = [...cluster.nodes.keys()].find((n) => !v.members?.includes(n))!;
  const stop = `${run.dir}/pause-stop`;
  const writer = new Deno.Command("/usr/bin/python3", {
    args: ["-c", PAUSE_PY, `nbd://${cluster.nodes.get(front)!.nbdLocal}/fo`, stop],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const gaps: { start: number; end: number }[] = [];
  let done = false;
  const reading = (async () => {
    let text = "";
    for await (const chunk of writer.stdout.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      let nl;
      while ((nl = text.indexOf("\n")) >= 0) {
        const line = JSON.parse(text.slice(0, nl));
        text = text.slice(nl + 1);
        if (line.done !== undefined) done = true;
        else gaps.push(line);
      }
    }
  })();
  const pauses: number[] = [];
  try {
    for (let i = 1; i <= o.failovers && !run.interrupted; i++) {
      await new Promise((r) => setTimeout(r, 3_000)); // steady writing first
      const now = await cluster.client(front).getVolume("fo");
      const killedAt = Date.now() / 1000;
      await cluster.kill(now.master);
      await until(`a new master (round ${i})`, 60_000, async () => {
        const after = await cluster.client(front).getVolume("fo");
        return after.master !== now.master;
      });
      // The pause: the writer's gap that spans the kill (it ends once writes complete again).
      await until(
        `the client to go on (round ${i})`,
        60_000,
        () => gaps.some((g) => g.start <= killedAt + 0.5 && g.end >= killedAt),
      );
      const gap = gaps.find((g) => g.start <= killedAt + 0.5 && g.end >= killedAt)!;
      const pause = Math.round((gap.end - killedAt) * 1000);
      pauses.push(pause);
      console.error(`bench: failover ${i}: ${now.master} killed; client paused ${pause} ms`);
      await cluster.start(now.master);
      await until(`all in sync (round ${i})`, 180_000, async () => {
        const after = await cluster.client(front).getVolume("fo");
        return after.inSync?.length === 3;
      });
    }
  } finally {
    await Deno.writeTextFile(stop, "");
    const status = await writer.status;
    await reading;
    const err = new TextDecoder().decode(await new Response(writer.stderr).arrayBuffer());
    if (!status.success || !done) console.error(`bench: the client failed: ${err}`);
  }
  const sorted = [...pauses].sort((a, b) => a - b);
  console.log(
    `\nFailover pause (kill -9 of the master to the next completed write, ${o.leaseTtlS} s ` +
      `lease TTL, crash detection ${o.crashDetection}): ` +
      `${pauses.join(", ")} ms; p50 ${median(sorted)} ms, max ${sorted.at(-1)} ms`,
  );
  return pauses;
}

async function main(): Promise<number> {
  const o = parse();
  for (const t of ["fio", "etcd", "etcdctl", "nbdinfo"]) {
    if (!await haveTool(t)) {
      console.error(`bench:anywhere: missing ${t}; run scripts/setup.sh`);
      return 1;
    }
  }
  if (o.failovers > 0 && !(await Deno.stat("/usr/bin/python3").catch(() => null))) {
    console.error("bench:anywhere: the pause client needs /usr/bin/python3 with python3-libnbd");
    return 1;
  }
  setClockTicks(Number(await toolVersion("getconf", ["CLK_TCK"])));
  const result: Record<string, unknown> = { date: new Date().toISOString(), options: o };
  if (o.forward) {
    const run = await BenchRun.start(o);
    try {
      result.forwarding = await forwarding(run, o);
    } finally {
      await run.close();
    }
  }
  if (o.failovers > 0) {
    const run = await BenchRun.start(o);
    try {
      result.pausesMs = await failovers(run, o);
    } finally {
      await run.close();
    }
  }
  if (o.json) await Deno.writeTextFile(o.json, JSON.stringify(result, null, 2) + "\n");
  return 0;
}

Deno.exit(await main());
