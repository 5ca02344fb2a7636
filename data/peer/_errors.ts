/**
 * The one error type of the peer channel: a stable `code` for callers to branch on, the
 * peer's address, and for a wrong identity the names involved.
 * @module
 */

/** Why a peer connection failed or ended. */
export type PeerErrorCode =
  /** TCP connect failed (refused, unreachable, DNS). */
  | "unreachable"
  /** The peer's certificate did not verify (chain, expiry, revocation, role, EKU). */
  | "untrusted"
  /** The peer's certificate is valid but names another node than expected. */
  | "wrong-node"
  /** The peer refused this node's certificate, or closed before accepting it. */
  | "refused"
  /** Connect, TLS handshake or greeting did not finish in time. */
  | "timeout"
  /** The peer broke the framing or the greeting (e.g. a frame above the size limit). */
  | "protocol"
  /** The connection is closed (locally or by the peer, or the socket failed). */
  | "closed";

export class PeerError extends Error {
  override name = "PeerError";
  readonly code: PeerErrorCode;
  /** "HOST:PORT" of the peer. */
  readonly remote: string;
  /** wrong-node: the node that was expected and the node the certificate names. */
  readonly expected?: string;
  readonly presented?: string;

  constructor(
    code: PeerErrorCode,
    message: string,
    options: { remote: string; cause?: unknown; expected?: string; presented?: string },
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.remote = options.remote;
    if (options.expected !== undefined) this.expected = options.expected;
    if (options.presented !== undefined) this.presented = options.presented;
  }
}

/** "HOST:PORT", with brackets around an IPv6 host. */
export function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}
