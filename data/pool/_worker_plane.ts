/**
 * What a data worker runs: the exports it serves (each volume file opened on the worker's
 * own descriptor, its statistics in the worker's slot of the shared buffer), one NbdServer
 * per listener kind without listening sockets, and the STARTTLS hook. Connections arrive as
 * descriptors (openFdTransport). The write gate of a volume is a shared flag word: while it
 * is set, a data-changing request asks the main thread, which runs the control plane's gate
 * once for every worker and clears the flag.
 * @module
 */

import { createSecureContext, type SecureContext } from "node:tls";
import type { Logger } from "pino";
import { ExportTable, LiveExport, type ReplicaReasons } from "../exports.ts";
import { ForwarderFences } from "../forwarder_fences.ts";
import { nbdStartTls } from "../nbd/client_tls.ts";
import { ErrnoError } from "../nbd/errno.ts";
import type { HandshakePolicy } from "../nbd/handshake.ts";
import { openFdTransport } from "../nbd/node_transport.ts";
import { NbdServer, READ_ONLY_PLAINTEXT } from "../nbd/server.ts";
import type { StartTls } from "../nbd/transport.ts";
import { VolumeStats } from "../stats.ts";
import { FileBlockStore } from "../store/mod.ts";
import { connectPeer } from "../peer/mod.ts";
import {
  LeaseView,
  PeerLinks,
  RegionTable,
  type ReplicaTarget,
  Replicator,
  WriteTracker,
} from "../replication/mod.ts";
import { closeFd, isUnixPeer, splitHostPort } from "../net/mod.ts";
import { Directory, type DirectoryEntry, RemoteExports, upstreamConnector } from "../proxy/mod.ts";
import {
  type ClientVerdict,
  FLAG_FLUSH_FAILED,
  FLAG_GATED,
  type FromWorker,
  type ListenerKind,
  type ToWorker,
  type WorkerTls,
  type WorkerVolume,
} from "./protocol.ts";

type Init = Extract<ToWorker, { type: "init" }>;

/** A volume as a worker serves it: the gate is the shared flag, passed through the main thread. */
class WorkerExport extends LiveExport {
  readonly #flags: Int32Array;
  readonly #ask: () => Promise<void>;

  constructor(
    v: WorkerVolume,
    slot: number,
    ask: (name: string) => Promise<void>,
    clockOffset: number,
  ) {
    super(
      v.name,
      v.uuid,
      v.description,
      FileBlockStore.open(v.path),
      new VolumeStats(v.name, { buffer: v.stats, slot }),
    );
    this.readOnly = v.readOnly;
    this.lease = new LeaseView(v.lease, clockOffset);
    this.forwarders = new ForwarderFences(v.forwarders);
    if (v.regions) {
      // Thread numbers: 1 is the main thread, worker slots start at 1.
      this.tracker = new WriteTracker(
        new RegionTable({ buffer: v.regions }),
        slot + 1,
        `${v.path}.al`,
      );
    }
    this.#flags = new Int32Array(v.flags);
    (this.store as FileBlockStore).shareFlushFailure(this.#flags, FLAG_FLUSH_FAILED);
    this.#ask = () => ask(v.name);
  }

  override get writeGate(): (() => Promise<void>) | undefined {
    return Atomics.load(this.#flags, FLAG_GATED) !== 0 ? this.#ask : undefined;
  }
  override set writeGate(_gate: (() => Promise<void>) | undefined) {
    // Owned by the main thread (the shared flag); nothing to set here.
  }

  override passWriteGate(): Promise<void> {
    return this.writeGate === undefined ? Promise.resolve() : this.#ask();
  }
}

export class WorkerPlane {
  readonly #log: Logger;
  readonly #post: (m: FromWorker) => void;
  readonly #slot: number;
  readonly #exports = new ExportTable();
  readonly #servers: Record<ListenerKind, NbdServer>;
  #tls: WorkerTls | undefined;
  #context: SecureContext | undefined;
  /** Gate requests waiting for the main thread's answer, per volume. */
  #gates = new Map<
    string,
    { promise: Promise<void>; settle: (ok: boolean, msg?: string, errno?: string) => void }
  >();
  #connections = 0;
  /** Connections handed to this worker so far. */
  #received = 0;
  /** See setClock(); NaN until the main thread answered. */
  #clockOffset = NaN;
  /** Volumes other nodes serve, and the forwarded exports of those clients attached to. */
  readonly #directory = new Directory();
  readonly #remote: RemoteExports;

  constructor(init: Init, log: Logger, post: (m: FromWorker) => void) {
    this.#log = log;
    this.#post = post;
    this.#slot = init.slot;
    this.#setTls(init.tls);
    const common = {
      exports: this.#exports,
      logger: log,
      handshakeTimeoutMs: init.handshakeTimeoutMs,
      requestTimeoutMs: init.requestTimeoutMs,
    };
    const nbdPolicy: HandshakePolicy = {
      tlsAvailable: init.tls !== undefined,
      tlsRequired: init.tlsRequired,
    };
    const startTls: StartTls | undefined = init.tls === undefined
      ? undefined
      : nbdStartTls(() => this.#context!, (der) => this.#verify(der, "nbd-client"));
    this.#servers = {
      nbd: new NbdServer({ ...common, listener: "nbd", policy: () => nbdPolicy, startTls }),
      local: new NbdServer({ ...common, listener: "local" }),
      "local-ro": new NbdServer({
        ...common,
        listener: "local-ro",
        policy: () => READ_ONLY_PLAINTEXT,
      }),
    };
    for (const v of init.volumes) this.export(v);
    this.#remote = new RemoteExports(
      this.#directory,
      upstreamConnector({
        tls: () => this.#tls,
        verify: async (der) => {
          const v = await this.#verify(der, "node");
          return v.ok ? { ok: true, node: v.identity.name } : { ok: false, reason: v.reason };
        },
      }),
    );
    this.#exports.remote = (name) => this.#remote.lookup(name);
    this.#exports.remoteNames = () => this.#remote.names();
    this.#exports.remoteAttached = () => this.#remote.attached();
    this.#exports.remoteAbsent = (name) => this.#remote.absent(name);
    this.directory(init.directory);
  }

  /** The directory of volumes other nodes serve changed. */
  directory(entries: DirectoryEntry[]): void {
    this.#directory.set(entries);
    this.#remote.update();
  }

  /** Certificate checks waiting for the main thread's verdict. */
  #verifying = new Map<number, (v: ClientVerdict) => void>();
  /** Replica failures waiting for the main thread (the group record). */
  #failing = new Map<number, (ok: boolean, message?: string, errno?: string) => void>();
  #peerLinks: PeerLinks | undefined;
  #nextVerify = 1;

  #setTls(tls: WorkerTls | undefined): void {
    this.#tls = tls;
    this.#context = tls === undefined ? undefined : createSecureContext({
      key: tls.key,
      cert: tls.cert,
      ca: tls.ca,
      minVersion: "TLSv1.2",
    });
  }

  /** Asks the main thread (which holds the PKI) to check a client certificate. */
  #verify(der: Uint8Array, purpose: "nbd-client" | "node"): Promise<ClientVerdict> {
    const id = this.#nextVerify++;
    return new Promise((resolve) => {
      this.#verifying.set(id, resolve);
      this.#post({ type: "verify", id, der, purpose });
    });
  }

  /** This worker's links to replica nodes (opened on first use). */
  #links(): PeerLinks {
    this.#peerLinks ??= new PeerLinks(
      (node, address) => {
        const tls = this.#tls;
        if (!tls) throw new Error("replication needs TLS (node certificates)");
        const { host, port } = splitHostPort(address);
        return connectPeer({
          host,
          port,
          expectNode: node,
          credentials: () => ({ key: this.#tls!.key, cert: this.#tls!.cert, ca: this.#tls!.ca }),
          verify: async (der) => {
            const v = await this.#verify(der, "node");
            return v.ok ? { ok: true, node: v.identity.name } : { ok: false, reason: v.reason };
          },
          logger: this.#log,
        });
      },
      this.#log,
    );
    return this.#peerLinks;
  }

  /** Replication targets of volume `name` changed (this node is its master). */
  replication(name: string, epoch: number, targets: ReplicaTarget[]): void {
    const e = this.#exports.lookup(name);
    if (!e) return;
    e.replicator ??= new Replicator(e.uuid, this.#links(), this.#log.child({ volume: name }));
    e.replicator.setTargets(epoch, targets);
    e.onReplicasFailed = (nodes, reasons) => this.#askMain(name, nodes, reasons);
  }

  /** Asks the main thread to have the record show `nodes` out of sync. */
  #askMain(name: string, nodes: string[], reasons?: ReplicaReasons): Promise<void> {
    const id = this.#nextVerify++;
    return new Promise((resolve, reject) => {
      this.#failing.set(id, (ok, message, errno) => {
        if (ok) resolve();
        else {reject(
            new ErrnoError(errno ?? "EIO", message ?? "the group record could not be updated"),
          );}
      });
      this.#post({ type: "replicas-failed", id, name, nodes, ...(reasons ? { reasons } : {}) });
    });
  }

  replicasFailedResult(id: number, ok: boolean, message?: string, errno?: string): void {
    this.#failing.get(id)?.(ok, message, errno);
    this.#failing.delete(id);
  }

  verdict(id: number, v: ClientVerdict): void {
    this.#verifying.get(id)?.(v);
    this.#verifying.delete(id);
  }

  /** Cuts the connections made with a revoked certificate. */
  revoked(serials: string[]): void {
    const n = this.#exports.cutRevoked(new Set(serials));
    if (n > 0) this.#log.warn({ connections: n }, "connections of a revoked certificate cut");
  }

  /** New TLS material (renewal, CA rotation): new handshakes use it. */
  updateTls(tls: WorkerTls): void {
    this.#setTls(tls);
  }

  export(v: WorkerVolume): void {
    const old = this.#exports.remove(v.name);
    old?.store.close();
    old?.tracker?.close();
    this.#exports.add(
      new WorkerExport(v, this.#slot, (name) => this.#askGate(name), this.#clockOffset),
    );
    if (v.replication) this.replication(v.name, v.replication.epoch, v.replication.targets);
  }

  /** Stops serving `name`: its connections here are cut. */
  async unexport(name: string, reason: string): Promise<void> {
    const e = this.#exports.remove(name);
    if (!e) return;
    for (const a of [...e.attachments]) a.abort(reason);
    this.#gates.get(name)?.settle(false, reason);
    await new Promise((r) => setTimeout(r, 0));
    try {
      await e.store.flush();
    } finally {
      e.store.close();
      e.tracker?.close();
    }
  }

  resize(name: string, sizeBytes: number): void {
    const e = this.#exports.lookup(name);
    if (e && sizeBytes > e.store.size) e.store.resize(sizeBytes);
  }

  /**
   * The main thread's clock is at most this thread's plus `offset` (from a round trip).
   * Until it is known, a lapsing lease counts as lapsed.
   */
  setClock(offset: number): void {
    this.#clockOffset = offset;
    for (const e of this.#exports.list()) e.lease.clockOffset = offset;
  }

  /** Serves connection `conn` (numbered by the main thread), handed over as a descriptor. */
  serve(fd: number, listener: ListenerKind, remote: string, conn: number): void {
    // Plaintext listeners read straight into the connection's buffer; a TLS one reads
    // through 'data' events until STARTTLS, then the TLS layer reads directly.
    const direct = listener !== "nbd" || this.#tls === undefined;
    let transport;
    try {
      transport = openFdTransport(fd, remote, { direct, tcp: !isUnixPeer(remote) });
    } catch (err) {
      // The runtime refused the descriptor: only this connection is lost, not the worker.
      this.#log.error({ conn, remote, err: (err as Error).message }, "cannot open connection");
      closeFd(fd);
      this.#post({ type: "ended", conn });
      return;
    }
    this.#count(+1);
    this.#servers[listener].serve(transport, conn).finally(() => {
      this.#count(-1);
      this.#post({ type: "ended", conn });
    });
  }

  #count(d: number): void {
    this.#connections += d;
    if (d > 0) this.#received++;
    this.#post({ type: "connections", count: this.#connections, received: this.#received });
  }

  #askGate(name: string): Promise<void> {
    let g = this.#gates.get(name);
    if (!g) {
      let settle!: (ok: boolean, msg?: string, errno?: string) => void;
      const promise = new Promise<void>((resolve, reject) => {
        settle = (ok, msg, errno) => {
          this.#gates.delete(name);
          if (ok) resolve();
          else reject(new ErrnoError(errno ?? "EIO", msg ?? "the write gate failed"));
        };
      });
      g = { promise, settle };
      this.#gates.set(name, g);
      this.#post({ type: "gate", name });
    }
    return g.promise;
  }

  gateResult(name: string, ok: boolean, message?: string, errno?: string): void {
    this.#gates.get(name)?.settle(ok, message, errno);
  }

  /** Graceful stop: every connection finishes (data/nbd/connection.ts), then stores flush. */
  async shutdown(): Promise<void> {
    await Promise.all(Object.values(this.#servers).map((s) => s.close()));
    this.#peerLinks?.closeAll();
    for (const e of this.#exports.list()) {
      try {
        await e.store.flush();
        e.store.close();
      } catch (err) {
        this.#log.error({ volume: e.name, err }, "flush at shutdown failed");
      }
    }
  }
}
