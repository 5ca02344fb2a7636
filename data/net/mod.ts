/**
 * Sockets under the data plane's TLS endpoints (NBD STARTTLS, the peer channel, the API):
 * listening as a promise, node:tls sockets whose reads stop when their reader stops, and
 * gathering a turn's writes into one.
 * @module
 */

export { type ListeningServer, listenServer, splitHostPort } from "./listen.ts";
export { type DirectReads, directReads } from "./tls_direct.ts";
export { type TlsReads, tlsVerifyError, wrapTls, type WrapTlsOptions } from "./tls_socket.ts";
export { COALESCE_BYTES, TurnBatch } from "./turn_batch.ts";
