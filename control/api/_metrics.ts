/**
 * GET /metrics: Prometheus text exposition (format 0.0.4) of the node's metrics: per-volume
 * I/O counters and latency histograms from the data plane's VolumeStats, volume sizes,
 * NBD connections, replication (members' states, lag and resyncs of the groups this node
 * is master of), groups' phases and nodes' states (_metrics_cluster.ts), API request counts,
 * the build, data disk and certificate expiry (_metrics_node.ts) and process facts.
 * @module
 */

import { Hono } from "hono";
import type { DataPlane } from "../../data/plane.ts";
import type { PoolStatus } from "../../data/mod.ts";
import { LATENCY_BUCKETS, OP_KINDS, type VolumeStats } from "../../data/stats.ts";
import type { MemberState, Volume } from "../../mod/types.ts";
import type { ServedGroup, VolumeService } from "../volumes/mod.ts";
import type { Pki } from "../../ca/mod.ts";
import { versionInfo } from "../common/mod.ts";
import type { ApiEnv } from "./_auth.ts";
import { certificateExpiries, type NodeMetricsInput, renderNodeMetrics } from "./_metrics_node.ts";
import { type ClusterMetricsInput, renderClusterMetrics } from "./_metrics_cluster.ts";
import type { NodeRegistry } from "../nodes/mod.ts";
import { allowQuery } from "./_validate.ts";

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** Process start, derived once from the monotonic clock. */
const PROCESS_START_SECONDS = (Date.now() - performance.now()) / 1000;

/** Escapes a label value: backslash, double quote and newline. */
/** The states a volume record can be in (Volume.state), each a series of ballast_volume_state. */
const VOLUME_STATES = ["creating", "ready", "deleting", "failed"] as const;

export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** Formats a sample value the way Prometheus parses it. */
function num(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function labels(pairs: Record<string, string>): string {
  const parts = Object.entries(pairs).map(([k, v]) => `${k}="${escapeLabelValue(v)}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

/** Counts API requests by method, matched route and status. */
export class ApiRequestCounter {
  readonly #counts = new Map<
    string,
    { method: string; route: string; status: string; n: number }
  >();

  add(method: string, route: string, status: number): void {
    const key = `${method} ${route} ${status}`;
    const entry = this.#counts.get(key);
    if (entry) entry.n++;
    else this.#counts.set(key, { method, route, status: String(status), n: 1 });
  }

  entries(): Array<{ method: string; route: string; status: string; n: number }> {
    return [...this.#counts.values()];
  }
}

/** What the metrics route needs from ApiDeps. */
export interface MetricsRouteDeps {
  dataPlane: DataPlane;
  volumes: VolumeService;
  /** The node's PKI (TLS on): its certificates' expiry is exported. */
  pki?: Pki;
  /** The nodes as this node sees them (ballast_node_state). */
  nodes?: NodeRegistry;
  /** Crash detection's checks (ballast_crash_checks_total). */
  crashChecks?: () => NodeMetricsInput["crashChecks"];
}

/** The /metrics sub-app; `api` counts the requests (the app's logging middleware adds them). */
export function metricsRoutes(deps: MetricsRouteDeps, api: ApiRequestCounter): Hono<ApiEnv> {
  const app = new Hono<ApiEnv>();
  app.get("/", allowQuery(), async (c) => {
    const text = renderMetrics({
      stats: deps.dataPlane.volumeStats(),
      volumes: await deps.volumes.list(),
      groups: await deps.volumes.servedGroups(),
      nbdConnections: deps.dataPlane.openConnections(),
      pool: deps.dataPlane.workerPool?.(),
      api,
      rssBytes: Deno.memoryUsage().rss,
      build: versionInfo(),
      disk: capacity(deps.dataPlane),
      certificates: deps.pki ? await certificateExpiries(deps.pki) : undefined,
      nodes: await deps.nodes?.list().catch(() => undefined),
      orphaned: orphaned(deps.dataPlane),
      crashChecks: deps.crashChecks?.(),
    });
    return c.body(text, 200, { "Content-Type": PROMETHEUS_CONTENT_TYPE });
  });
  return app;
}

/** The data disk's capacity, or undefined when it cannot be read now. */
function capacity(plane: DataPlane): NodeMetricsInput["disk"] {
  try {
    return plane.capacity();
  } catch {
    return undefined;
  }
}

/** The orphaned copies on the data disk, or undefined when they cannot be counted now. */
function orphaned(plane: DataPlane): ClusterMetricsInput["orphaned"] {
  try {
    return plane.orphaned?.();
  } catch {
    return undefined;
  }
}

/** What a scrape reads (the node-level parts are optional). */
export interface MetricsInput extends NodeMetricsInput, ClusterMetricsInput {
  stats: VolumeStats[];
  volumes: Volume[];
  /** The groups this node serves as master, with their members. */
  groups?: ServedGroup[];
  nbdConnections: number;
  /** The data worker pool, when NBD is served on one. */
  pool?: PoolStatus;
  api: ApiRequestCounter;
  rssBytes: number;
}

/** Renders every metric family with HELP and TYPE lines. */
export function renderMetrics(input: MetricsInput): string {
  const out: string[] = [];
  const family = (name: string, type: string, help: string) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  };
  const stats = [...input.stats].sort((a, b) => a.volume.localeCompare(b.volume));

  const perOp = (name: string, help: string, arr: (s: VolumeStats) => Float64Array) => {
    family(name, "counter", help);
    for (const s of stats) {
      OP_KINDS.forEach((op, i) => {
        out.push(`${name}${labels({ volume: s.volume, op })} ${num(arr(s)[i])}`);
      });
    }
  };
  perOp(
    "ballast_volume_ops_total",
    "NBD requests completed, by volume and operation.",
    (s) => s.ops,
  );
  perOp(
    "ballast_volume_bytes_total",
    "Bytes transferred or affected by successful NBD requests.",
    (s) => s.bytes,
  );
  perOp("ballast_volume_errors_total", "NBD requests that failed.", (s) => s.errors);

  const h = "ballast_volume_request_duration_seconds";
  family(h, "histogram", "Service time of NBD requests.");
  for (const s of stats) {
    OP_KINDS.forEach((op, i) => {
      const cum = s.cumulativeBuckets(i);
      LATENCY_BUCKETS.forEach((le, b) => {
        out.push(`${h}_bucket${labels({ volume: s.volume, op, le: String(le) })} ${num(cum[b])}`);
      });
      const count = cum[cum.length - 1];
      out.push(`${h}_bucket${labels({ volume: s.volume, op, le: "+Inf" })} ${num(count)}`);
      out.push(`${h}_sum${labels({ volume: s.volume, op })} ${num(s.latencySum[i])}`);
      out.push(`${h}_count${labels({ volume: s.volume, op })} ${num(count)}`);
    });
  }

  family("ballast_volume_protocol_errors_total", "counter", "Malformed NBD requests seen.");
  for (const s of stats) {
    out.push(
      `ballast_volume_protocol_errors_total${labels({ volume: s.volume })} ${
        num(s.protocolErrors)
      }`,
    );
  }
  family("ballast_volume_connections", "gauge", "Open NBD connections per volume.");
  for (const s of stats) {
    out.push(`ballast_volume_connections${labels({ volume: s.volume })} ${num(s.connections)}`);
  }
  family("ballast_volume_size_bytes", "gauge", "Provisioned size of each volume.");
  for (const v of input.volumes) {
    out.push(`ballast_volume_size_bytes${labels({ volume: v.name })} ${num(v.sizeBytes)}`);
  }
  family(
    "ballast_volume_state",
    "gauge",
    "1 for each volume's state (failed: its node could not open its copy; volume get says why).",
  );
  for (const v of input.volumes) {
    for (const state of VOLUME_STATES) {
      out.push(
        `ballast_volume_state${labels({ volume: v.name, state })} ${v.state === state ? 1 : 0}`,
      );
    }
  }
  family("ballast_volume_allocated_bytes", "gauge", "Bytes allocated on disk for each volume.");
  for (const v of input.volumes) {
    if (v.allocatedBytes === undefined) continue;
    out.push(
      `ballast_volume_allocated_bytes${labels({ volume: v.name })} ${num(v.allocatedBytes)}`,
    );
  }
  renderReplication(input.groups ?? [], family, out);
  renderClusterMetrics(input, family, labels, out);
  family("ballast_nbd_connections", "gauge", "Open connections on the NBD listener.");
  out.push(`ballast_nbd_connections ${num(input.nbdConnections)}`);
  const pool = input.pool;
  if (pool) {
    family("ballast_data_workers", "gauge", "Data worker threads serving NBD connections.");
    out.push(`ballast_data_workers ${num(pool.size)}`);
    family("ballast_data_workers_max", "gauge", "Most data workers the pool may grow to.");
    out.push(`ballast_data_workers_max ${num(pool.max)}`);
    family(
      "ballast_data_worker_connections",
      "gauge",
      "NBD connections served by each data worker.",
    );
    for (const w of pool.workers) {
      out.push(
        `ballast_data_worker_connections${labels({ worker: String(w.id) })} ${num(w.connections)}`,
      );
    }
    family(
      "ballast_data_worker_busy_ratio",
      "gauge",
      "Share of the last second each data worker's thread worked, of the time it had a CPU (run / (wall - run-queue wait)).",
    );
    for (const w of pool.workers) {
      out.push(
        `ballast_data_worker_busy_ratio${labels({ worker: String(w.id) })} ${
          num(Math.round(w.busy * 1000) / 1000)
        }`,
      );
    }
    family("ballast_data_pool_resizes_total", "counter", "Data worker pool resizes.");
    out.push(
      `ballast_data_pool_resizes_total${labels({ direction: "grow" })} ${num(pool.resizes.grow)}`,
    );
    out.push(
      `ballast_data_pool_resizes_total${labels({ direction: "shrink" })} ${
        num(pool.resizes.shrink)
      }`,
    );
    family(
      "ballast_data_workers_replaced_total",
      "counter",
      "Data workers that died and were replaced.",
    );
    out.push(`ballast_data_workers_replaced_total ${num(pool.replaced)}`);
  }

  family("ballast_api_requests_total", "counter", "API requests by method, route and status.");
  for (const e of input.api.entries()) {
    out.push(
      `ballast_api_requests_total${
        labels({ method: e.method, route: e.route, status: e.status })
      } ${num(e.n)}`,
    );
  }
  renderNodeMetrics(input, family, labels, out);
  family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  out.push(`process_resident_memory_bytes ${num(input.rssBytes)}`);
  family("process_start_time_seconds", "gauge", "Start time of the process since the epoch.");
  out.push(`process_start_time_seconds ${num(Math.round(PROCESS_START_SECONDS * 1000) / 1000)}`);
  return out.join("\n") + "\n";
}

const MEMBER_STATES: MemberState[] = ["in-sync", "resyncing", "out-of-sync", "down"];

/**
 * The replication families (docs/CLUSTER.md, "Watching replication"), one series per member
 * of each group this node is master of: the master reports them, so a volume is counted
 * once however many nodes are scraped.
 */
function renderReplication(
  groups: ServedGroup[],
  family: (name: string, type: string, help: string) => void,
  out: string[],
): void {
  /** A gauge with a series per member for which `value` is defined. */
  const perMember = (
    name: string,
    help: string,
    value: (m: ServedGroup["members"][number]) => number | undefined,
  ) => {
    family(name, "gauge", help);
    for (const g of groups) {
      for (const m of g.members) {
        const v = value(m);
        if (v !== undefined) {
          out.push(`${name}${labels({ volume: g.volume, member: m.node })} ${v}`);
        }
      }
    }
  };
  family(
    "ballast_volume_master_fenced",
    "gauge",
    "1 when this node's master of the volume is refused by a member that has seen a newer " +
      "epoch than the group record's: the record is behind its members and nobody serves it.",
  );
  for (const g of groups) {
    out.push(`ballast_volume_master_fenced${labels({ volume: g.volume })} ${g.fenced ? 1 : 0}`);
  }
  family(
    "ballast_replication_member_state",
    "gauge",
    "State of each member of a replicated volume, reported by its master: 1 for the " +
      "member's current state (in-sync, resyncing, out-of-sync, down), 0 for the others.",
  );
  for (const g of groups) {
    for (const m of g.members) {
      for (const state of MEMBER_STATES) {
        const l = labels({ volume: g.volume, member: m.node, role: m.role, state });
        out.push(`ballast_replication_member_state${l} ${m.state === state ? 1 : 0}`);
      }
    }
  }
  perMember(
    "ballast_replication_lag_bytes",
    "Replication lag of each member in bytes, reported by the volume's master. Replication " +
      "is synchronous: an in-sync member holds every acknowledged write (0); a resyncing " +
      "member lags by the bytes of the volume its resync has still to compare in the " +
      "current pass; an out-of-sync or down member by the volume's size (none of it is " +
      "known to be equal).",
    (m) => m.lagBytes,
  );
  perMember(
    "ballast_replication_lag_seconds",
    "Seconds since each member was last in sync (0 while in sync), reported by the " +
      "volume's master; absent for a member whose leaving the in-sync set was not recorded.",
    (m) => m.lagSeconds,
  );
  perMember(
    "ballast_resync_sent_bytes",
    "Bytes sent as data by the resync (Delta Sync) of a member under way, all its passes " +
      "so far (zeroed ranges not counted); present only while a resync runs, and a new " +
      "resync starts from 0.",
    (m) => m.resync?.sentBytes,
  );
  perMember(
    "ballast_resync_remaining_bytes",
    "Bytes of the volume the resync of a member under way has still to compare in its " +
      "current pass (a later pass compares the whole volume again, quickly where nothing " +
      "changed); present only while a resync runs.",
    (m) => m.resync?.bytesLeft,
  );
}
