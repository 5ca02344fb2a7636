/**
 * Option haggling (data/nbd/handshake.ts) as scenario transcripts: testdata/handshake/*.txt
 * hold sequences of client options and the replies, actions and state the pure state
 * machine must produce ("Fixed newstyle negotiation", "Option types", "Option reply
 * types"). Commands:
 *
 *   setup exports=NAME:SIZE[:ro][,...] policy=plain|tls-available|tls-required
 *         [allow=NAME,...] flags=fixed-newstyle[,no-zeroes]
 *   option NAME [export name] [name=N] [info=NAME,...] [queries=Q,...] [data=HEX]
 *
 * Every reply is decoded to one line; then the action and, when an option was refused,
 * the refusal; then the state.
 */
import * as C from "../../../data/nbd/constants.ts";
import {
  type ExportCatalog,
  type ExportView,
  handleOption,
  type HandshakePolicy,
  type HandshakeState,
  initialState,
} from "../../../data/nbd/handshake.ts";
import { type Command, runTranscript, transcriptFiles } from "../../_transcript.ts";
import { parseSize } from "../../../mod/size.ts";

const OPTIONS: Record<string, number> = {
  EXPORT_NAME: C.NBD_OPT_EXPORT_NAME,
  ABORT: C.NBD_OPT_ABORT,
  LIST: C.NBD_OPT_LIST,
  STARTTLS: C.NBD_OPT_STARTTLS,
  INFO: C.NBD_OPT_INFO,
  GO: C.NBD_OPT_GO,
  STRUCTURED_REPLY: C.NBD_OPT_STRUCTURED_REPLY,
  LIST_META_CONTEXT: C.NBD_OPT_LIST_META_CONTEXT,
  SET_META_CONTEXT: C.NBD_OPT_SET_META_CONTEXT,
  EXTENDED_HEADERS: C.NBD_OPT_EXTENDED_HEADERS,
};
const REPLIES: Record<number, string> = {
  [C.NBD_REP_ACK]: "ACK",
  [C.NBD_REP_SERVER]: "SERVER",
  [C.NBD_REP_INFO]: "INFO",
  [C.NBD_REP_META_CONTEXT]: "META_CONTEXT",
  [C.NBD_REP_ERR_UNSUP]: "ERR_UNSUP",
  [C.NBD_REP_ERR_POLICY]: "ERR_POLICY",
  [C.NBD_REP_ERR_INVALID]: "ERR_INVALID",
  [C.NBD_REP_ERR_PLATFORM]: "ERR_PLATFORM",
  [C.NBD_REP_ERR_TLS_REQD]: "ERR_TLS_REQD",
  [C.NBD_REP_ERR_UNKNOWN]: "ERR_UNKNOWN",
  [C.NBD_REP_ERR_SHUTDOWN]: "ERR_SHUTDOWN",
  [C.NBD_REP_ERR_BLOCK_SIZE_REQD]: "ERR_BLOCK_SIZE_REQD",
  [C.NBD_REP_ERR_TOO_BIG]: "ERR_TOO_BIG",
};
const INFOS: Record<string, number> = {
  EXPORT: C.NBD_INFO_EXPORT,
  NAME: C.NBD_INFO_NAME,
  DESCRIPTION: C.NBD_INFO_DESCRIPTION,
  BLOCK_SIZE: C.NBD_INFO_BLOCK_SIZE,
};
const TRANSMISSION_FLAGS: [number, string][] = [
  [C.NBD_FLAG_HAS_FLAGS, "HAS_FLAGS"],
  [C.NBD_FLAG_READ_ONLY, "READ_ONLY"],
  [C.NBD_FLAG_SEND_FLUSH, "SEND_FLUSH"],
  [C.NBD_FLAG_SEND_FUA, "SEND_FUA"],
  [C.NBD_FLAG_ROTATIONAL, "ROTATIONAL"],
  [C.NBD_FLAG_SEND_TRIM, "SEND_TRIM"],
  [C.NBD_FLAG_SEND_WRITE_ZEROES, "SEND_WRITE_ZEROES"],
  [C.NBD_FLAG_SEND_DF, "SEND_DF"],
  [C.NBD_FLAG_CAN_MULTI_CONN, "CAN_MULTI_CONN"],
  [C.NBD_FLAG_SEND_RESIZE, "SEND_RESIZE"],
  [C.NBD_FLAG_SEND_CACHE, "SEND_CACHE"],
  [C.NBD_FLAG_SEND_FAST_ZERO, "SEND_FAST_ZERO"],
];

const enc = new TextEncoder();
const dec = new TextDecoder();

function nameOf(table: Record<string, number>, value: number): string {
  return Object.entries(table).find(([, v]) => v === value)?.[0] ?? String(value);
}

function flagsOf(f: number): string {
  const names = TRANSMISSION_FLAGS.filter(([bit]) => f & bit).map(([, n]) => n);
  const rest = f & ~TRANSMISSION_FLAGS.reduce((a, [bit]) => a | bit, 0);
  return [...names, ...(rest ? [`0x${rest.toString(16)}`] : [])].join(",");
}

function u32(n: number): number[] {
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
}

function str(s: string): number[] {
  const b = enc.encode(s);
  return [...u32(b.length), ...b];
}

function list(c: Command, key: string): string[] {
  const v = c.kv.get(key);
  return v === undefined || v === "" ? [] : v.split(",");
}

/** The option payload a client would send for this command line. */
function payload(option: number, c: Command): Uint8Array {
  const hex = c.kv.get("data");
  if (hex !== undefined) return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
  switch (option) {
    case C.NBD_OPT_EXPORT_NAME:
      return enc.encode(c.args[1] ?? "");
    case C.NBD_OPT_INFO:
    case C.NBD_OPT_GO: {
      const infos = list(c, "info").map((i) => INFOS[i] ?? Number(i));
      const out = [...str(c.kv.get("name") ?? ""), infos.length >> 8, infos.length & 255];
      for (const i of infos) out.push(i >> 8, i & 255);
      return new Uint8Array(out);
    }
    case C.NBD_OPT_LIST_META_CONTEXT:
    case C.NBD_OPT_SET_META_CONTEXT: {
      const queries = list(c, "queries");
      return new Uint8Array([
        ...str(c.kv.get("export") ?? ""),
        ...u32(queries.length),
        ...queries.flatMap(str),
      ]);
    }
    default:
      return new Uint8Array(0);
  }
}

/** One line per reply the server would send. */
function describeReply(b: Uint8Array, exportName: boolean): string {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (exportName) {
    // NBD_OPT_EXPORT_NAME's reply is not an option reply: size, flags, zeroes.
    return `export-name-reply size=${v.getBigUint64(0)} flags=${flagsOf(v.getUint16(8))} ` +
      `zeroes=${b.length - 10}`;
  }
  if (v.getUint32(0) !== C.REPLY_MAGIC_HI || v.getUint32(4) !== C.REPLY_MAGIC_LO) {
    return `bad reply magic ${[...b.subarray(0, 8)]}`;
  }
  const option = nameOf(OPTIONS, v.getUint32(8));
  const typeNo = v.getUint32(12);
  const type = REPLIES[typeNo] ?? `0x${typeNo.toString(16)}`;
  const len = v.getUint32(16);
  const data = b.subarray(20, 20 + len);
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let detail = "";
  if (typeNo & 0x80000000) detail = JSON.stringify(dec.decode(data));
  else if (typeNo === C.NBD_REP_SERVER) {
    const n = dv.getUint32(0);
    detail = `name=${dec.decode(data.subarray(4, 4 + n))} description=${
      JSON.stringify(dec.decode(data.subarray(4 + n)))
    }`;
  } else if (typeNo === C.NBD_REP_META_CONTEXT) {
    detail = `id=${dv.getUint32(0)} name=${dec.decode(data.subarray(4))}`;
  } else if (typeNo === C.NBD_REP_INFO) {
    const info = dv.getUint16(0);
    const body = data.subarray(2);
    const bv = new DataView(body.buffer, body.byteOffset, body.byteLength);
    detail = nameOf(INFOS, info) + " " +
      (info === C.NBD_INFO_EXPORT
        ? `size=${bv.getBigUint64(0)} flags=${flagsOf(bv.getUint16(8))}`
        : info === C.NBD_INFO_BLOCK_SIZE
        ? `min=${bv.getUint32(0)} preferred=${bv.getUint32(4)} max=${bv.getUint32(8)}`
        : JSON.stringify(dec.decode(body)));
  } else if (len > 0) detail = `${len} bytes`;
  return `reply ${option} ${type}${detail ? " " + detail : ""}`;
}

function describeState(s: HandshakeState): string {
  const yn = (b: boolean) => (b ? "yes" : "no");
  return `state tls=${yn(s.tls)} structured=${yn(s.structuredReplies)} ` +
    `meta=${s.metaContextExport ?? "-"} no-zeroes=${yn(s.noZeroes)}`;
}

/** A transcript's world: the catalog, the listener's policy and the handshake state. */
function handler(): (c: Command) => string {
  let catalog: ExportCatalog | undefined;
  let policy: HandshakePolicy = { tlsAvailable: false, tlsRequired: false };
  let state: HandshakeState | undefined;
  return (c) => {
    if (c.name === "setup") {
      const exports: ExportView[] = list(c, "exports").map((spec) => {
        const [name, size, ro] = spec.split(":");
        return {
          name,
          description: `${name} volume`,
          size: parseSize(size),
          readOnly: ro === "ro",
          canTrim: true,
          canFastZero: true,
        };
      });
      catalog = {
        lookup: (n) => exports.find((e) => e.name === n),
        list: () => exports,
      };
      const p = c.kv.get("policy") ?? "plain";
      const allow = c.kv.has("allow") ? list(c, "allow") : undefined;
      policy = {
        tlsAvailable: p !== "plain",
        tlsRequired: p === "tls-required",
        ...(allow
          ? {
            access: (e: { name: string }) =>
              allow.includes(e.name) ? { ok: true, readOnly: false } : { ok: false },
          }
          : {}),
      };
      const flags = list(c, "flags").reduce(
        (f, x) =>
          f | (x === "fixed-newstyle" ? C.NBD_FLAG_C_FIXED_NEWSTYLE : 0) |
          (x === "no-zeroes" ? C.NBD_FLAG_C_NO_ZEROES : 0),
        0,
      );
      state = initialState(flags);
      return describeState(state);
    }
    if (c.name !== "option" || !catalog || !state) {
      throw new Error(`unknown command or no setup yet: ${c.line}`);
    }
    const word = c.args[0];
    const option = OPTIONS[word] ?? Number(word);
    if (!Number.isInteger(option)) throw new Error(`unknown option ${word}`);
    const r = handleOption(state, catalog, policy, option, payload(option, c));
    state = r.state;
    const a = r.action;
    const lines = a.out.map((b) =>
      describeReply(b, option === C.NBD_OPT_EXPORT_NAME && a.kind === "transmission")
    );
    if (a.kind === "transmission") {
      lines.push(
        `action transmission export=${a.export.name} flags=${flagsOf(a.flags)} ` +
          `structured=${a.structuredReplies ? "yes" : "no"} ` +
          `base-allocation=${a.baseAllocation ? "yes" : "no"}`,
      );
    } else if (a.kind === "close") lines.push(`action close reason=${JSON.stringify(a.reason)}`);
    else lines.push(`action ${a.kind}`);
    if (r.refusal) lines.push(`refusal ${JSON.stringify(r.refusal)}`);
    lines.push(describeState(state));
    return lines.join("\n");
  };
}

for (const file of transcriptFiles(new URL("./testdata/handshake/", import.meta.url))) {
  const name = file.split("/").at(-1)!;
  Deno.test(`handshake transcript ${name}`, () => runTranscript(file, handler()));
}
