/**
 * One established peer connection over a node:tls socket: length-prefixed frames in both
 * directions, read backpressure (the socket pauses while received frames wait), and write
 * backpressure (send() resolves when node is done with the buffer).
 * @module
 */

import type { TLSSocket } from "node:tls";
import type { Logger } from "pino";
import { PeerError } from "./_errors.ts";
import { FrameDecoder, frameHeader, FrameTooLargeError, MAX_FRAME_BYTES } from "./_framing.ts";

/** An authenticated connection to another node. */
export interface PeerConnection {
  /** The other node's name, taken from its verified certificate. */
  readonly peerNode: string;
  /** "HOST:PORT" of the other end. */
  readonly remote: string;
  /**
   * Sends one frame. Resolves once node has written it to the socket and released the
   * buffer (reuse it only then); rejects with PeerError "closed" once the connection is gone.
   */
  send(frame: Uint8Array): Promise<void>;
  /**
   * The received frames, in order; one consumer only. Ends when the peer closes cleanly or
   * close() is called; throws PeerError ("protocol", "closed") when the connection breaks.
   */
  frames(): AsyncIterable<Uint8Array>;
  /** Closes the connection now; frames still queued are dropped. */
  close(): void;
}

/** Stop reading from the socket while this many received bytes wait to be consumed. */
const HIGH_WATER = 8 * 1024 * 1024;

export interface SocketPeerConnectionOptions {
  peerNode: string;
  remote: string;
  /** Largest frame accepted from the peer (default MAX_FRAME_BYTES). */
  maxFrameBytes?: number;
  /** The first frame is a greeting: refuse it above this size, whatever maxFrameBytes says. */
  greetingLimit?: number;
  log?: Logger;
}

export class SocketPeerConnection implements PeerConnection {
  readonly peerNode: string;
  readonly remote: string;
  #sock: TLSSocket;
  #log: Logger | undefined;
  #decoder: FrameDecoder;
  #queue: Uint8Array[] = [];
  #queued = 0;
  /** No more frames will arrive. */
  #ended = false;
  /** Why the connection broke, thrown after the queued frames are read. */
  #error: PeerError | undefined;
  #closedLocally = false;
  #waiter: (() => void) | undefined;
  #pendingSends = new Set<(err: PeerError) => void>();
  #consumed = false;

  constructor(sock: TLSSocket, options: SocketPeerConnectionOptions) {
    this.#sock = sock;
    this.peerNode = options.peerNode;
    this.remote = options.remote;
    this.#log = options.log;
    this.#decoder = new FrameDecoder(options.maxFrameBytes ?? MAX_FRAME_BYTES);
    if (options.greetingLimit !== undefined) this.#decoder.limitNext(options.greetingLimit);
    sock.setNoDelay(true);
    sock.on("data", (chunk: Uint8Array) => this.#onData(chunk));
    sock.on("end", () => {
      if (this.#decoder.partial) {
        this.#fail(
          "protocol",
          `peer ${this.remote} closed the connection in the middle of a frame`,
        );
      }
      this.#end();
    });
    // EPIPE/ECONNRESET when the peer leaves with writes queued: remember it, never throw.
    sock.on("error", (err: Error) => {
      this.#fail("closed", `connection to peer ${this.remote} failed: ${err.message}`, err);
    });
    sock.on("close", () => {
      this.#end();
      const gone = new PeerError("closed", `connection to peer ${this.remote} is closed`, {
        remote: this.remote,
      });
      for (const reject of [...this.#pendingSends]) reject(gone);
    });
  }

  #onData(chunk: Uint8Array): void {
    if (this.#ended) return;
    let frames: Uint8Array[];
    try {
      frames = this.#decoder.push(chunk);
    } catch (err) {
      if (!(err instanceof FrameTooLargeError)) throw err;
      this.#log?.warn(
        { remote: this.remote, peer: this.peerNode, length: err.length, limit: err.limit },
        "peer sent an oversized frame; closing the connection",
      );
      this.#fail("protocol", `peer ${this.remote}: ${err.message}`, err);
      this.#sock.destroy();
      this.#end();
      return;
    }
    for (const f of frames) {
      this.#queue.push(f);
      this.#queued += f.length;
    }
    if (this.#queued > HIGH_WATER) this.#sock.pause();
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
    if (this.#waiter) throw new Error("receive() is already waiting for a frame");
    while (this.#queue.length === 0) {
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((resolve) => (this.#waiter = resolve));
    }
    const f = this.#queue.shift()!;
    this.#queued -= f.length;
    if (this.#queued <= HIGH_WATER && this.#sock.isPaused() && !this.#ended) this.#sock.resume();
    return f;
  }

  frames(): AsyncIterable<Uint8Array> {
    if (this.#consumed) throw new Error("frames() of a peer connection may be read only once");
    this.#consumed = true;
    const receive = () => this.receive();
    return {
      async *[Symbol.asyncIterator]() {
        while (true) {
          const f = await receive();
          if (f === null) return;
          yield f;
        }
      },
    };
  }

  send(frame: Uint8Array): Promise<void> {
    const sock = this.#sock;
    if (this.#error || this.#closedLocally || sock.destroyed || !sock.writable) {
      return Promise.reject(
        new PeerError("closed", `connection to peer ${this.remote} is closed`, {
          remote: this.remote,
          cause: this.#error,
        }),
      );
    }
    if (frame.length > MAX_FRAME_BYTES) {
      return Promise.reject(
        new RangeError(`frame of ${frame.length} bytes is above the ${MAX_FRAME_BYTES}-byte limit`),
      );
    }
    return new Promise<void>((resolve, reject) => {
      const fail = (err: PeerError) => {
        if (this.#pendingSends.delete(fail)) reject(err);
      };
      this.#pendingSends.add(fail);
      const done = (err?: Error | null) => {
        if (!this.#pendingSends.delete(fail)) return;
        if (!err) return resolve();
        reject(
          new PeerError("closed", `sending to peer ${this.remote} failed: ${err.message}`, {
            remote: this.remote,
            cause: err,
          }),
        );
      };
      // Header and payload go out together; node holds `frame` until `done` runs.
      if (frame.length === 0) {
        sock.write(frameHeader(0), done);
        return;
      }
      sock.cork();
      sock.write(frameHeader(frame.length));
      sock.write(frame, done);
      sock.uncork();
    });
  }

  close(): void {
    if (this.#closedLocally) return;
    this.#closedLocally = true;
    this.#queue = [];
    this.#queued = 0;
    this.#sock.destroy();
    this.#end();
  }
}
