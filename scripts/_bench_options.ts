// deno-lint-ignore-file no-console
/**
 * Command-line options of `deno task bench` (scripts/bench.ts): usage text and parsing.
 * @module
 */

import { parseArgs } from "node:util";
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
  --qemu-stock-malloc  run qemu-nbd without the glibc mmap-threshold tuning (slow 1M I/O)`;

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
}

export function parseOptions(): Options {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      servers: { type: "string" },
      jobs: { type: "string", default: JOBS.map((j) => j.id).join(",") },
      runtime: { type: "string", default: "10" },
      ramp: { type: "string", default: "2" },
      rounds: { type: "string", default: "1" },
      "size-mib": { type: "string", default: "1024" },
      tls: { type: "boolean", default: false },
      json: { type: "string" },
      dir: { type: "string" },
      keep: { type: "boolean", default: false },
      "qemu-stock-malloc": { type: "boolean", default: false },
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
  const serverList = values.servers ?? (values.tls ? "ballast,nbdkit" : ALL_SERVERS.join(","));
  const servers = serverList.split(",").map((s) => s.trim()).filter(Boolean);
  for (const s of servers) {
    if (!ALL_SERVERS.includes(s as ServerKind)) bad(`unknown server ${JSON.stringify(s)}`);
  }
  if (values.tls && !servers.includes("ballast")) {
    bad("--tls needs ballast in --servers: its CA issues every certificate");
  }
  const jobIds = values.jobs.split(",").map((s) => s.trim()).filter(Boolean);
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
  return {
    // In the canonical order, so tables and interleaving do not depend on how LIST was spelled.
    servers: ALL_SERVERS.filter((s) => servers.includes(s)),
    jobs,
    runtime: num("runtime", values.runtime, 1),
    ramp: num("ramp", values.ramp, 0),
    rounds: num("rounds", values.rounds, 1),
    sizeMiB: num("size-mib", values["size-mib"], 1),
    tls: values.tls,
    json: values.json,
    dir: values.dir,
    keep: values.keep,
    qemuStockMalloc: values["qemu-stock-malloc"],
  };
}
