/**
 * The data plane as the control plane sees it: local volume stores exported over NBD.
 * The control plane decides what should exist (records in the state store) and calls
 * these methods; the data plane owns files, connections and I/O statistics.
 * @module
 */

import type { VolumeStats } from "./stats.ts";

/** What the data plane needs to know about a volume to serve it. */
export interface VolumeSpec {
  name: string;
  uuid: string;
  sizeBytes: number;
  description: string;
}

/** Live local facts about one exported volume. */
export interface VolumeStatus {
  allocatedBytes: number;
  connections: number;
}

export interface DataPlane {
  /** Creates the volume's sparse backing file and exports it. Fails with ResourceExhaustedError on a full disk. */
  createVolume(spec: VolumeSpec): Promise<void>;
  /** Exports an existing volume (node start). Fails if its backing file is missing. */
  openVolume(spec: VolumeSpec): Promise<void>;
  /** Grows the volume; new NBD connections see the new size. */
  resizeVolume(name: string, sizeBytes: number): Promise<void>;
  /**
   * Stops exporting the volume and deletes its data. Fails with FailedPreconditionError
   * while NBD clients are connected unless `force`, which disconnects them first.
   */
  deleteVolume(name: string, options?: { force?: boolean }): Promise<void>;
  /** Local status, or undefined if the volume is not exported here. */
  volumeStatus(name: string): VolumeStatus | undefined;
  /** Statistics of every exported volume, for /metrics. */
  volumeStats(): VolumeStats[];
  /** Connections open on the NBD listener, including ones still negotiating. */
  openConnections(): number;
  /** Disk capacity and free bytes of the data directory. */
  capacity(): { capacityBytes: number; freeBytes: number };
  /** The NBD listen address, "host:port". */
  readonly nbdAddress: string;
  /** The plaintext local-attach NBD listener, "host:port", if configured. */
  readonly nbdLocalAddress: string | undefined;
}
