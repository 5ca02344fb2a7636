/**
 * `ballast serve`: wires one node together. Lock the data dir, open the state store
 * (the embedded one, or etcd in cluster mode with `--etcd`), start the data plane
 * (NBD), reconcile volumes (and in cluster mode watch their records), register the
 * node, then serve the API. Shutdown runs the same steps backwards.
 * @module
 */

import {
  connectPeer,
  DEFAULT_TIMINGS,
  listenPeer,
  nodeVerifier,
  raiseDescriptorLimit,
  type SizingTimings,
  splitHostPort,
  startDataPlane,
  usableCores,
} from "../../data/mod.ts";
import { InvalidArgumentError, toBallastError } from "../../mod/errors.ts";
import { join } from "node:path";
import { VERSION } from "../../mod/version.ts";
import { type ApiListener, createApi, listenApi } from "../api/mod.ts";
import {
  ClusterCaFollower,
  ClusterCertificates,
  type ClusterMember,
  KEK_FILE,
  prepareClusterPki,
} from "../cluster/mod.ts";
import { createLogger, type Logger } from "../common/mod.ts";
import { CrashWatch, NodeProbe, NodeRegistry, PeerApi } from "../nodes/mod.ts";
import { ReadCacheStore } from "../store/mod.ts";
import { nbdRoles, setupNodeTls } from "../tls/mod.ts";
import { orphanMinAgeMs, VolumeService } from "../volumes/mod.ts";
import { feedDirectory, type Placed } from "../directory/mod.ts";
import { dataWorkersWarning, type ServeConfig } from "./config.ts";
import { unknownBallastEnv } from "./settings.ts";
import { lockDataDir } from "./_data_dir_lock.ts";
import { claimNodeName, hasStarted, recordApiUrl, recordNodeName } from "./_node_identity.ts";
import { openStore } from "./_open_store.ts";

/** A running node. */
export interface Server {
  /** "http://HOST:PORT" with the real bound port. */
  readonly apiUrl: string;
  /** The NBD listen address "HOST:PORT". */
  readonly nbdAddress: string;
  readonly logger: Logger;
  /** Stops the API, the node registration, the data plane (flushing) and the store; releases the lock. */
  shutdown(): Promise<void>;
}

/**
 * A cluster member's data directory (its key-encryption key) started without --etcd would run
 * alone on an embedded store beside its cluster copies, looking healthy: refused, saying so.
 */
function refuseMemberAlone(dataDir: string): void {
  const kek = join(dataDir, "pki", KEK_FILE);
  try {
    Deno.statSync(kek);
  } catch {
    return; // not a member
  }
  throw new InvalidArgumentError(
    `${dataDir} is a cluster member's data directory (${kek}), but no --etcd was given: is ` +
      "--etcd or BALLAST_ETCD missing? Started without it, this node would run alone on an " +
      "embedded store beside its cluster copies",
    { field: "etcd" },
  );
}

/** Fewer open files than this allowed is warned about (each volume keeps about 7 open). */
const MIN_OPEN_FILES = 4096;

/** Starts a node. Everything started is stopped again if a later step fails. */
export async function serve(
  config: ServeConfig,
  options: { logger?: Logger } = {},
): Promise<Server> {
  const logger = options.logger ??
    createLogger({ level: config.logLevel, format: config.logFormat });
  const log = logger.child({ node: config.nodeName });
  const files = raiseDescriptorLimit();
  if (files.after < MIN_OPEN_FILES) {
    log.warn(
      { openFiles: files.after },
      `this process may open only ${files.after} files: NBD connections are refused well ` +
        `before that; raise LimitNOFILE (systemd) or ulimit -n to ${MIN_OPEN_FILES} or more`,
    );
  }
  const undo: Array<() => Promise<void> | void> = [];
  const unwind = async () => {
    for (const step of undo.reverse()) {
      try {
        await step();
      } catch (err) {
        log.error({ err }, "shutdown step failed");
      }
    }
    undo.length = 0;
  };

  try {
    const lock = lockDataDir(config.dataDir);
    undo.push(() => lock.release());
    if (lock.openMode !== undefined) {
      const mode = `0${lock.openMode.toString(8)}`;
      log.warn(
        { dataDir: config.dataDir, mode },
        `data directory is mode ${mode}: users other than its owner may enter it (and reach ` +
          `a local-attach socket inside it); chmod 0700 ${config.dataDir} unless that is meant`,
      );
    }
    const startedBefore = hasStarted(config.dataDir);
    if (!config.etcd) refuseMemberAlone(config.dataDir);
    const instance = await claimNodeName(config.dataDir, config.nodeName);

    const opened = await openStore(config);
    // Cluster mode: while etcd is unreachable, reads are answered from a cache.
    const store = config.etcd ? new ReadCacheStore(opened, { logger: log }) : opened;
    undo.push(() => store.close());
    log.info({ store: store.description }, "state store open");

    // TLS on every endpoint unless the operator chose plaintext on loopback (--tls off).
    // Cluster mode: the CA comes from etcd (the first node puts it there; others join).
    const clusterKeys = config.tls && config.etcd
      ? await prepareClusterPki({ ...config, startedBefore }, store, log)
      : undefined;
    const tls = config.tls ? await setupNodeTls(config, log) : undefined;
    if (!tls) log.warn("TLS is off: plaintext API and NBD on loopback only");
    const poolWarning = dataWorkersWarning(config.dataWorkers, usableCores());
    if (poolWarning) log.warn({ dataWorkers: config.dataWorkers }, poolWarning);
    for (const { name, meant } of unknownBallastEnv(Deno.env.toObject())) {
      log.warn(
        { variable: name, ...(meant ? { meant } : {}) },
        `environment variable ${name} is not a Ballast setting and is ignored` +
          (meant ? ` (did you mean ${meant}?)` : " (see ballast serve --help)"),
      );
    }
    let certificates: ClusterCertificates | undefined;
    if (clusterKeys && tls) {
      // Revocations and the issued index are shared through etcd (cluster/revocations.ts).
      const shared = new ClusterCertificates({
        store,
        pki: tls.pki,
        nodeName: config.nodeName,
        log,
      });
      await shared.start();
      undo.push(() => shared.stop());
      certificates = shared;
    }

    // NBD clients are accepted once this node knows its volumes and where the others' are
    // served (the directory's first listing), not before: earlier, an existing volume was
    // "no such export" to a client that connected during a restart.
    let openNbd = () => {};
    const nbdOpen = new Promise<void>((resolve) => openNbd = resolve);
    const dataPlane = await startDataPlane({
      acceptAfter: nbdOpen,
      dataDir: config.dataDir,
      nbdListen: config.nbdListen,
      nbdLocalListen: config.nbdLocalListen,
      nbdUnix: config.nbdUnix,
      nbdUnixRo: config.nbdUnixRo,
      logger,
      nodeName: config.nodeName,
      resyncRateBytesPerSecond: config.resyncRateBytesPerSecond,
      ...(tls
        ? {
          policy: () => ({ tlsAvailable: true, tlsRequired: true }),
          startTls: tls.nbdStartTls,
          workerTls: () => tls.pki.credentials("node"),
          verifyClient: (der: Uint8Array) =>
            tls.pki.verify(der, {
              requiredEku: "clientAuth",
              // node (cluster mode): another node forwarding its clients (attach anywhere).
              allowedRoles: nbdRoles(config),
            }),
        }
        : {}),
      // Replication between the members of volume groups: cluster mode with TLS.
      ...(tls && config.etcd
        ? {
          connectNode: (node: string, address: string) => {
            const { host, port } = splitHostPort(address);
            return connectPeer({
              host,
              port,
              expectNode: node,
              credentials: () => tls.pki.credentials("node"),
              verify: nodeVerifier(tls.pki, "serverAuth"),
              logger: log,
            });
          },
          verifyNode: (der: Uint8Array) =>
            tls.pki.verify(der, { requiredEku: "serverAuth", allowedRoles: ["node"] }),
        }
        : {}),
      dataWorkers: config.dataWorkers && { ...config.dataWorkers, timings: debugPoolTimings() },
      logLevel: config.logLevel,
      logFormat: config.logFormat,
    });
    undo.push(() => dataPlane.close());
    undo.push(() => openNbd()); // a start that failed: the listeners close at once
    if (Deno.env.get("BALLAST_DEBUG_HOOKS") === "1") {
      // Hidden test hook: SIGUSR2 makes the data worker serving the most connections die of
      // an uncaught error, as a bug would (tests/e2e/pool_test.ts).
      const crash = () => {
        const workers = dataPlane.workerPool?.()?.workers ?? [];
        const victim = [...workers].sort((a, b) => b.connections - a.connections)[0];
        log.warn({ worker: victim?.id }, "debug hook: crashing a data worker");
        if (victim) dataPlane.crashWorker?.(victim.id);
      };
      Deno.addSignalListener("SIGUSR2", crash);
      undo.push(() => Deno.removeSignalListener("SIGUSR2", crash));
    }

    // The replica side: masters' requests for this node's copies arrive on the peer channel.
    let peerAddress: string | undefined;
    // Renewal and CA rotation rebuild the peer listener's TLS context too (its clients take
    // fresh credentials at every connect).
    let reloadPeers = () => {};
    // A master's connection ending may mean its process died: check, and end its lease now.
    const crashes = tls && config.etcd && config.crashDetection
      ? new CrashWatch({ store, logger: log })
      : undefined;
    if (tls && config.etcd) {
      const replicas = dataPlane.replicaService(log.child({ component: "replica" }));
      const peers = await listenPeer({
        host: config.peerListen.host,
        port: config.peerListen.port,
        credentials: () => tls.pki.credentials("node"),
        verify: nodeVerifier(tls.pki, "clientAuth"),
        onConnection: (conn) =>
          void replicas.serve(conn).finally(() => crashes?.connectionLost(conn.peerNode)),
        logger: log,
      });
      undo.push(async () => {
        crashes?.stop(); // this node's own connections end now
        await peers.close();
        replicas.close();
      });
      peerAddress = peers.address;
      reloadPeers = () => peers.reload();
    }

    // Node-to-node API calls (health probes, live volume status) with this node's certificate.
    const nodeCredentials = () => {
      if (!tls) return undefined;
      const c = tls.pki.credentials("node");
      return { caCertPem: c.ca, certPem: c.cert, keyPem: c.key };
    };
    const nodes = new NodeRegistry({
      store,
      dataPlane,
      logger: log,
      nodeName: config.nodeName,
      instance,
      version: VERSION,
      leaseTtlSeconds: config.nodeLeaseTtlSeconds,
      labels: config.labels,
      ...(peerAddress ? { peerAddress } : {}),
      // Cluster mode: a node holding its lease whose API does not answer is "unreachable".
      ...(config.etcd
        ? {
          probe: new NodeProbe({ credentials: nodeCredentials }),
        }
        : {}),
    });
    const volumes = new VolumeService({
      store,
      dataPlane,
      logger: log,
      nodeName: config.nodeName,
      clusterMode: config.etcd !== undefined,
      replicates: peerAddress !== undefined,
      replaceAfterMs: config.replaceAfterSeconds * 1000,
      // Placement of replicated volumes (cluster mode) over the registered nodes.
      listNodes: () => nodes.list(),
      getNode: (name) => nodes.get(name),
      // `volume get` on any node: live status from the node serving the volume.
      ...(config.etcd
        ? {
          peers: new PeerApi({
            credentials: nodeCredentials,
            apiAddressOf: (node) => nodes.apiAddress(node),
          }),
        }
        : {}),
      // A live node re-registers within a heartbeat after etcd expired every lease at once.
      leaseGraceMs: config.nodeLeaseTtlSeconds * 1000,
      // Hidden test knob: how old a copy without a record must be before it is removed.
      orphanMinAgeMs: orphanMinAgeMs(Deno.env.get("BALLAST_ORPHAN_MIN_AGE_MS")),
    });
    const report = await volumes.reconcile();
    log.info(
      {
        opened: report.opened.length,
        failed: report.failed,
        finishedDeletes: report.finishedDeletes,
        removedCreating: report.removedCreating,
        removedDeleted: report.removedDeleted,
        movedOrphans: report.movedOrphans,
      },
      "volumes reconciled",
    );
    if (config.etcd) {
      // Other nodes change records of volumes this node holds (delete, resize), and
      // replicated volumes run their group drivers from these records.
      volumes.startWatching();
      undo.push(() => volumes.stopWatching());
    }
    // Attach anywhere: clients of volumes served elsewhere are forwarded to their master. A
    // single node's directory holds only its volumes that cannot be served (a failed copy),
    // so that their clients are told why rather than "unknown export".
    if (dataPlane.setDirectory) {
      const feed = feedDirectory({
        store,
        log: log.child({ component: "directory" }),
        publish: (entries) => {
          dataPlane.setDirectory!(entries);
          openNbd();
        },
        ...(config.etcd ? {} : { only: (p: Placed) => p.unavailable === true }),
      });
      undo.push(() => feed.stop());
      // Its first listing normally comes in milliseconds; a slow etcd delays clients 10 s.
      Deno.unrefTimer(setTimeout(openNbd, 10_000));
    } else openNbd();

    const listenerRef: { current?: ApiListener } = {};
    const reloadTls = () => {
      tls?.reload();
      listenerRef.current?.reload();
      reloadPeers();
      dataPlane.tlsChanged?.();
    };
    let cluster: ClusterMember | undefined;
    if (clusterKeys && tls && certificates) {
      // `ca rotate` through etcd: every member adopts the cluster's current CA.
      const rotation = new ClusterCaFollower({
        store,
        pki: tls.pki,
        keys: clusterKeys,
        log,
        onChanged: reloadTls,
      });
      rotation.start();
      undo.push(() => rotation.stop());
      cluster = { store, pki: tls.pki, keys: clusterKeys, certificates, rotation };
    }
    const app = createApi({
      volumes,
      nodes,
      dataPlane,
      logger: log,
      nodeName: config.nodeName,
      store,
      pki: tls?.pki,
      allowAnonymousHealth: config.apiAnonymousHealth,
      onCredentialsChanged: reloadTls,
      cluster,
      ...(crashes ? { crashChecks: () => crashes.counts() } : {}),
    });
    const listener = await listenApi(app, {
      host: config.apiListen.host,
      port: config.apiListen.port,
      pki: tls?.pki,
      allowAnonymousHealth: config.apiAnonymousHealth,
      logger: log,
    });
    listenerRef.current = listener;
    undo.push(() => listener.close());
    const apiUrl = listener.url;
    if (tls) {
      // A revocation (here, or by another member through the cluster) cuts the live NBD
      // sessions of that certificate within a second, on every thread.
      let known = new Set(tls.pki.revokedSerials());
      const cutRevoked = setInterval(() => {
        const now = tls.pki.revokedSerials();
        const fresh = [...now].filter((s) => !known.has(s));
        known = new Set(now);
        if (fresh.length > 0) {
          log.info({ serials: fresh }, "certificates revoked: cutting their live NBD sessions");
          dataPlane.revoked?.(fresh);
          void tls.renewNow(); // one of this node's own (admin.crt, say): reissued now
        }
      }, 1000);
      Deno.unrefTimer(cutRevoked);
      undo.push(() => clearInterval(cutRevoked));
      const stop = tls.startRenewal(() => {
        listener.reload();
        reloadPeers();
        dataPlane.tlsChanged?.();
      });
      undo.push(stop);
    }

    await nodes.start({ apiAddress: apiUrl });
    undo.push(() => nodes.stop());
    await recordNodeName(config.dataDir, config.nodeName);
    await recordApiUrl(config.dataDir, apiUrl);

    log.info(
      {
        api: apiUrl,
        nbd: dataPlane.nbdAddress,
        ...(dataPlane.nbdLocalAddress ? { nbdLocal: dataPlane.nbdLocalAddress } : {}),
        ...(dataPlane.nbdUnixPath ? { nbdUnix: dataPlane.nbdUnixPath } : {}),
        ...(dataPlane.nbdUnixRoPath ? { nbdUnixRo: dataPlane.nbdUnixRoPath } : {}),
        tls: config.tls,
        store: store.description,
        openFiles: files.after,
      },
      "ballast ready",
    );
    let stopping: Promise<void> | undefined;
    return {
      apiUrl,
      nbdAddress: dataPlane.nbdAddress,
      logger: log,
      shutdown() {
        stopping ??= (async () => {
          log.info("shutting down: stopping the API, flushing volumes");
          await unwind();
          log.info("ballast stopped");
        })();
        return stopping;
      },
    };
  } catch (err) {
    await unwind();
    const e = toBallastError(err);
    // A log pipeline reading the JSON lines gets the one line that says why the node is down
    // (the CLI prints it as `error: ...` too).
    if (config.logFormat === "json") log.fatal({ code: e.code }, `cannot start: ${e.message}`);
    throw e;
  }
}

/**
 * Hidden test hook: with BALLAST_DEBUG_HOOKS=1, BALLAST_DEBUG_POOL_TIMINGS="grow=1000,
 * shrink=3000,cooldown=1000" shortens the data pool's sizing waits (data/pool/sizing.ts).
 */
function debugPoolTimings(): SizingTimings | undefined {
  if (Deno.env.get("BALLAST_DEBUG_HOOKS") !== "1") return undefined;
  const spec = Deno.env.get("BALLAST_DEBUG_POOL_TIMINGS");
  if (!spec) return undefined;
  const t: SizingTimings = { ...DEFAULT_TIMINGS };
  for (const part of spec.split(",")) {
    const [k, v] = part.split("=");
    const ms = Number(v);
    if (!(ms >= 0)) continue;
    if (k === "grow") t.growAfterMs = ms;
    if (k === "shrink") t.shrinkAfterMs = ms;
    if (k === "cooldown") t.cooldownMs = ms;
  }
  return t;
}
