/**
 * verifyPeer: the one certificate check every Ballast endpoint runs after a TLS handshake.
 * node:tls server-side STARTTLS completes handshakes with foreign-CA certificates
 * (PLATFORM.md, TLS), so endpoints must not rely on the handshake alone.
 *
 * Trust is pinned to Ballast's issuing CAs: the peer's certificate must be signed directly by
 * one of `roots`. With a bring-your-own intermediate, `roots` holds the intermediate, not the
 * operator's root, so other certificates under that root are not Ballast identities.
 * @module
 */
import { errorMessage } from "../mod/errors.ts";
import { certificateVersion } from "./_der.ts";
import { normalizeSerial } from "./_keys.ts";
import { type Eku, EKU_OID, type Identity, readIdentity, type Role } from "./_profile.ts";
import { x509 } from "./_x509.ts";

/** Why a peer certificate was refused. */
export type VerifyFailure =
  | "malformed"
  | "v1-certificate"
  | "untrusted"
  | "ca-expired"
  | "expired"
  | "not-yet-valid"
  | "revoked"
  | "not-a-leaf"
  | "key-usage"
  | "extended-key-usage"
  | "no-role"
  | "wrong-role";

/** What verifyPeer checks against. */
export interface VerifyPeerOptions {
  /** The time to check validity at. */
  now: Date;
  /** Ballast's issuing CAs (Pki.trustedRoots()): PEM, DER or parsed. */
  roots: readonly (x509.X509Certificate | string | Uint8Array)[];
  /** Revoked serials (hex, any case, with or without colons). */
  revokedSerials?: Iterable<string>;
  /** The purpose the peer must be certified for. */
  requiredEku: Eku;
  /** Roles accepted at this endpoint (default: any Ballast role). */
  allowedRoles?: readonly Role[];
}

/** A verified peer: its identity plus certificate facts for logs. */
export interface PeerIdentity extends Identity {
  serial: string;
  notAfter: Date;
}

export type VerifyResult =
  | { ok: true; identity: PeerIdentity }
  | { ok: false; code: VerifyFailure; reason: string };

function fail(code: VerifyFailure, reason: string): VerifyResult {
  return { ok: false, code, reason };
}

function toBytes(input: string | Uint8Array | ArrayBuffer): Uint8Array<ArrayBuffer> {
  if (typeof input !== "string") return new Uint8Array(input);
  return new Uint8Array(x509.PemConverter.decodeFirst(input));
}

function parse(input: x509.X509Certificate | string | Uint8Array): x509.X509Certificate {
  return input instanceof x509.X509Certificate ? input : new x509.X509Certificate(toBytes(input));
}

/** The certificate in `roots` whose key signed `cert`, if any. */
async function findIssuer(
  cert: x509.X509Certificate,
  roots: readonly x509.X509Certificate[],
): Promise<x509.X509Certificate | undefined> {
  for (const root of roots) {
    if (root.subject !== cert.issuer) continue;
    const ok = await cert.verify({ publicKey: root, signatureOnly: true }).catch(() => false);
    if (ok) return root;
  }
  return undefined;
}

/**
 * Checks a peer certificate (DER or PEM; only the first PEM block is read). Never throws:
 * every problem is a `{ ok: false }` with a reason fit for a log line and a client error.
 */
export async function verifyPeer(
  cert: string | Uint8Array | ArrayBuffer,
  options: VerifyPeerOptions,
): Promise<VerifyResult> {
  let der: Uint8Array<ArrayBuffer>;
  let c: x509.X509Certificate;
  let version: number;
  try {
    der = toBytes(cert);
    c = new x509.X509Certificate(der);
    version = certificateVersion(der);
  } catch (err) {
    return fail("malformed", `certificate does not parse: ${errorMessage(err)}`);
  }
  const who = `certificate "${c.subject}" (serial ${normalizeSerial(c.serialNumber)})`;
  if (version !== 3) return fail("v1-certificate", `${who} is X.509 v${version}; v3 is required`);

  let roots: x509.X509Certificate[];
  try {
    roots = options.roots.map(parse);
  } catch (err) {
    return fail("untrusted", `a configured trusted CA does not parse: ${errorMessage(err)}`);
  }
  const issuer = await findIssuer(c, roots);
  if (!issuer) {
    return fail("untrusted", `${who} is not signed by a trusted Ballast CA (issuer "${c.issuer}")`);
  }
  const now = options.now.getTime();
  if (now < c.notBefore.getTime()) {
    return fail("not-yet-valid", `${who} is not valid before ${c.notBefore.toISOString()}`);
  }
  if (now > c.notAfter.getTime()) {
    return fail("expired", `${who} expired at ${c.notAfter.toISOString()}`);
  }
  if (now < issuer.notBefore.getTime() || now > issuer.notAfter.getTime()) {
    return fail("ca-expired", `${who}: issuing CA "${issuer.subject}" is outside its validity`);
  }
  const serial = normalizeSerial(c.serialNumber);
  for (const r of options.revokedSerials ?? []) {
    if (normalizeSerial(r) === serial) return fail("revoked", `${who} is revoked`);
  }
  if (c.getExtension(x509.BasicConstraintsExtension)?.ca) {
    return fail("not-a-leaf", `${who} is a CA certificate, not a peer certificate`);
  }
  const ku = c.getExtension(x509.KeyUsagesExtension);
  if (ku && !(ku.usages & x509.KeyUsageFlags.digitalSignature)) {
    return fail("key-usage", `${who}: keyUsage lacks digitalSignature`);
  }
  const eku = c.getExtension(x509.ExtendedKeyUsageExtension);
  if (!eku) {
    return fail(
      "extended-key-usage",
      `${who} has no extendedKeyUsage (needs ${options.requiredEku})`,
    );
  }
  if (!(eku.usages as string[]).includes(EKU_OID[options.requiredEku])) {
    return fail("extended-key-usage", `${who} is not certified for ${options.requiredEku}`);
  }
  const id = readIdentity(c);
  if (typeof id === "string") return fail("no-role", `${who}: ${id}`);
  if (options.allowedRoles && !options.allowedRoles.includes(id.role)) {
    return fail(
      "wrong-role",
      `${who} has role ${id.role}; this endpoint accepts ${options.allowedRoles.join(", ")}`,
    );
  }
  return { ok: true, identity: { ...id, serial, notAfter: c.notAfter } };
}
