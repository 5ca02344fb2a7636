/**
 * `ballast serve`: runs a node until SIGINT/SIGTERM.
 * @module
 */

import { exitOnSignal, resolveConfig, serve, type ServeFlags, SETTINGS } from "../serve/mod.ts";
import { InvalidArgumentError } from "../../mod/errors.ts";
import {
  type Command,
  command,
  type CommandSpec,
  requirePositionals,
  UsageError,
  usageHint,
} from "./_command.ts";

const s = SETTINGS;
export const SERVE_SPEC: CommandSpec = {
  path: "serve",
  args: "--data-dir DIR [flags]",
  summary: "Run a Ballast node: the API, the NBD server and the state store: the embedded " +
    "one (DIR/state.db, single node) or, with --etcd, an existing etcd shared by the cluster's " +
    "nodes. Volumes live under DIR. SIGINT/SIGTERM stop it cleanly.",
  flags: [
    { name: s.dataDir.flag, value: "DIR", help: "data directory; required", env: s.dataDir.env },
    {
      name: s.apiListen.flag,
      value: "HOST:PORT",
      help: "API listen address ([::1]:PORT for IPv6, port 0 = any free port)",
      env: s.apiListen.env,
      default: s.apiListen.default,
    },
    {
      name: s.nbdListen.flag,
      value: "HOST:PORT",
      help: "NBD listen address",
      env: s.nbdListen.env,
      default: s.nbdListen.default,
    },
    {
      name: s.nodeName.flag,
      value: "NAME",
      help: "this node's name, kept in DATA_DIR/node-name from its first start",
      env: s.nodeName.env,
      default: "the recorded name, else the host name",
    },
    {
      name: s.logLevel.flag,
      value: "LEVEL",
      help: "trace, debug, info, warn, error, fatal or silent",
      env: s.logLevel.env,
      default: s.logLevel.default,
    },
    {
      name: s.logFormat.flag,
      value: "FORMAT",
      help: "json (one JSON object per line) or pretty",
      env: s.logFormat.env,
      default: s.logFormat.default,
    },
    {
      name: s.peerListen.flag,
      value: "HOST:PORT",
      help: "cluster mode: peer channel for replication between nodes (mutual TLS); default: the " +
        "NBD host, port 10811",
      env: s.peerListen.env,
    },
    {
      name: s.resyncRate.flag,
      value: "RATE",
      help: "cluster mode: most bytes per second this node sends to replicas being resynced: " +
        "200MiB/s (2^20 bytes) or 200M/s (10^6); unlimited or 0: no limit",
      env: s.resyncRate.env,
      default: s.resyncRate.default,
    },
    {
      name: s.replaceAfter.flag,
      value: "DURATION",
      help: "cluster mode: a volume-group member whose node stays down (or out of sync and " +
        "unreachable) this long is replaced on another node chosen by placement, e.g. 10m",
      env: s.replaceAfter.env,
      default: s.replaceAfter.default,
    },
    {
      name: s.crashDetection.flag,
      value: "on|off",
      help: "cluster mode: when a node's replication connection ends and its listeners refuse " +
        "connections (its process died), revoke its liveness lease so its volumes fail over " +
        "at once instead of after the lease TTL",
      env: s.crashDetection.env,
      default: s.crashDetection.default,
    },
    {
      name: s.dataWorkers.flag,
      value: "auto|N|MIN..MAX",
      help: "serve NBD on a pool of worker threads: auto grows it from 1 to the usable cores " +
        "as load needs and shrinks it when load falls; MIN..MAX does so between those bounds; " +
        "N keeps exactly N; 0 or 1 serve on the main thread",
      env: s.dataWorkers.env,
      default: s.dataWorkers.default,
    },
    {
      name: s.nodeLeaseTtlSeconds.flag,
      value: "DURATION",
      help: "cluster mode: TTL of the node's liveness lease in etcd, 1s to 1h, e.g. 10s or 1m",
      env: s.nodeLeaseTtlSeconds.env,
      default: s.nodeLeaseTtlSeconds.default,
    },
    {
      name: s.tls.flag,
      value: "on|off",
      help:
        "TLS with client certificates on the API and NBD; off only when every listener is on loopback",
      env: s.tls.env,
      default: s.tls.default,
    },
    {
      name: s.nbdUnix.flag,
      value: "PATH|off",
      help: "Unix socket for local attach (plaintext NBD, the same volumes as --nbd-listen): " +
        "clients use nbd+unix:///VOLUME?socket=PATH; the socket file's mode and group decide " +
        "who may connect; off: none",
      env: s.nbdUnix.env,
      default: s.nbdUnix.default,
    },
    {
      name: s.nbdUnixRo.flag,
      value: "PATH",
      help: "a second Unix socket (same mode and group) that serves every volume read-only " +
        "(NBD_FLAG_READ_ONLY; writes fail with EPERM), e.g. for backups",
      env: s.nbdUnixRo.env,
    },
    {
      name: s.nbdUnixMode.flag,
      value: "MODE",
      help: "file mode of the --nbd-unix (and --nbd-unix-ro) socket (octal; connecting needs " +
        "write permission)",
      env: s.nbdUnixMode.env,
      default: s.nbdUnixMode.default,
    },
    {
      name: s.nbdUnixGroup.flag,
      value: "GROUP",
      help: "group (name or id) of the --nbd-unix socket file; its members may connect with " +
        "mode 0660 (the socket's directory must let them in)",
      env: s.nbdUnixGroup.env,
      default: "the node's group",
    },
    {
      name: s.nbdLocalListen.flag,
      value: "HOST:PORT",
      help: "extra plaintext NBD listener on loopback TCP (explicit opt-in; WARNING: any user " +
        "or process of the host can open and change any volume through it without a " +
        "certificate: prefer --nbd-unix)",
      env: s.nbdLocalListen.env,
    },
    {
      name: s.apiAnonymousHealth.flag,
      value: "on|off",
      help: "serve GET /v1/health without a client certificate",
      env: s.apiAnonymousHealth.env,
      default: s.apiAnonymousHealth.default,
    },
    {
      name: s.certTtlSeconds.flag,
      value: "DURATION",
      help: "lifetime of issued certificates (30d, 12h, 90s); renewed at 2/3",
      env: s.certTtlSeconds.env,
      default: s.certTtlSeconds.default,
    },
    {
      name: s.etcd.flag,
      value: "URL[,URL...]",
      help: "cluster mode: keep state in this etcd (client URLs, all http:// or all https://); " +
        "without it the embedded single-node store is used",
      env: s.etcd.env,
    },
    {
      name: s.etcdCacert.flag,
      value: "FILE",
      help: "PEM CA of etcd's server certificate; required with https URLs",
      env: s.etcdCacert.env,
    },
    {
      name: s.etcdCert.flag,
      value: "FILE",
      help: "PEM client certificate for etcd (--client-cert-auth); needs --etcd-key",
      env: s.etcdCert.env,
    },
    {
      name: s.etcdKey.flag,
      value: "FILE",
      help: "PEM private key of --etcd-cert",
      env: s.etcdKey.env,
    },
    {
      name: s.etcdPrefix.flag,
      value: "PREFIX",
      help: "cluster mode: key namespace in etcd; every node of one cluster must use the same",
      env: s.etcdPrefix.env,
      default: s.etcdPrefix.default,
    },
    {
      name: s.joinToken.flag,
      value: "TOKEN",
      help: "join the cluster with a token from `ballast cluster join-token` (first start " +
        "of a new node; needs --etcd)",
      env: s.joinToken.env,
    },
    {
      name: s.newCluster.flag,
      value: "on|off",
      help: "let a node that was a cluster member found the cluster again where etcd has none " +
        "(its etcd lost and rebuilt); without it that is refused as a wrong --etcd or " +
        "--etcd-prefix",
      env: s.newCluster.env,
      default: s.newCluster.default,
    },
    {
      name: s.labels.flag,
      value: "KEY=VALUE,...",
      help: "cluster mode: node labels for placement, e.g. zone=a,rack=r1 (volume create " +
        "--spread-by zone)",
      env: s.labels.env,
    },
  ],
  client: false,
  examples: [
    "ballast serve --data-dir /var/lib/ballast --api-listen 0.0.0.0:5705 --nbd-listen 0.0.0.0:10809",
    "ballast serve --data-dir ./data   # local attach: nbdinfo 'nbd+unix:///db1?socket=./data/nbd.sock'",
    "ballast serve --data-dir /var/lib/ballast --nbd-unix /run/ballast/nbd.sock --nbd-unix-group disk",
    "ballast serve --data-dir ./data --tls off                            # loopback-only development",
    "ballast serve --data-dir ./data --etcd http://127.0.0.1:2379,http://127.0.0.1:22379   # cluster mode",
    "ballast serve --data-dir ./data --etcd https://10.0.0.5:2379 --etcd-cacert ca.pem --etcd-cert c.pem --etcd-key c.key",
    "ballast serve --data-dir ./data2 --etcd http://10.0.0.5:2379 --join ballast1.abc123.<secret>.<ca-pin>   # join",
  ],
};

/** Entry point of `ballast serve`; returns only on a startup error (exit 1) or usage error. */
export const serveCommand: Command = command(SERVE_SPEC, async (p, io) => {
  requirePositionals(SERVE_SPEC, p, []);
  const flags: ServeFlags = {};
  for (const f of SERVE_SPEC.flags) {
    const v = p.values[f.name];
    if (typeof v === "string") flags[f.name as keyof ServeFlags] = v;
  }
  const env: Record<string, string | undefined> = {};
  for (const setting of Object.values(SETTINGS)) env[setting.env] = io.env(setting.env);
  let config;
  try {
    config = resolveConfig(flags, env);
  } catch (err) {
    if (err instanceof InvalidArgumentError) {
      throw new UsageError(err.message, usageHint(SERVE_SPEC));
    }
    throw err;
  }
  return await exitOnSignal(serve(config));
});
