// deno-lint-ignore-file no-console
/**
 * Command-line options of `deno task bench` (scripts/bench.ts): usage text and parsing.
 * @module
 */

import { parseArgs } from "node:util";
import { parseSize } from "../mod/mod.ts";
import { type Job, JOBS } from "./_bench_fio.ts";
import { ALL_SERVERS, type ServerKind } from "./_bench_servers.ts";
import { libnbdCertDir } from "./_bench_tls.ts";

const USAGE = `usage: deno task bench [options]
  --servers LIST   comma list of ${ALL_SERVERS.join(",")} (default: all; with --tls: ballast,nbdkit)
  --jobs LIST      comma list of ${JOBS.map((j) => j.id).join(",")} (default: all)
  --runtime S      seconds per fio job, after the ramp (default 10)
  --ramp S         fio ramp_time seconds (default 2)
  --rounds N       repeat every job N times and report the median (default 1)
  --size-mib N     size of each served file/volume in MiB (default 1024)
  --tls            run every server plaintext and with TLS (client certificates required);
                   temporarily installs the client certificate in libnbd's default directory
                   (${libnbdDirText()}), restoring the files there afterwards
  --json FILE      also write all results as JSON
  --dir DIR        parent of the temp directory (default: system temp dir)
  --keep           keep the temp directory
  --qemu-stock-malloc  run qemu-nbd without the glibc mmap-threshold tuning (slow 1M I/O)

Worker pool (issue 11): --data-workers LIST
  --data-workers LIST  Ballast once per value (1, 2, auto, MIN..MAX), each serving plaintext
                   (local listener) and TLS, against nbdkit file (dir=) plain and TLS; every
                   job runs with each --conns count spread over --volumes volumes; prints the
                   ratios to the first value (e.g. auto/1); installs the client certificate
                   like --tls (always runs TLS; --tls adds nothing). --jobs takes the
                   1-connection ids; --size-mib is per volume (default 256). With --rounds N
                   even rounds run the servers in reverse order and every round's ratio is
                   printed. Afterwards auto and MIN..MAX pools are watched (up to 120 s) until
                   they shrink back: largest pool, resizes, shrink time and idle RSS. Also
                   prints fio's own CPU per unit and the ceiling of each pool on this
                   machine's cores (cores / (server + fio CPU per unit)) against the first value
  --conns LIST     NBD connections per job (default 1,4,8)
  --volumes N      volumes (exports) per server the connections are spread over (default 4)

Replication (issue 12): --replicas LIST
  --replicas LIST  a local cluster (1 etcd, 3 TLS nodes on loopback, fio through the master's
                   plaintext local listener), one volume per replica count, the jobs interleaved
                   with nbdkit file; ratios to the first count (default jobs: randwrite-4k,
                   seqwrite-1m, randread-4k, seqread-1m; --size-mib per volume, default 1024);
                   then Delta Sync on a volume with 1 replica
  --size SIZE      Delta Sync volume size (default 4GiB)
  --change-pct P   share of the Delta Sync volume changed while its replica is down (default 1)
  --no-delta       skip Delta Sync and the latency runs
  --baseline REF   also a single-node Ballast (--tls off, a volume that is no group) of this
                   tree and of git commit REF (extracted with git archive), e.g. the last commit
                   before hash lists, to measure what they cost a volume without replicas
  --resync-rate R  passed to every node (default unlimited)
  --cold-verify    also a second volume of the first replicated count whose copies are dropped
                   from the page cache and read back by \`volume verify --deep\` before each of
                   its jobs (a cold verify's effect on the writes that follow)`;

function libnbdDirText(): string {
  try {
    return libnbdCertDir();
  } catch {
    return "$HOME/.pki/libnbd";
  }
}

export interface Options {
  servers: ServerKind[];
  jobs: Job[];
  runtime: number;
  ramp: number;
  rounds: number;
  sizeMiB: number;
  tls: boolean;
  json?: string;
  dir?: string;
  keep: boolean;
  qemuStockMalloc: boolean;
  /** Pool mode: the --data-workers values (undefined: not pool mode). */
  dataWorkers?: string[];
  conns: number[];
  volumes: number;
  /** Replication mode: the replica counts (undefined: not replication mode). */
  replicas?: number[];
  deltaSizeBytes: number;
  changePct: number;
  delta: boolean;
  resyncRate?: string;
  baseline?: string;
  coldVerify: boolean;
}

export function parseOptions(): Options {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      servers: { type: "string" },
      jobs: { type: "string" },
      runtime: { type: "string", default: "10" },
      ramp: { type: "string", default: "2" },
      rounds: { type: "string", default: "1" },
      "size-mib": { type: "string" },
      tls: { type: "boolean", default: false },
      json: { type: "string" },
      dir: { type: "string" },
      keep: { type: "boolean", default: false },
      "qemu-stock-malloc": { type: "boolean", default: false },
      "data-workers": { type: "string" },
      conns: { type: "string", default: "1,4,8" },
      volumes: { type: "string", default: "4" },
      replicas: { type: "string" },
      size: { type: "string", default: "4GiB" },
      "change-pct": { type: "string", default: "1" },
      "no-delta": { type: "boolean", default: false },
      "resync-rate": { type: "string" },
      baseline: { type: "string" },
      "cold-verify": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const bad = (msg: string): never => {
    console.error(`bench: ${msg}\n${USAGE}`);
    Deno.exit(2);
  };
  const poolOrReplicas = values["data-workers"] !== undefined || values.replicas !== undefined;
  const serverList = values.servers ??
    (values.tls || poolOrReplicas ? "ballast,nbdkit" : ALL_SERVERS.join(","));
  const servers = serverList.split(",").map((s) => s.trim()).filter(Boolean);
  for (const s of servers) {
    if (!ALL_SERVERS.includes(s as ServerKind)) bad(`unknown server ${JSON.stringify(s)}`);
  }
  if (poolOrReplicas && servers.includes("qemu-nbd")) {
    bad("--data-workers and --replicas compare with nbdkit only (qemu-nbd serves one export)");
  }
  if (values.tls && !servers.includes("ballast")) {
    bad("--tls needs ballast in --servers: its CA issues every certificate");
  }
  const list = (v: string) => v.split(",").map((s) => s.trim()).filter(Boolean);
  if (values["data-workers"] !== undefined && values.replicas !== undefined) {
    bad("--data-workers and --replicas are separate runs");
  }
  const mode = values["data-workers"] !== undefined
    ? "pool"
    : values.replicas !== undefined
    ? "replicas"
    : "servers";
  const defaultJobs = mode === "pool"
    ? "randread-4k,randwrite-4k,seqread-1m,seqwrite-1m"
    : mode === "replicas"
    ? "randwrite-4k,seqwrite-1m,randread-4k,seqread-1m"
    : undefined;
  const jobIds = list(values.jobs ?? defaultJobs ?? JOBS.map((j) => j.id).join(","));
  const jobs = jobIds.map((id) =>
    JOBS.find((j) => j.id === id) ?? bad(`unknown job ${JSON.stringify(id)}`)
  );
  const num = (name: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) {
      bad(`--${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    }
    return n;
  };
  if (servers.length === 0 || jobs.length === 0) bad("nothing to run");
  if (mode === "pool" && jobs.some((j) => j.numjobs !== 1)) {
    bad("with --data-workers, --jobs takes 1-connection jobs; --conns sets the connections");
  }
  const dataWorkers = values["data-workers"] === undefined
    ? undefined
    : list(values["data-workers"]);
  for (const w of dataWorkers ?? []) {
    if (!/^(auto|\d+|\d+\.\.\d+)$/.test(w)) bad(`bad --data-workers value ${JSON.stringify(w)}`);
  }
  if (dataWorkers?.length === 0) bad("--data-workers needs at least one value");
  const replicas = values.replicas === undefined
    ? undefined
    : list(values.replicas).map((r) => num("replicas", r, 0));
  if (replicas && (replicas.length === 0 || replicas.some((r) => r > 2))) {
    bad("--replicas takes counts from 0 to 2 (the bench cluster has 3 nodes)");
  }
  let deltaSizeBytes = 0;
  try {
    deltaSizeBytes = parseSize(values.size);
  } catch (err) {
    bad(`--size: ${(err as Error).message}`);
  }
  if (deltaSizeBytes < 64 * 2 ** 20 || deltaSizeBytes % 2 ** 20 !== 0) {
    bad("--size must be a whole number of MiB, at least 64MiB");
  }
  const changePct = Number(values["change-pct"]);
  if (!(changePct > 0 && changePct <= 50)) bad("--change-pct must be in (0, 50]");
  const conns = list(values.conns).map((c) => num("conns", c, 1));
  return {
    // In the canonical order, so tables and interleaving do not depend on how LIST was spelled.
    servers: ALL_SERVERS.filter((s) => servers.includes(s)),
    jobs,
    runtime: num("runtime", values.runtime, 1),
    ramp: num("ramp", values.ramp, 0),
    rounds: num("rounds", values.rounds, 1),
    sizeMiB: num("size-mib", values["size-mib"] ?? (mode === "pool" ? "256" : "1024"), 1),
    tls: values.tls,
    json: values.json,
    dir: values.dir,
    keep: values.keep,
    qemuStockMalloc: values["qemu-stock-malloc"],
    dataWorkers,
    conns,
    volumes: num("volumes", values.volumes, 1),
    replicas,
    deltaSizeBytes,
    changePct,
    delta: !values["no-delta"],
    resyncRate: values["resync-rate"],
    baseline: values.baseline,
    coldVerify: values["cold-verify"],
  };
}
