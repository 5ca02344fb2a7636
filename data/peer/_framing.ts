/**
 * Peer channel framing, pure: every frame is a u32 big-endian payload length followed by
 * the payload. A length above the receiver's limit is a protocol error; the caller closes
 * the connection (there is no way to resynchronise a byte stream after a bad length).
 * @module
 */

/** Bytes of the length prefix. */
export const FRAME_HEADER_BYTES = 4;
/** Default and largest frame payload accepted: 64 MiB. */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

/** The length prefix for a payload of `length` bytes. */
export function frameHeader(length: number): Uint8Array {
  const h = new Uint8Array(FRAME_HEADER_BYTES);
  writeFrameHeader(h, 0, length);
  return h;
}

/** Writes the length prefix for a payload of `length` bytes into `buf` at `at`. */
export function writeFrameHeader(buf: Uint8Array, at: number, length: number): void {
  buf[at] = length >>> 24;
  buf[at + 1] = (length >>> 16) & 0xff;
  buf[at + 2] = (length >>> 8) & 0xff;
  buf[at + 3] = length & 0xff;
}

/** A peer announced a frame longer than the limit. */
export class FrameTooLargeError extends Error {
  override name = "FrameTooLargeError";
  readonly length: number;
  readonly limit: number;

  constructor(length: number, limit: number) {
    super(`peer announced a ${length}-byte frame, above the ${limit}-byte limit`);
    this.length = length;
    this.limit = limit;
  }
}

/**
 * Turns received chunks into frames. A frame that lies inside one chunk is returned as a
 * view of that chunk (no copy), or as a copy when the chunk is transient (a reused read
 * buffer); a frame split across chunks is assembled into its own buffer, allocated once its
 * length is known.
 *
 * Copies of frames from transient chunks go into slabs: one buffer of SLAB_BYTES holds many
 * frames, one after the other, and is filled again once every frame taken from it was given
 * back (recycle()). A fresh buffer per 4 KiB frame cost a replica an allocation, its zeroing
 * and collector work per replicated write (docs/BENCHMARKS.md, "Run 7"). Frames never given
 * back keep their slab alive until they are collected, and the decoder moves on to a new slab.
 */
export class FrameDecoder {
  readonly limit: number;
  /** Buffers of large frames handed back (recycle()), reused for the next ones. */
  #spare: Uint8Array[] = [];
  /** The buffers of large frames handed out and not given back. */
  #issued = new WeakSet<ArrayBufferLike>();
  #header = new Uint8Array(FRAME_HEADER_BYTES);
  #headerFill = 0;
  #body: Uint8Array | undefined;
  #bodyFill = 0;
  #nextLimit: number | undefined;
  /** The slab small frames are copied into, and where its free part starts. */
  #slab: Uint8Array | undefined;
  #slabAt = 0;
  /** Frames taken from each slab and not given back yet. */
  readonly #slabUsers = new WeakMap<ArrayBufferLike, number>();
  /** Those frames themselves: one given back twice counts once. */
  readonly #slabFrames = new WeakSet<Uint8Array>();
  /** A slab whose frames all came back while it was not the current one. */
  #spareSlab: Uint8Array | undefined;

  constructor(limit: number = MAX_FRAME_BYTES) {
    if (!Number.isInteger(limit) || limit < 0 || limit > 0xffff_ffff) {
      throw new RangeError(`frame limit must be an integer in [0, 2^32 - 1], got ${limit}`);
    }
    this.limit = limit;
  }

  /** Applies `limit` instead of the usual one to the next frame only (e.g. a greeting). */
  limitNext(limit: number): void {
    this.#nextLimit = limit;
  }

  /** True while a frame has been started but not completed (EOF now would cut it). */
  get partial(): boolean {
    return this.#headerFill > 0 || this.#body !== undefined;
  }

  /**
   * The consumer is done with `frame` (a frame push() returned, not used any more): a large
   * frame's buffer may hold a later frame (no allocation, no page faults, no garbage per
   * frame). Anything else is ignored.
   */
  recycle(frame: Uint8Array): void {
    const buffer = frame.buffer;
    const users = this.#slabUsers.get(buffer);
    if (users !== undefined) {
      if (!this.#slabFrames.delete(frame)) return;
      this.#slabUsers.set(buffer, users - 1);
      if (users > 1) return;
      if (buffer === this.#slab?.buffer) this.#slabAt = 0; // empty again: fill from the start
      else this.#spareSlab = new Uint8Array(buffer);
      return;
    }
    if (!this.#issued.has(buffer) || this.#spare.length >= SPARE_BUFFERS) return;
    this.#issued.delete(buffer);
    this.#spare.push(new Uint8Array(buffer));
  }

  /** A copy of `part` (a frame inside a transient chunk), in the slab when it is small. */
  #copy(part: Uint8Array): Uint8Array {
    // Tiny arrays live on V8's own heap (no allocation of their own); large ones recycle.
    if (part.length <= ON_HEAP_BYTES || part.length > SLAB_FRAME_BYTES) return part.slice();
    let slab = this.#slab;
    if (slab === undefined || this.#slabAt + part.length > slab.length) {
      slab = this.#spareSlab ?? new Uint8Array(SLAB_BYTES);
      this.#spareSlab = undefined;
      this.#slab = slab;
      this.#slabAt = 0;
      this.#slabUsers.set(slab.buffer, 0);
    }
    const frame = slab.subarray(this.#slabAt, this.#slabAt + part.length);
    frame.set(part);
    this.#slabAt += part.length;
    this.#slabUsers.set(slab.buffer, this.#slabUsers.get(slab.buffer)! + 1);
    this.#slabFrames.add(frame);
    return frame;
  }

  #allocate(length: number): Uint8Array {
    if (length < RECYCLE_MIN_BYTES) return new Uint8Array(length);
    const i = this.#spare.findIndex((b) => b.length >= length);
    const buf = i >= 0 ? this.#spare.splice(i, 1)[0] : new Uint8Array(length);
    this.#issued.add(buf.buffer);
    return buf.subarray(0, length);
  }

  /**
   * The frames completed by `chunk`, in order. With `transient`, `chunk` is reused after the
   * call, so no returned frame is a view of it. Throws FrameTooLargeError on a bad length.
   */
  push(chunk: Uint8Array, transient = false): Uint8Array[] {
    const out: Uint8Array[] = [];
    let off = 0;
    while (off < chunk.length) {
      if (this.#body === undefined) {
        let length: number;
        if (this.#headerFill === 0 && chunk.length - off >= FRAME_HEADER_BYTES) {
          length = readU32(chunk, off);
          off += FRAME_HEADER_BYTES;
        } else {
          const take = Math.min(FRAME_HEADER_BYTES - this.#headerFill, chunk.length - off);
          this.#header.set(chunk.subarray(off, off + take), this.#headerFill);
          this.#headerFill += take;
          off += take;
          if (this.#headerFill < FRAME_HEADER_BYTES) break;
          this.#headerFill = 0;
          length = readU32(this.#header, 0);
        }
        const limit = this.#nextLimit ?? this.limit;
        this.#nextLimit = undefined;
        if (length > limit) throw new FrameTooLargeError(length, limit);
        if (chunk.length - off >= length) {
          out.push(
            transient
              ? this.#copy(chunk.subarray(off, off + length))
              : new Uint8Array(chunk.buffer, chunk.byteOffset + off, length),
          );
          off += length;
          continue;
        }
        this.#body = this.#allocate(length);
        this.#bodyFill = 0;
      }
      const body = this.#body;
      const take = Math.min(body.length - this.#bodyFill, chunk.length - off);
      body.set(chunk.subarray(off, off + take), this.#bodyFill);
      this.#bodyFill += take;
      off += take;
      if (this.#bodyFill === body.length) {
        out.push(body);
        this.#body = undefined;
      }
    }
    return out;
  }
}

/** Frames at least this large are assembled in buffers that recycle() lets be reused. */
export const RECYCLE_MIN_BYTES = 64 * 1024;
/** Spare buffers kept at most. */
const SPARE_BUFFERS = 4;
/** Size of a slab that copies of small frames share. */
const SLAB_BYTES = 256 * 1024;
/** Frames larger than this get a copy of their own rather than a place in a slab. */
const SLAB_FRAME_BYTES = 32 * 1024;
/** Frames up to this size are copied on their own: V8 keeps them on its heap, cheaply. */
const ON_HEAP_BYTES = 64;

function readU32(b: Uint8Array, off: number): number {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}
