/**
 * The contract between a group's driver (driver.ts) and the node hosting the group: what the
 * driver asks of the local data path (GroupHost), what it hands it when this node serves as
 * master (ServeHooks), and the error its hooks fail with once this node is master no more.
 * @module
 */

/**
 * Why a write waiting on this node's gate fails: the node is no longer the group's master (or
 * its driver stopped). `errno` is what the data plane tells the NBD client (data/nbd/errno.ts
 * errnoOf): ESHUTDOWN, not EIO, so that a node forwarding to this one holds the request and
 * sends it to the next master instead of failing it.
 */
export class NotMasterError extends Error {
  override name = "NotMasterError";
  readonly errno = "ESHUTDOWN";
}

/** What the driver gives the host when it serves. */
export interface ServeHooks {
  /**
   * Without replication: the first data-changing request must wait for it (see
   * DataPlane.openVolume), so that the record shows the replicas out of sync first.
   */
  writeGate?: () => Promise<void>;
  /**
   * With replication: replicas failed to apply a request; resolves once the record shows
   * them out of sync (the request may then be acknowledged), rejects with NotMasterError if
   * this node stops serving `epoch` first.
   */
  replicasFailed: (nodes: string[]) => Promise<void>;
  /**
   * A planned handover made this node master: the previous master closed its export before
   * handing over, so there is no read lease of it to wait out.
   */
  handedOver?: boolean;
}

/** What a driver needs from the node hosting the group. */
export interface GroupHost {
  /** Whether the host replicates writes to the in-sync members (no first-write gate). */
  replicates?: boolean;
  /** Export the volume: this node is master at `epoch`. */
  serve(epoch: number, hooks: ServeHooks): Promise<void>;
  /** Stop exporting: the group moved past `epoch` or to another master. */
  stopServing(epoch: number): Promise<void>;
  /**
   * As master at `epoch`, bring `replica`'s copy up to date (Delta Sync); resolves true when
   * it holds every write (it is then reported in sync), false when it could not.
   */
  resync?(replica: string, epoch: number): Promise<boolean>;
  /**
   * Whether the local copy may differ from the replicas' (it accepted a write since it
   * was exported, or holds data at all). Polled while serving.
   */
  written(): boolean;
}
