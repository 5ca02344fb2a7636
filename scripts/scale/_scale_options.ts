// deno-lint-ignore-file no-console
/**
 * Flags of scripts/scale/scale_sim.ts, parsed and checked before anything starts.
 * @module
 */

import { parseArgs } from "node:util";
import { wholeNumber } from "../flags.ts";
import { parseSize } from "../../mod/mod.ts";

export const USAGE = `Usage: deno task scale [flags]

Starts one etcd and N Ballast nodes on loopback, creates V replicated volumes, kills -9 the
node that masters about V/N of them and reports the failover times, etcd's request rates at
rest and during the storm, and every node's memory.

Flags:
  --nodes N             Ballast nodes (default 20)
  --volumes V           replicated volumes (default 2000)
  --size SIZE           size of each volume (default 16MiB; files are sparse)
  --replicas R          replicas besides the master (default 2)
  --lease-ttl SECONDS   node lease TTL (default 3)
  --heap-mib MIB        V8 old-space cap of each node, 0 = V8's default (default 384)
  --no-observer         do not add the observer: a cordoned node that holds no copy, so
                        its memory is what following every volume record costs
  --crash-detection on|off
                        the nodes' --crash-detection (default on): off leaves the victim's
                        death to its lease TTL, as a dead host or a frozen process
  --concurrency C       volume creates in flight (default 8)
  --rest SECONDS        idle window measured before the kill (default 30)
  --timeout SECONDS     longest wait for the storm to end (default 180)
  --dir DIR             parent of the run directory (default /dev/shm, a tmpfs, so that
                        other processes' disk writes do not stall etcd's fsyncs)
  --json FILE           also write every figure to FILE
  --keep                keep the run directory (data dirs and logs)
  -h, --help            show this help
`;

export interface Options {
  nodes: number;
  volumes: number;
  sizeBytes: number;
  replicas: number;
  leaseTtlS: number;
  heapMiB: number;
  concurrency: number;
  restS: number;
  timeoutS: number;
  dir?: string;
  json?: string;
  keep: boolean;
  observer: boolean;
  crashDetection: boolean;
}

export function parseOptions(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      nodes: { type: "string", default: "20" },
      volumes: { type: "string", default: "2000" },
      size: { type: "string", default: "16MiB" },
      replicas: { type: "string", default: "2" },
      "lease-ttl": { type: "string", default: "3" },
      "heap-mib": { type: "string", default: "384" },
      "no-observer": { type: "boolean", default: false },
      "crash-detection": { type: "string", default: "on" },
      concurrency: { type: "string", default: "8" },
      rest: { type: "string", default: "30" },
      timeout: { type: "string", default: "180" },
      dir: { type: "string" },
      json: { type: "string" },
      keep: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const num = wholeNumber;
  const o: Options = {
    nodes: num("nodes", values.nodes, 2),
    volumes: num("volumes", values.volumes, 1),
    sizeBytes: parseSize(values.size),
    replicas: num("replicas", values.replicas, 1),
    leaseTtlS: num("lease-ttl", values["lease-ttl"], 2),
    heapMiB: num("heap-mib", values["heap-mib"], 0),
    concurrency: num("concurrency", values.concurrency, 1),
    restS: num("rest", values.rest, 1),
    timeoutS: num("timeout", values.timeout, 10),
    dir: values.dir,
    json: values.json,
    keep: values.keep,
    observer: !values["no-observer"],
    crashDetection: values["crash-detection"] === "on",
  };
  if (!["on", "off"].includes(values["crash-detection"])) {
    throw new Error(`--crash-detection takes on or off, not ${values["crash-detection"]}`);
  }
  if (o.replicas >= o.nodes) {
    throw new Error(`--replicas ${o.replicas} needs more than ${o.replicas} nodes`);
  }
  return o;
}

/** /dev/shm when there is one (RAM: etcd's fsyncs wait for nobody), else the temp dir. */
export function defaultDir(): string | undefined {
  try {
    return Deno.statSync("/dev/shm").isDirectory ? "/dev/shm" : undefined;
  } catch {
    return undefined;
  }
}
