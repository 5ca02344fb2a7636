/**
 * Option haggling ("Fixed newstyle negotiation", "Option types", "Option reply types")
 * as a pure state machine: `handleOption(state, option, data)` returns the next state
 * and an action for the I/O shell (send replies, enter transmission, upgrade to TLS,
 * or close). No sockets here, so every path is unit-testable.
 * @module
 */

import { quoted } from "../../mod/text.ts";
import * as C from "./constants.ts";

/** An export as the handshake sees it. */
export interface ExportView {
  name: string;
  /** The volume's identity (a deleted and re-created volume has another). */
  uuid?: string;
  description: string;
  size: number;
  readOnly: boolean;
  canTrim: boolean;
  canFastZero: boolean;
  /** Why it cannot be served now although it is exported here (a fenced group master). */
  readonly unavailable?: string;
}

/**
 * What a client may do with an export: open it (read-only or not), or not at all. A refusal
 * with a `reason` is told to the client (NBD_REP_ERR_POLICY); one without hides the export
 * as if it did not exist.
 */
export type ExportAccess = { ok: true; readOnly: boolean } | { ok: false; reason?: string };

/** Where the handshake looks exports up. */
export interface ExportCatalog {
  lookup(name: string): ExportView | undefined;
  list(): ExportView[];
  /**
   * Why a volume that lookup() does not give cannot be attached now (it exists, nobody can
   * serve it), with its uuid for the access check; undefined: there is no such volume.
   */
  absent?(name: string): { uuid: string; reason: string } | undefined;
}

export interface HandshakePolicy {
  /** Whether NBD_OPT_STARTTLS can be honoured on this listener (the TLS seam). */
  tlsAvailable: boolean;
  /** FORCEDTLS: refuse every option but STARTTLS/ABORT until TLS is up. */
  tlsRequired: boolean;
  /**
   * What this client may do with each export (TLS client certificates' grants, read-only
   * listeners); absent: open every export as it is.
   */
  access?: (exp: { name: string; uuid?: string }) => ExportAccess;
  /** The client may name itself a forwarding node (NBD_OPT_BALLAST_FORWARDER): a node's certificate. */
  forwarders?: boolean;
}

/** A forwarding node's client, as it named itself: its forwarder id and connection generation. */
export interface ForwarderName {
  id: [number, number];
  gen: number;
}

export interface HandshakeState {
  /** Client set NBD_FLAG_C_NO_ZEROES. */
  noZeroes: boolean;
  tls: boolean;
  structuredReplies: boolean;
  /** Export for which base:allocation was selected, or undefined. */
  metaContextExport: string | undefined;
  forwarder?: ForwarderName;
}

export function initialState(clientFlags: number): HandshakeState {
  return {
    noZeroes: (clientFlags & C.NBD_FLAG_C_NO_ZEROES) !== 0,
    tls: false,
    structuredReplies: false,
    metaContextExport: undefined,
  };
}

/** What the I/O shell must do after an option. */
export type HandshakeAction =
  | { kind: "reply"; out: Uint8Array[] }
  | { kind: "starttls"; out: Uint8Array[] }
  | { kind: "close"; out: Uint8Array[]; reason: string }
  | {
    kind: "transmission";
    out: Uint8Array[];
    export: ExportView;
    flags: number;
    structuredReplies: boolean;
    baseAllocation: boolean;
    forwarder?: ForwarderName;
  };

export interface HandshakeResult {
  state: HandshakeState;
  action: HandshakeAction;
  /** Set when the option was refused, for the connection's log line. */
  refusal?: string;
  /** The refusal is worth an operator's attention (a client's access was refused). */
  notice?: boolean;
}

/** Handshake greeting: NBDMAGIC, IHAVEOPT, handshake flags ("Newstyle negotiation"). */
export function encodeGreeting(): Uint8Array {
  const b = new Uint8Array(18);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, C.NBDMAGIC);
  v.setBigUint64(8, C.IHAVEOPT);
  v.setUint16(16, C.NBD_FLAG_FIXED_NEWSTYLE | C.NBD_FLAG_NO_ZEROES);
  return b;
}

/** Client flags we understand; anything else means we "MUST close the TCP connection". */
export function checkClientFlags(flags: number): string | undefined {
  const unknown = (flags & ~(C.NBD_FLAG_C_FIXED_NEWSTYLE | C.NBD_FLAG_C_NO_ZEROES)) >>> 0;
  return unknown ? `unknown client flags 0x${unknown.toString(16)}` : undefined;
}

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { fatal: true });

/** An option reply: magic, option, type, length, data ("Fixed newstyle negotiation"). */
export function encodeOptionReply(option: number, type: number, data?: Uint8Array): Uint8Array {
  const len = data?.length ?? 0;
  const b = new Uint8Array(20 + len);
  const v = new DataView(b.buffer);
  v.setUint32(0, C.REPLY_MAGIC_HI);
  v.setUint32(4, C.REPLY_MAGIC_LO);
  v.setUint32(8, option);
  v.setUint32(12, type);
  v.setUint32(16, len);
  if (data) b.set(data, 20);
  return b;
}

function errorReply(option: number, type: number, message: string): Uint8Array {
  return encodeOptionReply(option, type, enc.encode(message));
}

/** Transmission flags for an export ("Transmission flags"): advertise only what is true. */
export function transmissionFlags(exp: ExportView, structuredReplies: boolean): number {
  let f = C.NBD_FLAG_HAS_FLAGS | C.NBD_FLAG_SEND_FLUSH | C.NBD_FLAG_SEND_CACHE |
    // Every connection to an export shares one file and the page cache; a flush
    // (fdatasync) covers writes acknowledged on all of them.
    C.NBD_FLAG_CAN_MULTI_CONN;
  if (exp.readOnly) {
    // Nothing that writes is offered to a client that may not write (as nbdkit does).
    f |= C.NBD_FLAG_READ_ONLY;
  } else {
    f |= C.NBD_FLAG_SEND_FUA | C.NBD_FLAG_SEND_WRITE_ZEROES;
    if (exp.canTrim) f |= C.NBD_FLAG_SEND_TRIM;
    if (exp.canFastZero) f |= C.NBD_FLAG_SEND_FAST_ZERO;
  }
  if (structuredReplies) f |= C.NBD_FLAG_SEND_DF;
  return f;
}

/** Reply to NBD_OPT_EXPORT_NAME: size, flags, and 124 zero bytes unless NO_ZEROES. */
function exportNameReply(exp: ExportView, flags: number, noZeroes: boolean): Uint8Array {
  const b = new Uint8Array(noZeroes ? 10 : 134);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(exp.size));
  v.setUint16(8, flags);
  return b;
}

function infoReply(option: number, info: number, body: Uint8Array): Uint8Array {
  const b = new Uint8Array(2 + body.length);
  new DataView(b.buffer).setUint16(0, info);
  b.set(body, 2);
  return encodeOptionReply(option, C.NBD_REP_INFO, b);
}

/** Reads a 32-bit-length-prefixed string; undefined if malformed. */
function readString(data: Uint8Array, off: number): { s: string; end: number } | undefined {
  if (off + 4 > data.length) return undefined;
  const len = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(off);
  if (len > C.MAX_STRING || off + 4 + len > data.length) return undefined;
  try {
    return { s: dec.decode(data.subarray(off + 4, off + 4 + len)), end: off + 4 + len };
  } catch {
    return undefined;
  }
}

/**
 * Handles one option. `data` is the option payload (already length-checked against
 * MAX_OPTION_LENGTH by the shell).
 */
export function handleOption(
  state: HandshakeState,
  catalog: ExportCatalog,
  policy: HandshakePolicy,
  option: number,
  data: Uint8Array,
): HandshakeResult {
  const reply = (out: Uint8Array[]): HandshakeResult => ({ state, action: { kind: "reply", out } });
  const refuse = (type: number, message: string): HandshakeResult => ({
    state,
    action: { kind: "reply", out: [errorReply(option, type, message)] },
    refusal: message,
  });
  const visible = (name: string): Visible => {
    const e = catalog.lookup(name);
    if (e) return asAllowed(e, policy);
    // Said only to a client that may open the volume; to others it is unknown.
    const gone = catalog.absent?.(name);
    if (!gone || (policy.access && !policy.access({ name, uuid: gone.uuid }).ok)) return undefined;
    return { gone: gone.reason };
  };

  // FORCEDTLS ("TLS support"): only STARTTLS and ABORT before TLS is up.
  if (
    policy.tlsRequired && !state.tls && option !== C.NBD_OPT_STARTTLS &&
    option !== C.NBD_OPT_ABORT
  ) {
    if (option === C.NBD_OPT_EXPORT_NAME) {
      return {
        state,
        action: { kind: "close", out: [], reason: "NBD_OPT_EXPORT_NAME before STARTTLS" },
      };
    }
    return refuse(C.NBD_REP_ERR_TLS_REQD, "TLS is required: send NBD_OPT_STARTTLS first");
  }

  switch (option) {
    case C.NBD_OPT_ABORT:
      return {
        state,
        action: {
          kind: "close",
          out: [encodeOptionReply(option, C.NBD_REP_ACK)],
          reason: "client sent NBD_OPT_ABORT",
        },
      };

    case C.NBD_OPT_LIST: {
      if (data.length !== 0) return refuse(C.NBD_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
      const out: Uint8Array[] = [];
      for (const e of catalog.list()) {
        if (policy.access && !policy.access(e).ok) continue;
        const name = enc.encode(e.name);
        const desc = enc.encode(e.description);
        const b = new Uint8Array(4 + name.length + desc.length);
        new DataView(b.buffer).setUint32(0, name.length);
        b.set(name, 4);
        b.set(desc, 4 + name.length);
        out.push(encodeOptionReply(option, C.NBD_REP_SERVER, b));
      }
      out.push(encodeOptionReply(option, C.NBD_REP_ACK));
      return reply(out);
    }

    case C.NBD_OPT_STARTTLS:
      if (data.length !== 0) return refuse(C.NBD_REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data");
      if (state.tls) return refuse(C.NBD_REP_ERR_INVALID, "TLS is already active");
      if (!policy.tlsAvailable) {
        return refuse(C.NBD_REP_ERR_POLICY, "TLS is not configured on this listener");
      }
      return {
        state: { ...state, tls: true },
        action: { kind: "starttls", out: [encodeOptionReply(option, C.NBD_REP_ACK)] },
      };

    case C.NBD_OPT_STRUCTURED_REPLY:
      if (data.length !== 0) {
        return refuse(C.NBD_REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data");
      }
      if (state.structuredReplies) {
        return refuse(C.NBD_REP_ERR_INVALID, "structured replies already negotiated");
      }
      return {
        state: { ...state, structuredReplies: true },
        action: { kind: "reply", out: [encodeOptionReply(option, C.NBD_REP_ACK)] },
      };

    case C.NBD_OPT_LIST_META_CONTEXT:
    case C.NBD_OPT_SET_META_CONTEXT:
      return metaContext(state, option, data, visible, refuse);

    case C.NBD_OPT_EXPORT_NAME: {
      let name: string;
      try {
        name = dec.decode(data);
      } catch {
        return { state, action: { kind: "close", out: [], reason: "export name is not UTF-8" } };
      }
      const exp = visible(name);
      if (!exp || "refused" in exp || "gone" in exp) {
        // "If the chosen export does not exist or requirements for the chosen export are not
        // met (e.g., the client did not negotiate TLS for an export where the server requires
        // it), the server should close the connection." (NBD_OPT_EXPORT_NAME, "Option types")
        const reason = !exp
          ? `unknown export ${quoted(name)}`
          : "refused" in exp
          ? exp.refused
          : exp.gone;
        return { state, action: { kind: "close", out: [], reason } };
      }
      const flags = transmissionFlags(exp, state.structuredReplies);
      return {
        state,
        action: {
          kind: "transmission",
          out: [exportNameReply(exp, flags, state.noZeroes)],
          export: exp,
          flags,
          structuredReplies: state.structuredReplies,
          baseAllocation: state.metaContextExport === exp.name,
          ...(state.forwarder ? { forwarder: state.forwarder } : {}),
        },
      };
    }

    case C.NBD_OPT_INFO:
    case C.NBD_OPT_GO:
      return infoOrGo(state, option, data, visible, refuse);

    case C.NBD_OPT_BALLAST_FORWARDER: {
      if (!policy.forwarders) {
        return refuse(C.NBD_REP_ERR_POLICY, "only a node's certificate may name a forwarder");
      }
      const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
      const id: [number, number] = data.length === 12 ? [v.getUint32(0), v.getUint32(4)] : [0, 0];
      if (id[0] === 0 && id[1] === 0) {
        return refuse(C.NBD_REP_ERR_INVALID, "a forwarder is named by 12 bytes: id (not 0), gen");
      }
      return {
        state: { ...state, forwarder: { id, gen: v.getUint32(8) } },
        action: { kind: "reply", out: [encodeOptionReply(option, C.NBD_REP_ACK)] },
      };
    }

    default:
      return refuse(C.NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
  }
}

type Refuse = (type: number, message: string) => HandshakeResult;
/** An export the client may open (as it may), one it is told it may not, or none. */
type Visible = ExportView | { refused: string } | { gone: string } | undefined;

/**
 * `e` as `policy` lets this client see it: read-only when its access is ("Transmission
 * flags": NBD_FLAG_READ_ONLY), refused with the reason when there is one.
 */
function asAllowed(e: ExportView, policy: HandshakePolicy): Visible {
  const a = policy.access?.(e) ?? { ok: true, readOnly: false };
  if (!a.ok) return a.reason === undefined ? undefined : { refused: a.reason };
  // Said, as for a volume nobody serves, only to a client that may open it.
  if (e.unavailable !== undefined) return { gone: e.unavailable };
  if (!a.readOnly || e.readOnly) return e;
  return {
    name: e.name,
    uuid: e.uuid,
    description: e.description,
    size: e.size,
    readOnly: true,
    canTrim: e.canTrim,
    canFastZero: e.canFastZero,
  };
}

/** The refusal for an export that is not there or may not be opened ("Option reply types"). */
function refuseExport(refuse: Refuse, name: string, v: Visible): HandshakeResult {
  if (name.includes("\0")) {
    return refuse(C.NBD_REP_ERR_INVALID, `export name ${quoted(name)} holds a NUL`);
  }
  if (v === undefined) return refuse(C.NBD_REP_ERR_UNKNOWN, `unknown export ${quoted(name)}`);
  // NBD_REP_ERR_UNKNOWN: "The requested export is not available" ("Option reply types").
  if ("gone" in v) return refuse(C.NBD_REP_ERR_UNKNOWN, v.gone);
  return { ...refuse(C.NBD_REP_ERR_POLICY, (v as { refused: string }).refused), notice: true };
}

/** NBD_OPT_INFO / NBD_OPT_GO (INFO extension): name, requested infos, then ACK. */
function infoOrGo(
  state: HandshakeState,
  option: number,
  data: Uint8Array,
  visible: (name: string) => Visible,
  refuse: Refuse,
): HandshakeResult {
  const name = readString(data, 0);
  if (!name || name.end + 2 > data.length) {
    return refuse(C.NBD_REP_ERR_INVALID, "malformed NBD_OPT_INFO/GO payload");
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const n = view.getUint16(name.end);
  if (name.end + 2 + 2 * n !== data.length) {
    return refuse(C.NBD_REP_ERR_INVALID, "NBD_OPT_INFO/GO information request count mismatch");
  }
  const exp = visible(name.s);
  if (!exp || "refused" in exp || "gone" in exp) return refuseExport(refuse, name.s, exp);
  const requested = new Set<number>();
  for (let i = 0; i < n; i++) requested.add(view.getUint16(name.end + 2 + 2 * i));

  const flags = transmissionFlags(exp, state.structuredReplies);
  const out: Uint8Array[] = [];
  const ex = new Uint8Array(10);
  const exv = new DataView(ex.buffer);
  exv.setBigUint64(0, BigInt(exp.size));
  exv.setUint16(8, flags);
  out.push(infoReply(option, C.NBD_INFO_EXPORT, ex));
  if (requested.has(C.NBD_INFO_NAME)) {
    out.push(infoReply(option, C.NBD_INFO_NAME, enc.encode(exp.name)));
  }
  if (requested.has(C.NBD_INFO_DESCRIPTION) && exp.description) {
    out.push(infoReply(option, C.NBD_INFO_DESCRIPTION, enc.encode(exp.description)));
  }
  // Block sizes are always sent: our minimum is 1, so clients that did not ask lose nothing.
  const bs = new Uint8Array(12);
  const bsv = new DataView(bs.buffer);
  bsv.setUint32(0, C.MIN_BLOCK_SIZE);
  bsv.setUint32(4, C.PREFERRED_BLOCK_SIZE);
  bsv.setUint32(8, C.MAX_BLOCK_SIZE);
  out.push(infoReply(option, C.NBD_INFO_BLOCK_SIZE, bs));
  out.push(encodeOptionReply(option, C.NBD_REP_ACK));
  if (option === C.NBD_OPT_INFO) return { state, action: { kind: "reply", out } };
  return {
    state,
    action: {
      kind: "transmission",
      out,
      export: exp,
      flags,
      structuredReplies: state.structuredReplies,
      baseAllocation: state.metaContextExport === exp.name,
      ...(state.forwarder ? { forwarder: state.forwarder } : {}),
    },
  };
}

/**
 * NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT ("Metadata querying"): export name,
 * number of queries, queries. We know one context, base:allocation.
 */
function metaContext(
  state: HandshakeState,
  option: number,
  data: Uint8Array,
  visible: (name: string) => Visible,
  refuse: Refuse,
): HandshakeResult {
  if (!state.structuredReplies) {
    return refuse(C.NBD_REP_ERR_INVALID, "negotiate structured replies before metadata contexts");
  }
  const name = readString(data, 0);
  if (!name || name.end + 4 > data.length) {
    return refuse(C.NBD_REP_ERR_INVALID, "malformed metadata context payload");
  }
  const count = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(name.end);
  const queries: string[] = [];
  let off = name.end + 4;
  for (let i = 0; i < count; i++) {
    const q = readString(data, off);
    if (!q) return refuse(C.NBD_REP_ERR_INVALID, "malformed metadata context query");
    queries.push(q.s);
    off = q.end;
  }
  if (off !== data.length) return refuse(C.NBD_REP_ERR_INVALID, "trailing bytes after queries");
  const exp = visible(name.s);
  if (!exp || "refused" in exp || "gone" in exp) return refuseExport(refuse, name.s, exp);

  const listing = option === C.NBD_OPT_LIST_META_CONTEXT;
  // LIST with no queries lists everything; "base:" lists the whole namespace.
  const matches = queries.length === 0
    ? listing
    : queries.some((q) => q === C.BASE_ALLOCATION || (listing && q === "base:"));
  const out: Uint8Array[] = [];
  if (matches) {
    const ctxName = enc.encode(C.BASE_ALLOCATION);
    const b = new Uint8Array(4 + ctxName.length);
    new DataView(b.buffer).setUint32(0, listing ? 0 : C.BASE_ALLOCATION_ID);
    b.set(ctxName, 4);
    out.push(encodeOptionReply(option, C.NBD_REP_META_CONTEXT, b));
  }
  out.push(encodeOptionReply(option, C.NBD_REP_ACK));
  // SET replaces the previous selection, even with an empty result.
  const next = listing ? state : { ...state, metaContextExport: matches ? name.s : undefined };
  return { state: next, action: { kind: "reply", out } };
}
