/**
 * Gathering what a connection sends during one turn of the event loop, to write it together
 * at the turn's end (the next microtask checkpoint): the requests of one pipelined read, or
 * the replies that complete together, then cost one TLS write and one system call instead of
 * one each (docs/BENCHMARKS.md, "CPU profiles of the replicated write path").
 * @module
 */

/** Small batches up to this many bytes are worth copying into one buffer. */
export const COALESCE_BYTES = 256 * 1024;

/** Items added during one turn, handed to `flush` together at its end. */
export class TurnBatch<T> {
  #items: T[] = [];
  #bytes = 0;
  readonly #flush: (items: T[], bytes: number) => void;

  /** `flush` gets the items of a turn (never none) and the bytes they were added with. */
  constructor(flush: (items: T[], bytes: number) => void) {
    this.#flush = flush;
  }

  /** Bytes added in this turn so far. */
  get bytes(): number {
    return this.#bytes;
  }

  add(item: T, bytes: number): void {
    this.#items.push(item);
    this.#bytes += bytes;
    if (this.#items.length === 1) queueMicrotask(() => this.#end());
  }

  #end(): void {
    const items = this.#items;
    const bytes = this.#bytes;
    this.#items = [];
    this.#bytes = 0;
    if (items.length > 0) this.#flush(items, bytes);
  }
}

/** The smallest buffer a PayloadPool hands out. */
const MIN_PAYLOAD_BUFFER = 4 * 1024;

/**
 * Reused buffers: payloads held across an asynchronous step (a forwarded WRITE's data, held
 * until the master answered it), and send buffers that gather a turn's bytes (sendBuffers():
 * take COALESCE_BYTES, give it back once the socket's write of it completed). A fresh 1 MiB
 * ArrayBuffer per request costs Deno about 0.6 ms here (page faults on new memory, then the
 * collector), against 0.03 ms to copy into a reused one (docs/BENCHMARKS.md, "Forwarding CPU
 * per request"); a fresh 4 KiB one about 1.4 us.
 *
 * Buffers come in powers of two from 4 KiB; take(n) hands a view of the first n bytes of one,
 * give() takes the view back. At most `maxBytes` of spare buffers are kept in all, none larger
 * than a quarter of that (larger requests get a buffer of their own size, never kept).
 */
export class PayloadPool {
  readonly #spare = new Map<number, ArrayBuffer[]>();
  readonly #maxBytes: number;
  #bytes = 0;

  constructor(maxBytes = 16 * 1024 * 1024) {
    this.#maxBytes = maxBytes;
  }

  /** Bytes held in spare buffers. */
  get spareBytes(): number {
    return this.#bytes;
  }

  /** A buffer of `length` bytes (not zeroed: it may hold an earlier payload). */
  take(length: number): Uint8Array {
    // Too large to be kept: exactly what is asked for, not the next power of two.
    if (length > this.#maxBytes / 4) return new Uint8Array(length);
    const size = classOf(length);
    const buf = this.#spare.get(size)?.pop();
    if (buf === undefined) return new Uint8Array(new ArrayBuffer(size), 0, length);
    this.#bytes -= size;
    return new Uint8Array(buf, 0, length);
  }

  /** Returns a buffer from take(), which the caller no longer uses; others are ignored. */
  give(view: Uint8Array): void {
    const buf = view.buffer;
    const size = buf.byteLength;
    if (!(buf instanceof ArrayBuffer) || view.byteOffset !== 0 || size !== classOf(size)) return;
    if (size > this.#maxBytes / 4 || this.#bytes + size > this.#maxBytes) return;
    let list = this.#spare.get(size);
    if (list === undefined) this.#spare.set(size, list = []);
    list.push(buf);
    this.#bytes += size;
  }
}

/** A pool of send buffers for one connection: at most `keep` spare COALESCE_BYTES buffers. */
export function sendBuffers(keep = 4): PayloadPool {
  return new PayloadPool(keep * COALESCE_BYTES);
}

/** The buffer size that holds `length` bytes: the next power of two, at least 4 KiB. */
function classOf(length: number): number {
  if (length <= MIN_PAYLOAD_BUFFER) return MIN_PAYLOAD_BUFFER;
  return 2 ** Math.ceil(Math.log2(length));
}
