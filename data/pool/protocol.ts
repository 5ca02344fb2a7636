/**
 * The messages between the main thread and the data workers (one module, versioned).
 *
 * The main thread owns the control plane, the volume files and the listening sockets; each
 * worker serves whole NBD connections (handshake, TLS, transmission) on sockets whose file
 * descriptors the main thread hands it. Per-volume state every connection must see at once
 * lives in shared memory (stats.ts slots, the volume's flag words below); everything else
 * travels as these messages. A worker that receives a message of another version stops.
 * @module
 */

import type { DirectoryEntry } from "../proxy/mod.ts";
import type { NbdClientIdentity } from "../nbd/client_tls.ts";
import type { ReplicaReasons } from "../replication/mod.ts";

/** Bumped whenever a message changes shape or meaning. */
export const POOL_PROTOCOL_VERSION = 10;

/** A replication target: a member's node, peer address and session (since 7). */
export interface WorkerTarget {
  node: string;
  address: string;
  session?: number;
}

/** Which listener accepted a connection: it decides the handshake policy. */
export type ListenerKind =
  /** The main NBD listener: TLS required (or plaintext when the node runs without TLS). */
  | "nbd"
  /** A plaintext local-attach listener (loopback TCP, the Unix socket). */
  | "local"
  /** The read-only Unix socket: plaintext, every export read-only. */
  | "local-ro";

/**
 * TLS material for STARTTLS in a worker (PEM), re-sent whenever it changes. Client
 * certificates are checked by the main thread ("verify"), which holds the PKI: one check,
 * always current (a revocation applies at the next handshake on every worker).
 */
export interface WorkerTls {
  key: string;
  cert: string;
  /** Trust bundle the handshake presents and accepts (every trusted root). */
  ca: string;
}

/** The main thread's verdict on an NBD client certificate. */
export type ClientVerdict =
  | { ok: true; identity: NbdClientIdentity & { serial: string } }
  | { ok: false; reason: string };

/** Per-volume shared words (Int32Array over `flags`): indices. */
export const FLAG_GATED = 0;
/** Bumped by the main thread to tell workers a gate changed (Atomics.notify on it). */
export const FLAG_GATE_GENERATION = 1;
/** Set (1) once a flush of the copy failed on any thread: every later flush fails too. */
export const FLAG_FLUSH_FAILED = 2;
export const FLAG_WORDS = 4;

/** A volume a worker serves: where its file is and its shared memory. */
export interface WorkerVolume {
  name: string;
  uuid: string;
  description: string;
  path: string;
  sizeBytes: number;
  readOnly: boolean;
  /** VolumeStats slots (stats.ts), one per thread. */
  stats: SharedArrayBuffer;
  /** FLAG_* words. */
  flags: SharedArrayBuffer;
  /** A group master's replication (epoch and targets), when it has replicas. */
  replication?: { epoch: number; targets: WorkerTarget[] };
  /** The master's lease (data/replication/lease.ts LeaseView), checked on every request. */
  lease: SharedArrayBuffer;
  /** The volume's forwarder fences (data/forwarder_fences.ts). */
  forwarders: SharedArrayBuffer;
  /**
   * The copy's region table (data/replication/regions.ts): every change enters its regions;
   * the activity log is `<path>.al`.
   */
  regions?: SharedArrayBuffer;
}

/** Main thread -> worker. */
export type ToWorker =
  | {
    type: "init";
    version: number;
    worker: number;
    /** This worker's stats slot. */
    slot: number;
    nodeName: string;
    logLevel: string;
    logFormat: "json" | "pretty";
    /** TLS material, or undefined when the node runs without TLS. */
    tls: WorkerTls | undefined;
    /** The main listener requires TLS (FORCEDTLS). */
    tlsRequired: boolean;
    handshakeTimeoutMs: number;
    requestTimeoutMs: number;
    volumes: WorkerVolume[];
    /** Where the volumes other nodes serve are (attach anywhere, data/proxy/). */
    directory: DirectoryEntry[];
  }
  /** `conn`: the connection's id, numbered by the main thread across every worker. */
  | { type: "serve"; fd: number; listener: ListenerKind; remote: string; conn: number }
  | { type: "export"; volume: WorkerVolume }
  | { type: "unexport"; name: string; reason: string }
  | { type: "resize"; name: string; sizeBytes: number }
  | { type: "tls"; tls: WorkerTls }
  /** The whole directory of volumes served by other nodes, after each change. */
  | { type: "directory"; entries: DirectoryEntry[] }
  /** Certificates revoked since: cut the connections made with them. */
  | { type: "revoked"; serials: string[] }
  /** A group master's replication targets for volume `name` (empty: none). */
  | {
    type: "replication";
    name: string;
    epoch: number;
    targets: WorkerTarget[];
  }
  /**
   * The answer to "clock": the main thread's performance.now() when it got the question,
   * so the worker can bound the main thread's clock from above (lease checks).
   */
  | { type: "clock"; sentAt: number; mainNow: number }
  /** Answer "synced" with this id: every message sent before has been acted on. */
  | { type: "sync"; id: number }
  /**
   * The answer to "replicas-failed": the record shows them out of sync, or it cannot (`errno`:
   * what the client is told, ESHUTDOWN when this node is no longer master; nbd/errno.ts).
   */
  | { type: "replicas-failed-result"; id: number; ok: boolean; message?: string; errno?: string }
  /** The answer to a "verify" request. */
  | { type: "verdict"; id: number; verdict: ClientVerdict }
  /** The answer to a "gate" request: the volume's write gate opened, or failed (as above). */
  | { type: "gate-result"; name: string; ok: boolean; message?: string; errno?: string }
  /** Finish in-flight requests on every connection, flush, then report "stopped". */
  | { type: "shutdown" }
  /** Hidden debug hook (BALLAST_DEBUG_HOOKS=1): throw an uncaught error, as a bug would. */
  | { type: "debug-crash"; message: string };

/** Worker -> main thread. */
export type FromWorker =
  | { type: "ready"; worker: number; tid: number }
  /** Asks the main thread's clock; `sentAt`: this worker's performance.now() on sending. */
  | { type: "clock"; sentAt: number }
  /** A data-changing request waits at the volume's write gate. */
  | { type: "gate"; name: string }
  /**
   * Check a certificate (DER): an NBD client's after STARTTLS, or a replica node's server
   * certificate on the peer channel.
   */
  | { type: "verify"; id: number; der: Uint8Array; purpose: "nbd-client" | "node" }
  /** Replicas failed to apply a request to volume `name`: hold until they are out of sync. */
  | {
    type: "replicas-failed";
    id: number;
    name: string;
    nodes: string[];
    /** Why each failed, by node (LiveExport.onReplicasFailed). */
    reasons?: ReplicaReasons;
  }
  /** Connections this worker serves, after each change. */
  /**
   * Connections this worker serves, after each change; `received`: how many it was handed so
   * far (the main thread adds those handed since, which the count cannot show yet).
   */
  | { type: "connections"; count: number; received: number }
  /** Connection `conn` (handed with "serve") is over: the main thread lets its copy go. */
  | { type: "ended"; conn: number }
  | { type: "stopped" }
  /** The answer to "sync". */
  | { type: "synced"; id: number }
  /** One log line (pino JSON) for the main thread to write with its logger. */
  | { type: "log"; line: string }
  /** A message this worker could not act on (version mismatch, bad message). */
  | { type: "fatal"; message: string };

/** Checks that a message from the main thread is one this worker understands. */
export function checkToWorker(m: unknown): ToWorker {
  const t = (m as { type?: unknown } | null)?.type;
  switch (t) {
    case "init": {
      const v = (m as { version?: unknown }).version;
      if (v !== POOL_PROTOCOL_VERSION) {
        throw new Error(
          `data worker speaks protocol ${POOL_PROTOCOL_VERSION}, the main thread ${String(v)}`,
        );
      }
      return m as ToWorker;
    }
    case "serve":
      if (!Number.isInteger((m as { fd?: unknown }).fd)) throw new Error("serve without an fd");
      if (!Number.isInteger((m as { conn?: unknown }).conn)) {
        throw new Error("serve without a connection id");
      }
      return m as ToWorker;
    case "export":
    case "unexport":
    case "resize":
    case "tls":
    case "revoked":
    case "directory":
    case "replication":
    case "clock":
    case "sync":
    case "replicas-failed-result":
    case "gate-result":
    case "verdict":
    case "shutdown":
    case "debug-crash":
      return m as ToWorker;
    default:
      throw new Error(`unknown message to a data worker: ${JSON.stringify(t)}`);
  }
}

/** Checks a message from a worker. */
export function checkFromWorker(m: unknown): FromWorker {
  const t = (m as { type?: unknown } | null)?.type;
  switch (t) {
    case "ready":
    case "clock":
    case "gate":
    case "verify":
    case "replicas-failed":
    case "connections":
    case "ended":
    case "stopped":
    case "synced":
    case "log":
    case "fatal":
      return m as FromWorker;
    default:
      throw new Error(`unknown message from a data worker: ${JSON.stringify(t)}`);
  }
}
