/**
 * Transports over node:net / node:tls sockets. Deno's own TLS (rustls) cannot request
 * or verify client certificates on the server side, and `Deno.startTls` is client-only,
 * so NBD_OPT_STARTTLS with mutual authentication goes through node:tls
 * (see ../shared/PLATFORM.md, "TLS").
 * @module
 */

import { type Socket, Socket as NodeSocket } from "node:net";
import { type SecureContext, TLSSocket } from "node:tls";
import type { Transport } from "./transport.ts";
import { ClientGoneError, ClientRefusedError } from "./errors.ts";
import { adoptTcpFd, type DirectReads, directReads } from "../net/mod.ts";

/**
 * The most one read of a TLS client's socket takes (ciphertext), and the plaintext buffer:
 * 256 KiB rather than the default 64 KiB. A client writing 1 MiB requests costs 4 socket
 * reads, receive() calls and event-loop turns per MiB instead of 16; the server's CPU per GiB
 * of TLS 1 MiB writes over 4 connections fell 0.97 -> 0.84 s (medians of 9 alternated runs,
 * docs/BENCHMARKS.md). Memory: two such buffers per TLS connection (512 KiB, was 128 KiB).
 */
const TLS_READ_BYTES = 256 * 1024;

/** Stop reading from the socket while this much received data waits to be consumed. */
const HIGH_WATER = 4 * 1024 * 1024;

/**
 * Received bytes copied out of a reused read buffer (direct TLS reads): one growable buffer,
 * so the steady state allocates nothing.
 */
class ByteQueue {
  #buf = new Uint8Array(256 * 1024);
  #start = 0;
  #end = 0;

  get size(): number {
    return this.#end - this.#start;
  }

  push(src: Uint8Array): void {
    if (this.#end + src.length > this.#buf.length) {
      const size = this.size;
      if (size + src.length <= this.#buf.length) {
        this.#buf.copyWithin(0, this.#start, this.#end);
      } else {
        const next = new Uint8Array(Math.max(2 * this.#buf.length, size + src.length));
        next.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = next;
      }
      this.#start = 0;
      this.#end = size;
    }
    this.#buf.set(src, this.#end);
    this.#end += src.length;
  }

  take(p: Uint8Array): number {
    const n = Math.min(p.length, this.size);
    p.set(this.#buf.subarray(this.#start, this.#start + n));
    this.#start += n;
    if (this.#start === this.#end) this.#start = this.#end = 0;
    return n;
  }
}

/**
 * A Transport over a node:net or node:tls socket. A TLS socket is read directly into reused
 * buffers where the runtime allows it (data/net/tls_direct.ts), else through 'data' events.
 */
export class NodeSocketTransport implements Transport {
  readonly remote: string;
  #sock: Socket;
  /** 'data' mode: the chunks node delivered (each a fresh buffer). */
  #queue: Uint8Array[] = [];
  /** Direct mode: copies of what arrived while no read() was waiting. */
  #bytes: ByteQueue | undefined;
  #direct: DirectReads | undefined;
  /** Direct mode: a read() waiting for data, filled straight from the read buffer. */
  #target: Uint8Array | undefined;
  #targetFilled = 0;
  /** 'data' mode: bytes in #queue. */
  #queued = 0;
  #ended = false;
  #error: Error | undefined;
  #waiter: (() => void) | undefined;

  constructor(
    sock: Socket,
    options: {
      directTls?: boolean;
      /** Direct reads the caller set up (see openFdTransport); it feeds `sink`. */
      direct?: { reads: DirectReads; sink: { receive?: (chunk: Uint8Array) => void } };
      /** "host:port" of the peer when the socket cannot tell (an inherited descriptor). */
      remote?: string;
    } = {},
  ) {
    this.#sock = sock;
    const host = sock.remoteAddress ?? "?";
    this.remote = options.remote ??
      (host.includes(":") ? `[${host}]:${sock.remotePort}` : `${host}:${sock.remotePort}`);
    sock.setNoDelay(true);
    if (options.directTls) {
      this.#direct = directReads(
        sock as TLSSocket,
        (chunk) => this.#receive(chunk),
        TLS_READ_BYTES,
      );
    } else if (options.direct) {
      this.#direct = options.direct.reads;
      options.direct.sink.receive = (chunk) => this.#receive(chunk);
    }
    if (this.#direct) this.#bytes = new ByteQueue();
    else {
      sock.on("data", (chunk: Uint8Array) => {
        this.#queue.push(chunk);
        this.#queued += chunk.length;
        if (this.#queued > HIGH_WATER) sock.pause();
        this.#wake();
      });
    }
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

  /** "direct" when reads bypass 'data' events (data/net/tls_direct.ts, fd sockets), else "data-events". */
  get readPath(): string {
    return this.#direct !== undefined ? "direct" : "data-events";
  }

  /** Direct mode: `chunk` is a view of a reused buffer, copied before returning. */
  #receive(chunk: Uint8Array): void {
    let used = 0;
    const target = this.#target;
    if (target !== undefined) {
      used = Math.min(chunk.length, target.length - this.#targetFilled);
      target.set(used === chunk.length ? chunk : chunk.subarray(0, used), this.#targetFilled);
      this.#targetFilled += used;
    }
    if (used < chunk.length) {
      this.#bytes!.push(used === 0 ? chunk : chunk.subarray(used));
      if (this.#bytes!.size > HIGH_WATER) this.#direct!.pause();
    }
    this.#wake();
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
    return this.#bytes?.size ?? this.#queued;
  }

  async read(p: Uint8Array): Promise<number | null> {
    if (this.#bytes) return await this.#readDirect(p, this.#bytes);
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

  async #readDirect(p: Uint8Array, bytes: ByteQueue): Promise<number | null> {
    if (p.length === 0) return 0;
    let n = bytes.take(p);
    if (bytes.size <= HIGH_WATER / 2) this.#direct!.resume();
    if (n > 0) return n;
    // Nothing queued: the next chunk is copied straight into p.
    this.#target = p;
    this.#targetFilled = 0;
    try {
      while (this.#targetFilled === 0) {
        if (this.#error) throw this.#error;
        if (this.#ended) return null;
        await new Promise<void>((resolve) => (this.#waiter = resolve));
      }
      n = this.#targetFilled;
    } finally {
      this.#target = undefined;
    }
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

  closeWrite(): Promise<void> {
    const sock = this.#sock;
    if (sock.destroyed || sock.writableEnded) return Promise.resolve();
    return new Promise((resolve) => sock.end(() => resolve()));
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
  // Now, not at 'secure': with direct reads, data right after the handshake comes to it.
  const transport = new NodeSocketTransport(tls, { directTls: true });
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
        transport,
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
    // A client that hangs up before the handshake is done left; it was not refused (a
    // settled promise ignores this later close).
    tls.once("close", () => {
      clearTimeout(timer);
      reject(new ClientGoneError("client closed the connection during the TLS handshake"));
    });
  });
}

const FD_READ_BUFFER_BYTES = 64 * 1024;

/**
 * A Transport over a connected socket this process inherited as a file descriptor (the data
 * workers' connections, handed over by the main thread's FdListener). With `direct`, reads
 * need no 'data' events: a TCP socket (`tcp`) is adopted as a stream read straight into the
 * caller's buffer where the runtime allows it (data/net/fd_stream.ts), else (and for a Unix
 * socket) reads land in one reused buffer (node's `onread` option) and pausing stops them. Use
 * `direct` for plaintext connections only: a connection that may switch to TLS (STARTTLS)
 * reads through 'data' events until then, and the TLS layer reads directly afterwards.
 */
export function openFdTransport(
  fd: number,
  remote: string,
  options: { direct: boolean; tcp?: boolean },
): Transport {
  const stream = options.direct && options.tcp ? adoptTcpFd(fd) : undefined;
  if (stream) return { ...stream, remote, readPath: "fd-stream" };
  const base = { fd, readable: true, writable: true } as const;
  if (!options.direct) {
    return new NodeSocketTransport(new NodeSocket(base as SocketInit), { remote });
  }
  const sink: { receive?: (chunk: Uint8Array) => void } = {};
  let paused = false;
  const buffer = new Uint8Array(FD_READ_BUFFER_BYTES);
  const sock = new NodeSocket({
    ...base,
    onread: {
      buffer,
      // Returning false stops the reads until resume().
      callback: (n: number) => {
        sink.receive?.(buffer.subarray(0, n));
        return !paused;
      },
    },
  } as SocketInit);
  const reads: DirectReads = {
    pause() {
      paused = true;
    },
    resume() {
      if (!paused) return;
      paused = false;
      sock.resume();
    },
  };
  return new NodeSocketTransport(sock, { direct: { reads, sink }, remote });
}

type SocketInit = ConstructorParameters<typeof NodeSocket>[0];
