/**
 * Transmission-phase wire format: pure functions over Uint8Array/DataView.
 * Nothing here touches a socket; the server passes buffers in and out.
 *
 * Offsets are 64-bit on the wire. Volumes are far smaller than 2^53 bytes, so a
 * request whose offset needs more than 53 bits is out of range by construction;
 * we keep it as `offsetHi`/`offsetLo` until validated and never lose precision.
 * @module
 */

import * as C from "./constants.ts";
import type { Errno } from "./errno.ts";
import type { ForwarderName } from "./handshake.ts";

/** A decoded request header ("Request message"). Reused across requests: no allocation. */
export class Request {
  flags = 0;
  type = 0;
  /** The 64-bit handle as two halves, echoed unchanged in replies. */
  handleHi = 0;
  handleLo = 0;
  offsetHi = 0;
  offsetLo = 0;
  length = 0;

  /** Offset as a number; only exact when offsetHi < 2^21 (checked by validateRequest). */
  get offset(): number {
    return this.offsetHi * 0x100000000 + this.offsetLo;
  }
}

/** What the server negotiated for one connection, needed to validate requests. */
export interface TransmissionContext {
  size: number;
  readOnly: boolean;
  structuredReplies: boolean;
  /** base:allocation was selected with NBD_OPT_SET_META_CONTEXT for this export. */
  baseAllocation: boolean;
  /**
   * Largest READ/WRITE payload accepted (constants.ts MAX_REQUEST_SIZE: more than the maximum
   * advertised in NBD_INFO_BLOCK_SIZE, for clients that do not negotiate block sizes).
   */
  maxPayload: number;
  /** A forwarding node's client: its forwarder and this connection's generation. */
  forwarder?: ForwarderName;
}

/**
 * Decodes the 28-byte request header at `off`. Returns false on bad magic
 * (the connection is then out of sync and must be closed).
 */
export function decodeRequest(view: DataView, off: number, req: Request): boolean {
  if (view.getUint32(off) !== C.NBD_REQUEST_MAGIC) return false;
  req.flags = view.getUint16(off + 4);
  req.type = view.getUint16(off + 6);
  req.handleHi = view.getUint32(off + 8);
  req.handleLo = view.getUint32(off + 12);
  req.offsetHi = view.getUint32(off + 16);
  req.offsetLo = view.getUint32(off + 20);
  req.length = view.getUint32(off + 24);
  return true;
}

/** Encodes a request header (the client side; used by tests). */
export function encodeRequest(
  view: DataView,
  off: number,
  r: { flags: number; type: number; handle: bigint; offset: bigint; length: number },
): number {
  view.setUint32(off, C.NBD_REQUEST_MAGIC);
  view.setUint16(off + 4, r.flags);
  view.setUint16(off + 6, r.type);
  view.setBigUint64(off + 8, r.handle);
  view.setBigUint64(off + 16, r.offset);
  view.setUint32(off + 24, r.length);
  return off + C.REQUEST_HEADER_SIZE;
}

/**
 * Encodes a request header like encodeRequest, from plain numbers (below 2^53) instead of
 * BigInts: the forwarding client's path, once per request.
 */
export function putRequestHeader(
  view: DataView,
  off: number,
  flags: number,
  type: number,
  handle: number,
  offset: number,
  length: number,
): void {
  view.setUint32(off, C.NBD_REQUEST_MAGIC);
  view.setUint16(off + 4, flags);
  view.setUint16(off + 6, type);
  view.setUint32(off + 8, Math.floor(handle / TWO_POW_32));
  view.setUint32(off + 12, handle >>> 0);
  view.setUint32(off + 16, Math.floor(offset / TWO_POW_32));
  view.setUint32(off + 20, offset >>> 0);
  view.setUint32(off + 24, length);
}

const TWO_POW_32 = 0x100000000;

/** Command flags each command may carry ("Command flags"). FUA is valid on every command. */
function allowedFlags(type: number, ctx: TransmissionContext): number {
  switch (type) {
    case C.NBD_CMD_READ:
      return C.NBD_CMD_FLAG_FUA | (ctx.structuredReplies ? C.NBD_CMD_FLAG_DF : 0);
    case C.NBD_CMD_WRITE_ZEROES:
      return C.NBD_CMD_FLAG_FUA | C.NBD_CMD_FLAG_NO_HOLE | C.NBD_CMD_FLAG_FAST_ZERO;
    case C.NBD_CMD_BLOCK_STATUS:
      return C.NBD_CMD_FLAG_FUA | C.NBD_CMD_FLAG_REQ_ONE;
    default:
      return C.NBD_CMD_FLAG_FUA;
  }
}

/**
 * Why validateRequest refused a request: a POSIX error name (nbdError() in errno.ts turns it
 * into the NBD error value, knowing the request's flags) plus a message for logs.
 */
export interface Rejection {
  errno: Errno;
  message: string;
}

const TWO_POW_21 = 0x200000;

/**
 * Checks a request against the negotiated context ("Request types", "Error values").
 * Returns undefined when the request may run. Pure; table-tested at the edges.
 */
export function validateRequest(req: Request, ctx: TransmissionContext): Rejection | undefined {
  const t = req.type;
  const isWrite = t === C.NBD_CMD_WRITE || t === C.NBD_CMD_TRIM || t === C.NBD_CMD_WRITE_ZEROES;
  if (
    t !== C.NBD_CMD_READ && !isWrite && t !== C.NBD_CMD_FLUSH && t !== C.NBD_CMD_CACHE &&
    t !== C.NBD_CMD_BLOCK_STATUS
  ) {
    return { errno: "EINVAL", message: `unknown command ${t}` };
  }
  const bad = req.flags & ~allowedFlags(t, ctx);
  if (bad !== 0) {
    return {
      errno: "EINVAL",
      message: `flags 0x${bad.toString(16)} not valid for command ${t}`,
    };
  }
  if (t === C.NBD_CMD_FLUSH) {
    // "For a flush request, length and offset are reserved, and MUST be set to all-zero."
    if (req.length !== 0 || req.offsetHi !== 0 || req.offsetLo !== 0) {
      return { errno: "EINVAL", message: "flush with nonzero offset or length" };
    }
    return undefined;
  }
  if (t === C.NBD_CMD_BLOCK_STATUS && !ctx.baseAllocation) {
    return { errno: "EINVAL", message: "block status without a negotiated metadata context" };
  }
  if (req.length === 0) {
    return { errno: "EINVAL", message: "zero-length request" };
  }
  if ((t === C.NBD_CMD_READ || t === C.NBD_CMD_WRITE) && req.length > ctx.maxPayload) {
    return {
      errno: "EOVERFLOW",
      message: `length ${req.length} exceeds the maximum payload ${ctx.maxPayload}`,
    };
  }
  if (isWrite && ctx.readOnly) {
    return { errno: "EPERM", message: "write to a read-only export" };
  }
  // offset + length must stay within the export ("Error values": ENOSPC for writes
  // beyond the end, EINVAL for other requests beyond the end).
  if (req.offsetHi >= TWO_POW_21 || req.offset + req.length > ctx.size) {
    return {
      errno: isWrite ? "ENOSPC" : "EINVAL",
      message: `range ${describeOffset(req)}+${req.length} is beyond the export size ${ctx.size}`,
    };
  }
  return undefined;
}

function describeOffset(req: Request): string {
  return req.offsetHi >= TWO_POW_21
    ? String((BigInt(req.offsetHi) << 32n) | BigInt(req.offsetLo))
    : String(req.offset);
}

/** Writes a simple reply header ("Simple reply message"). Returns the end offset. */
export function encodeSimpleReply(
  view: DataView,
  off: number,
  req: Request,
  error: number,
): number {
  view.setUint32(off, C.NBD_SIMPLE_REPLY_MAGIC);
  view.setUint32(off + 4, error);
  view.setUint32(off + 8, req.handleHi);
  view.setUint32(off + 12, req.handleLo);
  return off + C.SIMPLE_REPLY_HEADER_SIZE;
}

/** Writes a structured reply chunk header ("Structured reply chunk message"). */
export function encodeChunkHeader(
  view: DataView,
  off: number,
  req: Request,
  flags: number,
  type: number,
  length: number,
): number {
  view.setUint32(off, C.NBD_STRUCTURED_REPLY_MAGIC);
  view.setUint16(off + 4, flags);
  view.setUint16(off + 6, type);
  view.setUint32(off + 8, req.handleHi);
  view.setUint32(off + 12, req.handleLo);
  view.setUint32(off + 16, length);
  return off + C.STRUCTURED_REPLY_HEADER_SIZE;
}

/**
 * Header of an NBD_REPLY_TYPE_OFFSET_DATA chunk carrying `length` bytes at `offset` (one
 * piece of a READ sent in several chunks); the data follows the returned offset.
 */
export function encodeOffsetDataPiece(
  view: DataView,
  off: number,
  req: Request,
  last: boolean,
  offset: number,
  length: number,
): number {
  off = encodeChunkHeader(
    view,
    off,
    req,
    last ? C.NBD_REPLY_FLAG_DONE : 0,
    C.NBD_REPLY_TYPE_OFFSET_DATA,
    8 + length,
  );
  view.setUint32(off, Math.floor(offset / 0x100000000));
  view.setUint32(off + 4, offset >>> 0);
  return off + 8;
}

/**
 * Header of a final NBD_REPLY_TYPE_OFFSET_DATA chunk; the caller places
 * `req.length` bytes of data right after the returned offset.
 */
export function encodeOffsetDataHeader(view: DataView, off: number, req: Request): number {
  off = encodeChunkHeader(
    view,
    off,
    req,
    C.NBD_REPLY_FLAG_DONE,
    C.NBD_REPLY_TYPE_OFFSET_DATA,
    8 + req.length,
  );
  view.setUint32(off, req.offsetHi);
  view.setUint32(off + 4, req.offsetLo);
  return off + 8;
}

/** Bytes an error reply takes: structured error chunk with message, or a simple reply. */
export function errorReplySize(structured: boolean, message: Uint8Array): number {
  return structured
    ? C.STRUCTURED_REPLY_HEADER_SIZE + 6 + message.length
    : C.SIMPLE_REPLY_HEADER_SIZE;
}

/**
 * Writes an error reply: with structured replies an NBD_REPLY_TYPE_ERROR chunk carrying
 * a human-readable message ("SHOULD prefer sending errors via a structured reply"),
 * otherwise a simple reply with the error field set.
 */
export function encodeErrorReply(
  buf: Uint8Array,
  view: DataView,
  off: number,
  req: Request,
  structured: boolean,
  error: number,
  message: Uint8Array,
): number {
  if (!structured) return encodeSimpleReply(view, off, req, error);
  off = encodeChunkHeader(
    view,
    off,
    req,
    C.NBD_REPLY_FLAG_DONE,
    C.NBD_REPLY_TYPE_ERROR,
    6 + message.length,
  );
  view.setUint32(off, error);
  view.setUint16(off + 4, message.length);
  buf.set(message, off + 6);
  return off + 6 + message.length;
}

/** Writes a success reply without payload (simple, or structured NONE chunk with DONE). */
export function encodeOkReply(
  view: DataView,
  off: number,
  req: Request,
  structured: boolean,
): number {
  return structured
    ? encodeChunkHeader(view, off, req, C.NBD_REPLY_FLAG_DONE, C.NBD_REPLY_TYPE_NONE, 0)
    : encodeSimpleReply(view, off, req, 0);
}

/** One base:allocation descriptor. */
export interface StatusDescriptor {
  length: number;
  flags: number;
}

/** Size of an NBD_REPLY_TYPE_BLOCK_STATUS chunk with `n` descriptors. */
export function blockStatusSize(n: number): number {
  return C.STRUCTURED_REPLY_HEADER_SIZE + 4 + 8 * n;
}

/** Writes a final NBD_REPLY_TYPE_BLOCK_STATUS chunk ("Structured reply types"). */
export function encodeBlockStatus(
  view: DataView,
  off: number,
  req: Request,
  contextId: number,
  descriptors: readonly StatusDescriptor[],
): number {
  off = encodeChunkHeader(
    view,
    off,
    req,
    C.NBD_REPLY_FLAG_DONE,
    C.NBD_REPLY_TYPE_BLOCK_STATUS,
    4 + 8 * descriptors.length,
  );
  view.setUint32(off, contextId);
  off += 4;
  for (const d of descriptors) {
    view.setUint32(off, d.length);
    view.setUint32(off + 4, d.flags);
    off += 8;
  }
  return off;
}
