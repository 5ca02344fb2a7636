/**
 * Why a connection ended early.
 * @module
 */

import type { Transport } from "./transport.ts";

/** The client broke the protocol; the connection is out of step and is dropped. */
export class ProtocolError extends Error {
  override name = "ProtocolError";
}

/**
 * The client closed its connection in the middle of a message: out of step like any
 * ProtocolError, but no violation to count or warn of (a forwarding node leaving a master
 * that changed does this, as does any client killed mid-write).
 */
export class ClientGoneError extends ProtocolError {
  override name = "ClientGoneError";
}

/**
 * Thrown by a StartTls hook that refuses the client (bad or missing certificate). With
 * `transport`, the TLS session is up and the handshake goes on over it only to tell the
 * client why: every further option is refused with NBD_REP_ERR_POLICY and this message.
 */
export class ClientRefusedError extends Error {
  override name = "ClientRefusedError";
  readonly transport?: Transport;

  constructor(message: string, options?: { transport?: Transport; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    if (options?.transport) this.transport = options.transport;
  }
}

/** Node's error codes (node:net sockets, the Unix-socket listeners) for the same. */
const DISCONNECT_CODES = new Set(["EPIPE", "ECONNRESET", "ECONNABORTED", "ENOTCONN"]);

/**
 * Whether `err` only says that the other end went away: Deno's error classes, or a node:net
 * socket's error code (a client that leaves during the handshake or with replies queued).
 */
export function isDisconnect(err: unknown): boolean {
  const { name, code } = (err ?? {}) as { name?: string; code?: unknown };
  return name === "ConnectionReset" || name === "BrokenPipe" || name === "BadResource" ||
    name === "Interrupted" || name === "NotConnected" ||
    (typeof code === "string" && DISCONNECT_CODES.has(code));
}
