/**
 * The readahead of FileBlockStore.readBulk(), which reads through a file advised
 * POSIX_FADV_RANDOM (the kernel's own readahead would fill the page cache in large folios, see
 * file_store.ts). It keeps a few sequential streams per store, as the kernel keeps its
 * readahead state: clients on several connections, a resync and the hash keeper may each read
 * a volume in order at the same time, their reads interleaved. A read that starts where one
 * of them ended continues it; any other read starts a stream of its own, replacing one not
 * continued lately (a clock: a stream continued since the hand last passed it is spared).
 *
 * A stream's window starts small and doubles up to the largest, as the kernel's does: two
 * adjacent 4 KiB reads of a file system's metadata ask for 128 KiB, not for 8 MiB. It is
 * asked for again when the reader is within half a window of its end.
 * @module
 */

/**
 * Streams kept per store. A stream not yet continued survives about this many one-off reads
 * (random reads of other clients) before its second read.
 */
const SLOTS = 32;

export class ReadaheadStreams {
  /** Where each stream's next read starts (-1: no stream). */
  readonly #next = new Float64Array(SLOTS).fill(-1);
  /** How far each stream was asked for. */
  readonly #ahead = new Float64Array(SLOTS);
  /** Each stream's window (0 until its second read). */
  readonly #window = new Float64Array(SLOTS);
  readonly #used = new Uint8Array(SLOTS);
  #hand = 0;
  /** The range to read ahead that the last read() returned true for: [from, to). */
  from = 0;
  to = 0;

  /** `first`: the smallest first window; `max`: the largest window. */
  constructor(readonly first: number, readonly max: number) {}

  /**
   * Notes a read of [offset, offset + length) of a file of `size` bytes. True when the caller
   * should ask the kernel for [from, to) now (a sequential reader is near the end of what was
   * asked for).
   */
  read(offset: number, length: number, size: number): boolean {
    const end = offset + length;
    const next = this.#next;
    let i = 0;
    while (i < SLOTS && next[i] !== offset) i++;
    if (i === SLOTS) {
      i = this.#victim();
      next[i] = end;
      this.#ahead[i] = end;
      this.#window[i] = 0;
      this.#used[i] = 0; // spared only once it is continued: one-off reads go first
      return false;
    }
    this.#used[i] = 1;
    next[i] = end;
    let window = this.#window[i];
    const ahead = this.#ahead[i];
    if (window !== 0 && ahead - end >= window / 2) return false;
    window = window === 0
      ? Math.min(this.max, Math.max(this.first, 4 * length))
      : Math.min(this.max, 2 * window);
    this.#window[i] = window;
    const from = Math.max(ahead, end);
    const to = Math.min(size, end + window);
    if (to <= from) return false;
    this.#ahead[i] = to;
    this.from = from;
    this.to = to;
    return true;
  }

  /** The slot a new stream takes: the first the clock's hand finds not used since it passed. */
  #victim(): number {
    for (;;) {
      const i = this.#hand;
      this.#hand = (i + 1) % SLOTS;
      if (this.#used[i] === 0) return i;
      this.#used[i] = 0;
    }
  }
}
