/**
 * How the local data plane (local_plane.ts) is started, and what a running one offers beyond
 * the DataPlane interface the control plane drives (plane.ts).
 * @module
 */

import type { Logger } from "pino";
import type { HandshakePolicy } from "./nbd/handshake.ts";
import type { StartTls } from "./nbd/transport.ts";
import type { ClientVerdict, WorkerTls } from "./pool/protocol.ts";
import type { SizingTimings } from "./pool/sizing.ts";
import type { ExportTable } from "./exports.ts";
import type { DataPlane } from "./plane.ts";
import type { UnixListenAt } from "./_local_attach.ts";
import type { ConnectNode, CopyEpochs, CopyHashes, ReplicaService } from "./replication/mod.ts";

export interface DataPlaneOptions {
  dataDir: string;
  nbdListen: { host: string; port: number };
  /**
   * An extra plaintext listener for local attach (loopback only; the caller checks),
   * used when the main listener requires TLS.
   */
  nbdLocalListen?: { host: string; port: number };
  /**
   * A Unix-socket NBD listener for local attach (plaintext, like nbdLocalListen): its file's
   * mode and group decide who may connect.
   */
  nbdUnix?: UnixListenAt;
  /** A read-only Unix socket: the same, but every export is served read-only. */
  nbdUnixRo?: UnixListenAt;
  logger: Logger;
  nodeName: string;
  policy?: (remote: string) => HandshakePolicy;
  startTls?: StartTls;
  handshakeTimeoutMs?: number;
  /**
   * The listeners accept no connection before this settles (the node knows its volumes then):
   * a client connecting earlier waits in the kernel's queue rather than hear "no such export"
   * for a volume that exists. Default: at once.
   */
  acceptAfter?: Promise<unknown>;
  requestTimeoutMs?: number;
  /**
   * Serve NBD on a pool of data workers of min..max workers (data/pool/); absent, serve on
   * the main thread. With TLS, `workerTls` gives the workers the material for STARTTLS.
   */
  dataWorkers?: { min: number; max: number; timings?: SizingTimings };
  workerTls?: () => WorkerTls;
  /** The client certificate check for the workers' STARTTLS. */
  verifyClient?: (der: Uint8Array) => Promise<ClientVerdict>;
  /**
   * Replication (cluster mode with TLS): opens a link to a replica node on the main thread,
   * and checks a replica node's certificate for the workers.
   */
  connectNode?: ConnectNode;
  verifyNode?: (der: Uint8Array) => Promise<ClientVerdict>;
  /** Most bytes per second a resync sends (0 or absent: no limit). */
  resyncRateBytesPerSecond?: number;
  logLevel?: string;
  logFormat?: "json" | "pretty";
}

export interface RunningDataPlane extends DataPlane {
  /** The volumes exported now, shared with every thread that serves them. */
  readonly exports: ExportTable;
  /** The newest epoch each local copy has seen (shared with the replica service). */
  readonly epochs: CopyEpochs;
  /** The hash lists of the local copies. */
  readonly hashes: CopyHashes;
  /** The replica side of replication (cluster mode): see LocalDataPlane.replicaService. */
  replicaService(log: Logger): ReplicaService;
  /** Stops accepting, finishes in-flight requests, flushes and closes every volume. */
  close(): Promise<void>;
}
