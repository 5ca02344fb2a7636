/**
 * Reading a server-side node:tls socket without a fresh buffer per read (Deno 2.9's node:tls
 * internals; docs/BENCHMARKS.md, "Third TLS run: direct TLS reads").
 *
 * On the default path every TCP read lands in a newly allocated 64 KiB buffer, is handed to
 * the TLS layer (a copy), decrypted, and delivered as another new buffer; the buffers are
 * freed only by V8's garbage collector. At 1 MiB requests that is hundreds of MB of churn and
 * 40-60 page faults per MiB, and it capped Ballast's TLS at about 550-700 MiB/s. Worse, the
 * TLS layer's readStop() only stops delivering plaintext, not reading the socket (Deno's
 * tls_wrap.rs, "Known limitation"), so pausing a TLS socket does not bound memory.
 *
 * Here both layers read into two fixed buffers instead: the TCP handle reads ciphertext into
 * one and hands it to the TLS layer (which copies it synchronously), and the TLS layer writes
 * plaintext into the other (Node's `onread: {buffer, callback}` mechanism, which node:tls does
 * not accept for a wrapped socket, so it is set through the socket's own symbols). Pausing
 * stops the TCP reads themselves.
 *
 * Everything used is checked first; when anything is missing (another Deno version), or with
 * BALLAST_TLS_DIRECT_READS=off, this returns undefined and the caller keeps the ordinary
 * 'data' events.
 * @module
 */

import process from "node:process";
import type { TLSSocket } from "node:tls";

/** Pause and resume the TCP reads under a TLS socket read directly. */
export interface DirectReads {
  pause(): void;
  resume(): void;
}

/** Default size of each of the two read buffers. */
const READ_BUFFER_BYTES = 64 * 1024;

// deno-lint-ignore no-explicit-any
type Internal = any;

/** Deno's streamBaseState: slot 0 holds the byte count (or error) of the current read. */
function readState(): Int32Array | undefined {
  try {
    const binding = (process as Internal).binding?.("stream_wrap");
    const state = binding?.streamBaseState;
    return state instanceof Int32Array ? state : undefined;
  } catch {
    return undefined;
  }
}

const STATE = readState();
/** BALLAST_TLS_DIRECT_READS=off keeps the ordinary 'data' events (for comparison). */
const DISABLED = (() => {
  try {
    return Deno.env.get("BALLAST_TLS_DIRECT_READS") === "off";
  } catch {
    return false; // no env permission: the default
  }
})();

/**
 * Switches `tls` (a server TLSSocket just constructed over a connected net.Socket, before
 * its handshake starts on the next tick) to direct reads: `sink` gets every decrypted chunk
 * as a view of a reused buffer, valid only during the call (copy what you keep). Returns
 * undefined, changing nothing, when the internals are not there. `bufferBytes`: the size of
 * each of the two buffers, the most one socket read takes (default 64 KiB).
 */
export function directReads(
  tls: TLSSocket,
  sink: (chunk: Uint8Array) => void,
  bufferBytes = READ_BUFFER_BYTES,
): DirectReads | undefined {
  const t = tls as Internal;
  const wrap = t._handle;
  const tcp = wrap?._nativeTcpHandle;
  const symbols = Object.getOwnPropertySymbols(t);
  const kBuffer = symbols.find((s) => s.description === "kBuffer");
  const kBufferCb = symbols.find((s) => s.description === "kBufferCb");
  if (
    DISABLED || STATE === undefined || kBuffer === undefined || kBufferCb === undefined ||
    typeof wrap?.receive !== "function" || typeof wrap.emitEof !== "function" ||
    typeof wrap.useUserBuffer !== "function" || typeof tcp?.useUserBuffer !== "function" ||
    typeof tcp.readStart !== "function" || typeof tcp.readStop !== "function"
  ) {
    return undefined;
  }
  const state = STATE;

  // Plaintext: the TLS layer writes into `clear` and calls back with the count.
  const clear = new Uint8Array(bufferBytes);
  t[kBuffer] = clear;
  t[kBufferCb] = (n: number) => {
    sink(clear.subarray(0, n));
  };
  wrap.useUserBuffer(clear);

  // Ciphertext: the TCP handle reads into `sealed`; receive() copies it before returning.
  // The TLS socket's start (next tick) restarts the TCP reads, which picks this onread up.
  const sealed = new Uint8Array(bufferBytes);
  tcp.useUserBuffer(sealed);
  let stopped = false;
  let ended = false;
  tcp.onread = () => {
    const n = state[0];
    if (n > 0) wrap.receive(sealed.subarray(0, n));
    else if (n < 0) {
      // End of stream or an error: what Deno's own onread does.
      ended = true;
      tcp.readStop();
      tcp.unref?.();
      wrap.emitEof();
    }
  };
  return {
    pause() {
      if (stopped || ended) return;
      stopped = true;
      tcp.readStop();
    },
    resume() {
      if (!stopped || ended) return;
      stopped = false;
      tcp.readStart();
    },
  };
}
