/**
 * The data plane as the control plane sees it: local volume stores exported over NBD.
 * The control plane decides what should exist (records in the state store) and calls
 * these methods; the data plane owns files, connections and I/O statistics.
 * @module
 */

import type { DirectoryEntry } from "./proxy/mod.ts";
import type { VolumeStats } from "./stats.ts";
import type { ReplicaReasons } from "./exports.ts";
import type {
  ReplicaTarget,
  ResyncProgress,
  ResyncResult,
  VerifyReport,
} from "./replication/mod.ts";
import type { PoolStatus } from "./pool/pool.ts";

/** What the data plane needs to know about a volume to serve it. */
export interface VolumeSpec {
  name: string;
  uuid: string;
  sizeBytes: number;
  description: string;
}

/** A volume copy on disk (a file under the data dir), exported or not. */
export interface CopyInfo {
  uuid: string;
  sizeBytes: number;
  /** Last modification of the file. */
  mtime: Date;
}

/** Live local facts about one exported volume. */
export interface VolumeStatus {
  allocatedBytes: number;
  /** The size clients see now (the copy's). */
  sizeBytes?: number;
  connections: number;
  /** Requests that changed data (write, trim, write-zeroes) since the volume was exported here. */
  writes: number;
  /** A group master here refused by a member that has seen a newer epoch: it serves nothing. */
  fenced?: boolean;
}

/** A group master's replication of a volume: the epoch and the members to send to. */
export interface ReplicationSpec {
  epoch: number;
  /** Members to replicate to (in sync, or being resynced), with their peer addresses. */
  targets: ReplicaTarget[];
  /**
   * Replicas failed to apply a request: resolves once the group record shows them out of
   * sync; rejects when this node can no longer say so. Requests wait for it.
   */
  onReplicasFailed: (nodes: string[], reasons?: ReplicaReasons) => Promise<void>;
  /**
   * A planned handover: the previous master closed its export on every thread before it
   * handed the group to this node (closeVolume resolved), so there is no read lease of it to
   * wait out (lease.ts, promotionWait).
   */
  handedOver?: boolean;
}

export interface OpenOptions {
  /**
   * Called before the first data-changing request (WRITE, TRIM, WRITE_ZEROES) is
   * executed; that request and every later one wait until it resolves, then the gate is
   * gone. A volume group uses it so that no write is acknowledged while the group record
   * still says the replicas hold the same data. A rejection fails the request with EIO.
   */
  writeGate?: () => Promise<void>;
  /**
   * Replicate every data-changing request to these members (a group master with replicas).
   * The local copy records `epoch` before anything is served, so that an older master's
   * requests are refused here (fencing).
   */
  replication?: ReplicationSpec;
}

export interface DataPlane {
  /**
   * Creates the volume's sparse backing file and exports it (or, with `export: false`,
   * only creates the file: a replica's copy; a copy of this uuid left by an earlier
   * attempt, say before a crash, is kept and grown to the size). Fails with
   * ResourceExhaustedError on a full disk.
   */
  createVolume(spec: VolumeSpec, options?: { export?: boolean }): Promise<void>;
  /**
   * Exports an existing volume (node start, or a group master taking over). Fails if its
   * backing file is missing. On a volume already exported, only replaces the write gate.
   * `resumed`: a group master exported the copy afresh at an epoch it had served before (its
   * node restarted and nobody took over meanwhile).
   */
  openVolume(spec: VolumeSpec, options?: OpenOptions): Promise<{ resumed: boolean } | void>;
  /**
   * Grows the volume; new NBD connections see the new size. Never shrinks: a size at or
   * below the current one changes nothing. With `uuid`, a volume not exported here has
   * its file (a replica's copy) grown instead. Resolves to the size before the call.
   */
  resizeVolume(name: string, sizeBytes: number, options?: { uuid?: string }): Promise<number>;
  /**
   * Stops exporting the volume (disconnecting its NBD clients) and closes its file,
   * keeping the data: the node holds a copy it does not serve. No-op if not exported.
   * Once it resolves, no thread of this process serves the volume any more.
   */
  closeVolume(name: string): Promise<void>;
  /**
   * Stops exporting the volume and deletes its data. Fails with FailedPreconditionError
   * while NBD clients are connected unless `force`, which disconnects them first. With
   * `uuid`, a volume not exported here still has its file (a replica's copy) removed, and
   * an export of that name with another uuid is left alone.
   */
  deleteVolume(name: string, options?: { force?: boolean; uuid?: string }): Promise<void>;
  /**
   * Every copy on disk (the files under the data dir), for the orphan cleanup at node
   * start (control/volumes/_orphans.ts).
   */
  listCopies(): Promise<CopyInfo[]>;
  /**
   * Moves the file of a copy that is not exported out of the volumes directory into
   * DATA/orphaned/ (never deletes it: the operator does, once sure); resolves to its new
   * path relative to the data dir, or undefined if there was no such file. Refused
   * (FailedPreconditionError) for a uuid that is exported.
   */
  quarantineCopy(uuid: string): Promise<string | undefined>;
  /**
   * A new master's fencing: asks `members` (best effort, each bounded) to refuse requests
   * of epochs older than `epoch` for copy `uuid` from now on.
   */
  fence?(uuid: string, epoch: number, members: ReplicaTarget[]): Promise<void>;
  /** New replication targets of an exported group volume (its record changed). */
  setReplication?(name: string, epoch: number, targets: ReplicaTarget[]): void;
  /**
   * Delta Sync of `replica`'s copy of exported group volume `name` (this node its master at
   * `epoch`): the member becomes a replication target at once, then only the blocks that
   * differ are sent (data/replication/resync.ts). Resolves when the copies are equal.
   * `onStarted` is called once the member answered and the compare begins. A failure after
   * that is a ResyncError whose `progress` says how far it got.
   */
  resync?(
    name: string,
    replica: ReplicaTarget,
    epoch: number,
    options?: { onStarted?: () => void },
  ): Promise<ResyncResult>;
  /** Stops every resync under way here (each fails with `reason`): the node is stopping. */
  stopResyncs?(reason: string): void;
  /** Resyncs of `name` under way here. */
  resyncStatus?(name: string): ResyncProgress[];
  /** `serve --resync-rate`: most bytes per second this node sends to resyncs; 0 unlimited. */
  readonly resyncRateBytesPerSecond?: number;
  /**
   * The root hash (hex) of each member's copy of exported group volume `name` as its master
   * sees it (undefined when a member could not be asked).
   */
  memberRoots?(name: string): Promise<Record<string, string | undefined>>;
  /**
   * `volume verify`: compares every member's copy of exported volume `name` with this
   * node's (its master's); `deep` rehashes every region from the data (data/replication/
   * verify.ts). A volume without replicas checks its own copy for silent corruption.
   */
  verifyVolume?(name: string, options: { deep: boolean }): Promise<VerifyReport>;
  /** The file of this node's copy of volume `uuid`, if it has one (the replica side). */
  copyPath?(uuid: string): string | undefined;
  /** Local status, or undefined if the volume is not exported here. */
  volumeStatus(name: string): VolumeStatus | undefined;
  /** Statistics of every exported volume, for /metrics. */
  volumeStats(): VolumeStats[];
  /** Connections open on the NBD listener, including ones still negotiating. */
  openConnections(): number;
  /** The data worker pool, when NBD is served on one (data/pool/). */
  workerPool?(): PoolStatus | undefined;
  /** Hidden debug hook (BALLAST_DEBUG_HOOKS=1): data worker `id` dies of an uncaught error. */
  crashWorker?(id: number): boolean;
  /**
   * The node's TLS material changed (renewal, CA rotation or import): connections made from
   * now on, on every thread, must use it.
   */
  tlsChanged?(): void;
  /** Certificates were revoked: live NBD connections made with them are cut. */
  revoked?(serials: string[]): void;
  /**
   * Where every volume of the cluster is served (its master's NBD address and epoch): a
   * client attaching here to a volume this node does not serve is forwarded there, and
   * follows it across failovers (data/proxy/).
   */
  setDirectory?(entries: DirectoryEntry[]): void;
  /** Disk capacity and free bytes of the data directory. */
  capacity(): { capacityBytes: number; freeBytes: number };
  /**
   * Copies in DATA/orphaned/ (moved there by the orphan cleanup, control/volumes/_orphans.ts)
   * and the bytes they take on disk, sidecars included.
   */
  orphaned?(): { copies: number; bytes: number };
  /** The NBD listen address, "host:port". */
  readonly nbdAddress: string;
  /** The plaintext local-attach NBD listener, "host:port", if configured. */
  readonly nbdLocalAddress: string | undefined;
  /** The Unix socket for local attach (plaintext NBD), if configured. */
  readonly nbdUnixPath?: string | undefined;
  /** The read-only Unix socket for local attach, if configured. */
  readonly nbdUnixRoPath?: string | undefined;
}
