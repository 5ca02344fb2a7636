/**
 * Sockets under the data plane's TLS endpoints (NBD STARTTLS, the peer channel, the API):
 * listening as a promise, node:tls sockets whose reads stop when their reader stops, gathering
 * a turn's writes into one, and the libc listeners (TCP and Unix sockets) whose connections are
 * handed to data workers.
 * @module
 */

export { type ListeningServer, listenServer, splitHostPort } from "./listen.ts";
export { type DirectReads, directReads } from "./tls_direct.ts";
export { adoptTcpFd, type FdStream, fdStreamsAvailable } from "./fd_stream.ts";
export {
  closeFd,
  descriptorsShort,
  isUnixPeer,
  MAX_UNIX_PATH_BYTES,
  raiseDescriptorLimit,
  type Shed,
  sheddingAt,
  shedWarning,
  UnixSocketError,
} from "./fd_listener.ts";
export { type TlsReads, tlsVerifyError, wrapTls, type WrapTlsOptions } from "./tls_socket.ts";
export { COALESCE_BYTES, PayloadPool, sendBuffers, TurnBatch } from "./turn_batch.ts";
