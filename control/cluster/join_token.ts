/**
 * Join tokens (docs/TLS.md, "Joining a cluster"), pure parts: the token format, the hash
 * stored in etcd, and the check of a presented token against its stored record.
 *
 * A token is `ballast1.<id>.<secret>.<pin>`, like kubeadm's `<id>.<secret>` plus its
 * `--discovery-token-ca-cert-hash`:
 *
 *   id      6 characters [a-z0-9], the etcd key of the record (not secret)
 *   secret  32 hex digits (128 random bits); etcd keeps only its SHA-256
 *   pin     64 hex digits, SHA-256 of the cluster CA certificate (DER): the joiner checks
 *           the CA it is about to trust against it before it sends anything
 *
 * A presented token is refused with a stable reason (`details.reason` of the API error):
 * JOIN_TOKEN_INVALID (unknown id or wrong secret: a forged token), JOIN_TOKEN_EXPIRED,
 * JOIN_TOKEN_USED (single use) and JOIN_TOKEN_CA_MISMATCH (the token is for another CA).
 * The secret never appears in errors or logs.
 * @module
 */

import { BallastError, InvalidArgumentError } from "../../mod/errors.ts";

export const TOKEN_VERSION = "ballast1";
const ID = /^[a-z0-9]{6}$/;
const SECRET = /^[0-9a-f]{32}$/;
const PIN = /^[0-9a-f]{64}$/;
const ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";

/** A parsed join token. */
export interface JoinToken {
  id: string;
  secret: string;
  /** SHA-256 (hex) of the cluster CA certificate's DER. */
  caPin: string;
}

/** What etcd keeps for a token: never the secret, only its hash. */
export interface JoinTokenRecord {
  id: string;
  secretSha256: string;
  createdAt: string;
  expiresAt: string;
  /** Who made it (the admin certificate's name). */
  createdBy?: string;
  /** Set when a node joined with it (single use). */
  usedAt?: string;
  usedBy?: string;
  /**
   * HMAC-SHA256 (hex) with the cluster KEK over id, secretSha256 and expiresAt (recordMac):
   * only a member can make a record a join accepts, not whoever can write to etcd.
   */
  mac?: string;
}

/** The MAC of a token record's id, secret hash and expiry under the cluster KEK. */
export async function recordMac(
  kek: Uint8Array,
  r: Pick<JoinTokenRecord, "id" | "secretSha256" | "expiresAt">,
): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    kek as BufferSource,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const text = `ballast join token\n${r.id}\n${r.secretSha256}\n${r.expiresAt}`;
  const mac = await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(text));
  return toHex(new Uint8Array(mac));
}

/** Stable reasons a join is refused (API `details.reason`). */
export type JoinRefusal =
  | "JOIN_TOKEN_INVALID"
  | "JOIN_TOKEN_EXPIRED"
  | "JOIN_TOKEN_USED"
  | "JOIN_TOKEN_CA_MISMATCH";

/** `ballast1.<id>.<secret>.<pin>`. */
export function formatJoinToken(t: JoinToken): string {
  return `${TOKEN_VERSION}.${t.id}.${t.secret}.${t.caPin}`;
}

/**
 * Parses a token; `source` names where it came from (flag, env, body field) in errors. The
 * error never repeats the token, which holds a secret.
 */
export function parseJoinToken(text: string, source = "--join"): JoinToken {
  const parts = text.trim().split(".");
  const bad = (why: string) =>
    new InvalidArgumentError(
      `invalid ${source}: ${why}; expected ${TOKEN_VERSION}.<id>.<secret>.<ca-pin> as printed ` +
        "by `ballast cluster join-token`",
      { field: source.replace(/^--/, "") },
    );
  if (parts.length !== 4 || parts[0] !== TOKEN_VERSION) throw bad("not a Ballast join token");
  const [, id, secret, caPin] = parts;
  if (!ID.test(id)) throw bad("the id is not 6 characters a-z0-9");
  if (!SECRET.test(secret)) throw bad("the secret is not 32 hex digits");
  if (!PIN.test(caPin)) throw bad("the CA pin is not 64 hex digits (SHA-256)");
  return { id, secret, caPin };
}

/** A new token for the CA with `caPin`; `random` fills bytes (tests pass a fixed source). */
export function newJoinToken(
  caPin: string,
  random: (b: Uint8Array) => Uint8Array = (b) => crypto.getRandomValues(b),
): JoinToken {
  if (!PIN.test(caPin)) throw new InvalidArgumentError("CA pin must be 64 hex digits");
  // 36^6 > 2^31: unbiased enough for an identifier (it is not the secret).
  const idBytes = random(new Uint8Array(6));
  const id = Array.from(idBytes, (b) => ID_ALPHABET[b % ID_ALPHABET.length]).join("");
  return { id, secret: toHex(random(new Uint8Array(16))), caPin };
}

export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** SHA-256 (hex) of bytes or of a string's UTF-8. */
export async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  return toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes as BufferSource)));
}

/** The pin of a CA certificate: SHA-256 (hex) of its DER. */
export function caPinOf(certDer: ArrayBuffer | Uint8Array): Promise<string> {
  return sha256Hex(certDer instanceof Uint8Array ? certDer : new Uint8Array(certDer));
}

/** Equality of two hex strings in time independent of where they differ. */
export function constantTimeEqual(a: string, b: string): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    diff |= (a.charCodeAt(i) || 0) ^ (b.charCodeAt(i) || 0);
  }
  return diff === 0;
}

/** A join refusal as an API error: 401 (or 403 for the CA pin) with `details.reason`. */
export function joinRefused(reason: JoinRefusal, message: string): BallastError {
  return new BallastError(
    reason === "JOIN_TOKEN_CA_MISMATCH" ? "PERMISSION_DENIED" : "UNAUTHENTICATED",
    `join token refused (${reason}): ${message}`,
    { details: { reason } },
  );
}

/**
 * Checks a presented token against its record (undefined: no such id) at `now`, for a
 * cluster whose CA pin is `clusterPin`. `secretSha256` is the hash of the presented secret.
 * Order matters: a wrong secret says nothing about whether the id exists, was used or expired.
 */
export function checkJoinToken(
  record: JoinTokenRecord | undefined,
  token: JoinToken,
  secretSha256: string,
  clusterPin: string,
  now: Date,
): { ok: true } | { ok: false; error: BallastError } {
  if (!record || !constantTimeEqual(record.secretSha256, secretSha256)) {
    return {
      ok: false,
      error: joinRefused(
        "JOIN_TOKEN_INVALID",
        `unknown token id ${token.id} or wrong secret (a forged or mistyped token)`,
      ),
    };
  }
  if (!constantTimeEqual(token.caPin, clusterPin)) {
    return {
      ok: false,
      error: joinRefused(
        "JOIN_TOKEN_CA_MISMATCH",
        `token ${token.id} pins another CA than this cluster's (sha256 ${clusterPin})`,
      ),
    };
  }
  if (record.usedAt !== undefined) {
    return {
      ok: false,
      error: joinRefused(
        "JOIN_TOKEN_USED",
        `token ${token.id} was already used${record.usedBy ? ` by node ${record.usedBy}` : ""} ` +
          `at ${record.usedAt}; tokens are single-use: make a new one with ` +
          "`ballast cluster join-token`",
      ),
    };
  }
  if (now.getTime() >= Date.parse(record.expiresAt)) {
    return {
      ok: false,
      error: joinRefused(
        "JOIN_TOKEN_EXPIRED",
        `token ${token.id} expired at ${record.expiresAt}; make a new one with ` +
          "`ballast cluster join-token`",
      ),
    };
  }
  return { ok: true };
}
