/**
 * The NBD client a forwarding node uses to reach a volume's master: fixed newstyle
 * negotiation ("Fixed newstyle negotiation"), NBD_OPT_STARTTLS with this node's certificate
 * when the node runs TLS ("TLS support": the client sends STARTTLS first and refuses to go on
 * without it), NBD_OPT_GO for the export ("NBD_OPT_GO"), then requests with simple replies
 * ("Simple reply message": structured replies are not negotiated, so a READ's data follows
 * its reply header whole).
 *
 * Replies are matched to requests by handle; the client keeps the length of each READ it sent
 * to know how much data follows. Anything the server sends that breaks the protocol closes
 * the connection (UpstreamError "protocol").
 *
 * The hot path copies each byte once on the way in and allocates nothing per reply: replies
 * are parsed from each decrypted chunk as it arrives (a view of a reused buffer), and a READ's
 * data is copied from there straight into the buffer the caller gave (the client's reply). On
 * the way out, the requests sent during one task leave in one write, except that a large
 * WRITE payload is written as it is, without a copy.
 * @module
 */

import { connect as netConnect, isIP, type Socket } from "node:net";
import { createSecureContext, type TLSSocket } from "node:tls";
import { putRequestHeader } from "../nbd/codec.ts";
import * as C from "../nbd/constants.ts";
import { COALESCE_BYTES, sendBuffers, wrapTls } from "../net/mod.ts";
import type { PeerVerify } from "../peer/mod.ts";
import {
  ByteQueue,
  checkServer,
  encodeOption,
  type ForwarderName,
  nameForwarder,
  readOptionReply,
  UpstreamError,
  type UpstreamErrorCode,
} from "./_negotiation.ts";

export { UpstreamError, type UpstreamErrorCode } from "./_negotiation.ts";

/** PEM key, certificate and trust bundle of this node (role node). */
export interface UpstreamTls {
  key: string;
  cert: string;
  ca: string;
}

export interface UpstreamOptions {
  host: string;
  port: number;
  exportName: string;
  /** STARTTLS with these credentials; plaintext when absent (a node run with --tls off). */
  tls?: UpstreamTls;
  /**
   * With `tls`: checks the master's certificate (DER) after the handshake and names the node
   * it belongs to, which must be `expectNode`.
   */
  verify?: PeerVerify;
  expectNode?: string;
  /** Connect, TLS and negotiation must finish within this (default 5 s). */
  timeoutMs?: number;
  /** Gives up connecting (the forwarder learnt of another master meanwhile). */
  signal?: AbortSignal;
  /** Names this connection's forwarder to the master (_negotiation.ts nameForwarder). */
  forwarder?: ForwarderName;
}

/** One request as sent upstream. */
export interface UpstreamRequest {
  type: number;
  flags: number;
  offset: number;
  length: number;
  /** A WRITE's payload (not to change until answered: it may be written as it is). */
  data?: Uint8Array;
  /**
   * Where a READ's data goes (`length` bytes). When absent, the reply hands a view of the
   * received bytes where they arrived whole (else a new buffer): copy what you keep.
   */
  into?: Uint8Array;
}

/**
 * A reply: `error` is the NBD error value (0: success); `data` a successful READ's bytes: the
 * request's `into`, or else a view of the receive buffer, valid only during the callback.
 */
export interface UpstreamReply {
  error: number;
  data?: Uint8Array;
}

const enc = new TextEncoder();

/** WRITE payloads at least this large are written on their own rather than copied into a batch. */
const OWN_WRITE_BYTES = 64 * 1024;
/**
 * The most one read of the master's socket takes: a forwarded 1 MiB READ then costs 4 reads
 * and 4 decrypt callbacks rather than 16 (docs/BENCHMARKS.md, "Forwarding CPU per request").
 */
const READ_BUFFER_BYTES = 256 * 1024;
/** "Simple reply message": magic, error, handle. */
const REPLY_HEADER = 16;
/** "Request message": magic, flags, type, handle, offset, length. */
const REQUEST_HEADER = 28;
/** How long a soft disconnect (close()) waits for the master to close before destroying. */
const DISCONNECT_MS = 2_000;
const TWO_POW_32 = 0x100000000;
/** The reply of every successful request without data (callers only read it). */
const OK: UpstreamReply = Object.freeze({ error: 0 });

interface Pending {
  length: number;
  read: boolean;
  into: Uint8Array | undefined;
  done: (r: UpstreamReply) => void;
}

/** An open connection to a master's NBD export. */
export class Upstream {
  readonly size: number;
  readonly transmissionFlags: number;
  readonly remote: string;
  #write: (b: Uint8Array, written?: () => void) => void;
  #end: () => void;
  #destroy: () => void;
  /** By handle: a plain number (below 2^53), sent as two 32-bit halves (no BigInt). */
  #pending = new Map<number, Pending>();
  #nextHandle = 1;
  #closed: UpstreamError | undefined;
  #onClose: ((err: UpstreamError) => void) | undefined;
  /** The reply header being received, and how much of it has arrived. */
  readonly #header = new Uint8Array(REPLY_HEADER);
  readonly #headerView = new DataView(this.#header.buffer);
  #headerHave = 0;
  /** The READ whose data is arriving, and how much of it has. */
  #reading: { data: Uint8Array; done: (r: UpstreamReply) => void } | undefined;
  /** A READ without `into` whose data comes next (lent from the chunk if it is all there). */
  #direct: { length: number; done: (r: UpstreamReply) => void } | undefined;
  #got = 0;
  /** Requests encoded during this task, written together at its end: #out[0, #outLen). */
  #out: Uint8Array | undefined;
  #outView: DataView | undefined;
  #outLen = 0;
  /** Request buffers whose writes completed. */
  readonly #sendBuffers = sendBuffers();

  private constructor(
    io: {
      write: (b: Uint8Array, written?: () => void) => void;
      end: () => void;
      destroy: () => void;
    },
    info: { size: number; flags: number; remote: string },
  ) {
    this.#write = io.write;
    this.#end = io.end;
    this.#destroy = io.destroy;
    this.size = info.size;
    this.transmissionFlags = info.flags;
    this.remote = info.remote;
  }

  /** Connects and negotiates; rejects with UpstreamError. */
  static async connect(o: UpstreamOptions): Promise<Upstream> {
    const remote = `${o.host.includes(":") ? `[${o.host}]` : o.host}:${o.port}`;
    const timeoutMs = o.timeoutMs ?? 5_000;
    const input = new ByteQueue();
    const raw: Socket = netConnect({ host: o.host, port: o.port });
    // Requests are small writes answered by large replies: Nagle's algorithm would hold each
    // one back until the master's delayed ACK (tens of ms).
    raw.setNoDelay(true);
    let sock: Socket | TLSSocket = raw;
    let phase = "connect";
    let broke!: (err: Error) => void;
    const broken = new Promise<never>((_, reject) => (broke = reject));
    broken.catch(() => {});
    const fail = (code: UpstreamErrorCode, message: string, cause?: unknown) => {
      const err = new UpstreamError(code, `master ${remote}: ${message}`, { cause });
      input.fail(err);
      broke(err);
    };
    // Incoming bytes go to the negotiation's queue, then to the reply parser. node:net hands a
    // fresh Buffer per read: the queue may keep it as it is.
    let deliver = (chunk: Uint8Array, fresh: boolean) => input.push(fresh ? chunk : chunk.slice());
    raw.on(
      "data",
      (c: Uint8Array) => deliver(new Uint8Array(c.buffer, c.byteOffset, c.length), true),
    );
    raw.on(
      "error",
      (err: Error) =>
        fail(phase === "connect" ? "unreachable" : "closed", `${phase}: ${err.message}`, err),
    );
    raw.on("close", () => fail("closed", `connection closed during ${phase}`));
    const timer = setTimeout(() => {
      fail("timeout", `no ${phase} within ${timeoutMs} ms`);
      raw.destroy();
    }, timeoutMs);
    const cancel = () => {
      const why = typeof o.signal?.reason === "string" ? o.signal.reason : "cancelled";
      fail("closed", `gave up during ${phase}: ${why}`);
      raw.destroy();
    };
    if (o.signal?.aborted) cancel();
    o.signal?.addEventListener("abort", cancel, { once: true });
    try {
      phase = "greeting";
      // "Fixed newstyle negotiation": NBDMAGIC, IHAVEOPT, 16 bits of handshake flags.
      const greeting = new DataView((await input.need(18)).slice().buffer);
      if (
        greeting.getUint32(0) !== C.NBDMAGIC_HI || greeting.getUint32(4) !== C.NBDMAGIC_LO ||
        greeting.getUint32(8) !== C.IHAVEOPT_HI || greeting.getUint32(12) !== C.IHAVEOPT_LO
      ) {
        throw new UpstreamError("protocol", `master ${remote} is not a newstyle NBD server`);
      }
      const hs = greeting.getUint16(16);
      if ((hs & C.NBD_FLAG_FIXED_NEWSTYLE) === 0) {
        throw new UpstreamError("protocol", `master ${remote} does not offer fixed newstyle`);
      }
      const cf = new Uint8Array(4);
      new DataView(cf.buffer).setUint32(
        0,
        C.NBD_FLAG_C_FIXED_NEWSTYLE | (hs & C.NBD_FLAG_NO_ZEROES ? C.NBD_FLAG_C_NO_ZEROES : 0),
      );
      raw.write(cf);
      if (o.tls) {
        phase = "STARTTLS";
        raw.write(encodeOption(C.NBD_OPT_STARTTLS));
        const r = await readOptionReply(input, C.NBD_OPT_STARTTLS, remote);
        if (r.type !== C.NBD_REP_ACK) {
          throw new UpstreamError("refused", `master ${remote} refused STARTTLS: ${r.message}`);
        }
        phase = "TLS handshake";
        raw.removeAllListeners("data");
        const { tls } = wrapTls(raw, {
          side: "client",
          context: createSecureContext({ ...o.tls, minVersion: "TLSv1.2" }),
          servername: isIP(o.host) ? undefined : o.host,
          // Direct reads hand views of a reused buffer, valid during the call only.
          sink: (chunk) => deliver(chunk, false),
          readBufferBytes: READ_BUFFER_BYTES,
        });
        tls.on("error", (err: Error) => fail("refused", `${phase}: ${err.message}`, err));
        tls.on("close", () => fail("closed", `connection closed during ${phase}`));
        await Promise.race([new Promise((resolve) => tls.once("secure", resolve)), broken]);
        await checkServer(tls, o, remote);
        sock = tls;
      }
      if (o.forwarder) await nameForwarder(sock, input, remote, o.forwarder);
      phase = "NBD_OPT_GO";
      const name = enc.encode(o.exportName);
      const go = new Uint8Array(4 + name.length + 2);
      new DataView(go.buffer).setUint32(0, name.length);
      go.set(name, 4);
      sock.write(encodeOption(C.NBD_OPT_GO, go));
      let size = -1;
      let flags = 0;
      for (;;) {
        const r = await readOptionReply(input, C.NBD_OPT_GO, remote);
        if (r.type === C.NBD_REP_ACK) break;
        if (r.type === C.NBD_REP_INFO && r.data.length >= 12) {
          const v = new DataView(r.data.buffer, r.data.byteOffset, r.data.byteLength);
          if (v.getUint16(0) === C.NBD_INFO_EXPORT) {
            size = Number(v.getBigUint64(2));
            flags = v.getUint16(10);
          }
          continue;
        }
        if (r.type >= 0x80000000) {
          // Still negotiating: end it as a client should (NBD_OPT_ABORT), not mid-message.
          sock.write(encodeOption(C.NBD_OPT_ABORT));
          throw new UpstreamError(
            "refused",
            `master ${remote} refused export "${o.exportName}": ${r.message || r.type}`,
          );
        }
      }
      if (size < 0) {
        throw new UpstreamError("protocol", `master ${remote} sent no NBD_INFO_EXPORT`);
      }
      clearTimeout(timer);
      o.signal?.removeEventListener("abort", cancel);
      const s = sock;
      s.removeAllListeners("close");
      s.removeAllListeners("error");
      const up: Upstream = new Upstream(
        {
          write: (b, written) => s.write(b, written),
          end: () => s.end(),
          destroy: () => s.destroy(),
        },
        { size, flags, remote },
      );
      s.on("error", (err: Error) => up.#fail(`connection failed: ${err.message}`));
      s.on("close", () => up.#fail("connection closed"));
      if (input.size > 0) up.#received(input.take(input.size));
      deliver = (chunk) => up.#received(chunk);
      return up;
    } catch (err) {
      clearTimeout(timer);
      o.signal?.removeEventListener("abort", cancel);
      sock.destroy();
      raw.destroy();
      if (err instanceof UpstreamError) throw err;
      throw new UpstreamError("protocol", `master ${remote}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /** Requests sent and not answered yet. */
  get inFlight(): number {
    return this.#pending.size;
  }

  get closed(): boolean {
    return this.#closed !== undefined;
  }

  /** Called once when the connection ends (not after close()). */
  onClose(cb: (err: UpstreamError) => void): void {
    this.#onClose = cb;
  }

  /** Sends a request ("Request message"); `done` gets its reply. */
  send(req: UpstreamRequest, done: (r: UpstreamReply) => void): void {
    if (this.#closed) throw this.#closed;
    const read = req.type === C.NBD_CMD_READ;
    if (read && req.into && req.into.length !== req.length) {
      throw new RangeError(`READ of ${req.length} bytes into a buffer of ${req.into.length}`);
    }
    const handle = this.#nextHandle++;
    const payload = req.type === C.NBD_CMD_WRITE ? req.data : undefined;
    const own = payload !== undefined && payload.length >= OWN_WRITE_BYTES;
    const at = this.#room(REQUEST_HEADER + (payload && !own ? payload.length : 0));
    putRequestHeader(this.#outView!, at, req.flags, req.type, handle, req.offset, req.length);
    if (payload && !own) this.#out!.set(payload, at + REQUEST_HEADER);
    this.#pending.set(handle, { length: req.length, read, into: req.into, done });
    if (own) {
      // The batch so far (ending with this request's header), then the payload as it is.
      this.#flushOut();
      this.#write(payload);
    }
  }

  /**
   * Ends the connection; requests in flight get no reply (the caller still holds them). An
   * open connection ends with a soft disconnect ("Terminating the transmission phase"):
   * NBD_CMD_DISC, then this side's end of the stream; the master closes once it is through
   * with what it received, and the socket is destroyed after DISCONNECT_MS in any case.
   */
  close(): void {
    const open = !this.#closed;
    if (open) this.#closed = new UpstreamError("closed", "closed by this node");
    this.#pending.clear();
    this.#reading = undefined;
    this.#direct = undefined;
    this.#out = undefined;
    if (!open) return this.#destroy();
    const disc = new Uint8Array(REQUEST_HEADER);
    putRequestHeader(new DataView(disc.buffer), 0, 0, C.NBD_CMD_DISC, this.#nextHandle++, 0, 0);
    this.#write(disc);
    this.#end();
    const timer = setTimeout(() => this.#destroy(), DISCONNECT_MS);
    Deno.unrefTimer(timer);
  }

  /**
   * Reserves `bytes` (at most COALESCE_BYTES) in the requests of this task, written at its end;
   * returns where they start in #out.
   */
  #room(bytes: number): number {
    if (this.#out !== undefined && this.#outLen + bytes > this.#out.length) this.#flushOut();
    if (this.#out === undefined) {
      const buf = this.#sendBuffers.take(COALESCE_BYTES);
      this.#out = buf;
      this.#outView = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
      this.#outLen = 0;
      queueMicrotask(() => this.#flushOut());
    }
    const at = this.#outLen;
    this.#outLen += bytes;
    return at;
  }

  #flushOut(): void {
    const buf = this.#out;
    if (buf === undefined || this.#closed) return;
    this.#out = undefined;
    // node holds the buffer until its write completes; then it may take later requests.
    this.#write(buf.subarray(0, this.#outLen), () => {
      this.#sendBuffers.give(buf);
    });
  }

  /**
   * Bytes from the master, parsed as they come: `chunk` may be a view of a reused buffer,
   * so nothing of it is kept. A READ's data is copied into its buffer.
   */
  #received(chunk: Uint8Array): void {
    try {
      let i = 0;
      const n = chunk.length;
      while (i < n && !this.#closed) {
        const cur = this.#reading;
        if (cur === undefined && this.#direct && n - i >= this.#direct.length) {
          // A READ without a buffer of its own whose data is all here: lent as it is.
          const d = this.#direct;
          this.#direct = undefined;
          d.done({ error: 0, data: chunk.subarray(i, i + d.length) });
          i += d.length;
          continue;
        }
        if (this.#direct) {
          const d = this.#direct;
          this.#direct = undefined;
          this.#reading = { data: new Uint8Array(d.length), done: d.done };
          this.#got = 0;
          continue;
        }
        if (cur) {
          const k = Math.min(n - i, cur.data.length - this.#got);
          cur.data.set(chunk.subarray(i, i + k), this.#got);
          this.#got += k;
          i += k;
          if (this.#got === cur.data.length) {
            this.#reading = undefined;
            cur.done({ error: 0, data: cur.data });
          }
          continue;
        }
        const k = Math.min(n - i, REPLY_HEADER - this.#headerHave);
        this.#header.set(chunk.subarray(i, i + k), this.#headerHave);
        this.#headerHave += k;
        i += k;
        if (this.#headerHave < REPLY_HEADER) return;
        this.#headerHave = 0;
        this.#reply();
      }
    } catch (err) {
      this.#fail(err instanceof Error ? err.message : String(err));
    }
  }

  /** A whole reply header has arrived: answer its request, or start receiving its data. */
  #reply(): void {
    const v = this.#headerView;
    if (v.getUint32(0) !== C.NBD_SIMPLE_REPLY_MAGIC) {
      throw new UpstreamError(
        "protocol",
        `bad reply magic 0x${v.getUint32(0).toString(16)} from ${this.remote}`,
      );
    }
    const error = v.getUint32(4);
    const handle = v.getUint32(8) * TWO_POW_32 + v.getUint32(12);
    const p = this.#pending.get(handle);
    if (!p) throw new UpstreamError("protocol", `reply for unknown handle ${handle}`);
    this.#pending.delete(handle);
    if (p.read && error === 0 && p.length > 0) {
      if (p.into) {
        this.#reading = { data: p.into, done: p.done };
        this.#got = 0;
      } else this.#direct = { length: p.length, done: p.done };
    } else if (p.read && error === 0) p.done({ error, data: new Uint8Array(0) });
    else p.done(error === 0 ? OK : { error });
  }

  #fail(message: string): void {
    if (this.#closed) return;
    this.#closed = new UpstreamError("closed", `master ${this.remote}: ${message}`);
    this.#reading = undefined;
    this.#direct = undefined;
    this.#out = undefined;
    this.#destroy();
    this.#onClose?.(this.#closed);
  }
}
