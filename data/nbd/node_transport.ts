/**
 * Transports over node:net / node:tls sockets. Deno's own TLS (rustls) cannot request
 * or verify client certificates on the server side, and `Deno.startTls` is client-only,
 * so NBD_OPT_STARTTLS with mutual authentication goes through node:tls
 * (see ../shared/PLATFORM.md, "TLS").
 * @module
 */

import type { Socket } from "node:net";
import { type SecureContext, TLSSocket } from "node:tls";
import type { Transport } from "./transport.ts";
import { ClientRefusedError } from "./errors.ts";

/** Stop reading from the socket while this much received data waits to be consumed. */
const HIGH_WATER = 4 * 1024 * 1024;

/** A Transport over a node:net or node:tls socket. */
export class NodeSocketTransport implements Transport {
  readonly remote: string;
  #sock: Socket;
  #queue: Uint8Array[] = [];
  #queued = 0;
  #ended = false;
  #error: Error | undefined;
  #waiter: (() => void) | undefined;

  constructor(sock: Socket) {
    this.#sock = sock;
    const host = sock.remoteAddress ?? "?";
    this.remote = host.includes(":")
      ? `[${host}]:${sock.remotePort}`
      : `${host}:${sock.remotePort}`;
    sock.setNoDelay(true);
    sock.on("data", (chunk: Uint8Array) => {
      this.#queue.push(chunk);
      this.#queued += chunk.length;
      if (this.#queued > HIGH_WATER) sock.pause();
      this.#wake();
    });
    sock.on("end", () => {
      this.#ended = true;
      this.#wake();
    });
    sock.on("close", () => {
      this.#ended = true;
      this.#wake();
    });
    // A client leaving with replies queued gives EPIPE/ECONNRESET: remember, never throw.
    sock.on("error", (err: Error) => {
      this.#error ??= err;
      this.#wake();
    });
  }

  /** The socket underneath (for STARTTLS and peer certificates). */
  get socket(): Socket {
    return this.#sock;
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  /** Stops delivering data events (before handing the socket to TLS). */
  detach(): void {
    this.#sock.removeAllListeners("data");
    this.#sock.removeAllListeners("end");
    this.#sock.removeAllListeners("close");
  }

  /** Bytes received but not yet read (must be zero before STARTTLS). */
  get buffered(): number {
    return this.#queued;
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#queue.length === 0) {
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => (this.#waiter = resolve));
    }
    let n = 0;
    while (n < p.length && this.#queue.length > 0) {
      const head = this.#queue[0];
      const take = Math.min(head.length, p.length - n);
      p.set(take === head.length ? head : head.subarray(0, take), n);
      n += take;
      if (take === head.length) this.#queue.shift();
      else this.#queue[0] = head.subarray(take);
    }
    this.#queued -= n;
    if (this.#queued <= HIGH_WATER && this.#sock.isPaused()) this.#sock.resume();
    return n;
  }

  write(p: Uint8Array): Promise<number> {
    if (this.#error) return Promise.reject(this.#error);
    // node keeps a reference to the buffer until the callback: resolve only then,
    // so the caller may reuse it afterwards.
    return new Promise((resolve, reject) => {
      this.#sock.write(p, (err?: Error | null) => (err ? reject(err) : resolve(p.length)));
    });
  }

  close(): void {
    this.#sock.destroy();
  }
}

/** What the server learned about the client from its certificate during STARTTLS. */
export interface TlsPeer {
  /** The client certificate in DER, or undefined if none was sent. */
  certificate: Uint8Array | undefined;
  /** node:tls's own chain verdict against the configured CA bundle. */
  authorized: boolean;
  authorizationError: string | undefined;
}

/**
 * Upgrades a plaintext node socket to TLS as the server, asking for a client
 * certificate. Resolves once the handshake completes; the caller MUST check
 * `peer.authorized` (node:tls completes server-side STARTTLS even for a client
 * certificate from a foreign CA) and its own policy before trusting the client.
 */
export function startTlsServer(
  plain: NodeSocketTransport,
  context: () => SecureContext,
  timeoutMs = 10_000,
): Promise<{ transport: NodeSocketTransport; peer: TlsPeer }> {
  if (plain.buffered !== 0) {
    return Promise.reject(new ClientRefusedError("client sent data before the TLS handshake"));
  }
  plain.detach();
  const tls = new TLSSocket(plain.socket, {
    isServer: true,
    secureContext: context(),
    requestCert: true,
    rejectUnauthorized: true,
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      tls.destroy();
      reject(new ClientRefusedError(`TLS handshake did not complete within ${timeoutMs} ms`));
    }, timeoutMs);
    tls.once("secure", () => {
      clearTimeout(timer);
      const cert = tls.getPeerCertificate(false);
      const raw = cert && "raw" in cert ? (cert.raw as Uint8Array | undefined) : undefined;
      const err = tls.authorizationError;
      resolve({
        transport: new NodeSocketTransport(tls),
        peer: {
          certificate: raw && raw.length > 0 ? new Uint8Array(raw) : undefined,
          authorized: tls.authorized,
          authorizationError: err ? String(err) : undefined,
        },
      });
    });
    tls.once("error", (e: Error) => {
      clearTimeout(timer);
      tls.destroy();
      reject(new ClientRefusedError(`TLS handshake failed: ${e.message}`));
    });
  });
}
