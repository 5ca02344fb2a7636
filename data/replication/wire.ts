/**
 * Replication messages on the peer channel (data/peer/): pure encode/decode over frames.
 * The master sends requests about a volume copy, tagged with the group's epoch; the replica
 * answers each with a reply carrying the request's id. Big-endian throughout.
 *
 *     request:  type u8 | flags u8 | session u16 | id u32 | volume uuid (16) | epoch u32
 *               | body (by type)
 *     reply:    type 0x80 | 0 | 0 | id u32 | status u32 | message or data
 *
 * Requests: WRITE (offset u64, data), TRIM and ZERO (offset u64, length u32), FLUSH, FENCE
 * (the new master's epoch: refuse anything older), HASHES (first region u32, count u32,
 * region size u32: the replica hashes its data and answers with a 16-byte hash per region),
 * TREE (first node u32, count u32, level u32: nodes of the replica's hash tree, level 0 being
 * its region hashes, see hash_state.ts), SIZE (the copy's size) and PING (the master's lease:
 * the replica answers OK while the epoch is current, see lease.ts). A replica refuses a request
 * of an epoch older than the newest it has seen with STATUS_STALE_EPOCH: that is the fencing
 * of an old master.
 *
 * PINGS (since the batched read lease) carries the PINGs of many volumes to one replica node
 * in one frame: its header's volume is all zeroes and its epoch 0, its body a count u32 and
 * that many (volume uuid (16) | epoch u32); the reply is OK with one status byte per entry,
 * in order, each what a PING of that volume at that epoch would have got. A node of an
 * older version answers PINGS with STATUS_BAD_REQUEST ("unknown request type"): the master
 * then PINGs that node one volume at a time, as before (lease.ts).
 *
 * Sessions (the header's u16, once reserved and zero) fence the frames of a link the master
 * gave up: before a member is resynced, and before a master serves again at the epoch it
 * served at (its process restarted), the master asks it for a new session of the copy
 * (SESSION, answered with the u16), and tags every WRITE, TRIM and ZERO to that member with
 * it from then on. The member refuses those of an older session of the same epoch
 * (STATUS_STALE_SESSION): frames still in its socket from before, which must not land after
 * the resync made a region equal. 0 is "no session" (older than any; what a master of an
 * older version sends, and what a copy has that was never resynced at its epoch). A node of
 * an older version answers SESSION with STATUS_BAD_REQUEST and is sent 0, as before.
 * @module
 */

export const T_WRITE = 1;
export const T_TRIM = 2;
export const T_ZERO = 3;
export const T_FLUSH = 4;
export const T_FENCE = 5;
export const T_HASHES = 6;
export const T_SIZE = 7;
export const T_TREE = 8;
export const T_PING = 9;
export const T_PINGS = 10;
export const T_SESSION = 11;
export const T_REPLY = 0x80;

/** WRITE/TRIM/ZERO flag: persist before replying (FUA). */
export const F_FUA = 1;
/** ZERO flag: the range must stay allocated (NO_HOLE). */
export const F_NO_HOLE = 2;
/** WRITE flag: part of a resync (the copy of a region), not a client write. */
export const F_RESYNC = 4;
/**
 * TREE flag: answer only if that needs little reading (STATUS_BUSY otherwise): a root asked
 * for `volume get`, not for a resync.
 */
export const F_CHEAP = 8;
/**
 * HASHES flag, with the region size: rehash the regions from the data (`volume verify
 * --deep`) and answer each region's hash followed by a byte per region, 1 where the region
 * was clean and its persisted hash differs from its data (silent corruption).
 */
export const F_DEEP = 16;

export const STATUS_OK = 0;
/** The request's epoch is older than one the replica has seen: the sender is fenced. */
export const STATUS_STALE_EPOCH = 1;
/** The replica holds no copy of that volume. */
export const STATUS_NO_COPY = 2;
/** The request is outside the copy (offset + length past its size). */
export const STATUS_RANGE = 3;
/** The replica's store failed (I/O error, full disk). */
export const STATUS_IO = 4;
/** A request the replica does not understand. */
export const STATUS_BAD_REQUEST = 5;
/** F_CHEAP asked and the answer would need much reading now. */
export const STATUS_BUSY = 6;
/** A WRITE, TRIM or ZERO of a session older than the copy's (a frame of a link given up). */
export const STATUS_STALE_SESSION = 7;

export const HEADER_BYTES = 28;
/**
 * Most entries of one PINGS: a master with more volumes on one node sends several (lease.ts);
 * a replica refuses more, which would hold its thread (about 8 us an entry).
 */
export const MAX_PINGS = 16_384;
/** Bytes of one PINGS entry: volume uuid and epoch. */
const PING_ENTRY_BYTES = 20;
/** The volume a PINGS header names: none. */
const NO_VOLUME = "00000000-0000-0000-0000-000000000000";
export const REPLY_HEADER_BYTES = 12;
/** Bytes of one region hash. */
export const HASH_BYTES = 16;

/** Sessions run 1..MAX_SESSION and wrap around; 0 is none. */
export const MAX_SESSION = 0xffff;

/** The session after `s`. */
export function nextSession(s: number): number {
  return s >= MAX_SESSION ? 1 : s + 1;
}

/**
 * Whether session `a` is older than `b`: 0 is older than any other; otherwise by serial
 * number arithmetic (RFC 1982), so a wrap from MAX_SESSION to 1 still counts as newer.
 */
export function sessionOlder(a: number, b: number): boolean {
  if (a === b || b === 0) return false;
  if (a === 0) return true;
  const d = (b - a + MAX_SESSION) % MAX_SESSION;
  return d > 0 && d < MAX_SESSION / 2;
}

/** Every request's session (0: none). */
export type Request = RequestBody & { session?: number };

type RequestBody =
  | {
    type: typeof T_WRITE;
    id: number;
    volume: string;
    epoch: number;
    flags: number;
    offset: number;
    data: Uint8Array;
  }
  | {
    type: typeof T_TRIM | typeof T_ZERO;
    id: number;
    volume: string;
    epoch: number;
    flags: number;
    offset: number;
    length: number;
  }
  | {
    type: typeof T_FLUSH | typeof T_FENCE | typeof T_SIZE | typeof T_PING | typeof T_SESSION;
    id: number;
    volume: string;
    epoch: number;
    flags: number;
  }
  | {
    type: typeof T_HASHES;
    id: number;
    volume: string;
    epoch: number;
    flags: number;
    first: number;
    count: number;
    regionBytes: number;
  }
  | {
    type: typeof T_TREE;
    id: number;
    volume: string;
    epoch: number;
    flags: number;
    level: number;
    first: number;
    count: number;
  }
  | {
    type: typeof T_PINGS;
    id: number;
    volume: string;
    epoch: number;
    flags: number;
    /** The volumes PINGed, each at its group's epoch. */
    entries: PingEntry[];
  };

/** One volume of a PINGS request. */
export interface PingEntry {
  volume: string;
  epoch: number;
}

export interface Reply {
  id: number;
  status: number;
  /** The message of an error, the hashes of HASHES, the size of SIZE (8 bytes). */
  body: Uint8Array;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A uuid as 16 bytes. */
export function uuidBytes(uuid: string): Uint8Array {
  const hex = uuid.replace(/-/g, "");
  if (!/^[0-9a-f]{32}$/i.test(hex)) throw new RangeError(`not a uuid: ${uuid}`);
  return Uint8Array.from(hex.match(/../g)!, (h) => parseInt(h, 16));
}

/**
 * Every request names its volume: the last few conversions are kept both ways, so that a
 * stream of requests for the same volumes does not convert (and allocate) on every one.
 */
const UUID_CACHE = 64;
const bytesOf = new Map<string, Uint8Array>();
const lastDecoded = { bytes: new Uint8Array(16), uuid: "" };

function cachedUuidBytes(uuid: string): Uint8Array {
  let b = bytesOf.get(uuid);
  if (b === undefined) {
    b = uuidBytes(uuid);
    if (bytesOf.size >= UUID_CACHE) bytesOf.clear();
    bytesOf.set(uuid, b);
  }
  return b;
}

function uuidString(b: Uint8Array): string {
  const last = lastDecoded.bytes;
  let same = lastDecoded.uuid !== "";
  for (let i = 0; same && i < 16; i++) same = b[i] === last[i];
  if (same) return lastDecoded.uuid;
  const uuid = uuidText(b);
  last.set(b);
  lastDecoded.uuid = uuid;
  return uuid;
}

/** 16 bytes as a uuid's text. */
function uuidText(b: Uint8Array): string {
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function setU64(v: DataView, at: number, n: number): void {
  v.setUint32(at, Math.floor(n / 0x1_0000_0000));
  v.setUint32(at + 4, n >>> 0);
}

function getU64(v: DataView, at: number): number {
  return v.getUint32(at) * 0x1_0000_0000 + v.getUint32(at + 4);
}

function bodyBytes(r: Request): number {
  switch (r.type) {
    case T_WRITE:
      return 8 + r.data.length;
    case T_TRIM:
    case T_ZERO:
      return 12;
    case T_HASHES:
    case T_TREE:
      return 12;
    case T_PINGS:
      return 4 + r.entries.length * PING_ENTRY_BYTES;
    default:
      return 0;
  }
}

/**
 * The frame of a request (a WRITE's data is copied in once), in a new buffer or at the start
 * of `into`.
 */
export function encodeRequest(r: Request, into?: Uint8Array): Uint8Array {
  const { b, v } = encodeHeader(r, HEADER_BYTES + bodyBytes(r), into);
  const at = HEADER_BYTES;
  switch (r.type) {
    case T_WRITE:
      setU64(v, at, r.offset);
      b.set(r.data, at + 8);
      break;
    case T_TRIM:
    case T_ZERO:
      setU64(v, at, r.offset);
      v.setUint32(at + 8, r.length);
      break;
    case T_HASHES:
      v.setUint32(at, r.first);
      v.setUint32(at + 4, r.count);
      v.setUint32(at + 8, r.regionBytes);
      break;
    case T_TREE:
      v.setUint32(at, r.first);
      v.setUint32(at + 4, r.count);
      v.setUint32(at + 8, r.level);
      break;
    case T_PINGS:
      v.setUint32(at, r.entries.length);
      r.entries.forEach((e, i) => {
        const o = at + 4 + i * PING_ENTRY_BYTES;
        b.set(uuidBytes(e.volume), o);
        v.setUint32(o + 16, e.epoch);
      });
      break;
  }
  return b;
}

/**
 * A WRITE's frame without its data: the frame is these bytes followed by `r.data` (sent by
 * reference, so a large WRITE is not copied into a frame of its own).
 */
export function encodeWriteHead(r: Request & { type: typeof T_WRITE }): Uint8Array {
  const { b, v } = encodeHeader(r, HEADER_BYTES + 8);
  setU64(v, HEADER_BYTES, r.offset);
  return b;
}

/**
 * A frame of `bytes` bytes with the request header of `r` filled in: a new buffer, or the
 * first `bytes` of `into` (which must be that large).
 */
function encodeHeader(
  r: Request,
  bytes: number,
  into?: Uint8Array,
): { b: Uint8Array; v: DataView } {
  if (into !== undefined && into.length < bytes) {
    throw new RangeError(`a ${bytes}-byte frame does not fit ${into.length} bytes`);
  }
  const b = into === undefined ? new Uint8Array(bytes) : into.subarray(0, bytes);
  const v = new DataView(b.buffer, b.byteOffset, bytes);
  v.setUint8(0, r.type);
  v.setUint8(1, r.flags);
  v.setUint16(2, r.session ?? 0); // always written: `into` may be a reused frame
  v.setUint32(4, r.id);
  b.set(cachedUuidBytes(r.volume), 8);
  v.setUint32(24, r.epoch);
  return { b, v };
}

/** Decodes a request frame; a WRITE's data is a view of `frame`. Throws on a malformed one. */
export function decodeRequest(frame: Uint8Array): Request {
  if (frame.length < HEADER_BYTES) throw new RangeError(`request of ${frame.length} bytes`);
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const type = v.getUint8(0);
  const head = {
    id: v.getUint32(4),
    volume: uuidString(frame.subarray(8, 24)),
    epoch: v.getUint32(24),
    flags: v.getUint8(1),
    session: v.getUint16(2),
  };
  const at = HEADER_BYTES;
  const need = (n: number) => {
    if (frame.length !== at + n) {
      throw new RangeError(`request type ${type} of ${frame.length} bytes, expected ${at + n}`);
    }
  };
  switch (type) {
    case T_WRITE:
      if (frame.length < at + 8) throw new RangeError(`WRITE of ${frame.length} bytes`);
      return { type, ...head, offset: getU64(v, at), data: frame.subarray(at + 8) };
    case T_TRIM:
    case T_ZERO:
      need(12);
      return { type, ...head, offset: getU64(v, at), length: v.getUint32(at + 8) };
    case T_FLUSH:
    case T_FENCE:
    case T_SIZE:
    case T_PING:
    case T_SESSION:
      need(0);
      return { type, ...head };
    case T_HASHES:
      need(12);
      return {
        type,
        ...head,
        first: v.getUint32(at),
        count: v.getUint32(at + 4),
        regionBytes: v.getUint32(at + 8),
      };
    case T_TREE:
      need(12);
      return {
        type,
        ...head,
        first: v.getUint32(at),
        count: v.getUint32(at + 4),
        level: v.getUint32(at + 8),
      };
    case T_PINGS: {
      if (frame.length < at + 4) throw new RangeError(`PINGS of ${frame.length} bytes`);
      const n = v.getUint32(at);
      if (n > MAX_PINGS) throw new RangeError(`PINGS of ${n} volumes (at most ${MAX_PINGS})`);
      need(4 + n * PING_ENTRY_BYTES);
      const entries: PingEntry[] = [];
      for (let i = 0, o = at + 4; i < n; i++, o += PING_ENTRY_BYTES) {
        entries.push({ volume: uuidText(frame.subarray(o, o + 16)), epoch: v.getUint32(o + 16) });
      }
      return { type, ...head, entries };
    }
    default:
      throw new RangeError(`unknown request type ${type}`);
  }
}

/** The frame of a reply; `body` is an error message (string) or bytes. */
export function encodeReply(id: number, status: number, body?: string | Uint8Array): Uint8Array {
  const data = typeof body === "string"
    ? enc.encode(body.slice(0, 1000))
    : body ?? new Uint8Array();
  const b = new Uint8Array(REPLY_HEADER_BYTES + data.length);
  const v = new DataView(b.buffer);
  v.setUint8(0, T_REPLY);
  v.setUint32(4, id);
  v.setUint32(8, status);
  b.set(data, REPLY_HEADER_BYTES);
  return b;
}

export function isReply(frame: Uint8Array): boolean {
  return frame.length >= 1 && frame[0] === T_REPLY;
}

export function decodeReply(frame: Uint8Array): Reply {
  if (frame.length < REPLY_HEADER_BYTES || frame[0] !== T_REPLY) {
    throw new RangeError(`not a reply (${frame.length} bytes, type ${frame[0]})`);
  }
  const v = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  return { id: v.getUint32(4), status: v.getUint32(8), body: frame.subarray(REPLY_HEADER_BYTES) };
}

/** An error reply's message. */
export function replyMessage(r: Reply): string {
  return dec.decode(r.body);
}

/** The PINGS request of `entries` (id 0: PeerLink.request() numbers it). */
export function pingsRequest(entries: PingEntry[]): Omit<Request & { type: typeof T_PINGS }, "id"> {
  return { type: T_PINGS, flags: 0, volume: NO_VOLUME, epoch: 0, entries };
}

/** A PINGS reply's body: one status byte per entry, in order. */
export function encodePingStatuses(statuses: number[]): Uint8Array {
  return Uint8Array.from(statuses);
}

/** The statuses of a PINGS reply to `count` entries; throws when the body does not fit. */
export function decodePingStatuses(body: Uint8Array, count: number): number[] {
  if (body.length !== count) {
    throw new RangeError(`PINGS reply of ${body.length} statuses for ${count} volumes`);
  }
  return [...body];
}

/** A SIZE reply's body. */
export function encodeSize(size: number): Uint8Array {
  const b = new Uint8Array(8);
  setU64(new DataView(b.buffer), 0, size);
  return b;
}

export function decodeSize(body: Uint8Array): number {
  return getU64(new DataView(body.buffer, body.byteOffset, body.byteLength), 0);
}

/** A SESSION reply's body: the copy's new session. */
export function encodeSession(session: number): Uint8Array {
  return Uint8Array.of(session >>> 8, session & 0xff);
}

export function decodeSession(body: Uint8Array): number {
  if (body.length !== 2) throw new RangeError(`SESSION reply of ${body.length} bytes`);
  return (body[0] << 8) | body[1];
}
