/**
 * What a Ballast cluster costs etcd in steady state, from etcd's own /metrics.
 *
 *     deno task etcd-load [--window 60] [--settle 15] [--volumes 100] [--no-single-node]
 *
 * Starts a 3-member etcd and 3 `ballast serve --etcd ... --tls off` nodes on loopback
 * (the e2e test harness; default lease TTL, 10 s), then measures three idle phases of
 * `--window` seconds each, after `--settle` seconds of quiet:
 *   1. 3 nodes, 0 volumes;
 *   2. 3 nodes, `--volumes` volumes (created spread over the nodes, then left idle);
 *   3. 1 node (the other two stopped), the same volumes: phase 2 minus phase 3, halved,
 *      is what one node costs.
 * Counters are read from every member at the start and end of the window; the rates
 * are the differences divided by the window. Requests are gRPC messages received
 * (`grpc_server_msg_received_total`, one per unary call or stream message) by method.
 * @module
 */
// deno-lint-ignore-file no-console

import { parseArgs } from "node:util";
import { wholeNumber } from "./flags.ts";
import { startCluster } from "../tests/e2e/mod.ts";

const LEASE_TTL_S = 10;

interface Options {
  windowS: number;
  settleS: number;
  volumes: number;
  singleNode: boolean;
}

const USAGE = `Usage: deno task etcd-load [--window SECONDS] [--settle SECONDS] [--volumes N]
                           [--no-single-node]

Measures what an idle Ballast cluster costs etcd: starts a 3-member etcd and 3 nodes on
loopback, then reads etcd's /metrics over idle windows (3 nodes with no volumes, with N
volumes, and 1 node with the same volumes) and prints requests per second by method.

Flags:
  --window SECONDS   length of each measured window (default 60)
  --settle SECONDS   quiet time before each window (default 15)
  --volumes N        volumes created for phases 2 and 3 (default 100)
  --no-single-node   skip phase 3 (1 node)
  -h, --help         show this help
`;

function parseOptions(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      window: { type: "string", default: "60" },
      settle: { type: "string", default: "15" },
      volumes: { type: "string", default: "100" },
      "no-single-node": { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const num = wholeNumber;
  return {
    windowS: num("window", values.window, 1),
    settleS: num("settle", values.settle, 0),
    volumes: num("volumes", values.volumes, 0),
    singleNode: !values["no-single-node"],
  };
}

/** Prometheus text -> series ("name{labels}") -> value. */
type Sample = Map<string, number>;

function parseMetrics(text: string): Sample {
  const out: Sample = new Map();
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?)\s+(\S+)/.exec(line);
    if (m) out.set(m[1], Number(m[2]));
  }
  return out;
}

async function scrape(endpoint: string): Promise<Sample> {
  const res = await fetch(`${endpoint}/metrics`);
  if (!res.ok) throw new Error(`${endpoint}/metrics: HTTP ${res.status}`);
  return parseMetrics(await res.text());
}

const label = (series: string, key: string) =>
  new RegExp(`${key}="([^"]*)"`).exec(series)?.[1] ?? "";

/** Per-second rates of one member over the window. */
interface MemberRates {
  /** "KV.Range", "Lease.LeaseKeepAlive", ... -> messages received per second. */
  rpc: Map<string, number>;
  /** Streams (Watch, LeaseKeepAlive) opened per second, by method. */
  streams: Map<string, number>;
  /** Other counters by name (summed over labels). */
  counters: Map<string, number>;
  gauges: Map<string, number>;
}

const COUNTERS = [
  "etcd_mvcc_put_total",
  "etcd_mvcc_range_total",
  "etcd_mvcc_txn_total",
  "etcd_mvcc_delete_total",
  "etcd_debugging_lease_renewed_total",
  "etcd_debugging_lease_granted_total",
  "etcd_server_proposals_committed_total",
  "etcd_network_client_grpc_received_bytes_total",
  "etcd_network_client_grpc_sent_bytes_total",
];
const GAUGES = [
  "etcd_debugging_mvcc_keys_total",
  "etcd_debugging_mvcc_watcher_total",
  "etcd_mvcc_db_total_size_in_use_in_bytes",
];

function rates(before: Sample, after: Sample, seconds: number): MemberRates {
  const r: MemberRates = {
    rpc: new Map(),
    streams: new Map(),
    counters: new Map(),
    gauges: new Map(),
  };
  const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
  for (const [series, v] of after) {
    const delta = (v - (before.get(series) ?? 0)) / seconds;
    const name = series.replace(/\{.*/, "");
    if (name === "grpc_server_msg_received_total") {
      const service = label(series, "grpc_service").replace(/^etcdserverpb\./, "");
      add(r.rpc, `${service}.${label(series, "grpc_method")}`, delta);
    } else if (name === "grpc_server_started_total" && !/unary/.test(series)) {
      const service = label(series, "grpc_service").replace(/^etcdserverpb\./, "");
      add(r.streams, `${service}.${label(series, "grpc_method")}`, delta);
    } else if (COUNTERS.includes(name)) add(r.counters, name, delta);
    else if (GAUGES.includes(name)) add(r.gauges, name, v);
  }
  return r;
}

const fmt = (v: number, digits = 3) => v.toFixed(digits);

function printPhase(
  title: string,
  members: MemberRates[],
  nodes: number,
  leader: number,
  windowS: number,
): Map<string, number> {
  console.log(`\n## ${title} (window ${windowS} s, leader m${leader})`);
  const methods = [...new Set(members.flatMap((m) => [...m.rpc.keys()]))].sort();
  const totals = new Map<string, number>();
  console.log(
    "| request (gRPC messages received) | all members /s | per node /s | per node per 10 s lease | m0 / m1 / m2 /s |",
  );
  console.log("| --- | ---: | ---: | ---: | --- |");
  for (const method of methods) {
    const per = members.map((m) => m.rpc.get(method) ?? 0);
    const total = per.reduce((a, b) => a + b, 0);
    if (total < 0.0005) continue;
    totals.set(method, total);
    console.log(
      `| ${method} | ${fmt(total)} | ${fmt(total / nodes)} | ${
        fmt((total / nodes) * LEASE_TTL_S, 2)
      } | ${per.map((v) => fmt(v)).join(" / ")} |`,
    );
  }
  const all = [...totals.values()].reduce((a, b) => a + b, 0);
  totals.set("all", all);
  console.log(
    `| **all requests** | **${fmt(all)}** | ${fmt(all / nodes)} | ${
      fmt((all / nodes) * LEASE_TTL_S, 2)
    } | ${members.map((m) => fmt([...m.rpc.values()].reduce((a, b) => a + b, 0))).join(" / ")} |`,
  );
  const lead = members[leader];
  const c = (name: string, m = lead) => m.counters.get(name) ?? 0;
  const streams = methods.map((k) => [k, members.reduce((s, m) => s + (m.streams.get(k) ?? 0), 0)])
    .filter(([, v]) => (v as number) >= 0.0005);
  console.log(
    `streams opened /s (all members): ${
      streams.map(([k, v]) => `${k} ${fmt(v as number)}`).join(", ") || "none"
    }`,
  );
  console.log(
    `mvcc on the leader /s: put ${fmt(c("etcd_mvcc_put_total"))}, txn ${
      fmt(c("etcd_mvcc_txn_total"))
    }, delete ${fmt(c("etcd_mvcc_delete_total"))}; range (all members) ${
      fmt(members.reduce((s, m) => s + c("etcd_mvcc_range_total", m), 0))
    }`,
  );
  console.log(
    `raft proposals committed /s ${fmt(c("etcd_server_proposals_committed_total"))}; ` +
      `lease renewals /s ${fmt(c("etcd_debugging_lease_renewed_total"))}, grants /s ${
        fmt(c("etcd_debugging_lease_granted_total"))
      }`,
  );
  console.log(
    `client bytes/s in / out per member: ${
      members.map((m) =>
        `${fmt(c("etcd_network_client_grpc_received_bytes_total", m), 0)} / ${
          fmt(c("etcd_network_client_grpc_sent_bytes_total", m), 0)
        }`
      ).join(", ")
    }`,
  );
  const g = (name: string) => lead.gauges.get(name) ?? 0;
  console.log(
    `at the end: ${g("etcd_debugging_mvcc_keys_total")} keys, ${
      g("etcd_debugging_mvcc_watcher_total")
    } watchers on the leader, db in use ${
      fmt(g("etcd_mvcc_db_total_size_in_use_in_bytes") / 1024, 0)
    } KiB`,
  );
  totals.set("proposals", c("etcd_server_proposals_committed_total"));
  return totals;
}

async function main() {
  const o = parseOptions(Deno.args);
  const cpus = navigator.hardwareConcurrency;
  console.log(
    `# etcd load of an idle Ballast cluster: 3 etcd members, 3 nodes, lease TTL ${LEASE_TTL_S} s`,
  );
  console.log(`${new Date().toISOString()}, ${cpus} CPUs, window ${o.windowS} s`);
  const started = Date.now();
  await using cluster = await startCluster();
  const nodes = cluster.names.map((_, i) => cluster.node(i));
  console.log(`cluster up in ${Date.now() - started} ms: etcd ${cluster.etcd.endpoints.join(",")}`);

  const measure = async (title: string, nodeCount: number) => {
    await new Promise((r) => setTimeout(r, o.settleS * 1000));
    const leader = await cluster.etcd.leaderIndex();
    const before = await Promise.all(cluster.etcd.endpoints.map(scrape));
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, o.windowS * 1000));
    const after = await Promise.all(cluster.etcd.endpoints.map(scrape));
    const seconds = (performance.now() - t0) / 1000;
    const members = before.map((b, i) => rates(b, after[i], seconds));
    return printPhase(title, members, nodeCount, leader, o.windowS);
  };

  const empty = await measure("3 nodes, 0 volumes", 3);

  const t = Date.now();
  const queue = Array.from({ length: o.volumes }, (_, i) => i);
  await Promise.all([0, 1, 2, 3].map(async () => {
    for (let i = queue.shift(); i !== undefined; i = queue.shift()) {
      const res = await fetch(`${nodes[i % 3].api}/v1/volumes`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ name: `idle-${i}`, size: "64MiB" }),
      });
      if (res.status !== 201) throw new Error(`create idle-${i}: ${await res.text()}`);
      await res.body?.cancel();
    }
  }));
  console.log(`\ncreated ${o.volumes} volumes in ${Date.now() - t} ms`);
  const full = await measure(`3 nodes, ${o.volumes} idle volumes`, 3);

  console.log("\n## summary");
  const diff = (full.get("all") ?? 0) - (empty.get("all") ?? 0);
  console.log(
    `${o.volumes} idle volumes add ${fmt(diff)} requests/s ` +
      `(${fmt(empty.get("all") ?? 0)} -> ${fmt(full.get("all") ?? 0)})`,
  );
  if (o.singleNode) {
    await nodes[1].stop();
    await nodes[2].stop();
    const one = await measure(`1 node, ${o.volumes} idle volumes`, 1);
    const perNode = ((full.get("all") ?? 0) - (one.get("all") ?? 0)) / 2;
    console.log(
      `one node costs ${fmt(perNode)} requests/s = ${
        fmt(perNode * LEASE_TTL_S, 2)
      } per ${LEASE_TTL_S} s lease period (3 nodes minus 1 node, halved)`,
    );
  }
  // Warnings explain unexpected traffic (a watch that keeps restarting, a failing heartbeat).
  for (const [i, n] of nodes.entries()) {
    const warned = n.logs().split("\n").filter((l) => /"level":(40|50)/.test(l))
      .map((l) => JSON.parse(l).msg as string);
    const kinds = [...new Set(warned)].slice(0, 3).join("; ");
    console.log(
      `${cluster.names[i]}: ${warned.length} warnings/errors${kinds ? `: ${kinds}` : ""}`,
    );
  }
}

if (import.meta.main) {
  try {
    await main();
  } catch (err) {
    console.error(`etcd-load: ${err instanceof Error ? err.message : err}`);
    Deno.exit(1);
  }
}
