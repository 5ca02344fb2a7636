/**
 * Why a connection ended early.
 * @module
 */

/** The client broke the protocol; the connection is out of step and is dropped. */
export class ProtocolError extends Error {
  override name = "ProtocolError";
}

/** Thrown by a StartTls hook that refuses the client (bad or missing certificate). */
export class ClientRefusedError extends Error {
  override name = "ClientRefusedError";
}
