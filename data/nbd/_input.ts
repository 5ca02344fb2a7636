/**
 * A connection's receive buffer: one reusable Uint8Array whose unparsed bytes are
 * [start, end). Requests are decoded and WRITE payloads written to the store straight
 * from it (no copy); it grows only for requests larger than itself.
 * @module
 */

import { REQUEST_HEADER_SIZE } from "./constants.ts";
import { ClientGoneError } from "./errors.ts";
import type { Transport } from "./transport.ts";

const INITIAL_IN = 256 * 1024;
/** Largest buffer kept for pipelining large WRITEs (a single request may need more). */
const MAX_IN = 8 * 1024 * 1024;

export class InputBuffer {
  buf: Uint8Array = new Uint8Array(INITIAL_IN);
  view: DataView = new DataView(this.buf.buffer);
  start = 0;
  end = 0;
  /** Stream offset of buf[0]: bytes dropped from the front by compaction so far. */
  #base = 0;

  /** Stream offset of `start`: every byte before it has been consumed. */
  get position(): number {
    return this.#base + this.start;
  }

  /** Bytes received from the stream so far. */
  get received(): number {
    return this.#base + this.end;
  }

  /** Makes room so that `total` bytes from `start` fit in the buffer. */
  reserve(total: number): void {
    if (this.start + total <= this.buf.length) return;
    const unread = this.buf.subarray(this.start, this.end);
    if (total > this.buf.length) {
      // Room for several such requests, so pipelined large WRITEs are compacted rarely.
      const size = Math.max(total, Math.min(Math.max(4 * total, 2 * this.buf.length), MAX_IN));
      const bigger = new Uint8Array(size);
      bigger.set(unread);
      this.buf = bigger;
      this.view = new DataView(bigger.buffer);
    } else {
      this.buf.copyWithin(0, this.start, this.end);
    }
    this.#base += this.start;
    this.end -= this.start;
    this.start = 0;
  }

  /** Reads more bytes from `t`; false at end of stream. */
  async fill(t: Transport): Promise<boolean> {
    if (this.start === this.end) {
      this.#base += this.start;
      this.start = this.end = 0;
    } else if (this.end === this.buf.length) {
      this.reserve(this.end - this.start + REQUEST_HEADER_SIZE);
    }
    const n = await t.read(this.end === 0 ? this.buf : this.buf.subarray(this.end));
    if (n === null) return false;
    this.end += n;
    return true;
  }

  /** Waits until `n` unread bytes are buffered (handshake messages). */
  async need(t: Transport, n: number): Promise<void> {
    this.reserve(n);
    while (this.end - this.start < n) {
      if (!(await this.fill(t))) {
        const between = this.end === this.start;
        throw new ClientGoneError(`client closed the connection${between ? "" : " mid-message"}`);
      }
    }
  }

  /** Reads and drops `n` bytes (the payload of a refused request). */
  async discard(t: Transport, n: number): Promise<void> {
    let left = n;
    for (;;) {
      const have = Math.min(left, this.end - this.start);
      this.start += have;
      left -= have;
      if (left === 0) return;
      if (!(await this.fill(t))) {
        throw new ClientGoneError("client closed the connection mid-payload");
      }
    }
  }

  /**
   * The next `length` bytes as they arrive (a streamed WRITE's payload): views of the buffer,
   * each valid until the next is asked for. `waiting(true)` when it must wait for the client,
   * `waiting(false)` once all has arrived.
   */
  async *pieces(
    t: Transport,
    length: number,
    waiting: (yes: boolean) => void,
  ): AsyncGenerator<Uint8Array> {
    let left = length;
    while (left > 0) {
      if (this.start === this.end) {
        waiting(true);
        if (!(await this.fill(t))) {
          throw new ClientGoneError("client left in the middle of a WRITE payload");
        }
      }
      const n = Math.min(this.end - this.start, left);
      const piece = this.buf.subarray(this.start, this.start + n);
      this.start += n;
      left -= n;
      yield piece;
    }
    waiting(false);
  }
}

/** What parsing the input buffer found. */
export type Parsed =
  /**
   * A complete request is in `#req`; a WRITE's payload starts at `payload`; `at` is the
   * request's offset in the stream.
   */
  | { kind: "request"; payload: number; at: number }
  /** Not enough bytes buffered for the next request. */
  | { kind: "more" }
  /** A WRITE too large to buffer was answered; its payload must be skipped. */
  | { kind: "skip"; bytes: number }
  /** NBD_CMD_DISC. */
  | { kind: "disc" };
