/**
 * Node configuration: one pure `resolveConfig()` turns command-line flags, the
 * environment and an optional config file into a fully defaulted `ServeConfig`.
 * Precedence: flag > environment > file > default. Every bad value throws
 * InvalidArgumentError naming the flag and the value.
 * @module
 */

import { parseDuration } from "../../mod/duration.ts";
import { parseSize } from "../../mod/size.ts";
import { refuseOverlappingListeners } from "./_listen_overlap.ts";
import { errorMessage, FailedPreconditionError, InvalidArgumentError } from "../../mod/errors.ts";
import {
  formatHostPort,
  isLoopback,
  type ListenAddress,
  LOG_LEVELS,
  type LogFormat,
  type LogLevel,
  parseListen,
} from "../common/mod.ts";
import { parseJoinToken } from "../cluster/mod.ts";
import { checkLabels, parseLabelList } from "../volumes/mod.ts";
import { type EtcdConfig, resolveEtcd } from "./_etcd_config.ts";
import { conflictMessage, recordedNodeName } from "./_node_identity.ts";
import { MAX_UNIX_PATH_BYTES, type UnixListenAt, usableCores } from "../../data/mod.ts";
import { join, resolve } from "node:path";
import { type ConfigFile, type Pick, type ServeFlags, SETTINGS } from "./settings.ts";

/** Everything `ballast serve` needs, fully defaulted. */
export interface ServeConfig {
  dataDir: string;
  apiListen: ListenAddress;
  nbdListen: ListenAddress;
  nodeName: string;
  logLevel: LogLevel;
  logFormat: LogFormat;
  /** TTL of the node's liveness lease in the state store. */
  nodeLeaseTtlSeconds: number;
  /**
   * TLS with client certificates on the API and NBD listeners (default). Off is only
   * accepted when every listener is on loopback: the operator's explicit "plaintext
   * for local attach".
   */
  tls: boolean;
  /**
   * An extra plaintext NBD listener on loopback for local attach while TLS is on: an explicit
   * opt-in, since any user of the host may connect to it.
   */
  nbdLocalListen: ListenAddress | undefined;
  /**
   * Local attach over a Unix socket (plaintext NBD; default DATA_DIR/nbd.sock, mode 0660):
   * the socket file's mode and group decide who may connect. Undefined: `--nbd-unix off`.
   */
  nbdUnix: UnixListenAt | undefined;
  /** `--nbd-unix-ro PATH`: a second socket (same mode and group) serving every volume read-only. */
  nbdUnixRo: UnixListenAt | undefined;
  /** Serve GET /v1/health without a client certificate. */
  apiAnonymousHealth: boolean;
  /** Lifetime of the certificates the node issues (renewed at 2/3 of it). */
  certTtlSeconds: number;
  /** Cluster mode: the etcd to keep state in; undefined runs the embedded single-node store. */
  etcd: EtcdConfig | undefined;
  /** `--join TOKEN`: join the cluster's CA through a member (needs --etcd and TLS). */
  joinToken?: string;
  /**
   * `--new-cluster on`: a node that was a cluster member may found a cluster where etcd has
   * none (an etcd lost and rebuilt); without it that is refused (control/cluster/bootstrap.ts).
   */
  newCluster?: boolean;
  /** Node labels (`--label zone=a,rack=r1`), used by placement (`--spread-by`). */
  labels: Record<string, string>;
  /**
   * NBD served by a pool of data workers of `min`..`max` workers (`--data-workers auto`: 1 to
   * the usable cores; N: exactly N); undefined serves on the main thread (`0` or `1`).
   */
  dataWorkers: { min: number; max: number } | undefined;
  /**
   * The peer channel (replication between the nodes of a cluster, mutual TLS with node
   * certificates): `--peer-listen`, by default the NBD listener's host on port 10811 (a free
   * port when the NBD port is 0). Used in cluster mode with TLS only.
   */
  peerListen: ListenAddress;
  /** `--resync-rate`: most bytes per second this node sends resyncing replicas; 0: no limit. */
  resyncRateBytesPerSecond: number;
  /**
   * `--replace-after`: a group member absent (down, or out of sync and unreachable) this long
   * is replaced by its master on another node (cluster mode).
   */
  replaceAfterSeconds: number;
  /**
   * `--crash-detection`: when a peer connection from a node ends and its listeners refuse
   * connections, revoke its liveness lease at once (control/nodes/crash_watch.ts).
   */
  crashDetection: boolean;
}

const NODE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const LOG_FORMATS: readonly LogFormat[] = ["json", "pretty"];

/**
 * Resolves the node configuration. Pure apart from the data directory's recorded node name
 * (`facts.recordedNodeName`) and the hostname, which is only looked up (via `facts.hostname`,
 * default `Deno.hostname()`) when no node name is set or recorded.
 * @throws InvalidArgumentError naming the flag and value.
 * @throws FailedPreconditionError when the data directory belongs to another node.
 */
export function resolveConfig(
  flags: ServeFlags,
  env: Record<string, string | undefined>,
  file: ConfigFile = {},
  facts: {
    hostname?: () => string;
    cores?: () => number;
    recordedNodeName?: typeof recordedNodeName;
  } = {},
): ServeConfig {
  const pick: Pick = (key) => {
    const s = SETTINGS[key];
    const fromFlag = flags[s.flag];
    if (fromFlag !== undefined) return { value: fromFlag, source: `--${s.flag}` };
    const fromEnv = env[s.env];
    if (fromEnv !== undefined && fromEnv !== "") return { value: fromEnv, source: s.env };
    const fromFile = file[key];
    if (fromFile !== undefined) return { value: String(fromFile), source: `config file ${key}` };
    return { value: s.default, source: `default of --${s.flag}` };
  };

  const dataDir = pick("dataDir");
  if (dataDir.value === undefined || dataDir.value.trim() === "") {
    throw new InvalidArgumentError(
      "missing data directory: pass --data-dir DIR or set BALLAST_DATA_DIR",
      { field: "data-dir" },
    );
  }

  const nodeName = pick("nodeName");
  let name = nodeName.value ?? "";
  // A data directory keeps the name it was first started with (_node_identity.ts): without a
  // name set, that one; a name set that differs is refused.
  const recorded = (facts.recordedNodeName ?? recordedNodeName)(dataDir.value);
  if (name === SETTINGS.nodeName.default) {
    name = recorded?.name ?? (facts.hostname ?? Deno.hostname)().toLowerCase().split(".")[0];
  } else if (recorded !== undefined && recorded.name !== name) {
    throw new FailedPreconditionError(
      conflictMessage(dataDir.value, recorded, name, nodeName.source),
      { field: SETTINGS.nodeName.flag, recorded: recorded.name, requested: name },
    );
  }
  if (!NODE_NAME.test(name)) {
    throw new InvalidArgumentError(
      `invalid ${nodeName.source} "${name}": a node name is 1-63 characters of a-z, 0-9, ".", "_", "-", starting with a letter or digit`,
      { field: SETTINGS.nodeName.flag },
    );
  }

  const logLevel = pick("logLevel");
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel.value!)) {
    throw new InvalidArgumentError(
      `invalid ${logLevel.source} "${logLevel.value}": expected one of ${LOG_LEVELS.join(", ")}`,
      { field: SETTINGS.logLevel.flag },
    );
  }
  const logFormat = pick("logFormat");
  if (!(LOG_FORMATS as readonly string[]).includes(logFormat.value!)) {
    throw new InvalidArgumentError(
      `invalid ${logFormat.source} "${logFormat.value}": expected json or pretty`,
      { field: SETTINGS.logFormat.flag },
    );
  }

  const ttl = pick("nodeLeaseTtlSeconds");
  const ttlSeconds = parseDuration(ttl.value!, ttl.source, SETTINGS.nodeLeaseTtlSeconds.flag, {
    seconds: 3600,
    said: "1 hour",
  });

  const apiListenText = pick("apiListen");
  const nbdListenText = pick("nbdListen");
  const apiListen = parseListen(
    apiListenText.value!,
    apiListenText.source,
    SETTINGS.apiListen.flag,
  );
  const nbdListen = parseListen(
    nbdListenText.value!,
    nbdListenText.source,
    SETTINGS.nbdListen.flag,
  );

  const tlsText = pick("tls");
  const tls = parseBool(tlsText.value!, tlsText.source, SETTINGS.tls.flag);
  if (!tls) {
    // Plaintext only where nothing crosses a network: every listener on loopback.
    for (
      const [addr, src] of [[apiListen, apiListenText.source], [
        nbdListen,
        nbdListenText.source,
      ]] as const
    ) {
      if (!isLoopback(addr.host)) {
        throw new InvalidArgumentError(
          `--tls off is only allowed when every listener is on loopback (127.0.0.0/8, ::1, localhost); ${src} is ${
            formatHostPort(addr)
          }`,
          { field: SETTINGS.tls.flag },
        );
      }
    }
  }
  const localText = pick("nbdLocalListen");
  let nbdLocalListen: ListenAddress | undefined;
  if (localText.value !== undefined && localText.value !== "") {
    nbdLocalListen = parseListen(localText.value, localText.source, SETTINGS.nbdLocalListen.flag);
    if (!isLoopback(nbdLocalListen.host)) {
      throw new InvalidArgumentError(
        `invalid ${localText.source} "${localText.value}": the plaintext local-attach listener must be on loopback (127.0.0.0/8, ::1, localhost)`,
        { field: SETTINGS.nbdLocalListen.flag },
      );
    }
  }
  const { nbdUnix, nbdUnixRo } = resolveNbdUnix(pick, dataDir.value);
  const anon = pick("apiAnonymousHealth");
  const certTtl = pick("certTtlSeconds");
  const etcd = resolveEtcd(pick);
  if (!etcd) refuseClusterOnly(pick);
  const join = pick("joinToken");
  const crash = pick("crashDetection");
  if (join.value !== undefined && join.value !== "") {
    if (!etcd || !tls) {
      throw new InvalidArgumentError(
        `${join.source} needs ${!etcd ? "--etcd (cluster mode)" : "TLS on"}: a join token joins ` +
          "a cluster's CA",
        { field: SETTINGS.joinToken.flag },
      );
    }
    parseJoinToken(join.value, join.source);
  }
  const newClusterSetting = pick("newCluster");
  const newCluster = parseBool(
    newClusterSetting.value!,
    newClusterSetting.source,
    SETTINGS.newCluster.flag,
  );
  if (newCluster && (!etcd || !tls)) {
    throw new InvalidArgumentError(
      `${newClusterSetting.source} needs ${!etcd ? "--etcd (cluster mode)" : "TLS on"}: it ` +
        "founds a cluster's CA in etcd",
      { field: SETTINGS.newCluster.flag },
    );
  }
  const peerText = pick("peerListen");
  const peerListen = resolvePeerListen(peerText, nbdListen);
  refuseOverlappingListeners([
    { at: apiListen, source: apiListenText.source },
    { at: nbdListen, source: nbdListenText.source },
    { at: nbdLocalListen, source: localText.source },
    ...(etcd && tls ? [{ at: peerListen, source: peerText.source }] : []),
  ]);
  return {
    dataDir: dataDir.value,
    apiListen,
    nbdListen,
    nodeName: name,
    logLevel: logLevel.value as LogLevel,
    logFormat: logFormat.value as LogFormat,
    nodeLeaseTtlSeconds: ttlSeconds,
    tls,
    nbdLocalListen,
    nbdUnix,
    nbdUnixRo,
    apiAnonymousHealth: parseBool(anon.value!, anon.source, SETTINGS.apiAnonymousHealth.flag),
    certTtlSeconds: parseDuration(certTtl.value!, certTtl.source, SETTINGS.certTtlSeconds.flag),
    etcd,
    ...(join.value ? { joinToken: join.value } : {}),
    ...(newCluster ? { newCluster } : {}),
    labels: resolveLabels(pick("labels")),
    dataWorkers: resolveDataWorkers(pick("dataWorkers"), facts.cores ?? usableCores),
    peerListen,
    resyncRateBytesPerSecond: resolveRate(pick("resyncRate")),
    replaceAfterSeconds: resolveReplaceAfter(pick("replaceAfter")),
    crashDetection: parseBool(crash.value!, crash.source, SETTINGS.crashDetection.flag),
  };
}

/** Settings that mean something only in cluster mode (`--etcd`). */
const CLUSTER_ONLY = [
  "etcdPrefix",
  "labels",
  "peerListen",
  "nodeLeaseTtlSeconds",
  "replaceAfter",
  "resyncRate",
  "crashDetection",
] as const;

/**
 * Without --etcd a cluster-only setting is refused rather than ignored: a node meant for a
 * cluster whose --etcd (or BALLAST_ETCD) went missing would otherwise start alone on the
 * embedded store and look healthy.
 */
function refuseClusterOnly(pick: Pick): void {
  for (const key of CLUSTER_ONLY) {
    const p = pick(key);
    if (p.value === undefined || p.source.startsWith("default of ")) continue;
    throw new InvalidArgumentError(
      `${p.source} "${p.value}" needs --etcd: it applies in cluster mode only (without ` +
        "--etcd this node would run alone on the embedded store); is --etcd or BALLAST_ETCD " +
        "missing?",
      { field: SETTINGS.etcd.flag },
    );
  }
}

/**
 * The Unix-socket listeners: `--nbd-unix PATH|off` (default DATA_DIR/nbd.sock) and
 * `--nbd-unix-ro PATH` (none by default), their file mode (`--nbd-unix-mode`, octal, default
 * 0660) and group (`--nbd-unix-group NAME|GID`).
 */
function resolveNbdUnix(
  pick: Pick,
  dataDir: string,
): { nbdUnix?: UnixListenAt; nbdUnixRo?: UnixListenAt } {
  const modeText = pick("nbdUnixMode");
  const m = /^0?([0-7]{3})$/.exec(modeText.value!.trim());
  if (!m) {
    throw new InvalidArgumentError(
      `invalid ${modeText.source} "${modeText.value}": expected an octal file mode such as 0660 ` +
        "(owner and group may connect) or 0600 (owner only)",
      { field: SETTINGS.nbdUnixMode.flag },
    );
  }
  const group = pick("nbdUnixGroup").value?.trim();
  if (group !== undefined && group !== "" && !/^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$/.test(group)) {
    throw new InvalidArgumentError(
      `invalid --${SETTINGS.nbdUnixGroup.flag} "${group}": expected a group name or id`,
      { field: SETTINGS.nbdUnixGroup.flag },
    );
  }
  const access = { mode: parseInt(m[1], 8), ...(group ? { group } : {}) };
  const at = (key: "nbdUnix" | "nbdUnixRo"): UnixListenAt | undefined => {
    const text = pick(key);
    const value = text.value?.trim() ?? "";
    if (value === "off" || value === "") return undefined;
    const path = resolve(value === SETTINGS.nbdUnix.default ? join(dataDir, "nbd.sock") : value);
    const bytes = new TextEncoder().encode(path).length;
    if (bytes > MAX_UNIX_PATH_BYTES) {
      throw new InvalidArgumentError(
        `invalid ${text.source}: the Unix socket path ${path} is ${bytes} bytes, more than the ` +
          `${MAX_UNIX_PATH_BYTES} a socket address holds; pass --${SETTINGS[key].flag} with a ` +
          `shorter path (e.g. /run/ballast/nbd.sock) or --${SETTINGS[key].flag} off`,
        { field: SETTINGS[key].flag },
      );
    }
    return { path, ...access };
  };
  const nbdUnix = at("nbdUnix");
  const nbdUnixRo = at("nbdUnixRo");
  if (nbdUnix && nbdUnixRo && nbdUnix.path === nbdUnixRo.path) {
    throw new InvalidArgumentError(
      `--${SETTINGS.nbdUnixRo.flag} ${nbdUnixRo.path} is the --${SETTINGS.nbdUnix.flag} socket: ` +
        "the read-only socket needs a path of its own",
      { field: SETTINGS.nbdUnixRo.flag },
    );
  }
  return { ...(nbdUnix ? { nbdUnix } : {}), ...(nbdUnixRo ? { nbdUnixRo } : {}) };
}

/** Parses "zone=a,rack=r1" into labels; errors name the source and the bad entry. */
function resolveLabels(
  text: { value: string | undefined; source: string },
): Record<string, string> {
  if (text.value === undefined || text.value.trim() === "") return {};
  try {
    return checkLabels(parseLabelList([text.value], SETTINGS.labels.flag), "label");
  } catch (err) {
    throw new InvalidArgumentError(`invalid ${text.source}: ${errorMessage(err)}`, {
      field: SETTINGS.labels.flag,
      cause: err,
    });
  }
}

function parseBool(text: string, source: string, field: string): boolean {
  const t = text.trim().toLowerCase();
  if (["on", "true", "yes", "1"].includes(t)) return true;
  if (["off", "false", "no", "0"].includes(t)) return false;
  throw new InvalidArgumentError(
    `invalid ${source} "${text}": expected on or off (or true/false, yes/no, 1/0)`,
    { field },
  );
}

/** Most data workers an operator may ask for. */
const MAX_DATA_WORKERS = 256;

/**
 * `--data-workers`: "auto" is a pool from 1 to the usable cores (on the main thread when
 * there is a single core), 0 or 1 the main thread (today's single-threaded path), N >= 2 a
 * fixed pool of N, and MIN..MAX a pool between those bounds whatever the cores.
 */
function resolveDataWorkers(
  text: { value: string | undefined; source: string },
  cores: () => number,
): { min: number; max: number } | undefined {
  const v = String(text.value ?? "auto").trim().toLowerCase();
  if (v === "auto") {
    const n = cores();
    return n >= 2 ? { min: 1, max: n } : undefined;
  }
  const bad = () =>
    new InvalidArgumentError(
      `invalid ${text.source} "${text.value}": expected auto, a number of workers from 0 to ` +
        `${MAX_DATA_WORKERS} (0 or 1: serve NBD on the main thread), or MIN..MAX (1..4)`,
      { field: SETTINGS.dataWorkers.flag },
    );
  const range = /^(\d+)\.\.(\d+)$/.exec(v);
  if (range) {
    const [min, max] = [Number(range[1]), Number(range[2])];
    const why = min < 1
      ? "a pool has at least 1 worker (0 alone serves NBD on the main thread)"
      : max < min
      ? `MIN ${min} is above MAX ${max}`
      : max > MAX_DATA_WORKERS
      ? `at most ${MAX_DATA_WORKERS} workers`
      : undefined;
    if (why) {
      throw new InvalidArgumentError(`invalid ${text.source} "${text.value}": ${why}`, {
        field: SETTINGS.dataWorkers.flag,
      });
    }
    return { min, max };
  }
  const n = /^\d+$/.test(v) ? Number(v) : NaN;
  if (!(n >= 0 && n <= MAX_DATA_WORKERS)) throw bad();
  return n >= 2 ? { min: n, max: n } : undefined;
}

/**
 * A warning for a pool that may grow past the usable cores: every worker is a thread with its
 * own JavaScript heap (memory and start-up time), and threads beyond the cores serve no faster.
 */
export function dataWorkersWarning(
  pool: { min: number; max: number } | undefined,
  cores: number,
): string | undefined {
  if (!pool || pool.max <= cores) return undefined;
  return `the data worker pool (--data-workers, BALLAST_DATA_WORKERS) allows ${pool.max} workers on ${cores} usable core${
    cores === 1 ? "" : "s"
  }: each worker is a thread with its own heap (memory, start-up time) and workers beyond the ` +
    "cores serve no faster; auto sizes the pool to the cores";
}

/** Default port of the peer channel. */
const PEER_PORT = 10811;

function resolvePeerListen(
  text: { value: string | undefined; source: string },
  nbd: ListenAddress,
): ListenAddress {
  if (text.value === undefined || text.value === "") {
    return { host: nbd.host, port: nbd.port === 0 ? 0 : PEER_PORT };
  }
  return parseListen(text.value, text.source, SETTINGS.peerListen.flag);
}

/**
 * "unlimited", "0", or a size per second with a unit: "50MiB", "50MiB/s", "50M/s". A bare
 * number is refused: "10" would be 10 bytes a second, which no one means.
 */
function resolveRate(text: { value: string | undefined; source: string }): number {
  const v = (text.value ?? "unlimited").trim();
  if (v === "" || v === "unlimited" || v === "0") return 0;
  const refuse = (why: string, cause?: unknown) =>
    new InvalidArgumentError(
      `invalid ${text.source} "${v}": ${why}; expected a size per second such as 100MiB/s ` +
        `(2^20 bytes) or 100M/s (10^6), or unlimited (or 0) for no limit`,
      { field: SETTINGS.resyncRate.flag, ...(cause ? { cause } : {}) },
    );
  const size = v.replace(/\/s$/, "");
  if (/^\d+(\.\d+)?$/.test(size)) {
    throw refuse(`a rate needs a unit (${size} would be ${size} bytes a second)`);
  }
  try {
    return parseSize(size, text.source);
  } catch (err) {
    // parseSize's message starts with the same `invalid FLAG "VALUE": `: keep only the why.
    throw refuse(errorMessage(err).replace(`invalid ${text.source} "${size}": `, ""), err);
  }
}

/** `--replace-after`: a duration from 1 s ("90s", "5m", "2h"). */
function resolveReplaceAfter(text: { value: string | undefined; source: string }): number {
  return parseDuration(text.value ?? "5m", text.source, SETTINGS.replaceAfter.flag);
}
