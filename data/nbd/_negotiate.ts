/**
 * The handshake driver of a connection ("Fixed newstyle negotiation"): reads the
 * client's flags and options, runs them through the pure state machine in
 * handshake.ts, writes its replies, upgrades to TLS on NBD_OPT_STARTTLS, and returns
 * the export the client attached to (NBD_OPT_GO / NBD_OPT_EXPORT_NAME).
 * @module
 */

import type { Logger } from "pino";
import * as C from "./constants.ts";
import type { TransmissionContext } from "./codec.ts";
import {
  checkClientFlags,
  encodeGreeting,
  encodeOptionReply,
  handleOption,
  type HandshakePolicy,
  initialState,
} from "./handshake.ts";
import { type Transport, writeAll } from "./transport.ts";
import { ClientRefusedError, ProtocolError } from "./errors.ts";
import type { InputBuffer } from "./_input.ts";
import type { ExportTable, LiveExport } from "../exports.ts";
import type { ForwarderFence } from "../forwarder_fences.ts";
import type { StartTls } from "./transport.ts";

/** The connection state the handshake reads and replaces. */
export interface Session {
  /** Replaced by the TLS transport after STARTTLS. */
  transport: Transport;
  /** Gains the client identity (TLS) and the volume name (attach). */
  log: Logger;
  /** Narrowed by the client certificate after STARTTLS. */
  policy: HandshakePolicy;
  readonly input: InputBuffer;
  /** Serial of the client's certificate once STARTTLS verified it. */
  clientSerial?: string;
  /** The client is a node forwarding its own clients: only local exports (no second hop). */
  fromNode?: string;
  shuttingDown(): boolean;
  /** Reads and drops `n` bytes (an oversized option), counting as a partial request. */
  discard(n: number): Promise<void>;
}

/** Where the handshake ended: the attached export and the transmission parameters. */
export interface Attached {
  exp: LiveExport;
  ctx: TransmissionContext;
  /** A forwarding node's connection: fenced once the forwarder connected again (release it). */
  fence?: ForwarderFence;
}

const enc = new TextEncoder();
/** Options a refused client may send (each told why) before the connection is closed. */
const MAX_REFUSED_OPTIONS = 16;

/**
 * Runs the handshake. Resolves to the attached export, or undefined when the client
 * ended it (NBD_OPT_ABORT, or an export that vanished). Throws ProtocolError on a
 * violation, ClientRefusedError from STARTTLS.
 */
export async function negotiate(
  s: Session,
  opts: { exports: ExportTable; startTls?: StartTls },
): Promise<Attached | undefined> {
  const input = s.input;
  // Clients may attach to volumes this node forwards (data/proxy/) as well as its own.
  const table = opts.exports;
  const find = (name: string) => s.fromNode ? table.lookup(name) : table.find(name);
  // A node forwarding its clients sees only the local exports; a client, every volume here.
  const catalog = {
    lookup: find,
    list: () => s.fromNode ? table.list() : table.listed(),
    absent: (name: string) => s.fromNode ? undefined : table.absent(name),
  };
  await writeAll(s.transport, encodeGreeting());
  await input.need(s.transport, 4);
  const clientFlags = input.view.getUint32(input.start);
  input.start += 4;
  const badFlags = checkClientFlags(clientFlags);
  if (badFlags) throw new ProtocolError(badFlags);
  let state = initialState(clientFlags);
  /** Why the client's certificate was refused after STARTTLS: every option is told so. */
  let refused: string | undefined;
  let refusedOptions = 0;
  for (;;) {
    await input.need(s.transport, 16);
    const v = input.view;
    const at = input.start;
    if (v.getUint32(at) !== C.IHAVEOPT_HI || v.getUint32(at + 4) !== C.IHAVEOPT_LO) {
      throw new ProtocolError("bad option magic");
    }
    const option = v.getUint32(at + 8);
    const length = v.getUint32(at + 12);
    input.start += 16;
    if (length > C.MAX_OPTION_LENGTH) {
      if (option === C.NBD_OPT_EXPORT_NAME) throw new ProtocolError("export name too long");
      await s.discard(length);
      await sendOptionError(s.transport, option, C.NBD_REP_ERR_TOO_BIG, "option payload too large");
      continue;
    }
    await input.need(s.transport, length);
    const data = input.buf.slice(input.start, input.start + length);
    input.start += length;
    if (refused !== undefined) {
      // "Where the protocol allows": over the TLS session, each option gets the reason.
      if (option === C.NBD_OPT_ABORT) {
        await writeAll(s.transport, encodeOptionReply(option, C.NBD_REP_ACK));
        return undefined;
      }
      if (option === C.NBD_OPT_EXPORT_NAME || ++refusedOptions > MAX_REFUSED_OPTIONS) {
        s.log.debug({ option }, "refused client: closing");
        return undefined;
      }
      await sendOptionError(s.transport, option, C.NBD_REP_ERR_POLICY, refused);
      continue;
    }
    if (s.shuttingDown() && option !== C.NBD_OPT_ABORT) {
      await sendOptionError(s.transport, option, C.NBD_REP_ERR_SHUTDOWN, "server is shutting down");
      continue;
    }
    const result = handleOption(state, catalog, s.policy, option, data);
    state = result.state;
    const action = result.action;
    if (result.refusal) {
      // A plaintext client at a TLS-only listener is worth an operator's attention.
      const level = result.notice || (s.policy.tlsRequired && !state.tls) ? "warn" : "debug";
      s.log[level]({ option, refusal: result.refusal }, "option refused");
    }
    for (const b of action.out) await writeAll(s.transport, b);
    switch (action.kind) {
      case "reply":
        break;
      case "close":
        s.log.info({ reason: action.reason }, "handshake ended");
        return undefined;
      case "starttls": {
        if (!opts.startTls) throw new ProtocolError("STARTTLS acknowledged without TLS");
        if (input.start !== input.end) throw new ProtocolError("data sent before TLS handshake");
        let up;
        try {
          up = await opts.startTls(s.transport);
        } catch (err) {
          if (!(err instanceof ClientRefusedError) || err.transport === undefined) throw err;
          s.transport = err.transport;
          refused = err.message;
          s.log.warn({ reason: err.message }, "client refused");
          continue;
        }
        s.transport = up.transport;
        s.policy = { ...s.policy, access: up.access, forwarders: up.fromNode !== undefined };
        s.clientSerial = up.serial;
        s.fromNode = up.fromNode;
        s.log = s.log.child({ client: up.identity });
        s.log.info({ readPath: s.transport.readPath }, "TLS established");
        break;
      }
      case "transmission": {
        const exp = find(action.export.name);
        if (!exp) return undefined;
        const ctx: TransmissionContext = {
          size: exp.size,
          // The client's access may be read-only where the export is not: every write is
          // refused with EPERM, whatever the client does with the flags.
          readOnly: exp.readOnly || action.export.readOnly,
          structuredReplies: action.structuredReplies,
          baseAllocation: action.baseAllocation,
          maxPayload: C.MAX_REQUEST_SIZE,
          ...(action.forwarder ? { forwarder: action.forwarder } : {}),
        };
        s.log = s.log.child({ volume: exp.name, ...(exp.forwarder ? { forwarded: true } : {}) });
        s.log.info(
          {
            size: exp.size,
            structured: action.structuredReplies,
            flags: action.flags,
            ...(ctx.readOnly ? { readOnly: true } : {}),
            ...(ctx.forwarder ? { forwarderGeneration: ctx.forwarder.gen } : {}),
          },
          "client attached",
        );
        const fence = ctx.forwarder && exp.forwarders.register(ctx.forwarder.id, ctx.forwarder.gen);
        if (ctx.forwarder && !fence) {
          s.log.warn("forwarder table full: this connection is not fenced");
        }
        return { exp, ctx, ...(fence ? { fence } : {}) };
      }
    }
  }
}

/** An option error reply ("Option reply types", NBD_REP_ERR_*) with a message. */
function sendOptionError(
  t: Transport,
  option: number,
  type: number,
  message: string,
): Promise<void> {
  return writeAll(t, encodeOptionReply(option, type, enc.encode(message)));
}
