/**
 * How the data plane serves NBD: on the main thread (one NbdServer per listener, today's
 * single-threaded path, `--data-workers 0|1`) or on a pool of data workers (data/pool/: the
 * main thread accepts with FdListeners and hands each connection to a worker). The data
 * plane (local_plane.ts) manages volume files the same way in both; it tells the serving
 * side when a volume starts or stops being served and when it grows.
 * @module
 */

import type { Logger } from "pino";
import { LiveExport } from "./exports.ts";
import type { ExportTable } from "./exports.ts";
import type { HandshakePolicy } from "./nbd/handshake.ts";
import { NbdServer } from "./nbd/server.ts";
import type { StartTls } from "./nbd/transport.ts";
import { FdListener, shedWarning } from "./net/fd_listener.ts";
import { openUnixListener, serveUnix, type UnixListenAt } from "./_local_attach.ts";
import { READ_ONLY_PLAINTEXT } from "./nbd/server.ts";
import { type PoolStatus, WorkerPool } from "./pool/pool.ts";
import type { SizingTimings } from "./pool/sizing.ts";
import {
  type ClientVerdict,
  FLAG_FLUSH_FAILED,
  FLAG_GATED,
  FLAG_WORDS,
  type ListenerKind,
  type WorkerTls,
  type WorkerVolume,
} from "./pool/protocol.ts";
import { VolumeStats } from "./stats.ts";
import {
  type ConnectNode,
  type HashState,
  PeerLinks,
  type ReplicaTarget,
  Replicator,
} from "./replication/mod.ts";
import { type BlockStore, FileBlockStore } from "./store/mod.ts";
import type { PeerVerify } from "./peer/mod.ts";
import {
  Directory,
  type DirectoryEntry,
  RemoteExports,
  upstreamConnector,
  type UpstreamTls,
} from "./proxy/mod.ts";

export interface ListenAt {
  host: string;
  port: number;
}

/** Where a node listens for NBD clients. */
export interface NbdAddresses {
  /** "host:port" of the main listener (TLS unless the node runs without it). */
  nbd: string;
  /** "host:port" of the plaintext loopback listener, when there is one. */
  local?: string;
  /** The Unix socket's path, when there is one. */
  unix?: string;
  /** The read-only Unix socket's path, when there is one. */
  unixRo?: string;
}

export interface Serving {
  readonly addresses: NbdAddresses;
  /**
   * An export for a volume, with the statistics and flags this way of serving needs, and the
   * write tracking of its copy (`hashes`, shared by every thread that writes it).
   */
  makeExport(
    name: string,
    uuid: string,
    description: string,
    store: BlockStore,
    path: string,
    hashes: HashState | undefined,
  ): LiveExport;
  /** Volume `e` is now served (added to the export table). */
  exported(e: LiveExport): void;
  /**
   * Volume `name` is no longer served: connections to it are cut with `reason`. Resolves
   * once every thread has dropped it.
   */
  unexported(name: string, reason: string): Promise<void> | void;
  /** Volume `name` grew. */
  resized(name: string, sizeBytes: number): void;
  /** Open connections, including ones still negotiating. */
  connections(): number;
  /** The worker pool, when there is one. */
  pool(): PoolStatus | undefined;
  /** Hidden debug hook: worker `id` dies of an uncaught error (false: no such worker). */
  crashWorker(id: number): boolean;
  /** The node's TLS material changed: handshakes from now on use the new one. */
  tlsChanged(): void;
  /** Cuts the connections made with these (newly revoked) certificates. */
  revoked(serials: string[]): void;
  /** Where the volumes that other nodes serve are: clients of those are forwarded there. */
  directory(entries: DirectoryEntry[]): void;
  /**
   * Replication targets of exported volume `e` (a group master), on every thread: resolves
   * once every thread replicates to them (a request applied after that reaches them).
   */
  replication(e: LiveExport, epoch: number, targets: ReplicaTarget[]): Promise<void>;
  close(): Promise<void>;
}

function hostPort(host: string, port: number): string {
  return `${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** An NBD listener that could not open: which one, where, and why in words. */
export class ListenError extends Error {
  override name = "ListenError";
  constructor(readonly listener: string, readonly address: string, why: string, cause: unknown) {
    super(`cannot listen for ${listener} on ${address}: ${why}`, { cause });
  }
}

/** `err` from opening the `listener` at `at`, as a ListenError that names both. */
export function listenFailure(listener: string, at: ListenAt, err: unknown): ListenError {
  const text = (err as Error)?.message ?? String(err);
  const why = /in use/i.test(text)
    ? "address already in use (another process listens there)"
    : /EACCES|permission denied/i.test(text)
    ? "permission denied (ports below 1024 need privileges)"
    : /EADDRNOTAVAIL|cannot assign requested address|listen EINVAL/i.test(text)
    ? "no such address on this host" // node:http says EINVAL for it
    : text;
  return new ListenError(listener, hostPort(at.host, at.port), why, err);
}

/** Opens an FdListener, failing with a ListenError. */
function openTcp(listener: string, at: ListenAt): FdListener {
  try {
    return FdListener.open(at.host, at.port);
  } catch (err) {
    throw listenFailure(listener, at, err);
  }
}

const LISTENER_NAMES = { nbd: "NBD", local: "plaintext local-attach NBD" } as const;

// ---------------------------------------------------------------------------------------
// On the main thread

/** Today's single-threaded path: NbdServers on the main thread share its export table. */
export async function serveOnMainThread(o: {
  exports: ExportTable;
  logger: Logger;
  /** Opens replication links to replica nodes (TLS on the peer channel). */
  connectNode?: ConnectNode;
  nbdListen: ListenAt;
  nbdLocalListen?: ListenAt;
  nbdUnix?: UnixListenAt;
  nbdUnixRo?: UnixListenAt;
  policy?: (remote: string) => HandshakePolicy;
  startTls?: StartTls;
  handshakeTimeoutMs?: number;
  requestTimeoutMs?: number;
  acceptAfter?: Promise<unknown>;
  /** This node's credentials when it forwards clients to other nodes (undefined: plaintext). */
  upstreamTls?: () => UpstreamTls;
  /** Checks a master's certificate when forwarding. */
  verifyNode?: (der: Uint8Array) => Promise<ClientVerdict>;
}): Promise<Serving> {
  const directory = new Directory();
  const remote = new RemoteExports(
    directory,
    upstreamConnector({ tls: () => o.upstreamTls?.(), verify: nodeVerdict(o.verifyNode) }),
  );
  o.exports.remote = (name) => remote.lookup(name);
  o.exports.remoteNames = () => remote.names();
  o.exports.remoteAbsent = (name) => remote.absent(name);
  o.exports.remoteAttached = () => remote.attached();
  const common = {
    exports: o.exports,
    logger: o.logger,
    handshakeTimeoutMs: o.handshakeTimeoutMs,
    requestTimeoutMs: o.requestTimeoutMs,
    acceptAfter: o.acceptAfter,
  };
  const servers = [
    new NbdServer({
      ...common,
      listener: "nbd",
      policy: o.policy,
      startTls: o.startTls,
      onShed: shedWarning(o.logger, "nbd"),
    }),
  ];
  const listens = [{ ...o.nbdListen, tls: o.startTls !== undefined }];
  // Local attach (loopback TCP, the Unix sockets): plaintext, no STARTTLS.
  const local = new NbdServer({
    ...common,
    listener: "local",
    onShed: shedWarning(o.logger, "local"),
  });
  const localRo = new NbdServer({
    ...common,
    listener: "local-ro",
    policy: () => READ_ONLY_PLAINTEXT,
  });
  if (o.nbdLocalListen) listens.push({ ...o.nbdLocalListen, tls: false });
  const found: string[] = [];
  const unix: { close(): Promise<void> }[] = [];
  try {
    for (let i = 0; i < listens.length; i++) {
      const server = i === 0 ? servers[0] : local;
      const addr = await server.listen(listens[i].host, listens[i].port, {
        tls: listens[i].tls,
      }).catch((err) => {
        throw listenFailure(i === 0 ? LISTENER_NAMES.nbd : LISTENER_NAMES.local, listens[i], err);
      });
      found.push(hostPort(addr.hostname, addr.port));
      o.logger.info(
        { listener: i === 0 ? "nbd" : "local", nbd: found[i], tls: listens[i].tls },
        "NBD listener started",
      );
    }
    const open = (at: UnixListenAt, ro: boolean) => {
      const l = openUnixListener(at, ro, o.logger);
      l.onShed = shedWarning(o.logger, ro ? "local-ro" : "local");
      return l;
    };
    if (o.nbdUnix) unix.push(serveUnix(open(o.nbdUnix, false), local, o.acceptAfter));
    if (o.nbdUnixRo) unix.push(serveUnix(open(o.nbdUnixRo, true), localRo, o.acceptAfter));
  } catch (err) {
    await Promise.all([...unix.map((u) => u.close()), ...servers.map((s) => s.close())]);
    await local.close();
    throw err;
  }
  servers.push(local, localRo);
  const addresses: NbdAddresses = {
    nbd: found[0],
    ...(found[1] ? { local: found[1] } : {}),
    ...(o.nbdUnix ? { unix: o.nbdUnix.path } : {}),
    ...(o.nbdUnixRo ? { unixRo: o.nbdUnixRo.path } : {}),
  };
  let links: PeerLinks | undefined;
  return {
    addresses,
    makeExport: (name, uuid, description, store, _path, hashes) => {
      const e = new LiveExport(name, uuid, description, store);
      e.tracker = hashes?.writer;
      return e;
    },
    exported() {},
    unexported() {},
    resized() {},
    connections: () => servers.reduce((n, s) => n + s.connections, 0),
    pool: () => undefined,
    crashWorker: () => false,
    tlsChanged() {}, // the StartTls hook reads the node's context at each handshake
    revoked: (serials) => {
      const n = o.exports.cutRevoked(new Set(serials));
      if (n > 0) o.logger.warn({ connections: n }, "connections of a revoked certificate cut");
    },
    directory: (entries) => {
      directory.set(entries);
      remote.update();
    },
    replication: (e, epoch, targets) => {
      if (!o.connectNode) {
        o.logger.error(
          { volume: e.name },
          "replication asked for, but this node has no peer channel",
        );
        return Promise.resolve();
      }
      links ??= new PeerLinks(o.connectNode, o.logger);
      e.replicator ??= new Replicator(e.uuid, links, o.logger.child({ volume: e.name }));
      e.replicator.setTargets(epoch, targets);
      return Promise.resolve();
    },
    close: async () => {
      await Promise.all(unix.map((u) => u.close()));
      await Promise.all(servers.map((s) => s.close()));
      links?.closeAll();
    },
  };
}

// ---------------------------------------------------------------------------------------
// On a pool of data workers

/**
 * A volume served by the pool: its statistics have a slot per thread, and its write gate is
 * also a shared flag that workers read (set whenever the control plane sets a gate, cleared
 * when it opens).
 */
class PooledExport extends LiveExport {
  readonly flags = new SharedArrayBuffer(FLAG_WORDS * 4);
  readonly path: string;
  /** The replication the workers must apply (also for workers started later). */
  replication: { epoch: number; targets: ReplicaTarget[] } | undefined;
  /** The copy's region table (write tracking), shared with the workers. */
  regions: SharedArrayBuffer | undefined;
  readonly #words = new Int32Array(this.flags);

  constructor(
    name: string,
    uuid: string,
    description: string,
    store: BlockStore,
    path: string,
    slots: number,
  ) {
    super(
      name,
      uuid,
      description,
      store,
      new VolumeStats(name, { buffer: VolumeStats.sharedBuffer(slots), slot: 0 }),
    );
    this.path = path;
    if (store instanceof FileBlockStore) store.shareFlushFailure(this.#words, FLAG_FLUSH_FAILED);
  }

  override get writeGate(): (() => Promise<void>) | undefined {
    return super.writeGate;
  }
  override set writeGate(gate: (() => Promise<void>) | undefined) {
    super.writeGate = gate;
    Atomics.store(this.#words, FLAG_GATED, gate === undefined ? 0 : 1);
  }

  toWorker(): WorkerVolume {
    return {
      name: this.name,
      uuid: this.uuid,
      description: this.description,
      path: this.path,
      sizeBytes: this.store.size,
      readOnly: this.readOnly,
      stats: this.stats.buffer as SharedArrayBuffer,
      flags: this.flags,
      ...(this.replication ? { replication: this.replication } : {}),
      ...(this.regions ? { regions: this.regions } : {}),
      lease: this.lease.buffer,
      forwarders: this.forwarders.buffer,
    };
  }
}

/** The data workers' path: FdListeners here, connections served in the pool. */
export async function serveOnWorkers(o: {
  exports: ExportTable;
  logger: Logger;
  nodeName: string;
  nbdListen: ListenAt;
  nbdLocalListen?: ListenAt;
  nbdUnix?: UnixListenAt;
  nbdUnixRo?: UnixListenAt;
  workers: { min: number; max: number; timings?: SizingTimings };
  logLevel: string;
  logFormat: "json" | "pretty";
  /** TLS material for the workers' STARTTLS (undefined: no TLS). */
  tls?: () => WorkerTls;
  /** The client certificate check the workers' STARTTLS asks for. */
  verifyClient?: (der: Uint8Array) => Promise<ClientVerdict>;
  /** The replica nodes' certificate check the workers' replication links ask for. */
  verifyNode?: (der: Uint8Array) => Promise<ClientVerdict>;
  handshakeTimeoutMs?: number;
  requestTimeoutMs?: number;
  acceptAfter?: Promise<unknown>;
}): Promise<Serving> {
  const slots = o.workers.max + 1; // slot 0: the main thread
  let directory: DirectoryEntry[] = [];
  const pooled = () => o.exports.list() as PooledExport[];
  const listeners: { l: FdListener; kind: ListenerKind }[] = [];
  try {
    listeners.push({ l: openTcp(LISTENER_NAMES.nbd, o.nbdListen), kind: "nbd" });
    if (o.nbdLocalListen) {
      listeners.push({ l: openTcp(LISTENER_NAMES.local, o.nbdLocalListen), kind: "local" });
    }
    if (o.nbdUnix) {
      listeners.push({ l: openUnixListener(o.nbdUnix, false, o.logger), kind: "local" });
    }
    if (o.nbdUnixRo) {
      listeners.push({ l: openUnixListener(o.nbdUnixRo, true, o.logger), kind: "local-ro" });
    }
  } catch (err) {
    for (const { l } of listeners) l.close();
    throw err;
  }
  let pool: WorkerPool;
  try {
    pool = await WorkerPool.start({
      min: o.workers.min,
      max: o.workers.max,
      timings: o.workers.timings,
      nodeName: o.nodeName,
      logger: o.logger,
      logLevel: o.logLevel,
      logFormat: o.logFormat,
      tls: () => o.tls?.(),
      verifyClient: o.verifyClient,
      verifyNode: o.verifyNode,
      replicasFailed: (name, nodes, reasons) => {
        const e = o.exports.lookup(name);
        return e
          ? e.replicasFailed(nodes, reasons)
          : Promise.reject(new Error(`volume "${name}" is gone`));
      },
      tlsRequired: o.tls !== undefined,
      handshakeTimeoutMs: o.handshakeTimeoutMs ?? 30_000,
      requestTimeoutMs: o.requestTimeoutMs ?? 60_000,
      volumes: () => pooled().map((e) => e.toWorker()),
      directory: () => directory,
      passGate: (name) => {
        const e = o.exports.lookup(name);
        return e ? e.passWriteGate() : Promise.reject(new Error(`volume "${name}" is gone`));
      },
      onWorkerGone: (slot) => {
        for (const e of pooled()) e.stats.clearConnections(slot);
      },
    });
  } catch (err) {
    for (const { l } of listeners) l.close();
    throw err;
  }
  const found = listeners.map(({ l, kind }) => {
    if (l.path !== undefined) return l.path;
    const at = hostPort(l.host, l.port);
    o.logger.info(
      { listener: kind, nbd: at, tls: kind === "nbd" && o.tls !== undefined, workers: o.workers },
      "NBD listener started (connections served by data workers)",
    );
    return at;
  });
  const addresses: NbdAddresses = {
    nbd: found[0],
    ...(o.nbdLocalListen ? { local: found[1] } : {}),
    ...(o.nbdUnix ? { unix: o.nbdUnix.path } : {}),
    ...(o.nbdUnixRo ? { unixRo: o.nbdUnixRo.path } : {}),
  };
  for (const { l, kind } of listeners) l.onShed = shedWarning(o.logger, kind);
  const accepting = listeners.map(async ({ l, kind }) => {
    await o.acceptAfter?.catch(() => {});
    for (;;) {
      const c = await l.accept();
      if (c === null) return;
      pool.dispatch(c.fd, kind, c.remote);
    }
  });
  return {
    addresses,
    makeExport: (name, uuid, description, store, path, hashes) => {
      const e = new PooledExport(name, uuid, description, store, path, slots);
      e.tracker = hashes?.writer;
      e.regions = hashes?.table.buffer;
      return e;
    },
    exported: (e) => pool.broadcast({ type: "export", volume: (e as PooledExport).toWorker() }),
    unexported: (name, reason) => {
      pool.broadcast({ type: "unexport", name, reason });
      return pool.sync(); // a worker drops the export as it reads the message
    },
    resized: (name, sizeBytes) => pool.broadcast({ type: "resize", name, sizeBytes }),
    connections: () => pool.connections,
    pool: () => pool.status(),
    crashWorker: (id) => pool.crash(id),
    tlsChanged: () => pool.refreshTls(),
    replication: (e, epoch, targets) => {
      (e as PooledExport).replication = { epoch, targets };
      pool.broadcast({ type: "replication", name: e.name, epoch, targets });
      return pool.sync();
    },
    revoked: (serials) => pool.broadcast({ type: "revoked", serials }),
    directory: (entries) => {
      directory = entries;
      pool.broadcast({ type: "directory", entries });
    },
    close: async () => {
      for (const { l } of listeners) l.close();
      await Promise.all(accepting);
      await pool.close();
    },
  };
}

/** A master's certificate check for forwarding, from the main thread's node check. */
function nodeVerdict(
  verify: ((der: Uint8Array) => Promise<ClientVerdict>) | undefined,
): PeerVerify | undefined {
  if (!verify) return undefined;
  return async (der) => {
    const v = await verify(der);
    return v.ok ? { ok: true, node: v.identity.name } : { ok: false, reason: v.reason };
  };
}
