/**
 * The node-to-node peer channel: mutual TLS with node certificates, node identity from the
 * certificate, length-prefixed frames. Replication builds on this.
 * @module
 */

export {
  listenPeer,
  type ListenPeerOptions,
  nodeVerifier,
  type PeerCertificateChecker,
  type PeerListener,
} from "./channel.ts";
export { connectPeer, type ConnectPeerOptions } from "./_client.ts";
export {
  DEFAULT_PEER_TIMEOUT_MS,
  type PeerCredentials,
  type PeerVerdict,
  type PeerVerify,
} from "./_common.ts";
export { type PeerConnection, RECEIVE_HIGH_WATER, SEND_HIGH_WATER } from "./_connection.ts";
export { PeerError, type PeerErrorCode } from "./_errors.ts";
export { MAX_FRAME_BYTES } from "./_framing.ts";
