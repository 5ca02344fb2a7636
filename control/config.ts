/**
 * Node configuration: one pure `resolveConfig()` turns command-line flags, the
 * environment and an optional config file into a fully defaulted `ServeConfig`.
 * Precedence: flag > environment > file > default. Every bad value throws
 * InvalidArgumentError naming the flag and the value.
 * @module
 */

import { InvalidArgumentError } from "../mod/errors.ts";
import { LOG_LEVELS } from "./log.ts";
import type { LogFormat, LogLevel } from "./log.ts";

/** A TCP listen address. */
export interface ListenAddress {
  host: string;
  port: number;
}

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

  const apiListen = pick("apiListen");
  const nbdListen = pick("nbdListen");
  return {
    dataDir: dataDir.value,
    apiListen: parseListen(apiListen.value!, apiListen.source, SETTINGS.apiListen.flag),
    nbdListen: parseListen(nbdListen.value!, nbdListen.source, SETTINGS.nbdListen.flag),
    nodeName: name,
    logLevel: logLevel.value as LogLevel,
    logFormat: logFormat.value as LogFormat,
    nodeLeaseTtlSeconds: ttlSeconds,
  };
}

/**
 * Parses "HOST:PORT", "[IPv6]:PORT" or ":PORT" (all interfaces). Port 0 picks a free port.
 * @throws InvalidArgumentError naming `what` (the flag) and the value.
 */
export function parseListen(
  text: string,
  what = "address",
  field = what.replace(/^--/, ""),
): ListenAddress {
  const bad = (why: string) =>
    new InvalidArgumentError(`invalid ${what} "${text}": ${why}`, { field });
  let host: string;
  let portText: string;
  const v6 = /^\[([0-9a-fA-F:.%a-zA-Z]+)\]:(.*)$/.exec(text);
  if (v6) {
    host = v6[1];
    portText = v6[2];
  } else {
    const i = text.lastIndexOf(":");
    if (i < 0) throw bad("expected HOST:PORT, e.g. 127.0.0.1:5705 or [::1]:5705");
    host = text.slice(0, i);
    portText = text.slice(i + 1);
    if (host.includes(":")) throw bad("put IPv6 addresses in brackets, e.g. [::1]:5705");
    if (host === "") host = "0.0.0.0";
    if (!/^[A-Za-z0-9.-]+$/.test(host)) throw bad(`bad host "${host}"`);
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
    throw bad(`bad port "${portText}": expected 0-65535`);
  }
  return { host, port: Number(portText) };
}

/** Formats an address for URLs and logs: "127.0.0.1:5705", "[::1]:5705". */
export function formatHostPort(addr: ListenAddress): string {
  return addr.host.includes(":") ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
}
