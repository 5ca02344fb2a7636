/**
 * Table tests of the transmission-phase codec at its edges: request decoding,
 * request validation ("Request types", "Command flags", "Error values" in
 * NetworkBlockDevice/nbd doc/proto.md), exact reply bytes ("Simple reply message",
 * "Structured reply chunk message", "Structured reply types") and the errno mapping.
 * @module
 */

import * as C from "../../../data/nbd/constants.ts";
import {
  blockStatusSize,
  decodeRequest,
  encodeBlockStatus,
  encodeChunkHeader,
  encodeErrorReply,
  encodeOffsetDataHeader,
  encodeOkReply,
  encodeRequest,
  encodeSimpleReply,
  errorReplySize,
  Request,
  type TransmissionContext,
  validateRequest,
} from "../../../data/nbd/codec.ts";
import { nbdError } from "../../../data/nbd/errno.ts";
import { assert, assertEquals } from "../../_assert.ts";

const MiB = 1024 * 1024;
const TWO_53 = 2n ** 53n;
const TWO_64 = 2n ** 64n;

const NAMES: Record<number, string> = {
  [C.NBD_CMD_READ]: "READ",
  [C.NBD_CMD_WRITE]: "WRITE",
  [C.NBD_CMD_FLUSH]: "FLUSH",
  [C.NBD_CMD_TRIM]: "TRIM",
  [C.NBD_CMD_CACHE]: "CACHE",
  [C.NBD_CMD_WRITE_ZEROES]: "WRITE_ZEROES",
  [C.NBD_CMD_BLOCK_STATUS]: "BLOCK_STATUS",
};
const COMMANDS = [
  C.NBD_CMD_READ,
  C.NBD_CMD_WRITE,
  C.NBD_CMD_FLUSH,
  C.NBD_CMD_TRIM,
  C.NBD_CMD_CACHE,
  C.NBD_CMD_WRITE_ZEROES,
  C.NBD_CMD_BLOCK_STATUS,
];
const WRITES = [C.NBD_CMD_WRITE, C.NBD_CMD_TRIM, C.NBD_CMD_WRITE_ZEROES];
const NON_WRITES = [C.NBD_CMD_READ, C.NBD_CMD_CACHE, C.NBD_CMD_BLOCK_STATUS];

function ctx(over: Partial<TransmissionContext> = {}): TransmissionContext {
  return {
    size: 1 * MiB,
    readOnly: false,
    structuredReplies: true,
    baseAllocation: true,
    maxPayload: C.MAX_BLOCK_SIZE,
    ...over,
  };
}

/** Builds a Request by encoding the header to bytes and decoding it back. */
function req(
  type: number,
  offset: bigint,
  length: number,
  flags = 0,
  handle = 0x0102030405060708n,
): Request {
  const b = new Uint8Array(C.REQUEST_HEADER_SIZE);
  const v = new DataView(b.buffer);
  encodeRequest(v, 0, { flags, type, handle, offset, length });
  const r = new Request();
  assert(decodeRequest(v, 0, r), "decodeRequest() refused a header encodeRequest() wrote");
  return r;
}

/** The NBD error the client gets for a request validateRequest() refuses, or 0 when it may run. */
function verdict(r: Request, c: TransmissionContext): number {
  const bad = validateRequest(r, c);
  return bad === undefined ? 0 : nbdError(bad.errno, r.flags);
}

function bytes(...parts: (number | number[])[]): Uint8Array {
  return new Uint8Array(parts.flat());
}
const u32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
const u16 = (n: number) => [(n >>> 8) & 0xff, n & 0xff];
const HANDLE = [1, 2, 3, 4, 5, 6, 7, 8];

// ---- decodeRequest ("Request message") ----------------------------------------------

Deno.test("decodeRequest() reads every field of a hand-written header at any offset", () => {
  const header = bytes(
    u32(C.NBD_REQUEST_MAGIC),
    u16(C.NBD_CMD_FLAG_FUA),
    u16(C.NBD_CMD_WRITE),
    [0xde, 0xad, 0xbe, 0xef, 0xca, 0xfe, 0xba, 0xbe],
    [0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x78, 0x9a],
    u32(0x00010000),
  );
  const buf = new Uint8Array(5 + header.length);
  buf.set(header, 5);
  const r = new Request();
  assert(decodeRequest(new DataView(buf.buffer), 5, r));
  assertEquals(
    {
      flags: r.flags,
      type: r.type,
      handleHi: r.handleHi,
      handleLo: r.handleLo,
      offsetHi: r.offsetHi,
      offsetLo: r.offsetLo,
      length: r.length,
      offset: r.offset,
    },
    {
      flags: 1,
      type: 1,
      handleHi: 0xdeadbeef,
      handleLo: 0xcafebabe,
      offsetHi: 0x12,
      offsetLo: 0x3456789a,
      length: 0x10000,
      offset: 0x123456789a,
    },
  );
});

Deno.test("decodeRequest() rejects bad magic and leaves the request untouched", () => {
  for (
    const magic of [
      0,
      C.NBD_SIMPLE_REPLY_MAGIC,
      C.NBD_STRUCTURED_REPLY_MAGIC,
      C.NBD_REQUEST_MAGIC ^ 1,
      0x13956025, // the request magic byte-swapped (a little-endian client)
      0xffffffff,
    ]
  ) {
    const b = new Uint8Array(C.REQUEST_HEADER_SIZE);
    const v = new DataView(b.buffer);
    encodeRequest(v, 0, { flags: 0, type: 0, handle: 7n, offset: 512n, length: 512 });
    v.setUint32(0, magic);
    const r = new Request();
    assertEquals(decodeRequest(v, 0, r), false, `magic 0x${magic.toString(16)}`);
    assertEquals([r.type, r.handleLo, r.offsetLo, r.length], [0, 0, 0, 0]);
  }
});

Deno.test("encodeRequest() writes the exact header bytes", () => {
  const b = new Uint8Array(C.REQUEST_HEADER_SIZE);
  const end = encodeRequest(new DataView(b.buffer), 0, {
    flags: C.NBD_CMD_FLAG_FUA | C.NBD_CMD_FLAG_NO_HOLE,
    type: C.NBD_CMD_WRITE_ZEROES,
    handle: 0x0102030405060708n,
    offset: 0xffffffff00001000n,
    length: 0x20000,
  });
  assertEquals(end, 28);
  assertEquals(
    b,
    bytes(
      [0x25, 0x60, 0x95, 0x13],
      [0x00, 0x03],
      [0x00, 0x06],
      HANDLE,
      [0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x10, 0x00],
      [0x00, 0x02, 0x00, 0x00],
    ),
  );
});

// ---- validateRequest: commands and flags ("Command flags") ----------------------------

Deno.test("validateRequest() accepts each command with each allowed flag and refuses the rest with EINVAL", () => {
  const FLAGS: [string, number][] = [
    ["none", 0],
    ["FUA", C.NBD_CMD_FLAG_FUA],
    ["NO_HOLE", C.NBD_CMD_FLAG_NO_HOLE],
    ["DF", C.NBD_CMD_FLAG_DF],
    ["REQ_ONE", C.NBD_CMD_FLAG_REQ_ONE],
    ["FAST_ZERO", C.NBD_CMD_FLAG_FAST_ZERO],
    ["bit 5", 1 << 5],
    ["bit 8", 1 << 8],
    ["bit 15", 1 << 15],
    ["FUA|bit 15", C.NBD_CMD_FLAG_FUA | (1 << 15)],
  ];
  const allowed = (type: number, flag: number, structured: boolean): boolean => {
    if (flag === 0 || flag === C.NBD_CMD_FLAG_FUA) return true;
    if (flag === C.NBD_CMD_FLAG_DF) return type === C.NBD_CMD_READ && structured;
    if (flag === C.NBD_CMD_FLAG_REQ_ONE) return type === C.NBD_CMD_BLOCK_STATUS;
    if (flag === C.NBD_CMD_FLAG_NO_HOLE || flag === C.NBD_CMD_FLAG_FAST_ZERO) {
      return type === C.NBD_CMD_WRITE_ZEROES;
    }
    return false;
  };
  const failures: string[] = [];
  let cases = 0;
  for (const structured of [true, false]) {
    // base:allocation can only be negotiated with structured replies.
    const c = ctx({ structuredReplies: structured, baseAllocation: structured });
    for (const type of COMMANDS) {
      for (const [flagName, flag] of FLAGS) {
        const isFlush = type === C.NBD_CMD_FLUSH;
        const r = req(type, 0n, isFlush ? 0 : 4096, flag);
        const noContext = type === C.NBD_CMD_BLOCK_STATUS && !structured;
        const want = allowed(type, flag, structured) && !noContext ? 0 : C.NBD_EINVAL;
        const got = verdict(r, c);
        cases++;
        if (got !== want) {
          failures.push(
            `${NAMES[type]} flags=${flagName} structured=${structured}: got ${got}, want ${want}`,
          );
        }
      }
    }
  }
  assertEquals(failures, []);
  assertEquals(cases, 2 * 7 * 10);
});

Deno.test("validateRequest() names the offending flag bits in its message", () => {
  const bad = validateRequest(req(C.NBD_CMD_WRITE, 0n, 512, C.NBD_CMD_FLAG_DF | 0x8000), ctx());
  assertEquals(bad?.errno, "EINVAL");
  assert(bad!.message.includes("0x8004"), bad!.message);
});

Deno.test("validateRequest() refuses unknown command types with EINVAL", () => {
  for (const type of [8, 9, 0x100, 0x7fff, 0xffff]) {
    const bad = validateRequest(req(type, 0n, 512), ctx());
    assertEquals(bad?.errno, "EINVAL", `type ${type}`);
    assert(bad!.message.includes(String(type)), bad!.message);
  }
});

Deno.test("validateRequest() refuses zero-length requests with EINVAL", () => {
  for (const type of [...WRITES, ...NON_WRITES]) {
    assertEquals(verdict(req(type, 4096n, 0), ctx()), C.NBD_EINVAL, NAMES[type]);
  }
});

Deno.test("validateRequest() accepts FLUSH only with zero offset and length", () => {
  const table: [bigint, number, number][] = [
    [0n, 0, 0],
    [1n, 0, C.NBD_EINVAL],
    [0n, 1, C.NBD_EINVAL],
    [1n << 32n, 0, C.NBD_EINVAL], // offsetHi alone is nonzero
    [TWO_64 - 1n, 0xffffffff, C.NBD_EINVAL],
  ];
  for (const [offset, length, want] of table) {
    assertEquals(verdict(req(C.NBD_CMD_FLUSH, offset, length), ctx()), want, `${offset}+${length}`);
  }
  // FLUSH carries no data, so it is fine on a read-only export too.
  assertEquals(verdict(req(C.NBD_CMD_FLUSH, 0n, 0), ctx({ readOnly: true })), 0);
});

// ---- validateRequest: lengths and ranges ("Error values") -----------------------------

Deno.test("validateRequest() caps READ/WRITE at the maximum payload (EINVAL, EOVERFLOW only with DF); TRIM and WRITE_ZEROES may be larger", () => {
  const c = ctx({ size: 1024 * MiB });
  const max = C.MAX_BLOCK_SIZE;
  const table: [number, number, number][] = [
    [C.NBD_CMD_READ, max, 0],
    [C.NBD_CMD_READ, max + 1, C.NBD_EINVAL],
    [C.NBD_CMD_READ, 0xffffffff, C.NBD_EINVAL],
    [C.NBD_CMD_WRITE, max, 0],
    [C.NBD_CMD_WRITE, max + 1, C.NBD_EINVAL],
    [C.NBD_CMD_WRITE, 0xffffffff, C.NBD_EINVAL],
    [C.NBD_CMD_TRIM, max + 1, 0],
    [C.NBD_CMD_TRIM, 512 * MiB, 0],
    [C.NBD_CMD_WRITE_ZEROES, max + 1, 0],
    [C.NBD_CMD_WRITE_ZEROES, 512 * MiB, 0],
    [C.NBD_CMD_CACHE, 512 * MiB, 0],
    [C.NBD_CMD_BLOCK_STATUS, 512 * MiB, 0],
  ];
  for (const [type, length, want] of table) {
    assertEquals(verdict(req(type, 0n, length), c), want, `${NAMES[type]} length ${length}`);
  }
  // A structured READ with DF ("don't fragment") is told EOVERFLOW.
  const df = req(C.NBD_CMD_READ, 0n, max + 1, C.NBD_CMD_FLAG_DF);
  assertEquals(verdict(df, ctx({ size: 1024 * MiB, structuredReplies: true })), C.NBD_EOVERFLOW);
  // The limit is the negotiated one, not a constant.
  assertEquals(verdict(req(C.NBD_CMD_READ, 0n, 4097), ctx({ maxPayload: 4096 })), C.NBD_EINVAL);
  assertEquals(verdict(req(C.NBD_CMD_READ, 0n, 4096), ctx({ maxPayload: 4096 })), 0);
});

Deno.test("validateRequest() allows a range ending exactly at the size; one byte past is ENOSPC for writes and EINVAL otherwise", () => {
  const size = 1 * MiB;
  const c = ctx({ size });
  for (const type of [...WRITES, ...NON_WRITES]) {
    const past = WRITES.includes(type) ? C.NBD_ENOSPC : C.NBD_EINVAL;
    const table: [bigint, number, number][] = [
      [0n, size, 0],
      [BigInt(size - 1), 1, 0],
      [BigInt(size - 4096), 4096, 0],
      [0n, size + 1, past],
      [BigInt(size - 1), 2, past],
      [BigInt(size), 1, past],
      [BigInt(size + 4096), 4096, past],
    ];
    for (const [offset, length, want] of table) {
      assertEquals(
        verdict(req(type, offset, length), c),
        want,
        `${NAMES[type]} ${offset}+${length}`,
      );
    }
  }
});

Deno.test("validateRequest() keeps 64-bit offsets exact: 2^53, 2^53-1 and 2^64-1 never wrap into range", () => {
  // An export of 2^53-1 bytes: the largest size a number holds exactly.
  const huge = ctx({ size: Number.MAX_SAFE_INTEGER });
  const small = ctx({ size: 1 * MiB });
  const table: [string, TransmissionContext, bigint, number, boolean][] = [
    ["last byte of a 2^53-1 export", huge, TWO_53 - 2n, 1, true],
    ["2^53-1 + 1 on a 2^53-1 export", huge, TWO_53 - 1n, 1, false],
    ["2^53-2 + 2 on a 2^53-1 export", huge, TWO_53 - 2n, 2, false],
    ["2^53 on a 2^53-1 export", huge, TWO_53, 1, false],
    ["2^53 + 1 (not representable as a number)", huge, TWO_53 + 1n, 1, false],
    ["2^53-1 on a 1 MiB export", small, TWO_53 - 1n, 1, false],
    ["2^53 on a 1 MiB export", small, TWO_53, 1, false],
    ["2^64-1 + 1 (sum is exactly 2^64)", small, TWO_64 - 1n, 1, false],
    ["2^64-1 + 4096 (wraps to 4095)", small, TWO_64 - 1n, 4096, false],
    ["2^64-4096 + 8192 (wraps to 4096)", small, TWO_64 - 4096n, 8192, false],
    ["2^64-2^32 (offsetLo 0) + 512", small, TWO_64 - (1n << 32n), 512, false],
    ["2^32 + 512 on a 1 MiB export (offsetHi 1)", small, 1n << 32n, 512, false],
  ];
  for (const [name, c, offset, length, ok] of table) {
    for (const type of [...WRITES, ...NON_WRITES]) {
      const want = ok ? 0 : WRITES.includes(type) ? C.NBD_ENOSPC : C.NBD_EINVAL;
      assertEquals(verdict(req(type, offset, length), c), want, `${NAMES[type]}: ${name}`);
    }
  }
  // The message shows the offset exactly as sent, not a rounded double.
  const bad = validateRequest(req(C.NBD_CMD_READ, TWO_64 - 1n, 1), small);
  assert(bad!.message.includes("18446744073709551615"), bad!.message);
});

Deno.test("validateRequest() refuses WRITE, TRIM and WRITE_ZEROES on a read-only export with EPERM", () => {
  const ro = ctx({ readOnly: true });
  for (const type of WRITES) {
    assertEquals(verdict(req(type, 0n, 4096), ro), C.NBD_EPERM, NAMES[type]);
  }
  for (const type of NON_WRITES) {
    assertEquals(verdict(req(type, 0n, 4096), ro), 0, NAMES[type]);
  }
  assertEquals(
    verdict(req(C.NBD_CMD_WRITE_ZEROES, 0n, 4096, C.NBD_CMD_FLAG_NO_HOLE | C.NBD_CMD_FLAG_FUA), ro),
    C.NBD_EPERM,
  );
});

Deno.test("validateRequest() refuses BLOCK_STATUS without a negotiated metadata context with EINVAL", () => {
  const r = req(C.NBD_CMD_BLOCK_STATUS, 0n, 4096);
  assertEquals(verdict(r, ctx({ baseAllocation: false })), C.NBD_EINVAL);
  assertEquals(verdict(r, ctx({ baseAllocation: true })), 0);
  const one = req(C.NBD_CMD_BLOCK_STATUS, 0n, 4096, C.NBD_CMD_FLAG_REQ_ONE);
  assertEquals(verdict(one, ctx({ baseAllocation: false })), C.NBD_EINVAL);
});

// ---- reply encoders ("Simple reply message", "Structured reply chunk message") ---------

const STRUCT_MAGIC = [0x66, 0x8e, 0x33, 0xef];
const SIMPLE_MAGIC = [0x67, 0x44, 0x66, 0x98];

Deno.test("encodeSimpleReply() writes magic, error and handle, and nothing else", () => {
  const b = new Uint8Array(20).fill(0xaa);
  const end = encodeSimpleReply(new DataView(b.buffer), 2, req(C.NBD_CMD_READ, 0n, 1), 22);
  assertEquals(end, 18);
  assertEquals(b, bytes([0xaa, 0xaa], SIMPLE_MAGIC, u32(22), HANDLE, [0xaa, 0xaa]));
});

Deno.test("encodeOkReply() is a simple reply with error 0, or a structured NONE chunk with DONE", () => {
  const r = req(C.NBD_CMD_WRITE, 0n, 512);
  const simple = new Uint8Array(16);
  assertEquals(encodeOkReply(new DataView(simple.buffer), 0, r, false), 16);
  assertEquals(simple, bytes(SIMPLE_MAGIC, u32(0), HANDLE));

  const chunk = new Uint8Array(20);
  assertEquals(encodeOkReply(new DataView(chunk.buffer), 0, r, true), 20);
  assertEquals(chunk, bytes(STRUCT_MAGIC, u16(1), u16(0), HANDLE, u32(0)));
});

Deno.test("encodeChunkHeader() writes flags, type, handle and length", () => {
  const b = new Uint8Array(20);
  encodeChunkHeader(new DataView(b.buffer), 0, req(C.NBD_CMD_READ, 0n, 1), 0, 2, 0x01020304);
  assertEquals(b, bytes(STRUCT_MAGIC, u16(0), u16(2), HANDLE, [1, 2, 3, 4]));
});

Deno.test("encodeOffsetDataHeader() writes a final OFFSET_DATA chunk header with the 64-bit offset", () => {
  const r = req(C.NBD_CMD_READ, 0x0000000100000200n, 0x1000);
  const b = new Uint8Array(28);
  const end = encodeOffsetDataHeader(new DataView(b.buffer), 0, r);
  assertEquals(end, 28);
  assertEquals(
    b,
    bytes(
      STRUCT_MAGIC,
      u16(C.NBD_REPLY_FLAG_DONE),
      u16(C.NBD_REPLY_TYPE_OFFSET_DATA),
      HANDLE,
      u32(8 + 0x1000),
      [0, 0, 0, 1, 0, 0, 2, 0],
    ),
  );
});

Deno.test("encodeErrorReply() writes an ERROR chunk with the message, or a simple reply", () => {
  const r = req(C.NBD_CMD_READ, 0n, 1);
  const msg = new TextEncoder().encode("bad");
  assertEquals(errorReplySize(true, msg), 29);
  const b = new Uint8Array(29);
  assertEquals(encodeErrorReply(b, new DataView(b.buffer), 0, r, true, C.NBD_EINVAL, msg), 29);
  assertEquals(
    b,
    bytes(
      STRUCT_MAGIC,
      u16(1),
      [0x80, 0x01],
      HANDLE,
      u32(9),
      u32(22),
      u16(3),
      [0x62, 0x61, 0x64],
    ),
  );

  assertEquals(errorReplySize(false, msg), 16);
  const s = new Uint8Array(16);
  assertEquals(encodeErrorReply(s, new DataView(s.buffer), 0, r, false, C.NBD_ENOSPC, msg), 16);
  assertEquals(s, bytes(SIMPLE_MAGIC, u32(28), HANDLE));

  // An empty message is allowed: length 6, message length 0.
  const e = new Uint8Array(26);
  encodeErrorReply(e, new DataView(e.buffer), 0, r, true, C.NBD_EIO, new Uint8Array(0));
  assertEquals(e, bytes(STRUCT_MAGIC, u16(1), [0x80, 0x01], HANDLE, u32(6), u32(5), u16(0)));
});

Deno.test("encodeBlockStatus() writes a final BLOCK_STATUS chunk with context id and descriptors", () => {
  const r = req(C.NBD_CMD_BLOCK_STATUS, 0n, 12288);
  assertEquals(blockStatusSize(2), 40);
  const b = new Uint8Array(40);
  const end = encodeBlockStatus(new DataView(b.buffer), 0, r, C.BASE_ALLOCATION_ID, [
    { length: 4096, flags: C.NBD_STATE_HOLE | C.NBD_STATE_ZERO },
    { length: 8192, flags: 0 },
  ]);
  assertEquals(end, 40);
  assertEquals(
    b,
    bytes(
      STRUCT_MAGIC,
      u16(1),
      u16(5),
      HANDLE,
      u32(20),
      u32(1),
      [0, 0, 0x10, 0, 0, 0, 0, 3],
      [0, 0, 0x20, 0, 0, 0, 0, 0],
    ),
  );
});
