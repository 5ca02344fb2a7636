/**
 * The pieces of the forwarding client's option haggling ("Option haggling"): its errors, a
 * queue of received bytes taken in exact amounts, option requests and replies, and the check
 * of the master's certificate after STARTTLS.
 * @module
 */

import type { TLSSocket } from "node:tls";
import * as C from "../nbd/constants.ts";
import { tlsVerifyError } from "../net/mod.ts";
import type { PeerVerify } from "../peer/mod.ts";
import type { ForwarderName } from "../nbd/handshake.ts";

export type { ForwarderName };

export type UpstreamErrorCode = "unreachable" | "refused" | "protocol" | "closed" | "timeout";

export class UpstreamError extends Error {
  override name = "UpstreamError";
  constructor(readonly code: UpstreamErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/**
 * Bytes received and not consumed yet, taken in exact amounts as they arrive. Pushed chunks
 * belong to the queue (never reused by the caller), so what take() returns may be kept.
 */
export class ByteQueue {
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

const dec = new TextDecoder();

/** An option request ("Option haggling"): IHAVEOPT, option, length, data. */
export function encodeOption(option: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const b = new Uint8Array(16 + data.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, C.IHAVEOPT_HI);
  v.setUint32(4, C.IHAVEOPT_LO);
  v.setUint32(8, option);
  v.setUint32(12, data.length);
  b.set(data, 16);
  return b;
}

/** One option reply ("Option reply"): its type, data, and the text of an error reply. */
export async function readOptionReply(
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

/**
 * NBD_OPT_BALLAST_FORWARDER: names the forwarder and this connection's generation, so that
 * the master fences its older connections (data/forwarder_fences.ts). A master of an older
 * version answers NBD_REP_ERR_UNSUP, a plaintext (`--tls off`) one NBD_REP_ERR_POLICY: either
 * way the connection goes on without the fence, as before.
 */
export async function nameForwarder(
  out: { write(b: Uint8Array): unknown },
  input: ByteQueue,
  remote: string,
  f: ForwarderName,
): Promise<void> {
  const b = new Uint8Array(12);
  const v = new DataView(b.buffer);
  v.setUint32(0, f.id[0]);
  v.setUint32(4, f.id[1]);
  v.setUint32(8, f.gen);
  out.write(encodeOption(C.NBD_OPT_BALLAST_FORWARDER, b));
  await readOptionReply(input, C.NBD_OPT_BALLAST_FORWARDER, remote);
}

/** The master's certificate: trusted by the node's bundle, and naming the expected node. */
export async function checkServer(
  tls: TLSSocket,
  o: { verify?: PeerVerify; expectNode?: string },
  remote: string,
): Promise<void> {
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
