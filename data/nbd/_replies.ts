/**
 * A connection's outgoing side: replies are encoded into a batch buffer, and a whole
 * batch leaves in one write while the connection goes on reading. Batch buffers are
 * pooled; writes are chained so they never interleave.
 * @module
 */

import { type Transport, writeAll } from "./transport.ts";

export const INITIAL_OUT = 256 * 1024;
/** Batch buffers kept for reuse per connection. */
const MAX_FREE_BUFFERS = 8;

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

  /** Hands the current batch to the sender and starts a fresh one. */
  flush(): void {
    if (this.len === 0) return;
    const buf = this.buf;
    const len = this.len;
    this.#use(this.#take(INITIAL_OUT));
    this.enqueue(buf, len, true);
  }

  /** Queues `buf[0, len)` for sending after everything queued before it. */
  enqueue(buf: Uint8Array, len: number, recycle: boolean): void {
    this.queued += len;
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
