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
 * @module
 */

import { connect as netConnect, isIP, type Socket } from "node:net";
import { createSecureContext, type TLSSocket } from "node:tls";
import * as C from "../nbd/constants.ts";
import { COALESCE_BYTES, splitHostPort, tlsVerifyError, TurnBatch, wrapTls } from "../net/mod.ts";
import type { PeerVerify } from "../peer/mod.ts";

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
}

export type UpstreamErrorCode = "unreachable" | "refused" | "protocol" | "closed" | "timeout";

export class UpstreamError extends Error {
  override name = "UpstreamError";
  constructor(readonly code: UpstreamErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** One request as sent upstream. */
export interface UpstreamRequest {
  type: number;
  flags: number;
  offset: number;
  length: number;
  /** A WRITE's payload. */
  data?: Uint8Array;
}

/** A reply: `error` is the NBD error value (0: success); `data` a successful READ's bytes. */
export interface UpstreamReply {
  error: number;
  data?: Uint8Array;
}

/**
 * Bytes received and not consumed yet, taken in exact amounts as they arrive. Pushed chunks
 * belong to the queue (never reused by the caller), so what take() returns may be kept.
 */
class ByteQueue {
  #chunks: Uint8Array[] = [];
  #size = 0;
  #want: { n: number; resolve: (b: Uint8Array) => void; reject: (e: Error) => void } | undefined;
  #error: Error | undefined;

  get size(): number {
    return this.#size;
  }

  push(chunk: Uint8Array): void {
    this.#chunks.push(chunk);
    this.#size += chunk.length;
    const w = this.#want;
    if (w && this.#size >= w.n) {
      this.#want = undefined;
      w.resolve(this.take(w.n));
    }
  }

  fail(err: Error): void {
    this.#error ??= err;
    const w = this.#want;
    this.#want = undefined;
    w?.reject(this.#error);
  }

  /** Exactly `n` bytes, which must be buffered. */
  take(n: number): Uint8Array {
    const first = this.#chunks[0];
    if (first && first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      this.#size -= n;
      return out;
    }
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const c = this.#chunks[0];
      const k = Math.min(c.length, n - at);
      out.set(c.subarray(0, k), at);
      at += k;
      if (k === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(k);
    }
    this.#size -= n;
    return out;
  }

  /** Resolves to exactly `n` bytes once they have arrived. */
  need(n: number): Promise<Uint8Array> {
    if (this.#size >= n) return Promise.resolve(this.take(n));
    if (this.#error) return Promise.reject(this.#error);
    return new Promise((resolve, reject) => (this.#want = { n, resolve, reject }));
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** An option request ("Option haggling"): IHAVEOPT, option, length, data. */
function encodeOption(option: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const b = new Uint8Array(16 + data.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, C.IHAVEOPT_HI);
  v.setUint32(4, C.IHAVEOPT_LO);
  v.setUint32(8, option);
  v.setUint32(12, data.length);
  b.set(data, 16);
  return b;
}

/** An open connection to a master's NBD export. */
export class Upstream {
  readonly size: number;
  readonly transmissionFlags: number;
  readonly remote: string;
  #write: (b: Uint8Array) => void;
  /** Requests of this turn, written together at its end (#flush). */
  #turn = new TurnBatch<Uint8Array>((all, bytes) => this.#flush(all, bytes));
  #destroy: () => void;
  #in: ByteQueue;
  #pending = new Map<bigint, { length: number; read: boolean; done: (r: UpstreamReply) => void }>();
  #nextHandle = 1n;
  #closed: UpstreamError | undefined;
  #onClose: ((err: UpstreamError) => void) | undefined;

  private constructor(
    io: { write: (b: Uint8Array) => void; destroy: () => void; input: ByteQueue },
    info: { size: number; flags: number; remote: string },
  ) {
    this.#write = io.write;
    this.#destroy = io.destroy;
    this.#in = io.input;
    this.size = info.size;
    this.transmissionFlags = info.flags;
    this.remote = info.remote;
    void this.#readLoop();
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
    // node:net hands a fresh Buffer per read: the queue may keep it as it is.
    raw.on("data", (c: Uint8Array) => input.push(new Uint8Array(c.buffer, c.byteOffset, c.length)));
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
      fail("closed", `gave up during ${phase}: the volume's master changed`);
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
          // Direct reads hand views of a reused buffer: keep a copy.
          sink: (chunk) => input.push(chunk.slice()),
        });
        tls.on("error", (err: Error) => fail("refused", `${phase}: ${err.message}`, err));
        tls.on("close", () => fail("closed", `connection closed during ${phase}`));
        await Promise.race([new Promise((resolve) => tls.once("secure", resolve)), broken]);
        await checkServer(tls, o, remote);
        sock = tls;
      }
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
        { write: (b) => s.write(b), destroy: () => s.destroy(), input },
        { size, flags, remote },
      );
      s.on("error", (err: Error) => up.#fail(`connection failed: ${err.message}`));
      s.on("close", () => up.#fail("connection closed"));
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
    const handle = this.#nextHandle++;
    const payload = req.type === C.NBD_CMD_WRITE ? (req.data?.length ?? 0) : 0;
    const b = new Uint8Array(28 + payload);
    const v = new DataView(b.buffer);
    v.setUint32(0, C.NBD_REQUEST_MAGIC);
    v.setUint16(4, req.flags);
    v.setUint16(6, req.type);
    v.setBigUint64(8, handle);
    v.setBigUint64(16, BigInt(req.offset));
    v.setUint32(24, req.length);
    if (payload > 0) b.set(req.data!, 28);
    this.#pending.set(handle, {
      length: req.length,
      read: req.type === C.NBD_CMD_READ,
      done,
    });
    this.#turn.add(b, b.length);
  }

  /**
   * Writes the requests sent in this turn (the forwarded requests of one client read): small
   * ones copied into one buffer, so they cost one TLS write and one system call, not one each.
   */
  #flush(all: Uint8Array[], bytes: number): void {
    if (this.#closed) return;
    if (all.length === 1 || bytes > COALESCE_BYTES) {
      for (const b of all) this.#write(b);
      return;
    }
    const buf = new Uint8Array(bytes);
    let at = 0;
    for (const b of all) {
      buf.set(b, at);
      at += b.length;
    }
    this.#write(buf);
  }

  /** Ends the connection; requests in flight get no reply (the caller still holds them). */
  close(): void {
    if (!this.#closed) this.#closed = new UpstreamError("closed", "closed by this node");
    this.#pending.clear();
    this.#destroy();
  }

  async #readLoop(): Promise<void> {
    try {
      for (;;) {
        const h = await this.#in.need(16);
        const v = new DataView(h.buffer, h.byteOffset, 16);
        if (v.getUint32(0) !== C.NBD_SIMPLE_REPLY_MAGIC) {
          throw new UpstreamError(
            "protocol",
            `bad reply magic 0x${v.getUint32(0).toString(16)} from ${this.remote}`,
          );
        }
        const error = v.getUint32(4);
        const handle = v.getBigUint64(8);
        const p = this.#pending.get(handle);
        if (!p) {
          if (this.#closed) return;
          throw new UpstreamError("protocol", `reply for unknown handle ${handle}`);
        }
        this.#pending.delete(handle);
        if (p.read && error === 0) {
          const data = await this.#in.need(p.length);
          p.done({ error, data }); // the queue's chunks are never reused: no copy
        } else p.done({ error });
      }
    } catch (err) {
      this.#fail(err instanceof Error ? err.message : String(err));
    }
  }

  #fail(message: string): void {
    if (this.#closed) return;
    this.#closed = new UpstreamError("closed", `master ${this.remote}: ${message}`);
    this.#in.fail(this.#closed);
    this.#destroy();
    this.#onClose?.(this.#closed);
  }
}

/** One option reply ("Option reply"): its type, data, and the text of an error reply. */
async function readOptionReply(
  input: ByteQueue,
  option: number,
  remote: string,
): Promise<{ type: number; data: Uint8Array; message: string }> {
  const h = await input.need(20);
  const v = new DataView(h.slice().buffer);
  if (v.getUint32(0) !== C.REPLY_MAGIC_HI || v.getUint32(4) !== C.REPLY_MAGIC_LO) {
    throw new UpstreamError("protocol", `bad option reply magic from ${remote}`);
  }
  if (v.getUint32(8) !== option) {
    throw new UpstreamError("protocol", `option reply for ${v.getUint32(8)}, not ${option}`);
  }
  const type = v.getUint32(12);
  const length = v.getUint32(16);
  if (length > 64 * 1024) throw new UpstreamError("protocol", "option reply too long");
  const data = length > 0 ? (await input.need(length)).slice() : new Uint8Array(0);
  return { type, data, message: type >= 0x80000000 ? dec.decode(data) : "" };
}

/** The master's certificate: trusted by the node's bundle, and naming the expected node. */
async function checkServer(tls: TLSSocket, o: UpstreamOptions, remote: string): Promise<void> {
  const chain = tlsVerifyError(tls);
  if (chain !== undefined) {
    throw new UpstreamError("refused", `master ${remote} is untrusted: TLS: ${chain}`);
  }
  if (!o.verify) return;
  let der: Uint8Array | undefined;
  try {
    const raw = tls.getPeerCertificate(false)?.raw;
    der = raw && raw.length > 0 ? new Uint8Array(raw) : undefined;
  } catch {
    der = undefined;
  }
  if (!der) throw new UpstreamError("refused", `master ${remote} sent no certificate`);
  const v = await o.verify(der);
  if (!v.ok) throw new UpstreamError("refused", `master ${remote} is untrusted: ${v.reason}`);
  if (o.expectNode !== undefined && v.node !== o.expectNode) {
    throw new UpstreamError(
      "refused",
      `master ${remote} presented node "${v.node}", expected "${o.expectNode}"`,
    );
  }
}

/**
 * How a node reaches the masters it forwards to: STARTTLS with its own certificate (`tls()`
 * undefined: plaintext), the master's certificate checked by `verify` and required to name
 * the master the directory entry names.
 */
export function upstreamConnector(o: {
  tls: () => UpstreamTls | undefined;
  verify?: PeerVerify;
  timeoutMs?: number;
}): (
  entry: { name: string; master: string; address: string },
  signal?: AbortSignal,
) => Promise<Upstream> {
  return (entry, signal) => {
    const { host, port } = splitHostPort(entry.address);
    const tls = o.tls();
    return Upstream.connect({
      host,
      port,
      exportName: entry.name,
      ...(tls ? { tls, verify: o.verify, expectNode: entry.master } : {}),
      timeoutMs: o.timeoutMs,
      signal,
    });
  };
}
