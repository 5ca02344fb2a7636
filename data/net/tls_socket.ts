/**
 * A node:tls socket over an already connected plaintext socket, whose reads stop when its
 * reader stops. Deno 2.9's node:tls keeps reading the TCP socket while a TLSSocket is paused
 * (tls_direct.ts), so a peer that sends to a reader that does not read would cost unbounded
 * memory; here the direct reads are installed before the handshake starts, and pausing them
 * stops the TCP reads themselves (the kernel's window then holds the sender back).
 *
 * node:tls does not set `authorized` on a TLSSocket built this way on either side: callers
 * read `tlsVerifyError()` and must run their own certificate check (ca/ verifyPeer), as the
 * NBD STARTTLS path does.
 * @module
 */

import type { Socket } from "node:net";
import { type SecureContext, TLSSocket } from "node:tls";
import { directReads } from "./tls_direct.ts";

/** Pausing and resuming what a wrapped TLS socket delivers. */
export interface TlsReads {
  /**
   * True when chunks are views of a reused buffer, valid only during the sink call (copy what
   * you keep) and pause() stops the TCP reads. False on the fallback ('data' events): chunks
   * are fresh buffers, and pause() stops delivery but, on Deno 2.9, not the reading.
   */
  readonly direct: boolean;
  pause(): void;
  resume(): void;
}

export interface WrapTlsOptions {
  /** "server" answers the handshake and asks for a client certificate; "client" starts it. */
  side: "server" | "client";
  context: SecureContext;
  /** Client side: the SNI name (omit for an IP address). */
  servername?: string;
  /** Gets every decrypted chunk (see TlsReads.direct for its lifetime). */
  sink: (chunk: Uint8Array) => void;
  /** Direct reads: the most one socket read takes, and the plaintext buffer (default 64 KiB). */
  readBufferBytes?: number;
}

// deno-lint-ignore no-explicit-any
type Internal = any;

/**
 * Wraps `raw` (connected) in a TLSSocket and starts the handshake; 'secure' fires on the
 * returned socket when it completes, 'error' when it fails. Throws if this runtime cannot
 * start a client handshake on a wrapped socket.
 */
export function wrapTls(raw: Socket, options: WrapTlsOptions): { tls: TLSSocket; reads: TlsReads } {
  const server = options.side === "server";
  const tls = new TLSSocket(raw, {
    isServer: server,
    secureContext: options.context,
    requestCert: true,
    rejectUnauthorized: true,
  });
  if (!server && typeof (tls as Internal)._start !== "function") {
    tls.destroy();
    throw new Error("this Deno's node:tls cannot start a client handshake on a connected socket");
  }
  if (!server && options.servername) (tls as Internal).setServername?.(options.servername);
  boundVectoredWrites(tls);
  const direct = directReads(tls, options.sink, options.readBufferBytes);
  let reads: TlsReads;
  if (direct) {
    reads = { direct: true, pause: () => direct.pause(), resume: () => direct.resume() };
  } else {
    tls.on("data", options.sink);
    reads = { direct: false, pause: () => tls.pause(), resume: () => tls.resume() };
  }
  // A server socket starts its handshake on the next tick by itself; a client one does not.
  if (!server) (tls as Internal)._start();
  return { tls, reads };
}

/** Queued chunks none of which is larger than this still go to the TLS layer in one write. */
const VECTORED_MAX_CHUNK = 64 * 1024;

/**
 * Makes `tls` hand the chunks that queue up in its Writable (corked writes, or writes made
 * while an earlier one is in progress) to the TLS layer one at a time when one of them is
 * large. Deno 2.9.6's node:tls handles a vectored write with a large chunk at a cost that
 * grows about with the square of the chunk's size: a corked 4-byte + 32-byte + 1 MiB write
 * cost 6.2-9.6 ms of CPU against 0.5-0.7 ms for the same bytes written one by one
 * (docs/BENCHMARKS.md, "TLS writes"), the time in memmove and brk inside the runtime. Small
 * chunks keep the vectored write (32 corked 4 KiB chunks: 4.3 us each, against 12.5 us one
 * by one, when each becomes a TLS write of its own).
 */
function boundVectoredWrites(tls: TLSSocket): void {
  const t = tls as Internal;
  const vectored = t._writev;
  if (typeof vectored !== "function" || typeof t._write !== "function") return;
  type Queued = { chunk: Uint8Array; encoding: string };
  t._writev = function (this: Internal, chunks: Queued[], cb: (err?: Error | null) => void) {
    if (chunks.every((c) => c.chunk.length <= VECTORED_MAX_CHUNK)) {
      return vectored.call(this, chunks, cb);
    }
    let i = 0;
    const next = (err?: Error | null) => {
      if (err || i === chunks.length) return cb(err);
      const { chunk, encoding } = chunks[i++];
      this._write(chunk, encoding, next);
    };
    next();
  };
}

/**
 * node:tls's verdict on the other end's certificate chain after the handshake of a wrapped
 * socket: undefined when the chain verified against the context's CA bundle (or when this
 * runtime does not say), else node's error code (e.g. UNABLE_TO_VERIFY_LEAF_SIGNATURE).
 */
export function tlsVerifyError(tls: TLSSocket): string | undefined {
  if (tls.authorized) return undefined;
  const handle = (tls as Internal)._handle;
  if (typeof handle?.verifyError !== "function") return undefined;
  const err = handle.verifyError();
  if (err === null || err === undefined || err === "") return undefined;
  return typeof err === "string" ? err : String(err.code ?? err.message ?? err);
}
