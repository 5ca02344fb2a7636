/**
 * A deliberately small NBD client for tests that need to send exactly the bytes they
 * want: fixed newstyle handshake with NO_ZEROES, NBD_OPT_GO with optional structured
 * replies and base:allocation, raw request bytes, and reply parsing with timeouts.
 * It never validates what it sends; that is the point.
 * @module
 */

import * as C from "../../../data/nbd/constants.ts";
import { encodeRequest } from "../../../data/nbd/codec.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** How long a read waits by default before the test fails instead of hanging. */
export const DEFAULT_TIMEOUT_MS = 15_000;

export class TimeoutError extends Error {
  override name = "TimeoutError";
}

/** The server closed (or reset) the connection before the bytes arrived. */
export class ClosedError extends Error {
  override name = "ClosedError";
}

/** An option reply ("Fixed newstyle negotiation"). */
export interface OptionReply {
  option: number;
  type: number;
  data: Uint8Array;
}

/** One reply to a request: a simple reply, or the chunks of a structured reply. */
export interface Reply {
  handle: bigint;
  /** NBD error value (0 on success). */
  error: number;
  /** READ data (simple replies: only when `readLength` was given). */
  data: Uint8Array;
  /** Structured READ: the offset its first OFFSET_DATA chunk names. */
  dataOffset?: number;
  /** Message of an NBD_REPLY_TYPE_ERROR chunk. */
  message?: string;
  /** Structured chunk types in arrival order; empty for simple replies. */
  chunks: number[];
  /** BLOCK_STATUS descriptors [length, flags]. */
  status?: [number, number][];
}

export interface RequestSpec {
  type: number;
  flags?: number;
  handle: bigint;
  offset?: bigint | number;
  length: number;
  /** WRITE payload; not checked against `length`. */
  payload?: Uint8Array;
}

/** The bytes of one request (header plus payload, if any). */
export function requestBytes(r: RequestSpec): Uint8Array {
  const payload = r.payload ?? new Uint8Array(0);
  const b = new Uint8Array(C.REQUEST_HEADER_SIZE + payload.length);
  encodeRequest(new DataView(b.buffer), 0, {
    flags: r.flags ?? 0,
    type: r.type,
    handle: r.handle,
    offset: BigInt(r.offset ?? 0),
    length: r.length,
  });
  b.set(payload, C.REQUEST_HEADER_SIZE);
  return b;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function u16(n: number): Uint8Array {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, n);
  return b;
}
function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}
function str(s: string): Uint8Array {
  const b = enc.encode(s);
  return concat(u32(b.length), b);
}

/** An option request: IHAVEOPT, option, length, data. */
export function optionBytes(option: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const b = new Uint8Array(16 + data.length);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, C.IHAVEOPT);
  v.setUint32(8, option);
  v.setUint32(12, data.length);
  b.set(data, 16);
  return b;
}

/** NBD_OPT_GO / NBD_OPT_INFO payload. */
export function goPayload(name: string, infos: number[] = []): Uint8Array {
  return concat(str(name), u16(infos.length), ...infos.map(u16));
}

export interface GoOptions {
  structured?: boolean;
  /** Select base:allocation (implies structured). */
  baseAllocation?: boolean;
}

export interface Negotiated {
  size: number;
  flags: number;
  structured: boolean;
}

export class RawClient {
  readonly conn: Deno.TcpConn;
  #buf = new Uint8Array(64 * 1024);
  #len = 0;
  #eof = false;
  #error: unknown;
  #wake: (() => void) | undefined;
  #pump: Promise<void>;
  #closed = false;
  structured = false;

  private constructor(conn: Deno.TcpConn) {
    this.conn = conn;
    this.#pump = this.#readLoop();
  }

  /** Connects to "host:port". */
  static async connect(address: string): Promise<RawClient> {
    const i = address.lastIndexOf(":");
    const conn = await Deno.connect({
      hostname: address.slice(0, i).replace(/^\[|\]$/g, ""),
      port: Number(address.slice(i + 1)),
    });
    conn.setNoDelay(true);
    return new RawClient(conn);
  }

  /** Connects, negotiates, and enters transmission on `name`. */
  static async open(address: string, name: string, opts: GoOptions = {}): Promise<RawClient> {
    const c = await RawClient.connect(address);
    try {
      await c.handshake();
      await c.go(name, opts);
      return c;
    } catch (err) {
      await c.close();
      throw err;
    }
  }

  async #readLoop(): Promise<void> {
    const chunk = new Uint8Array(256 * 1024);
    try {
      for (;;) {
        const n = await this.conn.read(chunk);
        if (n === null) break;
        if (this.#len + n > this.#buf.length) {
          const bigger = new Uint8Array(Math.max(this.#buf.length * 2, this.#len + n));
          bigger.set(this.#buf.subarray(0, this.#len));
          this.#buf = bigger;
        }
        this.#buf.set(chunk.subarray(0, n), this.#len);
        this.#len += n;
        this.#wake?.();
      }
    } catch (err) {
      // A reset counts as the server going away; anything after our own close is expected.
      if (!this.#closed) this.#error = err;
    } finally {
      this.#eof = true;
      this.#wake?.();
    }
  }

  /** Bytes received but not yet consumed. */
  get buffered(): number {
    return this.#len;
  }

  /** Waits until `pred()` holds, the stream ends, or the timeout passes. */
  async #waitFor(pred: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (pred()) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new TimeoutError(`no ${what} within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      while (!pred() && !this.#eof) {
        await Promise.race([new Promise<void>((r) => (this.#wake = r)), timeout]);
      }
    } finally {
      clearTimeout(timer);
      this.#wake = undefined;
    }
  }

  /** Reads exactly `n` bytes; ClosedError if the stream ends first. */
  async readExact(n: number, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Uint8Array> {
    await this.#waitFor(() => this.#len >= n, timeoutMs, `${n} bytes`);
    if (this.#len < n) {
      throw new ClosedError(
        `connection ended after ${this.#len} of ${n} bytes` +
          (this.#error ? ` (${(this.#error as Error).name})` : ""),
      );
    }
    const out = this.#buf.slice(0, n);
    this.#buf.copyWithin(0, n, this.#len);
    this.#len -= n;
    return out;
  }

  /**
   * Waits for the server to end the connection. Resolves to the bytes it sent before
   * that; TimeoutError if it stays open.
   */
  async expectClosed(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Uint8Array> {
    await this.#waitFor(() => false, timeoutMs, "end of stream");
    const rest = this.#buf.slice(0, this.#len);
    this.#len = 0;
    return rest;
  }

  /** Whether the stream has ended (server closed or reset). */
  get ended(): boolean {
    return this.#eof;
  }

  async send(bytes: Uint8Array): Promise<void> {
    let off = 0;
    while (off < bytes.length) off += await this.conn.write(bytes.subarray(off));
  }

  /** Reads the greeting, checks magics, sends client flags. Returns the server flags. */
  async handshake(
    clientFlags = C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES,
  ): Promise<number> {
    const g = await this.readExact(18);
    const v = new DataView(g.buffer);
    if (v.getBigUint64(0) !== C.NBDMAGIC || v.getBigUint64(8) !== C.IHAVEOPT) {
      throw new Error(`bad greeting ${Array.from(g).join(",")}`);
    }
    await this.send(u32(clientFlags));
    return v.getUint16(16);
  }

  async sendOption(option: number, data?: Uint8Array): Promise<void> {
    await this.send(optionBytes(option, data));
  }

  async readOptionReply(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<OptionReply> {
    const h = await this.readExact(20, timeoutMs);
    const v = new DataView(h.buffer);
    if (v.getUint32(0) !== C.REPLY_MAGIC_HI || v.getUint32(4) !== C.REPLY_MAGIC_LO) {
      throw new Error(`bad option reply magic in ${Array.from(h).join(",")}`);
    }
    const data = await this.readExact(v.getUint32(16), timeoutMs);
    return { option: v.getUint32(8), type: v.getUint32(12), data };
  }

  /** Sends an option and collects replies up to ACK or an error. */
  async option(option: number, data?: Uint8Array): Promise<OptionReply[]> {
    await this.sendOption(option, data);
    const out: OptionReply[] = [];
    for (;;) {
      const r = await this.readOptionReply();
      out.push(r);
      if (r.type === C.NBD_REP_ACK || (r.type & 0x80000000) !== 0) return out;
    }
  }

  /** NBD_OPT_GO; throws with the error reply type if the server refuses. */
  async go(name: string, opts: GoOptions = {}): Promise<Negotiated> {
    const structured = opts.structured || opts.baseAllocation || false;
    if (structured) {
      const r = await this.option(C.NBD_OPT_STRUCTURED_REPLY);
      if (r[0].type !== C.NBD_REP_ACK) throw new Error(`structured replies refused: ${r[0].type}`);
    }
    if (opts.baseAllocation) {
      const data = concat(str(name), u32(1), str(C.BASE_ALLOCATION));
      const r = await this.option(C.NBD_OPT_SET_META_CONTEXT, data);
      if (r[r.length - 1].type !== C.NBD_REP_ACK || r.length !== 2) {
        throw new Error(`base:allocation refused: ${r.map((x) => x.type)}`);
      }
    }
    const replies = await this.option(C.NBD_OPT_GO, goPayload(name));
    const last = replies[replies.length - 1];
    if (last.type !== C.NBD_REP_ACK) {
      throw new Error(`GO refused with 0x${last.type.toString(16)}: ${dec.decode(last.data)}`);
    }
    const info = replies.find((r) =>
      r.type === C.NBD_REP_INFO && new DataView(r.data.buffer).getUint16(0) === C.NBD_INFO_EXPORT
    );
    if (!info) throw new Error("GO without NBD_INFO_EXPORT");
    const v = new DataView(info.data.buffer);
    this.structured = structured;
    return { size: Number(v.getBigUint64(2)), flags: v.getUint16(10), structured };
  }

  /** Sends one request (header and payload). */
  async request(r: RequestSpec): Promise<void> {
    await this.send(requestBytes(r));
  }

  /**
   * Reads the next reply. For a simple reply to a READ pass `readLength` (the data
   * follows the header only when error is 0); structured replies carry their lengths.
   */
  async readReply(
    readLength: number | ((handle: bigint) => number) = 0,
    timeoutMs = DEFAULT_TIMEOUT_MS,
  ): Promise<Reply> {
    const magic = new DataView((await this.readExact(4, timeoutMs)).buffer).getUint32(0);
    if (magic === C.NBD_SIMPLE_REPLY_MAGIC) {
      const h = new DataView((await this.readExact(12, timeoutMs)).buffer);
      const error = h.getUint32(0);
      const handle = h.getBigUint64(4);
      const n = typeof readLength === "function" ? readLength(handle) : readLength;
      const data = error === 0 && n > 0 ? await this.readExact(n, timeoutMs) : new Uint8Array(0);
      return { handle, error, data, chunks: [] };
    }
    if (magic !== C.NBD_STRUCTURED_REPLY_MAGIC) {
      throw new Error(`bad reply magic 0x${magic.toString(16)}`);
    }
    const reply: Reply = { handle: 0n, error: 0, data: new Uint8Array(0), chunks: [] };
    let first = true;
    for (;;) {
      if (!first) {
        const m = new DataView((await this.readExact(4, timeoutMs)).buffer).getUint32(0);
        if (m !== C.NBD_STRUCTURED_REPLY_MAGIC) throw new Error(`bad chunk magic 0x${m}`);
      }
      first = false;
      const h = new DataView((await this.readExact(16, timeoutMs)).buffer);
      const flags = h.getUint16(0);
      const type = h.getUint16(2);
      reply.handle = h.getBigUint64(4);
      const body = await this.readExact(h.getUint32(12), timeoutMs);
      const bv = new DataView(body.buffer);
      reply.chunks.push(type);
      if (type === C.NBD_REPLY_TYPE_OFFSET_DATA) {
        // Chunks of one READ must follow each other (Ballast sends them in order).
        const at = Number(bv.getBigUint64(0));
        if (reply.chunks.length > 1 && at !== reply.dataOffset! + reply.data.length) {
          throw new Error(
            `OFFSET_DATA chunk at ${at}, expected ${reply.dataOffset! + reply.data.length}`,
          );
        }
        reply.dataOffset ??= at;
        reply.data = concat(reply.data, body.subarray(8));
      } else if (type === C.NBD_REPLY_TYPE_ERROR || type === C.NBD_REPLY_TYPE_ERROR_OFFSET) {
        reply.error = bv.getUint32(0);
        reply.message = dec.decode(body.subarray(6, 6 + bv.getUint16(4)));
      } else if (type === C.NBD_REPLY_TYPE_BLOCK_STATUS) {
        reply.status = [];
        for (let off = 4; off < body.length; off += 8) {
          reply.status.push([bv.getUint32(off), bv.getUint32(off + 4)]);
        }
      }
      if (flags & C.NBD_REPLY_FLAG_DONE) return reply;
    }
  }

  /** Writes `data` at `offset` and returns the reply's error. */
  async write(offset: number, data: Uint8Array, handle = 1n, flags = 0): Promise<number> {
    await this.request({
      type: C.NBD_CMD_WRITE,
      handle,
      flags,
      offset,
      length: data.length,
      payload: data,
    });
    const r = await this.readReply();
    if (r.handle !== handle) throw new Error(`reply for handle ${r.handle}, expected ${handle}`);
    return r.error;
  }

  /** Reads `length` bytes at `offset`; throws if the server returns an error. */
  async read(offset: number, length: number, handle = 2n): Promise<Uint8Array> {
    await this.request({ type: C.NBD_CMD_READ, handle, offset, length });
    const r = await this.readReply(length);
    if (r.handle !== handle) throw new Error(`reply for handle ${r.handle}, expected ${handle}`);
    if (r.error !== 0) throw new Error(`READ ${offset}+${length} failed with ${r.error}`);
    return r.data;
  }

  /** Sends NBD_CMD_DISC. */
  async disconnect(): Promise<void> {
    await this.request({ type: C.NBD_CMD_DISC, handle: 0xd15cn, length: 0 });
  }

  /** Closes the socket and waits for the reader to stop. Safe to call twice. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      try {
        this.conn.close();
      } catch {
        // already closed
      }
    }
    await this.#pump;
  }
}
