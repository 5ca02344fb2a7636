/**
 * The greeting that opens every peer connection, after the TLS handshake, as ordinary frames
 * holding one small JSON object each:
 *
 *     client -> server   {"hello":"ballast-peer/1"}
 *     server -> client   {"welcome":"ballast-peer/1"}   or   {"refused":"<reason>"}
 *
 * The server answers only once it has verified the client's certificate, so connectPeer
 * resolves only for a connection both sides accept, and a refused client learns why instead
 * of seeing a bare close. Pure functions.
 * @module
 */

export const PEER_PROTOCOL = "ballast-peer/1";
/** A greeting frame is tiny; anything longer is not one. */
export const MAX_GREETING_BYTES = 4096;

export type Greeting =
  | { kind: "hello" }
  | { kind: "welcome" }
  | { kind: "refused"; reason: string }
  | { kind: "invalid"; detail: string };

const enc = new TextEncoder();

export function encodeHello(): Uint8Array {
  return enc.encode(JSON.stringify({ hello: PEER_PROTOCOL }));
}

export function encodeWelcome(): Uint8Array {
  return enc.encode(JSON.stringify({ welcome: PEER_PROTOCOL }));
}

export function encodeRefusal(reason: string): Uint8Array {
  return enc.encode(JSON.stringify({ refused: reason.slice(0, 1024) }));
}

/** Reads a greeting frame; anything unexpected is `invalid` with a printable detail. */
export function decodeGreeting(frame: Uint8Array): Greeting {
  if (frame.length > MAX_GREETING_BYTES) {
    return { kind: "invalid", detail: `a ${frame.length}-byte frame instead of a greeting` };
  }
  let msg: unknown;
  try {
    msg = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(frame));
  } catch {
    return { kind: "invalid", detail: "a greeting that is not JSON" };
  }
  if (typeof msg !== "object" || msg === null || Array.isArray(msg)) {
    return { kind: "invalid", detail: "a greeting that is not a JSON object" };
  }
  const m = msg as Record<string, unknown>;
  if (typeof m.refused === "string") return { kind: "refused", reason: m.refused };
  for (const kind of ["hello", "welcome"] as const) {
    if (kind in m) {
      return m[kind] === PEER_PROTOCOL
        ? { kind }
        : { kind: "invalid", detail: `unsupported protocol ${JSON.stringify(m[kind])}` };
    }
  }
  return { kind: "invalid", detail: "an unknown greeting" };
}
