/**
 * Encryption at rest of the cluster CA key in etcd (docs/TLS.md, "Joining a cluster"):
 * AES-256-GCM through WebCrypto under a random 256-bit key-encryption key (KEK). The KEK
 * lives only in each member's data dir (`pki/cluster.kek`, 0600), never in etcd, and is
 * handed to a joining node over its verified TLS channel.
 *
 * The additional authenticated data binds the ciphertext to the CA certificate's pin, so a
 * sealed key cannot be swapped under another certificate unnoticed. Errors never carry key
 * material.
 * @module
 */

import type { RetiredCa } from "../../ca/mod.ts";
import { FailedPreconditionError, InvalidArgumentError } from "../../mod/errors.ts";

export const KEK_BYTES = 32;
const IV_BYTES = 12;
export const SEAL_ALG = "AES-256-GCM";

/** The CA key as stored in etcd. */
export interface SealedKey {
  alg: typeof SEAL_ALG;
  /** base64, 96 bits. */
  iv: string;
  /** base64: the PKCS#8 PEM encrypted, GCM tag appended. */
  ciphertext: string;
}

/** The cluster CA record at `/ballast/cluster/ca`. */
export interface ClusterCaRecord {
  version: 1;
  /** The issuing CA certificate (PEM), in clear. */
  certPem: string;
  /** Certificates above it (bring-your-own intermediate), PEM, possibly empty. */
  chainPem: string;
  /** SHA-256 (hex) of the certificate's DER: what join tokens pin. */
  pin: string;
  /** The CA's private key, sealed under the KEK. */
  key: SealedKey;
  createdAt: string;
  /** The node that created (or uploaded) it. */
  createdBy: string;
  /**
   * CAs rotated out (`ballast ca rotate`), still trusted by every member until their
   * `trustUntil`; absent before the first rotation.
   */
  retired?: RetiredCa[];
}

export function newKek(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(KEK_BYTES));
}

export function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export function fromBase64(text: string, what: string): Uint8Array {
  let bin: string;
  try {
    bin = atob(text.trim());
  } catch {
    throw new InvalidArgumentError(`${what} is not base64`);
  }
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** Decodes a KEK (base64 of 32 bytes); `what` names its origin in errors. */
export function decodeKek(text: string, what: string): Uint8Array {
  const kek = fromBase64(text, what);
  if (kek.length !== KEK_BYTES) {
    throw new InvalidArgumentError(`${what} is not a 256-bit key (${kek.length} bytes)`);
  }
  return kek;
}

function aad(pin: string): Uint8Array {
  return new TextEncoder().encode(`ballast cluster CA key; ca sha256 ${pin}`);
}

function importKek(kek: Uint8Array, use: "encrypt" | "decrypt"): Promise<CryptoKey> {
  return crypto.subtle.importKey("raw", kek as BufferSource, { name: "AES-GCM" }, false, [use]);
}

/** Encrypts the CA key PEM under the KEK, bound to the CA certificate's pin. */
export async function sealCaKey(kek: Uint8Array, keyPem: string, pin: string): Promise<SealedKey> {
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const ct = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: aad(pin) as BufferSource },
    await importKek(kek, "encrypt"),
    new TextEncoder().encode(keyPem),
  );
  return { alg: SEAL_ALG, iv: toBase64(iv), ciphertext: toBase64(new Uint8Array(ct)) };
}

/**
 * Decrypts the CA key. A wrong KEK, a tampered ciphertext or a ciphertext moved under another
 * certificate all fail the GCM tag and give the same FailedPreconditionError.
 */
export async function openCaKey(kek: Uint8Array, sealed: SealedKey, pin: string): Promise<string> {
  if (sealed?.alg !== SEAL_ALG) {
    throw new FailedPreconditionError(
      `the cluster CA key in etcd is sealed with ${JSON.stringify(sealed?.alg)}, not ${SEAL_ALG}`,
    );
  }
  let plain: ArrayBuffer;
  try {
    plain = await crypto.subtle.decrypt(
      {
        name: "AES-GCM",
        iv: fromBase64(sealed.iv, "sealed CA key iv") as BufferSource,
        additionalData: aad(pin) as BufferSource,
      },
      await importKek(kek, "decrypt"),
      fromBase64(sealed.ciphertext, "sealed CA key") as BufferSource,
    );
  } catch {
    throw new FailedPreconditionError(
      "cannot decrypt the cluster CA key from etcd with this node's key-encryption key " +
        "(pki/cluster.kek): the data dir belongs to another cluster, or the record was altered",
    );
  }
  return new TextDecoder().decode(plain);
}

/** Parses and checks the shape of a stored CA record; `key` names it in errors. */
export function parseCaRecord(value: string, key: string): ClusterCaRecord {
  let r: ClusterCaRecord;
  try {
    r = JSON.parse(value) as ClusterCaRecord;
  } catch {
    throw new FailedPreconditionError(`etcd key ${key} is not a JSON cluster CA record`);
  }
  if (
    r?.version !== 1 || typeof r.certPem !== "string" || typeof r.pin !== "string" ||
    typeof r.key?.iv !== "string" || typeof r.key?.ciphertext !== "string"
  ) {
    throw new FailedPreconditionError(`etcd key ${key} is not a version 1 cluster CA record`);
  }
  const retired = r.retired ?? [];
  if (
    !Array.isArray(retired) ||
    !retired.every((c) =>
      typeof c?.certPem === "string" && typeof c.trustUntil === "string" &&
      !Number.isNaN(Date.parse(c.trustUntil))
    )
  ) {
    throw new FailedPreconditionError(`etcd key ${key}: "retired" is not a list of retired CAs`);
  }
  return {
    ...r,
    chainPem: typeof r.chainPem === "string" ? r.chainPem : "",
    retired: retired.map((c) => ({
      certPem: c.certPem,
      chainPem: typeof c.chainPem === "string" ? c.chainPem : "",
      retiredAt: typeof c.retiredAt === "string" ? c.retiredAt : c.trustUntil,
      trustUntil: c.trustUntil,
    })),
  };
}
