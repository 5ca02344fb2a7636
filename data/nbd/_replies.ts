/**
 * A connection's outgoing side: replies are encoded into a batch buffer (Replies), and a
 * whole batch leaves in one write while the connection goes on reading (ReplyBatcher).
 * Batch buffers are pooled; writes are chained so they never interleave.
 * @module
 */

import {
  blockStatusSize,
  encodeBlockStatus,
  encodeErrorReply,
  encodeOffsetDataHeader,
  encodeOffsetDataPiece,
  encodeOkReply,
  encodeSimpleReply,
  errorReplySize,
  Request,
  type StatusDescriptor,
} from "./codec.ts";
import {
  NBD_CMD_FLAG_DF,
  SIMPLE_REPLY_HEADER_SIZE,
  STREAM_PIECE,
  STRUCTURED_REPLY_HEADER_SIZE,
} from "./constants.ts";
import { type Errno, errnoOf, nbdError } from "./errno.ts";
import { type Transport, writeAll } from "./transport.ts";

export const INITIAL_OUT = 256 * 1024;
/** Batch buffers kept for reuse per connection. */
const MAX_FREE_BUFFERS = 8;
/** Batches up to this size are copied out when flushed (see flush()). */
const SMALL_FLUSH = 16 * 1024;

export class ReplyBatcher {
  /** The batch being built: `len` bytes of `buf` are encoded replies. */
  buf: Uint8Array = new Uint8Array(INITIAL_OUT);
  view: DataView = new DataView(this.buf.buffer);
  len = 0;
  /** Bytes handed to the sender and not yet written. */
  queued = 0;
  /** The first write error; later writes are skipped. */
  error: unknown;
  #free: Uint8Array[] = [];
  #sending: Promise<void> = Promise.resolve();
  #transport: () => Transport;
  #stopped: () => boolean;

  /** `transport` is read at each write (STARTTLS swaps it); `stopped` skips writes after close. */
  constructor(transport: () => Transport, stopped: () => boolean) {
    this.#transport = transport;
    this.#stopped = stopped;
  }

  /** Resolves when everything handed over so far has been written (or failed). */
  get sending(): Promise<void> {
    return this.#sending;
  }

  /** Ensures `n` more bytes fit in the batch; returns where they go. */
  reserve(n: number): number {
    if (this.len + n > this.buf.length) {
      if (this.len > 0) this.flush();
      if (n > this.buf.length) {
        this.#recycle(this.buf);
        this.#use(this.#take(n));
      }
    }
    return this.len;
  }

  #flushing = false;

  /**
   * Flushes at the end of this turn (the next microtask checkpoint): replies that complete
   * together (the answers of one batch from a replica) leave in one write.
   */
  flushSoon(): void {
    if (this.#flushing) return;
    this.#flushing = true;
    queueMicrotask(() => {
      this.#flushing = false;
      this.flush();
    });
  }

  /**
   * Hands the current batch to the sender and starts a fresh one. A small batch (a few
   * replies without data) is copied out and its buffer kept: many small flushes in flight (the
   * replies of replicated or forwarded requests, one flush per turn) would otherwise each hold
   * a batch buffer, empty the pool and allocate (and zero) a fresh 256 KiB buffer each.
   */
  flush(): void {
    if (this.len === 0) return;
    if (this.len <= SMALL_FLUSH) {
      const len = this.len;
      this.len = 0;
      this.enqueue(this.buf.slice(0, len), len, false);
      return;
    }
    const buf = this.buf;
    const len = this.len;
    this.#use(this.#take(INITIAL_OUT));
    this.enqueue(buf, len, true);
  }

  /**
   * A buffer of at least `min` bytes that the caller fills and hands back through
   * enqueue(buf, len, true) (or release()), from the pool when possible.
   */
  take(min: number): Uint8Array {
    return this.#take(min);
  }

  /** Returns a buffer from take() that was not sent. */
  release(buf: Uint8Array): void {
    this.#recycle(buf);
  }

  /**
   * While one reply goes out in pieces as one message (a simple reply, or one structured
   * chunk: readStreamed()), what others hand over waits here: nothing may land inside it.
   */
  #held: [Uint8Array, number, boolean][] | undefined;

  /** From now on until endHold(), only piece() writes; everything else waits. */
  hold(): void {
    this.#held ??= [];
  }

  /** Sends what waited during hold(), in order, after the pieces. */
  endHold(): void {
    const held = this.#held ?? [];
    this.#held = undefined;
    for (const [buf, len, recycle] of held) this.#send(buf, len, recycle);
  }

  /** Queues a piece of the message sent under hold(). */
  piece(buf: Uint8Array, len: number): void {
    this.queued += len;
    this.#send(buf, len, false);
  }

  /** Queues `buf[0, len)` for sending after everything queued before it. */
  enqueue(buf: Uint8Array, len: number, recycle: boolean): void {
    this.queued += len;
    if (this.#held) this.#held.push([buf, len, recycle]);
    else this.#send(buf, len, recycle);
  }

  #send(buf: Uint8Array, len: number, recycle: boolean): void {
    this.#sending = this.#sending.then(async () => {
      if (this.#stopped() || this.error) return;
      try {
        await writeAll(this.#transport(), buf, len);
      } catch (err) {
        this.error = err;
      } finally {
        this.queued -= len;
        if (recycle) this.#recycle(buf);
      }
    });
  }

  /** A free batch buffer of at least `min` bytes, from the pool when possible. */
  #take(min: number): Uint8Array {
    const free = this.#free;
    for (let i = free.length - 1; i >= 0; i--) {
      if (free[i].length >= min) {
        const b = free[i];
        free[i] = free[free.length - 1];
        free.pop();
        return b;
      }
    }
    return new Uint8Array(Math.max(min, INITIAL_OUT));
  }

  #recycle(buf: Uint8Array): void {
    if (this.#free.length < MAX_FREE_BUFFERS) this.#free.push(buf);
  }

  #use(buf: Uint8Array): void {
    this.buf = buf;
    this.view = new DataView(buf.buffer);
    this.len = 0;
  }
}

/** A streamed READ failed and was answered with an error (the connection goes on). */
export class StreamedReadError extends Error {
  override name = "StreamedReadError";
  constructor(readonly reason: unknown) {
    super(reason instanceof Error ? reason.message : String(reason), { cause: reason });
  }
}

const enc = new TextEncoder();
/** Longest error message sent to a client (the spec's SHOULD for strings is 256 bytes). */
const MAX_MESSAGE = 200;

/** A request's reply that is sent later (after a flush or a replica's answer). */
export interface DeferredReply {
  ok(): void;
  error(errno: Errno, message: string): void;
  /**
   * A READ's reply whose data arrives later (a forwarded READ: data/nbd/_forwarded.ts): the
   * data goes into `data` (the reply buffer itself, after its header), then send() sends it;
   * the buffer is not to be touched after send() or error().
   */
  readReply?(): { data: Uint8Array; send(): void };
  /** A READ's reply with `bytes` (copied into the batch at once). */
  data?(bytes: Uint8Array): void;
}

/**
 * The reply step of the transmission loop ("Simple reply message", "Structured reply
 * chunk message"): encodes each kind of reply into the batch. Error values come only from
 * nbdError() (errno.ts), knowing the request's flags.
 */
export class Replies {
  /** NBD_OPT_STRUCTURED_REPLY was negotiated (set when transmission starts). */
  structured = false;

  constructor(readonly batch: ReplyBatcher) {}

  /** A success reply without payload. */
  ok(req: Request): void {
    const out = this.batch;
    const at = out.reserve(STRUCTURED_REPLY_HEADER_SIZE);
    out.len = encodeOkReply(out.view, at, req, this.structured);
  }

  /** An error reply for `req`: the NBD error value for `errno` and a message for the client. */
  error(req: Request, errno: Errno, message: string, encoded?: Uint8Array): void {
    const m = encoded ?? enc.encode(message.slice(0, MAX_MESSAGE));
    const out = this.batch;
    const at = out.reserve(errorReplySize(this.structured, m));
    out.len = encodeErrorReply(
      out.buf,
      out.view,
      at,
      req,
      this.structured,
      nbdError(errno, req.flags),
      m,
    );
  }

  /** A READ reply: `fill` writes `req.length` bytes of data straight into the batch. */
  read(req: Request, fill: (into: Uint8Array) => void): void {
    const out = this.batch;
    const len = req.length;
    let dataAt: number;
    if (this.structured) {
      const at = out.reserve(STRUCTURED_REPLY_HEADER_SIZE + 8 + len);
      dataAt = encodeOffsetDataHeader(out.view, at, req);
    } else {
      const at = out.reserve(SIMPLE_REPLY_HEADER_SIZE + len);
      dataAt = encodeSimpleReply(out.view, at, req, 0);
    }
    fill(out.buf.subarray(dataAt, dataAt + len));
    out.len = dataAt + len;
  }

  /**
   * A READ too large for one batch, sent in pieces of STREAM_PIECE bytes through two buffers
   * used in turn: a piece is read from the store while the one before is being written, so
   * two pieces are held whatever the READ's size. With structured replies (and no
   * DF) every piece is its own OFFSET_DATA chunk and a failure midway still gets an error
   * chunk ("MUST include an error chunk"); a simple reply (or DF) has promised all the data
   * once its header left, so a failure midway can only end the connection (rethrown).
   */
  async readStreamed(
    req: Request,
    read: (into: Uint8Array, offset: number) => void,
  ): Promise<void> {
    const out = this.batch;
    out.flush(); // replies queued before this READ go first
    const chunked = this.structured && (req.flags & NBD_CMD_FLAG_DF) === 0;
    const headerBytes = this.structured
      ? STRUCTURED_REPLY_HEADER_SIZE + 8
      : SIMPLE_REPLY_HEADER_SIZE;
    // Two buffers, used in turn: one is being written while the next piece is read.
    const spare = [
      new Uint8Array(headerBytes + STREAM_PIECE),
      new Uint8Array(headerBytes + STREAM_PIECE),
    ];
    // One message in many pieces (a simple reply, or DF's one chunk): nothing in between
    // ("Simple reply message", "Structured reply chunk message"). Separate chunks may be.
    if (!chunked) out.hold();
    try {
      await this.#pieces(req, read, { chunked, headerBytes, spare, out });
    } finally {
      if (!chunked) out.endHold();
    }
  }

  async #pieces(
    req: Request,
    read: (into: Uint8Array, offset: number) => void,
    o: { chunked: boolean; headerBytes: number; spare: Uint8Array[]; out: ReplyBatcher },
  ): Promise<void> {
    const { chunked, headerBytes, spare, out } = o;
    const total = req.length;
    const offset = req.offset;
    let sent = 0;
    for (let i = 0; sent < total; i++) {
      const n = Math.min(STREAM_PIECE, total - sent);
      const withHeader = chunked || sent === 0;
      const buf = spare[i % 2].subarray(0, (withHeader ? headerBytes : 0) + n);
      const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
      let at = 0;
      if (chunked) at = encodeOffsetDataPiece(view, 0, req, sent + n === total, offset + sent, n);
      else if (sent === 0) {
        at = this.structured
          ? encodeOffsetDataHeader(view, 0, req)
          : encodeSimpleReply(view, 0, req, 0);
      }
      try {
        read(buf.subarray(at, at + n), offset + sent);
      } catch (err) {
        if (sent > 0 && !chunked) throw err;
        this.error(req, errnoOf(err), err instanceof Error ? err.message : String(err));
        out.flush();
        throw new StreamedReadError(err);
      }
      // The previous piece (in the other buffer) goes out while this one was read; it must be
      // written before this is queued, so that its buffer is free for the next piece.
      await out.sending;
      if (out.error) throw out.error;
      if (chunked) out.enqueue(buf, buf.length, false);
      else out.piece(buf, buf.length);
      sent += n;
    }
  }

  /** A BLOCK_STATUS reply for context `contextId`. */
  blockStatus(req: Request, contextId: number, descriptors: readonly StatusDescriptor[]): void {
    const out = this.batch;
    const at = out.reserve(blockStatusSize(descriptors.length));
    out.len = encodeBlockStatus(out.view, at, req, contextId, descriptors);
  }

  /**
   * A reply sent later: encoded into the batch when it completes, and written with it at the
   * end of that turn at the latest (the Request object is reused, so its handle and flags
   * are copied now).
   */
  deferred(req: Request): DeferredReply {
    return new Deferred(this, req);
  }
}

/**
 * Replies.deferred()'s reply: one object per request, its methods on the prototype (a
 * forwarded 4k request made five closures here otherwise).
 */
class Deferred implements DeferredReply {
  readonly #replies: Replies;
  readonly #r = new Request();
  #readBuf: Uint8Array | undefined;

  constructor(replies: Replies, req: Request) {
    this.#replies = replies;
    const r = this.#r;
    r.handleHi = req.handleHi;
    r.handleLo = req.handleLo;
    r.flags = req.flags;
    r.offsetHi = req.offsetHi;
    r.offsetLo = req.offsetLo;
    r.length = req.length;
  }

  // Replies are encoded into the batch and flushed at the end of the task, so that the
  // replies to requests answered together (a batch of a master's or replica's answers)
  // leave in one write. Replies may go in any order ("Ordering of messages and writes").
  ok(): void {
    this.#replies.ok(this.#r);
    this.#replies.batch.flushSoon();
  }

  error(errno: Errno, message: string): void {
    const out = this.#replies.batch;
    if (this.#readBuf) out.release(this.#readBuf);
    this.#readBuf = undefined;
    this.#replies.error(this.#r, errno, message);
    out.flushSoon();
  }

  data(bytes: Uint8Array): void {
    this.#r.length = bytes.length;
    this.#replies.read(this.#r, (into) => into.set(bytes));
    this.#replies.batch.flushSoon();
  }

  readReply(): { data: Uint8Array; send(): void } {
    const { structured, batch: out } = this.#replies;
    const r = this.#r;
    const header = structured ? STRUCTURED_REPLY_HEADER_SIZE + 8 : SIMPLE_REPLY_HEADER_SIZE;
    const buf = this.#readBuf ??= out.take(header + r.length);
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const at = structured ? encodeOffsetDataHeader(view, 0, r) : encodeSimpleReply(view, 0, r, 0);
    return {
      data: buf.subarray(at, at + r.length),
      send: () => {
        this.#readBuf = undefined;
        // On its own, after what is queued; replies may go in any order.
        out.enqueue(buf, at + r.length, true);
      },
    };
  }
}
