/**
 * The settings of `ballast serve`: each one's flag, environment variable, config file key
 * and default, and the shapes flags and a config file arrive in. resolveConfig() (config.ts)
 * reads them in the order flag > environment > file > default.
 * @module
 */

/** Flags as parsed from the command line (strings, undefined when not given). */
export interface ServeFlags {
  "data-dir"?: string;
  "api-listen"?: string;
  "nbd-listen"?: string;
  "node-name"?: string;
  "log-level"?: string;
  "log-format"?: string;
  "node-lease-ttl"?: string;
  tls?: string;
  "nbd-local-listen"?: string;
  "nbd-unix"?: string;
  "nbd-unix-mode"?: string;
  "nbd-unix-group"?: string;
  "nbd-unix-ro"?: string;
  "api-anonymous-health"?: string;
  "cert-ttl"?: string;
  etcd?: string;
  "etcd-cacert"?: string;
  "etcd-cert"?: string;
  "etcd-key"?: string;
  "etcd-prefix"?: string;
  join?: string;
  "new-cluster"?: string;
  label?: string;
  "data-workers"?: string;
  "peer-listen"?: string;
  "resync-rate"?: string;
  "replace-after"?: string;
  "crash-detection"?: string;
}

/** Settings read from a config file; same meaning as the flags. */
export interface ConfigFile {
  dataDir?: string;
  apiListen?: string;
  nbdListen?: string;
  nodeName?: string;
  logLevel?: string;
  logFormat?: string;
  nodeLeaseTtlSeconds?: number | string;
  tls?: string;
  nbdLocalListen?: string;
  nbdUnix?: string;
  nbdUnixMode?: string;
  nbdUnixGroup?: string;
  nbdUnixRo?: string;
  apiAnonymousHealth?: string;
  certTtlSeconds?: number | string;
  etcd?: string;
  etcdCacert?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdPrefix?: string;
  joinToken?: string;
  newCluster?: string;
  labels?: string;
  dataWorkers?: string | number;
  peerListen?: string;
  resyncRate?: string;
  replaceAfter?: string;
  crashDetection?: string;
}

/** The settings: flag name, environment variable, file key, default. */
export const SETTINGS = {
  dataDir: { flag: "data-dir", env: "BALLAST_DATA_DIR", default: undefined },
  apiListen: { flag: "api-listen", env: "BALLAST_API_LISTEN", default: "127.0.0.1:5705" },
  nbdListen: { flag: "nbd-listen", env: "BALLAST_NBD_LISTEN", default: "127.0.0.1:10809" },
  nodeName: { flag: "node-name", env: "BALLAST_NODE_NAME", default: "(hostname)" },
  logLevel: { flag: "log-level", env: "BALLAST_LOG_LEVEL", default: "info" },
  logFormat: { flag: "log-format", env: "BALLAST_LOG_FORMAT", default: "json" },
  nodeLeaseTtlSeconds: { flag: "node-lease-ttl", env: "BALLAST_NODE_LEASE_TTL", default: "10s" },
  tls: { flag: "tls", env: "BALLAST_TLS", default: "on" },
  nbdLocalListen: { flag: "nbd-local-listen", env: "BALLAST_NBD_LOCAL_LISTEN", default: undefined },
  nbdUnix: { flag: "nbd-unix", env: "BALLAST_NBD_UNIX", default: "DATA_DIR/nbd.sock" },
  nbdUnixMode: { flag: "nbd-unix-mode", env: "BALLAST_NBD_UNIX_MODE", default: "0660" },
  nbdUnixGroup: { flag: "nbd-unix-group", env: "BALLAST_NBD_UNIX_GROUP", default: undefined },
  nbdUnixRo: { flag: "nbd-unix-ro", env: "BALLAST_NBD_UNIX_RO", default: undefined },
  apiAnonymousHealth: {
    flag: "api-anonymous-health",
    env: "BALLAST_API_ANONYMOUS_HEALTH",
    default: "off",
  },
  certTtlSeconds: { flag: "cert-ttl", env: "BALLAST_CERT_TTL", default: "30d" },
  etcd: { flag: "etcd", env: "BALLAST_ETCD", default: undefined },
  etcdCacert: { flag: "etcd-cacert", env: "BALLAST_ETCD_CACERT", default: undefined },
  etcdCert: { flag: "etcd-cert", env: "BALLAST_ETCD_CERT", default: undefined },
  etcdKey: { flag: "etcd-key", env: "BALLAST_ETCD_KEY", default: undefined },
  etcdPrefix: { flag: "etcd-prefix", env: "BALLAST_ETCD_PREFIX", default: "/ballast-cluster" },
  joinToken: { flag: "join", env: "BALLAST_JOIN_TOKEN", default: undefined },
  newCluster: { flag: "new-cluster", env: "BALLAST_NEW_CLUSTER", default: "off" },
  labels: { flag: "label", env: "BALLAST_LABELS", default: undefined },
  dataWorkers: { flag: "data-workers", env: "BALLAST_DATA_WORKERS", default: "auto" },
  peerListen: { flag: "peer-listen", env: "BALLAST_PEER_LISTEN", default: undefined },
  resyncRate: { flag: "resync-rate", env: "BALLAST_RESYNC_RATE", default: "unlimited" },
  replaceAfter: { flag: "replace-after", env: "BALLAST_REPLACE_AFTER", default: "5m" },
  crashDetection: { flag: "crash-detection", env: "BALLAST_CRASH_DETECTION", default: "on" },
} as const;

/** Looks a setting up in that order: its value and where it came from (for messages). */
export type Pick = (key: keyof typeof SETTINGS) => { value: string | undefined; source: string };

/**
 * BALLAST_* variables that are not serve settings yet mean something: the CLI's
 * (BALLAST_API, BALLAST_CACERT, ...), the one-file program's cache, and knobs for tests and
 * debugging. Anything else starting with BALLAST_ is a typo to warn about.
 */
const OTHER_ENV = new Set([
  "BALLAST_API",
  "BALLAST_CACERT",
  "BALLAST_CERT",
  "BALLAST_KEY",
  "BALLAST_REQUEST_TIMEOUT",
  "BALLAST_CACHE_DIR",
  "BALLAST_BIN",
  "BALLAST_DEBUG_HOOKS",
  "BALLAST_DEBUG_POOL_TIMINGS",
  "BALLAST_FD_STREAMS",
  "BALLAST_FORWARDER",
  "BALLAST_ORPHAN_MIN_AGE_MS",
  "BALLAST_TEST_LOG",
  "BALLAST_TLS_DIRECT_READS",
]);

/**
 * The BALLAST_* names in `env` that nothing reads (a misspelt setting in ballast.env is
 * otherwise silently ignored), each with the setting it most likely meant, if one is close.
 */
export function unknownBallastEnv(
  env: Record<string, string>,
): { name: string; meant?: string }[] {
  const known = Object.values(SETTINGS).map((s) => s.env as string);
  return Object.keys(env).filter((n) =>
    n.startsWith("BALLAST_") && !known.includes(n) && !OTHER_ENV.has(n)
  ).sort().map((name) => {
    const [best] = known.map((k) => ({ k, d: editDistance(name, k) })).sort((a, b) => a.d - b.d);
    return best && best.d <= 3 ? { name, meant: best.k } : { name };
  });
}

/** Levenshtein distance of two short strings. */
function editDistance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) {
      next[j] = Math.min(row[j] + 1, next[j - 1] + 1, row[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    row = next;
  }
  return row[b.length];
}
