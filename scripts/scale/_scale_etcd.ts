/**
 * etcd's own counters for scripts/scale/scale_sim.ts, read from /metrics on its client URL: gRPC
 * messages received by method (one per unary call or stream message), mvcc writes, raft
 * proposals, watch events sent and bytes sent to clients. A window is two samples; its
 * rates are the differences divided by the seconds between them.
 * @module
 */

/** Prometheus text -> series ("name{labels}") -> value. */
export type Sample = { at: number; series: Map<string, number> };

export async function scrape(url: string): Promise<Sample> {
  const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`${url}/metrics: HTTP ${res.status}`);
  const text = await res.text();
  const series = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?)\s+(\S+)/.exec(line);
    if (m) series.set(m[1], Number(m[2]));
  }
  return { at: Date.now(), series };
}

/** Counters summed over their labels, reported per window. */
const COUNTERS: Record<string, string> = {
  puts: "etcd_mvcc_put_total",
  txns: "etcd_mvcc_txn_total",
  ranges: "etcd_mvcc_range_total",
  deletes: "etcd_mvcc_delete_total",
  proposals: "etcd_server_proposals_committed_total",
  watchEvents: "etcd_debugging_mvcc_events_total",
  sentBytes: "etcd_network_client_grpc_sent_bytes_total",
  receivedBytes: "etcd_network_client_grpc_received_bytes_total",
  leaseRenewals: "etcd_debugging_lease_renewed_total",
};

/** What etcd did between two samples: totals and per-second rates. */
export interface Window {
  seconds: number;
  /** All gRPC messages received (requests), total. */
  requests: number;
  /** "KV.Txn", "Lease.LeaseKeepAlive", ... -> messages received. */
  byMethod: Record<string, number>;
  /** puts, txns, ranges, deletes, proposals, watchEvents, sentBytes, ... -> total. */
  counters: Record<string, number>;
  /** The same as rates per second. */
  rates: { requests: number; byMethod: Record<string, number>; counters: Record<string, number> };
  /** Gauges at the end: keys, watchers, db size in use. */
  gauges: Record<string, number>;
}

const label = (series: string, key: string) =>
  new RegExp(`${key}="([^"]*)"`).exec(series)?.[1] ?? "";

export function windowOf(before: Sample, after: Sample): Window {
  const seconds = (after.at - before.at) / 1000;
  const byMethod: Record<string, number> = {};
  const counters: Record<string, number> = {};
  const names = new Map(Object.entries(COUNTERS).map(([k, v]) => [v, k]));
  let requests = 0;
  for (const [series, v] of after.series) {
    const delta = v - (before.series.get(series) ?? 0);
    const name = series.replace(/\{.*/, "");
    if (name === "grpc_server_msg_received_total") {
      const service = label(series, "grpc_service").replace(/^etcdserverpb\./, "");
      const method = `${service}.${label(series, "grpc_method")}`;
      byMethod[method] = (byMethod[method] ?? 0) + delta;
      requests += delta;
    }
    const key = names.get(name);
    if (key) counters[key] = (counters[key] ?? 0) + delta;
  }
  const per = (o: Record<string, number>) =>
    Object.fromEntries(Object.entries(o).map(([k, v]) => [k, v / seconds]));
  const gauge = (name: string) => after.series.get(name) ?? NaN;
  return {
    seconds,
    requests,
    byMethod: Object.fromEntries(Object.entries(byMethod).filter(([, v]) => v > 0)),
    counters,
    rates: { requests: requests / seconds, byMethod: per(byMethod), counters: per(counters) },
    gauges: {
      keys: gauge("etcd_debugging_mvcc_keys_total"),
      watchers: gauge("etcd_debugging_mvcc_watcher_total"),
      dbInUseBytes: gauge("etcd_mvcc_db_total_size_in_use_in_bytes"),
    },
  };
}

/** The busiest one-second-ish step of a series of samples: requests/s and puts/s there. */
export function peakOf(samples: Sample[]): { requestsPerS: number; putsPerS: number } {
  let requestsPerS = 0;
  let putsPerS = 0;
  for (let i = 1; i < samples.length; i++) {
    const w = windowOf(samples[i - 1], samples[i]);
    if (w.seconds <= 0) continue;
    requestsPerS = Math.max(requestsPerS, w.rates.requests);
    putsPerS = Math.max(putsPerS, w.rates.counters.puts ?? 0);
  }
  return { requestsPerS, putsPerS };
}
