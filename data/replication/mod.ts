/**
 * Replication of group volumes: the wire format (wire.ts), the master's side (one
 * Replicator per volume and thread, over PeerLinks to the replica nodes) and the replica's
 * side (ReplicaService: applies requests to the local copy, fences old epochs), and region
 * hashes for Delta Sync (hashes.ts).
 * @module
 */

export { CopyEpochs } from "./epochs.ts";
export { CopyHashes } from "./copies.ts";
export { FANOUT, HashState, MAIN_THREAD, nodesAt, treeLevels } from "./hash_state.ts";
export { REGION_BYTES, RegionTable, type SharedRegions } from "./regions.ts";
export { WriteTracker } from "./tracker.ts";
export { differingRegions, hashRegions } from "./hashes.ts";
export { type ConnectNode, LinkError, PeerLink, PeerLinks, REPLICA_TIMEOUT_MS } from "./links.ts";
export { MasterReplication, type ReplicatedExport } from "./master.ts";
export {
  LEASE_MS,
  LeaseKeeper,
  type LeaseState,
  LeaseView,
  PING_EVERY_MS,
  promotionWait,
} from "./lease.ts";
export { type CopyLocator, ReplicaService } from "./replica.ts";
export {
  type ReplicaReasons,
  type ReplicaTarget,
  type Replicated,
  type ReplicatedOp,
  Replicator,
} from "./replicator.ts";
export * as wire from "./wire.ts";
export { MAX_LISTED, type MemberVerdict, type VerifyReport } from "./verify.ts";
export {
  COARSE,
  FINE,
  ResyncError,
  type ResyncProgress,
  resyncReplica,
  type ResyncResult,
} from "./resync.ts";
