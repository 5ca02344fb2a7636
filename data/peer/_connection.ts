/**
 * One peer connection over a node:tls socket: length-prefixed frames in both directions with
 * bounded memory at both ends.
 *
 * - Receiving: frames wait in a queue for the consumer; above RECEIVE_HIGH_WATER bytes the
 *   TCP reads stop (direct reads, net/tls_socket.ts), so the kernel's window holds the sender
 *   back instead of this node buffering what the sender sends. At most RECEIVE_HIGH_WATER
 *   plus two frames (the one that crossed the mark and one being assembled) are held.
 * - Sending: send() hands a frame to the socket only while fewer than SEND_HIGH_WATER bytes
 *   wait there; later frames wait (by reference, not copied) and their promises resolve as
 *   the socket takes them, so a sender to a peer that does not read sees send() stop
 *   resolving, and resume when the peer reads. Frames sent in one turn of the event loop
 *   (up to the next microtask checkpoint) leave in one socket write: one TLS write and one
 *   system call for a batch of replies or of pipelined requests, not one per frame.
 * - Reading: batches() hands the consumer every frame received so far at once, so a consumer
 *   that can handle frames synchronously pays one wake-up per read, not per frame.
 *
 * The connection is built with the TLS socket, before the handshake, so that nothing the
 * peer sends is read any other way; it is handed out once the listener or client has
 * verified the peer's certificate (authenticated()).
 * @module
 */

import type { Socket } from "node:net";
import type { SecureContext, TLSSocket } from "node:tls";
import type { Logger } from "pino";
import { COALESCE_BYTES, sendBuffers, type TlsReads, TurnBatch, wrapTls } from "../net/mod.ts";
import { PeerError } from "./_errors.ts";
import {
  FRAME_HEADER_BYTES,
  FrameDecoder,
  FrameTooLargeError,
  MAX_FRAME_BYTES,
  writeFrameHeader,
} from "./_framing.ts";

/** An authenticated connection to another node. */
export interface PeerConnection {
  /** The other node's name, taken from its verified certificate. */
  readonly peerNode: string;
  /** "HOST:PORT" of the other end. */
  readonly remote: string;
  /**
   * Sends one frame: `frame`, followed by `payload` when given (a large payload is written
   * by reference, not copied). Resolves once the socket has taken it (reuse the buffers only
   * then); frames are taken in order, and only while few bytes wait in the socket, so the
   * promises of a sender to a peer that does not read stop resolving. Rejects with PeerError
   * "closed" once the connection is gone.
   */
  send(frame: Uint8Array, payload?: Uint8Array): Promise<void>;
  /**
   * The received frames, in order; one consumer only. Ends when the peer closes cleanly or
   * close() is called; throws PeerError ("protocol", "closed") when the connection breaks.
   */
  frames(): AsyncIterable<Uint8Array>;
  /**
   * The received frames in order, every frame waiting at once (never an empty batch); one
   * consumer only, instead of frames(). Ends and throws as frames() does.
   */
  batches(): AsyncIterable<Uint8Array[]>;
  /**
   * Bytes received and waiting for the consumer, and bytes given to send() and not yet
   * written (waiting for the socket, or in it).
   */
  queued(): { received: number; sending: number };
  /**
   * The consumer is done with `frame`, received from this connection: its buffer may hold a
   * later frame. Optional; call it only when nothing refers to the frame any more.
   */
  recycle(frame: Uint8Array): void;
  /** Closes the connection now; frames still queued either way are dropped. */
  close(): void;
  /**
   * Closes the connection now with a TCP reset: what this node's kernel had not yet sent
   * is discarded with it. After close() the kernel goes on delivering what it holds, for as
   * long as it retries (minutes across a partition); after abort() nothing sent on this
   * connection can reach the peer any more. A replication link that failed is aborted so
   * that its frames cannot reach a replica after those of the link that replaces it.
   */
  abort(): void;
}

/**
 * Direct reads take up to this much per socket read (and decrypt into a buffer of that size):
 * a replica receiving 1 MiB WRITEs made 16 reads and event-loop turns per MiB with the default
 * 64 KiB (docs/BENCHMARKS.md, "Run 8"). Two such buffers per connection; a node has one peer
 * connection per other node and thread.
 */
const READ_BUFFER_BYTES = 256 * 1024;
/** Stop reading from the socket while this many received bytes wait to be consumed. */
export const RECEIVE_HIGH_WATER = 4 * 1024 * 1024;
/** Hand no further frame to the socket while this many bytes wait to be written. */
export const SEND_HIGH_WATER = 4 * 1024 * 1024;
/** Frames and payloads this large are written by reference rather than copied. */
const BY_REFERENCE_BYTES = 64 * 1024;

export interface SocketPeerConnectionOptions {
  /** "server" for an accepted socket, "client" for one this node connected. */
  side: "server" | "client";
  /** The TLS context (certificate, key, trust bundle) for the handshake. */
  context: SecureContext;
  /** Client side: the SNI name (omit for an IP address). */
  servername?: string;
  remote: string;
  /** Largest frame accepted from the peer (default MAX_FRAME_BYTES). */
  maxFrameBytes?: number;
  /** The first frame is a greeting: refuse it above this size, whatever maxFrameBytes says. */
  greetingLimit?: number;
}

interface Outgoing {
  frame: Uint8Array;
  /** Sent after `frame`, as part of the same frame. */
  payload: Uint8Array | undefined;
  /** Bytes of the frame (frame and payload). */
  length: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class SocketPeerConnection implements PeerConnection {
  readonly remote: string;
  /** The TLS socket: 'secure' and 'error' during the handshake, then owned by this. */
  readonly tls: TLSSocket;
  #peerNode = "";
  #reads: TlsReads;
  #paused = false;
  #log: Logger | undefined;
  #decoder: FrameDecoder;
  /** The TCP socket under the TLS one (abort() resets it). */
  readonly #raw: Socket;
  #queue: Uint8Array[] = [];
  #queued = 0;
  /** No more frames will arrive. */
  #ended = false;
  /** Why the connection broke, thrown after the queued frames are read. */
  #error: PeerError | undefined;
  #closedLocally = false;
  #waiter: (() => void) | undefined;
  /** Frames not yet handed to the socket. */
  #outbox: Outgoing[] = [];
  /** Frames handed to the socket whose write has not completed. */
  #writing = new Set<Outgoing>();
  #consumed = false;
  /** Bytes of the last batch handed out, still held by the consumer (receiveBatch). */
  #lent = 0;
  /** Frames handed over in this turn, written together at its end (#flush). */
  #turn = new TurnBatch<Outgoing>((batch) => this.#flush(batch));
  /** Send buffers whose writes completed (#flush). */
  readonly #sendBuffers = sendBuffers();

  /** Wraps `raw` (connected) in TLS and starts the handshake. */
  constructor(raw: Socket, options: SocketPeerConnectionOptions) {
    this.remote = options.remote;
    this.#raw = raw;
    this.#decoder = new FrameDecoder(options.maxFrameBytes ?? MAX_FRAME_BYTES);
    if (options.greetingLimit !== undefined) this.#decoder.limitNext(options.greetingLimit);
    raw.setNoDelay(true);
    // A peer whose host vanished without a FIN or a reset is found out after about 12
    // minutes of silence (probes after 60 s, then the system's 9 every 75 s), and the
    // connection with its buffers goes; a live, idle one answers the probes.
    raw.setKeepAlive(true, 60_000);
    const { tls, reads } = wrapTls(raw, {
      side: options.side,
      context: options.context,
      servername: options.servername,
      sink: (chunk) => this.#onData(chunk),
      readBufferBytes: READ_BUFFER_BYTES,
    });
    this.tls = tls;
    this.#reads = reads;
    tls.on("end", () => {
      if (this.#decoder.partial) {
        this.#fail(
          "protocol",
          `peer ${this.remote} closed the connection in the middle of a frame`,
        );
      }
      this.#end();
    });
    // EPIPE/ECONNRESET when the peer leaves with writes queued: remember it, never throw.
    tls.on("error", (err: Error) => {
      this.#fail("closed", `connection to peer ${this.remote} failed: ${err.message}`, err);
    });
    tls.on("close", () => {
      this.#end();
      this.#rejectSends(
        new PeerError("closed", `connection to peer ${this.remote} is closed`, {
          remote: this.remote,
          cause: this.#error,
        }),
      );
    });
    tls.on("drain", () => this.#pump());
  }

  get peerNode(): string {
    return this.#peerNode;
  }

  /** Whether pause/resume stop the TCP reads (see TlsReads.direct). */
  get directReads(): boolean {
    return this.#reads.direct;
  }

  queued(): { received: number; sending: number } {
    let sending = 0;
    for (const o of this.#outbox) sending += o.length;
    for (const o of this.#writing) sending += o.length;
    return { received: this.#queued, sending };
  }

  /** Records who the verified peer is, once the caller has checked its certificate. */
  authenticated(peerNode: string, log?: Logger): void {
    this.#peerNode = peerNode;
    this.#log = log;
  }

  #onData(chunk: Uint8Array): void {
    if (this.#ended || this.#closedLocally) return;
    let frames: Uint8Array[];
    try {
      // Direct reads hand out views of a reused buffer: frames must be copied out of them.
      frames = this.#decoder.push(chunk, this.#reads.direct);
    } catch (err) {
      if (!(err instanceof FrameTooLargeError)) throw err;
      this.#log?.warn(
        { remote: this.remote, peer: this.#peerNode, length: err.length, limit: err.limit },
        "peer sent an oversized frame; closing the connection",
      );
      this.#fail("protocol", `peer ${this.remote}: ${err.message}`, err);
      this.tls.destroy();
      this.#end();
      return;
    }
    for (const f of frames) {
      this.#queue.push(f);
      this.#queued += f.length;
    }
    if (this.#queued > RECEIVE_HIGH_WATER && !this.#paused) {
      this.#paused = true;
      this.#reads.pause();
    }
    if (frames.length > 0) this.#wake();
  }

  #fail(code: "protocol" | "closed", message: string, cause?: unknown): void {
    if (this.#closedLocally) return;
    this.#error ??= new PeerError(code, message, { remote: this.remote, cause });
    this.#wake();
  }

  #end(): void {
    this.#ended = true;
    this.#wake();
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  /** The next frame, or null after a clean end. One caller at a time. */
  async receive(): Promise<Uint8Array | null> {
    await this.#waitForFrames();
    if (this.#queue.length === 0) return null;
    const f = this.#queue.shift()!;
    this.#taken(f.length);
    return f;
  }

  /**
   * Every frame waiting (at least one), or null after a clean end. One caller at a time. The
   * batch's bytes count as received until the next call (the consumer holds them meanwhile),
   * so the bound on memory is the same as with one frame at a time.
   */
  async receiveBatch(): Promise<Uint8Array[] | null> {
    this.#taken(this.#lent);
    this.#lent = 0;
    await this.#waitForFrames();
    if (this.#queue.length === 0) return null;
    const batch = this.#queue;
    this.#queue = [];
    this.#lent = this.#queued;
    return batch;
  }

  /** Resolves once a frame waits or the connection ended cleanly; throws if it broke. */
  async #waitForFrames(): Promise<void> {
    if (this.#waiter) throw new Error("receive() is already waiting for a frame");
    while (this.#queue.length === 0) {
      if (this.#error) throw this.#error;
      if (this.#ended) return;
      await new Promise<void>((resolve) => (this.#waiter = resolve));
    }
  }

  /** `bytes` were taken by the consumer: read on once half the high-water mark is free. */
  #taken(bytes: number): void {
    this.#queued -= bytes;
    if (this.#paused && this.#queued <= RECEIVE_HIGH_WATER / 2 && !this.#ended) {
      this.#paused = false;
      this.#reads.resume();
    }
  }

  recycle(frame: Uint8Array): void {
    this.#decoder.recycle(frame);
  }

  frames(): AsyncIterable<Uint8Array> {
    const batches = this.batches();
    return {
      async *[Symbol.asyncIterator]() {
        for await (const batch of batches) yield* batch;
      },
    };
  }

  batches(): AsyncIterable<Uint8Array[]> {
    if (this.#consumed) throw new Error("frames() of a peer connection may be read only once");
    this.#consumed = true;
    const receive = () => this.receiveBatch();
    return {
      async *[Symbol.asyncIterator]() {
        while (true) {
          const batch = await receive();
          if (batch === null) return;
          yield batch;
        }
      },
    };
  }

  #closedError(): PeerError {
    return new PeerError("closed", `connection to peer ${this.remote} is closed`, {
      remote: this.remote,
      cause: this.#error,
    });
  }

  send(frame: Uint8Array, payload?: Uint8Array): Promise<void> {
    const sock = this.tls;
    if (this.#error || this.#closedLocally || sock.destroyed || !sock.writable) {
      return Promise.reject(this.#closedError());
    }
    const length = frame.length + (payload?.length ?? 0);
    if (length > MAX_FRAME_BYTES) {
      return Promise.reject(
        new RangeError(`frame of ${length} bytes is above the ${MAX_FRAME_BYTES}-byte limit`),
      );
    }
    return new Promise<void>((resolve, reject) => {
      this.#outbox.push({ frame, payload, length, resolve, reject });
      this.#pump();
    });
  }

  /**
   * Hands waiting frames to the socket while it holds fewer than SEND_HIGH_WATER bytes:
   * gathered during this turn and written at its end (the next microtask checkpoint) by
   * #flush, so that every frame sent in one turn (a batch of replies, the requests of one
   * pipelined read) leaves in one socket write.
   */
  #pump(): void {
    const sock = this.tls;
    while (this.#outbox.length > 0 && sock.writableLength + this.#turn.bytes < SEND_HIGH_WATER) {
      if (sock.destroyed || !sock.writable) return;
      const out = this.#outbox.shift()!;
      this.#writing.add(out);
      this.#turn.add(out, FRAME_HEADER_BYTES + out.length);
    }
  }

  /**
   * Writes the gathered frames: headers, frames and small payloads are copied into pooled
   * buffers of COALESCE_BYTES (one write for a batch of small frames), and a part of
   * BY_REFERENCE_BYTES or more is written by reference, without a copy. Each write is a plain
   * one (no cork: Deno's vectored TLS write is slow, see net/tls_socket.ts), and no buffer is
   * allocated per write (a fresh ArrayBuffer costs Deno microseconds).
   */
  #flush(batch: Outgoing[]): void {
    const sock = this.tls;
    if (sock.destroyed || !sock.writable) return; // 'close' rejects them
    let writes = 0;
    let failure: Error | null | undefined;
    let gathered = false;
    const settle = () => {
      for (const out of batch) this.#settle(out, failure);
      this.#pump();
    };
    // Every frame is written once the last write completed (node completes them in order).
    const written = (err?: Error | null) => {
      failure ??= err;
      if (--writes === 0 && gathered) settle();
    };
    let buf: Uint8Array | undefined;
    let at = 0;
    const ship = () => {
      if (buf === undefined) return;
      const whole = buf;
      buf = undefined;
      writes++;
      sock.write(whole.subarray(0, at), (err?: Error | null) => {
        this.#sendBuffers.give(whole);
        written(err);
      });
    };
    /** The send buffer, with room for `n` more bytes (n <= COALESCE_BYTES). */
    const room = (n: number): Uint8Array => {
      if (buf !== undefined && at + n > buf.length) ship();
      if (buf === undefined) {
        buf = this.#sendBuffers.take(COALESCE_BYTES);
        at = 0;
      }
      return buf;
    };
    const put = (part: Uint8Array) => {
      if (part.length >= BY_REFERENCE_BYTES) {
        ship();
        writes++;
        sock.write(part, written); // node holds it until its write completes
        return;
      }
      room(part.length).set(part, at);
      at += part.length;
    };
    for (const { frame, payload, length } of batch) {
      writeFrameHeader(room(FRAME_HEADER_BYTES), at, length);
      at += FRAME_HEADER_BYTES;
      put(frame);
      if (payload) put(payload);
    }
    ship();
    gathered = true;
    if (writes === 0) settle();
  }

  /** A frame handed to the socket was written (or failed): its send() settles. */
  #settle(out: Outgoing, err?: Error | null): void {
    if (!this.#writing.delete(out)) return;
    if (err) {
      out.reject(
        new PeerError("closed", `sending to peer ${this.remote} failed: ${err.message}`, {
          remote: this.remote,
          cause: err,
        }),
      );
    } else {
      out.resolve();
    }
  }

  #rejectSends(err: PeerError): void {
    const all = [...this.#outbox, ...this.#writing];
    this.#outbox = [];
    this.#writing.clear();
    for (const o of all) o.reject(err);
  }

  close(): void {
    if (this.#closedLocally) return;
    this.#closedLocally = true;
    this.#queue = [];
    this.#queued = 0;
    this.#lent = 0;
    this.tls.destroy();
    this.#end();
    this.#rejectSends(this.#closedError());
  }

  abort(): void {
    if (!this.#closedLocally) {
      try {
        // SO_LINGER 0 and close: the kernel drops the unsent bytes and sends RST.
        this.#raw.resetAndDestroy();
      } catch { /* not connected any more: nothing is left to send */ }
    }
    this.close();
  }
}
