/**
 * The pure handshake state machine ("Fixed newstyle negotiation", "Option types",
 * "Option reply types", "TLS support", "Metadata querying" in NetworkBlockDevice/nbd
 * doc/proto.md), driven option by option with a fake export catalog.
 * @module
 */

import * as C from "../../../data/nbd/constants.ts";
import {
  checkClientFlags,
  encodeGreeting,
  encodeOptionReply,
  type ExportCatalog,
  type ExportView,
  handleOption,
  type HandshakePolicy,
  type HandshakeResult,
  type HandshakeState,
  initialState,
  transmissionFlags,
} from "../../../data/nbd/handshake.ts";
import { assert, assertEquals } from "../../_assert.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const GiB = 1024 * 1024 * 1024;

const DISK: ExportView = {
  name: "disk",
  description: "first disk",
  size: 1 * GiB,
  readOnly: false,
  canTrim: true,
  canFastZero: true,
};
const RO: ExportView = {
  name: "ro",
  description: "",
  size: 4096,
  readOnly: true,
  canTrim: false,
  canFastZero: false,
};
const SECRET: ExportView = {
  name: "secret",
  description: "only for some",
  size: 8192,
  readOnly: false,
  canTrim: true,
  canFastZero: false,
};

function catalog(exports: ExportView[] = [DISK, RO, SECRET]): ExportCatalog {
  return {
    lookup: (name) => exports.find((e) => e.name === name),
    list: () => [...exports],
  };
}

const PLAIN: HandshakePolicy = { tlsAvailable: false, tlsRequired: false };
const BOTH = C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES;

/** A decoded option reply ("Fixed newstyle negotiation"). */
interface Reply {
  option: number;
  type: number;
  data: Uint8Array;
}

function parseReply(b: Uint8Array): Reply {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  assertEquals([v.getUint32(0), v.getUint32(4)], [C.REPLY_MAGIC_HI, C.REPLY_MAGIC_LO], "magic");
  const length = v.getUint32(16);
  assertEquals(b.length, 20 + length, "reply length field matches the bytes");
  return { option: v.getUint32(8), type: v.getUint32(12), data: b.slice(20) };
}

function replies(r: HandshakeResult): Reply[] {
  return r.action.out.map(parseReply);
}

/** Reply types only, for compact assertions. */
function types(r: HandshakeResult): number[] {
  return replies(r).map((x) => x.type);
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}
function u16(n: number): Uint8Array {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, n);
  return b;
}
function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}
function str(s: string | Uint8Array): Uint8Array {
  const b = typeof s === "string" ? enc.encode(s) : s;
  return concat(u32(b.length), b);
}

/** NBD_OPT_INFO/GO payload: name, count of info requests, requests. */
function goPayload(name: string | Uint8Array, infos: number[] = []): Uint8Array {
  return concat(str(name), u16(infos.length), ...infos.map(u16));
}

/** NBD_OPT_{LIST,SET}_META_CONTEXT payload: name, count of queries, queries. */
function metaPayload(name: string, queries: (string | Uint8Array)[]): Uint8Array {
  return concat(str(name), u32(queries.length), ...queries.map(str));
}

/** Runs options in order from a fresh state; returns the final result and state. */
function run(
  options: [number, Uint8Array][],
  policy: HandshakePolicy = PLAIN,
  cat: ExportCatalog = catalog(),
  clientFlags = BOTH,
): { results: HandshakeResult[]; state: HandshakeState } {
  let state = initialState(clientFlags);
  const results: HandshakeResult[] = [];
  for (const [option, data] of options) {
    const r = handleOption(state, cat, policy, option, data);
    results.push(r);
    state = r.state;
  }
  return { results, state };
}

function one(option: number, data: Uint8Array, policy: HandshakePolicy = PLAIN): HandshakeResult {
  return run([[option, data]], policy).results[0];
}

const NONE = new Uint8Array(0);
const STRUCTURED: [number, Uint8Array] = [C.NBD_OPT_STRUCTURED_REPLY, NONE];
const SET_BASE_DISK: [number, Uint8Array] = [
  C.NBD_OPT_SET_META_CONTEXT,
  metaPayload("disk", [C.BASE_ALLOCATION]),
];

function transmission(r: HandshakeResult) {
  assertEquals(r.action.kind, "transmission");
  return r.action as Extract<HandshakeResult["action"], { kind: "transmission" }>;
}

// ---- greeting and client flags ("Newstyle negotiation") -------------------------------

Deno.test("encodeGreeting() is NBDMAGIC, IHAVEOPT and FIXED_NEWSTYLE|NO_ZEROES", () => {
  assertEquals(
    encodeGreeting(),
    concat(enc.encode("NBDMAGIC"), enc.encode("IHAVEOPT"), new Uint8Array([0, 3])),
  );
});

Deno.test("checkClientFlags() accepts FIXED_NEWSTYLE and NO_ZEROES and names unknown bits", () => {
  for (const ok of [0, 1, 2, 3]) assertEquals(checkClientFlags(ok), undefined, `flags ${ok}`);
  const table: [number, string][] = [
    [4, "0x4"],
    [7, "0x4"],
    [0x100, "0x100"],
    [0x7ffffffc, "0x7ffffffc"],
  ];
  for (const [flags, named] of table) {
    const why = checkClientFlags(flags);
    assert(why !== undefined && why.includes(named), `flags 0x${flags.toString(16)}: ${why}`);
  }
});

Deno.test("checkClientFlags() names bit 31 as an unsigned value", () => {
  // `flags & ~3` is a signed 32-bit result in JavaScript; the message must not read "0x-...".
  const why = checkClientFlags(0x80000001);
  assert(why?.includes("0x80000000"), String(why));
  assert(checkClientFlags(0xffffffff)?.includes("0xfffffffc"), checkClientFlags(0xffffffff));
});

Deno.test("initialState() records NO_ZEROES and starts without TLS, structured replies or context", () => {
  assertEquals(initialState(BOTH), {
    noZeroes: true,
    tls: false,
    structuredReplies: false,
    metaContextExport: undefined,
  });
  assertEquals(initialState(C.NBD_FLAG_C_FIXED_NEWSTYLE).noZeroes, false);
});

Deno.test("encodeOptionReply() writes reply magic, option, type, length and data", () => {
  assertEquals(
    encodeOptionReply(7, C.NBD_REP_ERR_UNKNOWN, new Uint8Array([0xab])),
    new Uint8Array([
      ...[0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9],
      ...[0, 0, 0, 7],
      ...[0x80, 0, 0, 6],
      ...[0, 0, 0, 1],
      0xab,
    ]),
  );
});

// ---- NBD_OPT_LIST, ABORT, STARTTLS ----------------------------------------------------

Deno.test("NBD_OPT_LIST sends one SERVER reply per export (name length, name, description) then ACK", () => {
  const r = one(C.NBD_OPT_LIST, NONE);
  assertEquals(r.action.kind, "reply");
  const rs = replies(r);
  assertEquals(rs.map((x) => [x.option, x.type]), [
    [C.NBD_OPT_LIST, C.NBD_REP_SERVER],
    [C.NBD_OPT_LIST, C.NBD_REP_SERVER],
    [C.NBD_OPT_LIST, C.NBD_REP_SERVER],
    [C.NBD_OPT_LIST, C.NBD_REP_ACK],
  ]);
  assertEquals(rs[0].data, concat(str("disk"), enc.encode("first disk")));
  assertEquals(rs[1].data, str("ro"));
  assertEquals(rs[2].data, concat(str("secret"), enc.encode("only for some")));
  assertEquals(rs[3].data, NONE);
});

Deno.test("NBD_OPT_LIST with data is refused with ERR_INVALID and lists nothing", () => {
  const r = one(C.NBD_OPT_LIST, new Uint8Array([0]));
  assertEquals(types(r), [C.NBD_REP_ERR_INVALID]);
  assert(r.refusal);
});

Deno.test("NBD_OPT_ABORT closes after an ACK", () => {
  const r = one(C.NBD_OPT_ABORT, NONE);
  assertEquals(r.action.kind, "close");
  assertEquals(replies(r).map((x) => [x.option, x.type]), [[C.NBD_OPT_ABORT, C.NBD_REP_ACK]]);
});

Deno.test("NBD_OPT_STARTTLS without TLS on the listener is refused with ERR_POLICY", () => {
  const r = one(C.NBD_OPT_STARTTLS, NONE);
  assertEquals(r.action.kind, "reply");
  assertEquals(types(r), [C.NBD_REP_ERR_POLICY]);
  assertEquals(r.state.tls, false);
});

Deno.test("NBD_OPT_STARTTLS with TLS available upgrades once; again or with data is ERR_INVALID", () => {
  const tls: HandshakePolicy = { tlsAvailable: true, tlsRequired: false };
  const { results, state } = run([
    [C.NBD_OPT_STARTTLS, new Uint8Array([1])],
    [C.NBD_OPT_STARTTLS, NONE],
    [C.NBD_OPT_STARTTLS, NONE],
  ], tls);
  assertEquals(types(results[0]), [C.NBD_REP_ERR_INVALID]);
  assertEquals(results[1].action.kind, "starttls");
  assertEquals(types(results[1]), [C.NBD_REP_ACK]);
  assertEquals(results[1].state.tls, true);
  assertEquals(types(results[2]), [C.NBD_REP_ERR_INVALID]);
  assertEquals(state.tls, true);
});

Deno.test("with tlsRequired every option but STARTTLS/ABORT is ERR_TLS_REQD and EXPORT_NAME closes", () => {
  const forced: HandshakePolicy = { tlsAvailable: true, tlsRequired: true };
  const options: [number, Uint8Array][] = [
    [C.NBD_OPT_LIST, NONE],
    [C.NBD_OPT_INFO, goPayload("disk")],
    [C.NBD_OPT_GO, goPayload("disk")],
    [C.NBD_OPT_STRUCTURED_REPLY, NONE],
    [C.NBD_OPT_LIST_META_CONTEXT, metaPayload("disk", [])],
    [C.NBD_OPT_SET_META_CONTEXT, metaPayload("disk", [C.BASE_ALLOCATION])],
    [C.NBD_OPT_EXTENDED_HEADERS, NONE],
    [0xdead, NONE],
  ];
  for (const [option, data] of options) {
    const r = one(option, data, forced);
    assertEquals(r.action.kind, "reply", `option ${option}`);
    assertEquals(replies(r).map((x) => [x.option, x.type]), [[option, C.NBD_REP_ERR_TLS_REQD]]);
    assertEquals(r.state, initialState(BOTH), `option ${option} changed the state`);
  }
  const exportName = one(C.NBD_OPT_EXPORT_NAME, enc.encode("disk"), forced);
  assertEquals(exportName.action.kind, "close");
  assertEquals(exportName.action.out, []);
  assertEquals(one(C.NBD_OPT_ABORT, NONE, forced).action.kind, "close");
  assertEquals(types(one(C.NBD_OPT_ABORT, NONE, forced)), [C.NBD_REP_ACK]);

  // After STARTTLS the same options work.
  const { results } = run([[C.NBD_OPT_STARTTLS, NONE], [C.NBD_OPT_GO, goPayload("disk")]], forced);
  assertEquals(results[0].action.kind, "starttls");
  assertEquals(transmission(results[1]).export.name, "disk");
});

// ---- structured replies and metadata contexts ("Metadata querying") ------------------

Deno.test("NBD_OPT_STRUCTURED_REPLY is ACKed once; a second time or with data is ERR_INVALID", () => {
  const { results, state } = run([
    [C.NBD_OPT_STRUCTURED_REPLY, new Uint8Array([0])],
    STRUCTURED,
    STRUCTURED,
  ]);
  assertEquals(types(results[0]), [C.NBD_REP_ERR_INVALID]);
  assertEquals(results[0].state.structuredReplies, false);
  assertEquals(types(results[1]), [C.NBD_REP_ACK]);
  assertEquals(types(results[2]), [C.NBD_REP_ERR_INVALID]);
  assertEquals(state.structuredReplies, true);
});

Deno.test("LIST/SET_META_CONTEXT before structured replies are ERR_INVALID", () => {
  for (const option of [C.NBD_OPT_LIST_META_CONTEXT, C.NBD_OPT_SET_META_CONTEXT]) {
    const r = one(option, metaPayload("disk", [C.BASE_ALLOCATION]));
    assertEquals(types(r), [C.NBD_REP_ERR_INVALID], `option ${option}`);
    assertEquals(r.state.metaContextExport, undefined);
  }
});

Deno.test("SET_META_CONTEXT base:allocation replies META_CONTEXT with its id then ACK; GO on that export gets baseAllocation", () => {
  const { results, state } = run([STRUCTURED, SET_BASE_DISK]);
  const rs = replies(results[1]);
  assertEquals(rs.map((x) => [x.option, x.type]), [
    [C.NBD_OPT_SET_META_CONTEXT, C.NBD_REP_META_CONTEXT],
    [C.NBD_OPT_SET_META_CONTEXT, C.NBD_REP_ACK],
  ]);
  assertEquals(rs[0].data, concat(u32(C.BASE_ALLOCATION_ID), enc.encode("base:allocation")));
  assertEquals(state.metaContextExport, "disk");

  const cat = catalog();
  const go = transmission(handleOption(state, cat, PLAIN, C.NBD_OPT_GO, goPayload("disk")));
  assertEquals([go.structuredReplies, go.baseAllocation], [true, true]);
  const other = transmission(handleOption(state, cat, PLAIN, C.NBD_OPT_GO, goPayload("ro")));
  assertEquals([other.structuredReplies, other.baseAllocation], [true, false]);
  const byName = transmission(
    handleOption(state, cat, PLAIN, C.NBD_OPT_EXPORT_NAME, enc.encode("disk")),
  );
  assertEquals(byName.baseAllocation, true);
});

Deno.test("SET_META_CONTEXT with an unknown query returns just ACK and clears an earlier selection", () => {
  const { results, state } = run([
    STRUCTURED,
    SET_BASE_DISK,
    [C.NBD_OPT_SET_META_CONTEXT, metaPayload("disk", ["qemu:dirty-bitmap:x"])],
  ]);
  assertEquals(types(results[2]), [C.NBD_REP_ACK]);
  assertEquals(state.metaContextExport, undefined);
  const go = transmission(handleOption(state, catalog(), PLAIN, C.NBD_OPT_GO, goPayload("disk")));
  assertEquals(go.baseAllocation, false);
});

Deno.test('LIST_META_CONTEXT lists base:allocation for no query or "base:", with id 0, and selects nothing', () => {
  for (const queries of [[], ["base:"], [C.BASE_ALLOCATION], ["other:x", C.BASE_ALLOCATION]]) {
    const { results, state } = run([
      STRUCTURED,
      [C.NBD_OPT_LIST_META_CONTEXT, metaPayload("disk", queries)],
    ]);
    const rs = replies(results[1]);
    assertEquals(rs.map((x) => x.type), [C.NBD_REP_META_CONTEXT, C.NBD_REP_ACK], `${queries}`);
    assertEquals(rs[0].data, concat(u32(0), enc.encode("base:allocation")));
    assertEquals(state.metaContextExport, undefined);
  }
  const none = run([
    STRUCTURED,
    [C.NBD_OPT_LIST_META_CONTEXT, metaPayload("disk", ["qemu:"])],
  ]).results[1];
  assertEquals(types(none), [C.NBD_REP_ACK]);
});

// ---- malformed payloads ---------------------------------------------------------------

Deno.test("malformed GO/INFO payloads are ERR_INVALID", () => {
  const long = "a".repeat(C.MAX_STRING + 1);
  const table: [string, Uint8Array][] = [
    ["empty", NONE],
    ["truncated name length", new Uint8Array([0, 0])],
    ["name longer than the payload", concat(u32(10), enc.encode("disk"))],
    ["missing info count", str("disk")],
    ["half an info count", concat(str("disk"), new Uint8Array([0]))],
    ["count 2 with one request", concat(str("disk"), u16(2), u16(C.NBD_INFO_NAME))],
    ["count 0 with a request", concat(str("disk"), u16(0), u16(C.NBD_INFO_NAME))],
    ["trailing byte", concat(goPayload("disk"), new Uint8Array([0]))],
    ["name over 4096 bytes", goPayload(long)],
    ["name length 0xffffffff", concat(u32(0xffffffff), u16(0))],
    ["invalid UTF-8 name", goPayload(new Uint8Array([0x64, 0xff, 0xfe]))],
    ["truncated UTF-8 sequence", goPayload(new Uint8Array([0xe2, 0x82]))],
  ];
  for (const option of [C.NBD_OPT_INFO, C.NBD_OPT_GO]) {
    for (const [name, data] of table) {
      const r = one(option, data);
      assertEquals(r.action.kind, "reply", name);
      assertEquals(replies(r).map((x) => [x.option, x.type]), [
        [option, C.NBD_REP_ERR_INVALID],
      ], `${option === C.NBD_OPT_GO ? "GO" : "INFO"}: ${name}`);
    }
  }
});

Deno.test("a 4096-byte name is allowed (then unknown), one byte more is invalid", () => {
  assertEquals(types(one(C.NBD_OPT_GO, goPayload("a".repeat(4096)))), [C.NBD_REP_ERR_UNKNOWN]);
  assertEquals(types(one(C.NBD_OPT_GO, goPayload("a".repeat(4097)))), [C.NBD_REP_ERR_INVALID]);
});

Deno.test("malformed LIST/SET_META_CONTEXT payloads are ERR_INVALID and select nothing", () => {
  const table: [string, Uint8Array][] = [
    ["empty", NONE],
    ["truncated name length", new Uint8Array([0, 0, 0])],
    ["missing query count", str("disk")],
    ["truncated query count", concat(str("disk"), new Uint8Array([0, 0]))],
    ["count 2 with one query", concat(str("disk"), u32(2), str(C.BASE_ALLOCATION))],
    ["count 0xffffffff with none", concat(str("disk"), u32(0xffffffff))],
    ["query longer than the payload", concat(str("disk"), u32(1), u32(100), enc.encode("base"))],
    ["trailing bytes", concat(metaPayload("disk", [C.BASE_ALLOCATION]), new Uint8Array([1]))],
    ["query over 4096 bytes", metaPayload("disk", ["base:" + "a".repeat(4092)])],
    ["invalid UTF-8 query", metaPayload("disk", [new Uint8Array([0x62, 0xc3, 0x28])])],
    ["invalid UTF-8 export name", concat(str(new Uint8Array([0xff])), u32(0))],
  ];
  for (const option of [C.NBD_OPT_LIST_META_CONTEXT, C.NBD_OPT_SET_META_CONTEXT]) {
    for (const [name, data] of table) {
      const { results, state } = run([STRUCTURED, [option, data]]);
      assertEquals(types(results[1]), [C.NBD_REP_ERR_INVALID], `option ${option}: ${name}`);
      assertEquals(state.metaContextExport, undefined, name);
    }
  }
});

// ---- INFO / GO ("INFO extension") ---------------------------------------------------

Deno.test("INFO and GO for an unknown export are ERR_UNKNOWN; so are metadata contexts", () => {
  for (const option of [C.NBD_OPT_INFO, C.NBD_OPT_GO]) {
    const r = one(option, goPayload("nope", [C.NBD_INFO_NAME]));
    assertEquals(r.action.kind, "reply");
    assertEquals(replies(r).map((x) => [x.option, x.type]), [[option, C.NBD_REP_ERR_UNKNOWN]]);
    assert(dec.decode(replies(r)[0].data).includes("nope"));
  }
  for (const option of [C.NBD_OPT_LIST_META_CONTEXT, C.NBD_OPT_SET_META_CONTEXT]) {
    const { results } = run([STRUCTURED, [option, metaPayload("nope", [C.BASE_ALLOCATION])]]);
    assertEquals(types(results[1]), [C.NBD_REP_ERR_UNKNOWN]);
  }
});

/** Splits NBD_REP_INFO replies into [info type, body]. */
function infos(r: HandshakeResult): [number, Uint8Array][] {
  return replies(r).filter((x) => x.type === C.NBD_REP_INFO).map((x) => [
    new DataView(x.data.buffer).getUint16(0),
    x.data.slice(2),
  ]);
}

function exportInfo(size: number, flags: number): Uint8Array {
  const b = new Uint8Array(10);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(size));
  v.setUint16(8, flags);
  return b;
}

const BLOCK_SIZES = concat(u32(1), u32(4096), u32(32 * 1024 * 1024));

Deno.test("GO replies INFO_EXPORT, NAME and DESCRIPTION when asked, BLOCK_SIZE 1/4096/32 MiB, then ACK", () => {
  const r = one(
    C.NBD_OPT_GO,
    goPayload("disk", [C.NBD_INFO_DESCRIPTION, C.NBD_INFO_NAME, C.NBD_INFO_BLOCK_SIZE]),
  );
  const t = transmission(r);
  assertEquals(replies(r).map((x) => [x.option, x.type]), [
    [C.NBD_OPT_GO, C.NBD_REP_INFO],
    [C.NBD_OPT_GO, C.NBD_REP_INFO],
    [C.NBD_OPT_GO, C.NBD_REP_INFO],
    [C.NBD_OPT_GO, C.NBD_REP_INFO],
    [C.NBD_OPT_GO, C.NBD_REP_ACK],
  ]);
  const flags = transmissionFlags(DISK, false);
  assertEquals(infos(r), [
    [C.NBD_INFO_EXPORT, exportInfo(GiB, flags)],
    [C.NBD_INFO_NAME, enc.encode("disk")],
    [C.NBD_INFO_DESCRIPTION, enc.encode("first disk")],
    [C.NBD_INFO_BLOCK_SIZE, BLOCK_SIZES],
  ]);
  assertEquals([t.export.name, t.flags, t.structuredReplies, t.baseAllocation], [
    "disk",
    flags,
    false,
    false,
  ]);
});

Deno.test("GO without info requests sends INFO_EXPORT and BLOCK_SIZE only", () => {
  const r = one(C.NBD_OPT_GO, goPayload("ro"));
  assertEquals(infos(r).map(([t]) => t), [C.NBD_INFO_EXPORT, C.NBD_INFO_BLOCK_SIZE]);
  assertEquals(infos(r)[0][1], exportInfo(4096, transmissionFlags(RO, false)));
  // An empty description is not sent even when asked.
  const asked = one(C.NBD_OPT_GO, goPayload("ro", [C.NBD_INFO_DESCRIPTION, 0x7777]));
  assertEquals(infos(asked).map(([t]) => t), [C.NBD_INFO_EXPORT, C.NBD_INFO_BLOCK_SIZE]);
});

Deno.test("INFO sends the same information as GO but stays in negotiation", () => {
  const payload = goPayload("disk", [C.NBD_INFO_NAME]);
  const info = one(C.NBD_OPT_INFO, payload);
  const go = one(C.NBD_OPT_GO, payload);
  assertEquals(info.action.kind, "reply");
  assertEquals(infos(info), infos(go));
  assertEquals(replies(info).map((x) => x.option), Array(4).fill(C.NBD_OPT_INFO));
});

Deno.test("transmission flags advertise SEND_DF only with structured replies, READ_ONLY only for read-only exports, and nothing that writes to those", () => {
  const always = C.NBD_FLAG_HAS_FLAGS | C.NBD_FLAG_SEND_FLUSH | C.NBD_FLAG_SEND_CACHE |
    C.NBD_FLAG_CAN_MULTI_CONN;
  const base = always | C.NBD_FLAG_SEND_FUA | C.NBD_FLAG_SEND_WRITE_ZEROES;
  const table: [ExportView, boolean, number][] = [
    [DISK, false, base | C.NBD_FLAG_SEND_TRIM | C.NBD_FLAG_SEND_FAST_ZERO],
    [DISK, true, base | C.NBD_FLAG_SEND_TRIM | C.NBD_FLAG_SEND_FAST_ZERO | C.NBD_FLAG_SEND_DF],
    [RO, false, always | C.NBD_FLAG_READ_ONLY],
    [RO, true, always | C.NBD_FLAG_READ_ONLY | C.NBD_FLAG_SEND_DF],
    [SECRET, false, base | C.NBD_FLAG_SEND_TRIM],
  ];
  for (const [exp, structured, want] of table) {
    assertEquals(transmissionFlags(exp, structured), want, `${exp.name} structured=${structured}`);
  }
  // The flags in INFO_EXPORT and in the transmission action follow negotiation.
  const plain = transmission(one(C.NBD_OPT_GO, goPayload("disk")));
  assertEquals(plain.flags & C.NBD_FLAG_SEND_DF, 0);
  const { results } = run([STRUCTURED, [C.NBD_OPT_GO, goPayload("disk")]]);
  const t = transmission(results[1]);
  assertEquals(t.flags & C.NBD_FLAG_SEND_DF, C.NBD_FLAG_SEND_DF);
  assertEquals(infos(results[1])[0][1], exportInfo(GiB, t.flags));
  assertEquals(transmission(one(C.NBD_OPT_GO, goPayload("ro"))).flags & 2, C.NBD_FLAG_READ_ONLY);
});

// ---- NBD_OPT_EXPORT_NAME ------------------------------------------------------------

Deno.test("EXPORT_NAME enters transmission with size and flags, padded with 124 zeroes unless NO_ZEROES", () => {
  for (const [clientFlags, length] of [[BOTH, 10], [C.NBD_FLAG_C_FIXED_NEWSTYLE, 134]]) {
    const r = run([[C.NBD_OPT_EXPORT_NAME, enc.encode("disk")]], PLAIN, catalog(), clientFlags)
      .results[0];
    const t = transmission(r);
    assertEquals(r.action.out.length, 1);
    const want = new Uint8Array(length);
    want.set(exportInfo(GiB, transmissionFlags(DISK, false)));
    assertEquals(r.action.out[0], want);
    assertEquals(t.export.name, "disk");
  }
});

Deno.test("EXPORT_NAME for an unknown export or a non-UTF-8 name closes without a reply", () => {
  for (const name of [enc.encode("nope"), new Uint8Array([0xff, 0xfe]), NONE]) {
    const r = one(C.NBD_OPT_EXPORT_NAME, name);
    assertEquals(r.action.kind, "close");
    assertEquals(r.action.out, []);
  }
});

// ---- policy and unsupported options ---------------------------------------------------

Deno.test("access without a reason hides exports from LIST, GO, INFO, EXPORT_NAME and metadata contexts", () => {
  const policy: HandshakePolicy = {
    tlsAvailable: false,
    tlsRequired: false,
    access: (e) => e.name !== "secret" ? { ok: true, readOnly: false } : { ok: false },
  };
  const list = one(C.NBD_OPT_LIST, NONE, policy);
  assertEquals(
    replies(list).filter((x) => x.type === C.NBD_REP_SERVER).map((x) =>
      dec.decode(x.data.subarray(4, 4 + new DataView(x.data.buffer).getUint32(0)))
    ),
    ["disk", "ro"],
  );
  assertEquals(types(one(C.NBD_OPT_GO, goPayload("secret"), policy)), [C.NBD_REP_ERR_UNKNOWN]);
  assertEquals(types(one(C.NBD_OPT_INFO, goPayload("secret"), policy)), [C.NBD_REP_ERR_UNKNOWN]);
  assertEquals(one(C.NBD_OPT_EXPORT_NAME, enc.encode("secret"), policy).action.kind, "close");
  const { results, state } = run([
    STRUCTURED,
    [C.NBD_OPT_SET_META_CONTEXT, metaPayload("secret", [C.BASE_ALLOCATION])],
  ], policy);
  assertEquals(types(results[1]), [C.NBD_REP_ERR_UNKNOWN]);
  assertEquals(state.metaContextExport, undefined);
  // The allowed export still works under the same policy.
  assertEquals(transmission(one(C.NBD_OPT_GO, goPayload("disk"), policy)).export.name, "disk");
});

Deno.test("read-only access: GO and EXPORT_NAME advertise READ_ONLY and nothing that writes", () => {
  const policy: HandshakePolicy = {
    tlsAvailable: false,
    tlsRequired: false,
    access: () => ({ ok: true, readOnly: true }),
  };
  const plain = transmission(one(C.NBD_OPT_GO, goPayload("disk")));
  assertEquals(plain.flags & C.NBD_FLAG_READ_ONLY, 0, "the export itself is writable");
  assert((plain.flags & C.NBD_FLAG_SEND_TRIM) !== 0);
  for (
    const r of [
      one(C.NBD_OPT_GO, goPayload("disk"), policy),
      one(C.NBD_OPT_EXPORT_NAME, enc.encode("disk"), policy),
    ]
  ) {
    const t = transmission(r);
    assertEquals(t.export.name, "disk");
    assert(t.export.readOnly, "the client's view is read-only");
    assert((t.flags & C.NBD_FLAG_READ_ONLY) !== 0, "NBD_FLAG_READ_ONLY");
    const writes = C.NBD_FLAG_SEND_TRIM | C.NBD_FLAG_SEND_WRITE_ZEROES | C.NBD_FLAG_SEND_FUA |
      C.NBD_FLAG_SEND_FAST_ZERO;
    assertEquals(t.flags & writes, 0);
  }
});

Deno.test("access refused with a reason: GO, INFO and metadata contexts get ERR_POLICY with it; EXPORT_NAME closes; LIST omits", () => {
  const why = 'grant for "disk" is bound to a deleted volume';
  const policy: HandshakePolicy = {
    tlsAvailable: false,
    tlsRequired: false,
    access: (e) => e.name === "disk" ? { ok: false, reason: why } : { ok: true, readOnly: false },
  };
  for (const option of [C.NBD_OPT_GO, C.NBD_OPT_INFO]) {
    const r = one(option, goPayload("disk"), policy);
    assertEquals(replies(r).map((x) => [x.type, dec.decode(x.data)]), [[
      C.NBD_REP_ERR_POLICY,
      why,
    ]]);
    assertEquals(r.refusal, why);
  }
  const { results } = run([
    STRUCTURED,
    [C.NBD_OPT_SET_META_CONTEXT, metaPayload("disk", [C.BASE_ALLOCATION])],
  ], policy);
  assertEquals(types(results[1]), [C.NBD_REP_ERR_POLICY]);
  const closed = one(C.NBD_OPT_EXPORT_NAME, enc.encode("disk"), policy).action;
  assertEquals(closed.kind === "close" && closed.reason, why);
  const list = one(C.NBD_OPT_LIST, NONE, policy);
  const listed = replies(list).filter((x) => x.type === C.NBD_REP_SERVER).map((x) =>
    dec.decode(x.data.subarray(4, 4 + new DataView(x.data.buffer).getUint32(0)))
  );
  assert(!listed.includes("disk") && listed.length > 0, listed.join());
});

Deno.test("unknown options (0xdead, EXTENDED_HEADERS, withdrawn PEEK_EXPORT) are ERR_UNSUP and change nothing", () => {
  for (const option of [0xdead, C.NBD_OPT_EXTENDED_HEADERS, 4, 0, 0xffffffff]) {
    const r = one(option, new Uint8Array([1, 2, 3]));
    assertEquals(r.action.kind, "reply");
    assertEquals(replies(r).map((x) => [x.option, x.type]), [[option, C.NBD_REP_ERR_UNSUP]]);
    assertEquals(r.state, initialState(BOTH));
  }
});

Deno.test("a full negotiation: LIST, STRUCTURED_REPLY, SET_META_CONTEXT, INFO, GO", () => {
  const { results, state } = run([
    [C.NBD_OPT_LIST, NONE],
    STRUCTURED,
    SET_BASE_DISK,
    [C.NBD_OPT_INFO, goPayload("disk", [C.NBD_INFO_BLOCK_SIZE])],
    [C.NBD_OPT_GO, goPayload("disk", [C.NBD_INFO_BLOCK_SIZE])],
  ]);
  assertEquals(results.map((r) => r.action.kind), [
    "reply",
    "reply",
    "reply",
    "reply",
    "transmission",
  ]);
  const t = transmission(results[4]);
  assertEquals([t.structuredReplies, t.baseAllocation], [true, true]);
  assertEquals(state, {
    noZeroes: true,
    tls: false,
    structuredReplies: true,
    metaContextExport: "disk",
  });
});

Deno.test("a volume that exists but that nobody can serve now: GO, INFO and EXPORT_NAME say so, to a client that may open it", () => {
  const why = 'volume "gone" is unavailable: no member is up';
  const cat: ExportCatalog = {
    ...catalog(),
    absent: (name) => name === "gone" ? { uuid: "u-gone", reason: why } : undefined,
  };
  for (const option of [C.NBD_OPT_GO, C.NBD_OPT_INFO]) {
    const r = run([[option, goPayload("gone")]], PLAIN, cat).results[0];
    assertEquals(replies(r).map((x) => [x.type, dec.decode(x.data)]), [
      [C.NBD_REP_ERR_UNKNOWN, why],
    ]);
  }
  const named = run([[C.NBD_OPT_EXPORT_NAME, enc.encode("gone")]], PLAIN, cat).results[0];
  assertEquals(named.action, { kind: "close", out: [], reason: why });
  // A name nobody knows is unknown as before.
  const none = run([[C.NBD_OPT_GO, goPayload("none")]], PLAIN, cat).results[0];
  assertEquals(dec.decode(replies(none)[0].data), 'unknown export "none"');
  // A client that may not open the volume learns nothing about it.
  const seen: { name: string; uuid?: string }[] = [];
  const policy: HandshakePolicy = {
    ...PLAIN,
    access: (e) => {
      seen.push({ name: e.name, uuid: e.uuid });
      return e.name === "gone" ? { ok: false } : { ok: true, readOnly: false };
    },
  };
  const hidden = run([[C.NBD_OPT_GO, goPayload("gone")]], policy, cat).results[0];
  assertEquals(dec.decode(replies(hidden)[0].data), 'unknown export "gone"');
  assertEquals(seen, [{ name: "gone", uuid: "u-gone" }]);
});

Deno.test("an export name with a NUL is ERR_INVALID; control characters in an unknown name are escaped in the message, never echoed raw", () => {
  const nul = run([[C.NBD_OPT_GO, goPayload("v1\0")]], PLAIN, catalog()).results[0];
  assertEquals(replies(nul).map((x) => [x.type, dec.decode(x.data)]), [
    [C.NBD_REP_ERR_INVALID, 'export name "v1\\u0000" holds a NUL'],
  ]);
  const odd = run([[C.NBD_OPT_INFO, goPayload('a\x1b[2J"\\\u0085b')]], PLAIN, catalog()).results[0];
  assertEquals(replies(odd).map((x) => [x.type, dec.decode(x.data)]), [
    [C.NBD_REP_ERR_UNKNOWN, 'unknown export "a\\u001b[2J\\"\\\\\\u0085b"'],
  ]);
  const named = run([[C.NBD_OPT_EXPORT_NAME, enc.encode("x\ny")]], PLAIN, catalog()).results[0];
  assertEquals(named.action, { kind: "close", out: [], reason: 'unknown export "x\\ny"' });
  const bidi = run([[C.NBD_OPT_GO, goPayload("no\u202eRLO\u2028")]], PLAIN, catalog()).results[0];
  assertEquals(dec.decode(replies(bidi)[0].data), 'unknown export "no\\u202eRLO\\u2028"');
});

Deno.test("an export its node cannot serve now (a fenced group master) is ERR_UNKNOWN with the reason at GO, INFO and EXPORT_NAME, and only to a client that may open it", () => {
  const why = 'volume "fenced" is unavailable on this node: a member has seen a newer epoch';
  const view = { ...DISK, name: "fenced", unavailable: why };
  const cat: ExportCatalog = {
    ...catalog(),
    lookup: (name) => name === "fenced" ? view : catalog().lookup(name),
  };
  for (const option of [C.NBD_OPT_GO, C.NBD_OPT_INFO]) {
    const r = run([[option, goPayload("fenced")]], PLAIN, cat).results[0];
    assertEquals(replies(r).map((x) => [x.type, dec.decode(x.data)]), [
      [C.NBD_REP_ERR_UNKNOWN, why],
    ]);
  }
  const named = run([[C.NBD_OPT_EXPORT_NAME, enc.encode("fenced")]], PLAIN, cat).results[0];
  assertEquals(named.action, { kind: "close", out: [], reason: why });
  const policy: HandshakePolicy = { ...PLAIN, access: () => ({ ok: false }) };
  const hidden = run([[C.NBD_OPT_GO, goPayload("fenced")]], policy, cat).results[0];
  assertEquals(dec.decode(replies(hidden)[0].data), 'unknown export "fenced"');
});
