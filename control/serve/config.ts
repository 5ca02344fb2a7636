/**
 * Node configuration: one pure `resolveConfig()` turns command-line flags, the
 * environment and an optional config file into a fully defaulted `ServeConfig`.
 * Precedence: flag > environment > file > default. Every bad value throws
 * InvalidArgumentError naming the flag and the value.
 * @module
 */

import { parseDuration } from "../../mod/duration.ts";
import { InvalidArgumentError } from "../../mod/errors.ts";
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
import { checkLabels } from "../volumes/mod.ts";

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
  /** An extra plaintext NBD listener on loopback for local attach while TLS is on. */
  nbdLocalListen: ListenAddress | undefined;
  /** Serve GET /v1/health without a client certificate. */
  apiAnonymousHealth: boolean;
  /** Lifetime of the certificates the node issues (renewed at 2/3 of it). */
  certTtlSeconds: number;
  /** Cluster mode: the etcd to keep state in; undefined runs the embedded single-node store. */
  etcd: EtcdConfig | undefined;
  /** `--join TOKEN`: join the cluster's CA through a member (needs --etcd and TLS). */
  joinToken?: string;
  /** Node labels (`--label zone=a,rack=r1`), used by placement (`--spread-by`). */
  labels: Record<string, string>;
}

/** Where cluster state lives (`--etcd`). File paths are read by serve(), not here. */
export interface EtcdConfig {
  /** Client URLs, all http:// or all https://, without trailing slash. */
  endpoints: string[];
  /** PEM file of the CA that signed etcd's server certificate; required for https. */
  caFile: string | undefined;
  /** PEM client certificate and key (etcd --client-cert-auth); both or neither. */
  certFile: string | undefined;
  keyFile: string | undefined;
  /** Key namespace in etcd, so several clusters (or other users) can share one etcd. */
  prefix: string;
}

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
  "api-anonymous-health"?: string;
  "cert-ttl"?: string;
  etcd?: string;
  "etcd-cacert"?: string;
  "etcd-cert"?: string;
  "etcd-key"?: string;
  "etcd-prefix"?: string;
  join?: string;
  label?: string;
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
  apiAnonymousHealth?: string;
  certTtlSeconds?: number | string;
  etcd?: string;
  etcdCacert?: string;
  etcdCert?: string;
  etcdKey?: string;
  etcdPrefix?: string;
  joinToken?: string;
  labels?: string;
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
  apiAnonymousHealth: {
    flag: "api-anonymous-health",
    env: "BALLAST_API_ANONYMOUS_HEALTH",
    default: "false",
  },
  certTtlSeconds: { flag: "cert-ttl", env: "BALLAST_CERT_TTL", default: "30d" },
  etcd: { flag: "etcd", env: "BALLAST_ETCD", default: undefined },
  etcdCacert: { flag: "etcd-cacert", env: "BALLAST_ETCD_CACERT", default: undefined },
  etcdCert: { flag: "etcd-cert", env: "BALLAST_ETCD_CERT", default: undefined },
  etcdKey: { flag: "etcd-key", env: "BALLAST_ETCD_KEY", default: undefined },
  etcdPrefix: { flag: "etcd-prefix", env: "BALLAST_ETCD_PREFIX", default: "/ballast-cluster" },
  joinToken: { flag: "join", env: "BALLAST_JOIN_TOKEN", default: undefined },
  labels: { flag: "label", env: "BALLAST_LABELS", default: undefined },
} as const;

const NODE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const LOG_FORMATS: readonly LogFormat[] = ["json", "pretty"];

/**
 * Resolves the node configuration. Pure apart from the hostname, which is only
 * looked up (via `facts.hostname`, default `Deno.hostname()`) when no node name is set.
 * @throws InvalidArgumentError naming the flag and value.
 */
export function resolveConfig(
  flags: ServeFlags,
  env: Record<string, string | undefined>,
  file: ConfigFile = {},
  facts: { hostname?: () => string } = {},
): ServeConfig {
  const pick = (key: keyof typeof SETTINGS): { value: string | undefined; source: string } => {
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
  if (name === SETTINGS.nodeName.default) {
    name = (facts.hostname ?? Deno.hostname)().toLowerCase().split(".")[0];
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
  const ttlMatch = /^\s*(\d+)\s*s?\s*$/.exec(ttl.value!);
  const ttlSeconds = ttlMatch ? Number(ttlMatch[1]) : NaN;
  if (!(ttlSeconds >= 1 && ttlSeconds <= 3600)) {
    throw new InvalidArgumentError(
      `invalid ${ttl.source} "${ttl.value}": expected whole seconds between 1 and 3600, e.g. 10s`,
      { field: SETTINGS.nodeLeaseTtlSeconds.flag },
    );
  }

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
  const anon = pick("apiAnonymousHealth");
  const certTtl = pick("certTtlSeconds");
  const etcd = resolveEtcd(pick);
  const join = pick("joinToken");
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
    apiAnonymousHealth: parseBool(anon.value!, anon.source, SETTINGS.apiAnonymousHealth.flag),
    certTtlSeconds: parseDuration(certTtl.value!, certTtl.source, SETTINGS.certTtlSeconds.flag),
    etcd,
    ...(join.value ? { joinToken: join.value } : {}),
    labels: resolveLabels(pick("labels")),
  };
}

/** Parses "zone=a,rack=r1" into labels; errors name the source and the bad entry. */
function resolveLabels(
  text: { value: string | undefined; source: string },
): Record<string, string> {
  const labels: Record<string, string> = {};
  if (text.value === undefined || text.value.trim() === "") return labels;
  for (const part of text.value.split(",")) {
    const item = part.trim();
    const i = item.indexOf("=");
    if (i <= 0) {
      throw new InvalidArgumentError(
        `invalid ${text.source} "${text.value}": entry "${item}" is not KEY=VALUE (e.g. zone=a,rack=r1)`,
        { field: SETTINGS.labels.flag },
      );
    }
    labels[item.slice(0, i)] = item.slice(i + 1);
  }
  try {
    return checkLabels(labels, "label");
  } catch (err) {
    throw new InvalidArgumentError(`invalid ${text.source}: ${(err as Error).message}`, {
      field: SETTINGS.labels.flag,
      cause: err,
    });
  }
}

type Pick = (key: keyof typeof SETTINGS) => { value: string | undefined; source: string };

/** The `--etcd*` settings; undefined without --etcd (embedded store). */
function resolveEtcd(pick: Pick): EtcdConfig | undefined {
  const urls = pick("etcd");
  const given = (key: "etcdCacert" | "etcdCert" | "etcdKey") => {
    const p = pick(key);
    return p.value === undefined || p.value === "" ? undefined : { ...p, value: p.value };
  };
  const ca = given("etcdCacert");
  const cert = given("etcdCert");
  const key = given("etcdKey");
  if (urls.value === undefined || urls.value.trim() === "") {
    const stray = ca ?? cert ?? key;
    if (stray) {
      throw new InvalidArgumentError(
        `${stray.source} "${stray.value}" needs --etcd: the etcd TLS files only apply in cluster mode`,
        { field: SETTINGS.etcd.flag },
      );
    }
    return undefined;
  }
  const endpoints = parseEtcdUrls(urls.value, urls.source);
  const https = endpoints[0].startsWith("https:");
  if (https && !ca) {
    throw new InvalidArgumentError(
      `${urls.source} "${urls.value}" uses https: pass --etcd-cacert FILE (the CA of etcd's server certificate)`,
      { field: SETTINGS.etcdCacert.flag },
    );
  }
  if (!https) {
    const tlsOnly = ca ?? cert ?? key;
    if (tlsOnly) {
      throw new InvalidArgumentError(
        `${tlsOnly.source} "${tlsOnly.value}" only applies to https etcd URLs; ${urls.source} is "${urls.value}"`,
        { field: SETTINGS.etcd.flag },
      );
    }
  }
  if ((cert === undefined) !== (key === undefined)) {
    const [have, missing] = cert ? [cert, SETTINGS.etcdKey.flag] : [key!, SETTINGS.etcdCert.flag];
    throw new InvalidArgumentError(
      `${have.source} "${have.value}" needs --${missing} too: the etcd client certificate and key go together`,
      { field: missing },
    );
  }
  const prefix = pick("etcdPrefix");
  const p = prefix.value!;
  if (!/^\/[A-Za-z0-9._/-]*$/.test(p) || p.endsWith("/") && p.length > 1 || p.includes("//")) {
    throw new InvalidArgumentError(
      `invalid ${prefix.source} "${p}": expected a key path such as /ballast-cluster ` +
        `(starts with "/", no trailing "/", characters A-Z a-z 0-9 . _ - /)`,
      { field: SETTINGS.etcdPrefix.flag },
    );
  }
  return {
    endpoints,
    caFile: ca?.value,
    certFile: cert?.value,
    keyFile: key?.value,
    prefix: p === "/" ? "" : p,
  };
}

/**
 * Parses comma-separated etcd client URLs: http(s)://HOST:PORT, all the same scheme.
 * @throws InvalidArgumentError naming the source (flag or env) and the bad URL.
 */
export function parseEtcdUrls(text: string, source = "--etcd"): string[] {
  const parts = text.split(",").map((u) => u.trim());
  const endpoints: string[] = [];
  for (const part of parts) {
    const bad = (why: string) =>
      new InvalidArgumentError(`invalid ${source} URL "${part}": ${why}`, {
        field: SETTINGS.etcd.flag,
      });
    if (part === "") throw bad("empty entry in the comma-separated list");
    let url: URL;
    try {
      url = new URL(part);
    } catch {
      throw bad("expected http://HOST:PORT or https://HOST:PORT");
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw bad(`scheme must be http or https, not ${url.protocol.replace(/:$/, "")}`);
    }
    if (
      url.username || url.password || (url.pathname !== "/" && url.pathname !== "") ||
      url.search || url.hash
    ) {
      throw bad("expected only scheme, host and port (no user, path or query)");
    }
    if (!/:\d+\/?$/.test(part)) throw bad("missing port, e.g. http://127.0.0.1:2379");
    endpoints.push(`${url.protocol}//${part.slice(part.indexOf("//") + 2).replace(/\/$/, "")}`);
  }
  const schemes = new Set(endpoints.map((e) => e.slice(0, e.indexOf(":"))));
  if (schemes.size > 1) {
    throw new InvalidArgumentError(
      `invalid ${source} "${text}": mixes http and https URLs; use one scheme for every member`,
      { field: SETTINGS.etcd.flag },
    );
  }
  return endpoints;
}

function parseBool(text: string, source: string, field: string): boolean {
  const t = text.trim().toLowerCase();
  if (["on", "true", "yes", "1"].includes(t)) return true;
  if (["off", "false", "no", "0"].includes(t)) return false;
  throw new InvalidArgumentError(`invalid ${source} "${text}": expected on or off`, { field });
}
