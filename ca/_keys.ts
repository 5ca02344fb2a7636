/**
 * Keys: generation (ECDSA P-256 via WebCrypto), PKCS#8 PEM import/export, the signature
 * algorithm that goes with a key, and random serial numbers.
 *
 * Error messages here name the file or format that is wrong, never key material.
 * @module
 */
import { InvalidArgumentError } from "../mod/errors.ts";
import { x509 } from "./_x509.ts";

/** The key algorithm Ballast generates. */
export const EC_P256: EcKeyGenParams = { name: "ECDSA", namedCurve: "P-256" };

/** A new ECDSA P-256 key pair (extractable, so that it can be written to disk). */
export function generateKeyPair(): Promise<CryptoKeyPair> {
  return crypto.subtle.generateKey(EC_P256, true, ["sign", "verify"]);
}

/** The signing algorithm (hash included) for a private key. */
export function signingAlgorithm(key: CryptoKey): EcdsaParams | Algorithm {
  const alg = key.algorithm as EcKeyAlgorithm | RsaHashedKeyAlgorithm;
  if (alg.name === "ECDSA") {
    const curve = (alg as EcKeyAlgorithm).namedCurve;
    const hash = curve === "P-384" ? "SHA-384" : curve === "P-521" ? "SHA-512" : "SHA-256";
    return { name: "ECDSA", hash } as EcdsaParams;
  }
  return { name: alg.name };
}

/** PKCS#8 PEM of a private key. */
export async function exportPrivateKeyPem(key: CryptoKey): Promise<string> {
  const der = await crypto.subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(der, "PRIVATE KEY");
}

/** The WebCrypto import parameters for the private key that matches `publicKey`. */
function importParams(publicKey: x509.PublicKey): EcKeyImportParams | RsaHashedImportParams {
  const alg = publicKey.algorithm as Algorithm & { namedCurve?: string };
  if (alg.name === "ECDSA" || alg.name === "ECDH") {
    return { name: "ECDSA", namedCurve: alg.namedCurve ?? "P-256" };
  }
  if (alg.name.startsWith("RSA")) return { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" };
  throw new InvalidArgumentError(`unsupported key algorithm ${alg.name}: use ECDSA or RSA`);
}

/**
 * Imports a PKCS#8 PEM private key. `publicKey` (from the matching certificate) selects the
 * algorithm; without it the key must be ECDSA P-256. `what` names the source in errors.
 */
export async function importPrivateKeyPem(
  pem: string,
  what: string,
  publicKey?: x509.PublicKey,
): Promise<CryptoKey> {
  const label = /-----BEGIN ([A-Z0-9 ]+)-----/.exec(pem)?.[1];
  if (label !== "PRIVATE KEY") {
    const hint = label === "ENCRYPTED PRIVATE KEY"
      ? "encrypted keys are not supported; decrypt it"
      : "convert it with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`";
    throw new InvalidArgumentError(
      `${what}: expected an unencrypted PKCS#8 PEM key (BEGIN PRIVATE KEY), ` +
        `got ${label ? `BEGIN ${label}` : "no PEM key"}; ${hint}`,
    );
  }
  const params = publicKey ? importParams(publicKey) : { name: "ECDSA", namedCurve: "P-256" };
  try {
    const der = x509.PemConverter.decodeFirst(pem);
    return await crypto.subtle.importKey("pkcs8", der, params, true, ["sign"]);
  } catch {
    // The underlying error is dropped on purpose: it never helps and must not leak key bytes.
    throw new InvalidArgumentError(`${what}: not a valid ${params.name} PKCS#8 private key`);
  }
}

/** Whether `privateKey` belongs to the certificate's (or CSR's) public key. */
export async function keyMatches(
  privateKey: CryptoKey,
  holder: x509.IPublicKeyContainer,
): Promise<boolean> {
  const data = crypto.getRandomValues(new Uint8Array(32));
  const alg = signingAlgorithm(privateKey);
  let publicKey: CryptoKey;
  try {
    publicKey = await holder.publicKey.export(
      privateKey.algorithm as EcKeyImportParams | RsaHashedImportParams,
      ["verify"],
    );
  } catch {
    return false; // different algorithm or curve
  }
  const sig = await crypto.subtle.sign(alg, privateKey, data);
  return crypto.subtle.verify(alg, publicKey, sig, data);
}

/**
 * A random positive 128-bit serial as hex (RFC 5280 section 4.1.2.2 allows up to 20 octets;
 * the generator adds a 0x00 octet when the top bit is set, so it stays positive).
 */
export function randomSerial(): string {
  const b = crypto.getRandomValues(new Uint8Array(16));
  if (b[0] === 0) b[0] = 1; // keep all 16 octets significant (minimal DER, fixed length)
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Canonical serial text: lower-case hex without leading zero octets. */
export function normalizeSerial(serial: string): string {
  const s = serial.toLowerCase().replace(/[^0-9a-f]/g, "").replace(/^(00)+(?=..)/, "");
  return s.length % 2 ? "0" + s : s;
}

/** The public half of a private key (via JWK, dropping the private members). */
export async function publicKeyOf(privateKey: CryptoKey): Promise<CryptoKey> {
  const jwk = await crypto.subtle.exportKey("jwk", privateKey);
  for (const k of ["d", "p", "q", "dp", "dq", "qi"] as const) delete jwk[k];
  jwk.key_ops = ["verify"];
  return await crypto.subtle.importKey(
    "jwk",
    jwk,
    privateKey.algorithm as EcKeyImportParams | RsaHashedImportParams,
    true,
    ["verify"],
  );
}

/** Parses every certificate in a PEM text; `what` names the source in errors. */
export function parseCertificates(pem: string, what: string): x509.X509Certificate[] {
  let out: x509.X509Certificate[];
  try {
    out = x509.PemConverter.decodeWithHeaders(pem)
      .filter((b) => b.type === "CERTIFICATE")
      .map((b) => new x509.X509Certificate(b.rawData));
  } catch (cause) {
    throw new InvalidArgumentError(`${what}: not a PEM certificate`, { cause });
  }
  if (out.length === 0) throw new InvalidArgumentError(`${what}: no CERTIFICATE block found`);
  return out;
}

/** PEM text of certificates, one block after the other. */
export function certificatesPem(certs: readonly x509.X509Certificate[]): string {
  return certs.map((c) => c.toString("pem").trim() + "\n").join("");
}
