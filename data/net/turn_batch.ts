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

/**
 * Reused send buffers of COALESCE_BYTES: a fresh ArrayBuffer per write costs Deno
 * microseconds on this kind of machine (docs/BENCHMARKS.md, "TLS writes"). `take()` one to
 * gather a turn's bytes in, `give()` it back once the socket's write of it completed.
 */
export class SendBuffers {
  readonly #spare: Uint8Array[] = [];
  readonly #keep: number;

  /** Keeps at most `keep` spare buffers. */
  constructor(keep = 4) {
    this.#keep = keep;
  }

  take(): Uint8Array {
    return this.#spare.pop() ?? new Uint8Array(COALESCE_BYTES);
  }

  give(buf: Uint8Array): void {
    if (this.#spare.length < this.#keep) this.#spare.push(buf);
  }
}
