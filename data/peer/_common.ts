/**
 * What the listener and the client share: the credential and verification callbacks,
 * option checks, and reading the peer's certificate off a node:tls socket.
 * @module
 */

import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { tlsVerifyError } from "../net/mod.ts";
import { hostPort } from "./_errors.ts";
import { MAX_FRAME_BYTES } from "./_framing.ts";

/** PEM key, certificate chain and trust bundle, read again on every use (renewal). */
export type PeerCredentials = () => { key: string; cert: string; ca: string };

/** The verdict on a peer's certificate: the node it names, or why it is refused. */
export type PeerVerdict = { ok: true; node: string } | { ok: false; reason: string };

/**
 * Checks a peer's leaf certificate (DER). The listener's must require clientAuth, the
 * client's serverAuth; both must accept only role node (see nodeVerifier).
 */
export type PeerVerify = (certDer: Uint8Array) => Promise<PeerVerdict>;

export const DEFAULT_PEER_TIMEOUT_MS = 10_000;

export function checkCommon(opts: { host: string; port: number; maxFrameBytes?: number }): void {
  if (typeof opts.host !== "string" || opts.host === "") {
    throw new TypeError(`peer host must be a non-empty string, got ${JSON.stringify(opts.host)}`);
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new RangeError(`peer port must be an integer in [0, 65535], got ${opts.port}`);
  }
  const max = opts.maxFrameBytes;
  if (max !== undefined && (!Number.isInteger(max) || max < 0 || max > MAX_FRAME_BYTES)) {
    throw new RangeError(`maxFrameBytes must be an integer in [0, ${MAX_FRAME_BYTES}], got ${max}`);
  }
}

export function checkTimeout(name: string, ms: number | undefined): number {
  if (ms === undefined) return DEFAULT_PEER_TIMEOUT_MS;
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new RangeError(`${name} must be a positive number of milliseconds, got ${ms}`);
  }
  return ms;
}

export function remoteOf(sock: Socket): string {
  return hostPort(sock.remoteAddress ?? "?", sock.remotePort ?? 0);
}

/** The peer's leaf certificate in DER, if it sent one. */
function peerCertificateDer(sock: TLSSocket): Uint8Array | undefined {
  try {
    const raw = sock.getPeerCertificate(false)?.raw;
    return raw && raw.length > 0 ? new Uint8Array(raw) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The verdict on the other end of a finished TLS handshake, the peer's `side`: node:tls's
 * chain check, a certificate present, then `verify` (a throwing `verify` refuses). node:tls
 * leaves `authorized` unset on wrapped sockets, so its verdict is read with tlsVerifyError;
 * `verify` checks the chain again against Ballast's own CAs in any case.
 */
export async function verifyPeer(
  sock: TLSSocket,
  verify: PeerVerify,
  side: "client" | "server",
): Promise<PeerVerdict> {
  const chain = tlsVerifyError(sock);
  if (chain !== undefined) return { ok: false, reason: `TLS: ${chain}` };
  const der = peerCertificateDer(sock);
  if (der === undefined) return { ok: false, reason: `no ${side} certificate` };
  try {
    return await verify(der);
  } catch (err) {
    return { ok: false, reason: `certificate check failed: ${(err as Error).message}` };
  }
}
