/**
 * The node-to-node peer channel: mutual TLS with node certificates, node identity from the
 * certificate, length-prefixed frames. Replication builds on this.
 * @module
 */

export {
  connectPeer,
  type ConnectPeerOptions,
  DEFAULT_PEER_TIMEOUT_MS,
  listenPeer,
  type ListenPeerOptions,
  nodeVerifier,
  type PeerCertificateChecker,
  type PeerCredentials,
  type PeerListener,
  type PeerVerdict,
  type PeerVerify,
} from "./channel.ts";
export type { PeerConnection } from "./_connection.ts";
export { PeerError, type PeerErrorCode } from "./_errors.ts";
export { MAX_FRAME_BYTES } from "./_framing.ts";
