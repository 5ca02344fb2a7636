/**
 * The data plane: NBD protocol and server, block stores, exports, statistics.
 * @module
 */

export { type DataPlaneOptions, type RunningDataPlane, startDataPlane } from "./local_plane.ts";
export type { DataPlane, VolumeSpec, VolumeStatus } from "./plane.ts";
export { LATENCY_BUCKETS, OP_KINDS, type OpKind, VolumeStats } from "./stats.ts";
export {
  type BlockStore,
  BlockStoreError,
  type Extent,
  FileBlockStore,
  MemoryBlockStore,
} from "./store/mod.ts";
export { ExportTable, LiveExport, type ReplicaReasons } from "./exports.ts";
export { NbdServer, type NbdServerOptions } from "./nbd/server.ts";
export type { ExportAccess, ExportCatalog, ExportView, HandshakePolicy } from "./nbd/handshake.ts";
export type { StartTls, TlsUpgrade } from "./nbd/transport.ts";
export {
  clientAccess,
  grantAccess,
  type NbdClientCheck,
  type NbdClientIdentity,
  nbdStartTls,
  type VolumeGrant,
} from "./nbd/client_tls.ts";
export { ClientRefusedError, ProtocolError } from "./nbd/errors.ts";
export { NodeSocketTransport, startTlsServer, type TlsPeer } from "./nbd/node_transport.ts";
export { tcpTransport, type Transport } from "./nbd/transport.ts";
export {
  connectPeer,
  listenPeer,
  nodeVerifier,
  type PeerConnection,
  PeerError,
  type PeerListener,
} from "./peer/mod.ts";
export {
  type ListeningServer,
  listenServer,
  MAX_UNIX_PATH_BYTES,
  raiseDescriptorLimit,
  sheddingAt,
  splitHostPort,
  UnixSocketError,
} from "./net/mod.ts";
export type { NbdAddresses } from "./serving.ts";
export { ListenError, listenFailure } from "./serving.ts";
export type { UnixListenAt } from "./_local_attach.ts";
export {
  type ConnectNode,
  CopyEpochs,
  ReplicaService,
  type ReplicaTarget,
} from "./replication/mod.ts";
export { DEFAULT_TIMINGS, usableCores } from "./pool/mod.ts";
export type { PoolStatus, SizingTimings, WorkerTls } from "./pool/mod.ts";
export {
  Directory,
  type DirectoryEntry,
  EIO_GRACE_MS,
  FAILOVER_MS,
  Upstream,
  UpstreamError,
} from "./proxy/mod.ts";
