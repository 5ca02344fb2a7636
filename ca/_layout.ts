/**
 * The PKI directory layout (README.md, "Layout") and the small records stored in it.
 * @module
 */
import { join } from "node:path";
import { parseCertificates } from "./_keys.ts";
import type { Grant, Role } from "./_profile.ts";
import type { x509 } from "./_x509.ts";

/** The two certificates a node keeps for itself. */
export type LocalCert = "node" | "admin";
export const LOCAL_CERTS: readonly LocalCert[] = ["node", "admin"];

/** File names inside the PKI directory. */
export const FILES = {
  caCert: "ca.crt",
  caKey: "ca.key",
  caChain: "ca-chain.crt",
  bundle: "ca-bundle.crt",
  retired: "retired-cas.json",
  issued: "issued.jsonl",
  revoked: "revoked.jsonl",
  cert: (which: LocalCert) => `${which}.crt`,
  key: (which: LocalCert) => `${which}.key`,
  csr: (which: LocalCert) => `${which}.csr`,
  pendingKey: (which: LocalCert) => `${which}.key.pending`,
} as const;

/** Suffix of the files a CA rotation writes before renaming them into place. */
export const NEXT = ".next";

/** One line of issued.jsonl: every certificate this CA signed. */
export interface IssuedRecord {
  serial: string;
  subject: string;
  role: Role;
  name: string;
  /** The grants as texts (`db1`, `db1:ro`). */
  volumes: string[];
  /** The grants with the uuids they are bound to, when any is bound. */
  grants?: Grant[];
  notBefore: string;
  notAfter: string;
  /** Serial of the CA certificate that signed it. */
  issuerSerial: string;
  /** A node's own certificate (node.crt, admin.crt), made and renewed by that node: its name. */
  own?: string;
  /** Set in list() output from revoked.jsonl. */
  revokedAt?: string;
}

/** One line of revoked.jsonl. */
export interface RevocationRecord {
  serial: string;
  revokedAt: string;
  reason?: string;
}

/** A CA certificate rotated out, trusted until `trustUntil`. */
export interface RetiredCa {
  certPem: string;
  chainPem: string;
  retiredAt: string;
  trustUntil: string;
}

/**
 * Finishes a CA rotation interrupted by a crash. The rotation writes ca.key.next and
 * ca.crt.next, then renames the key, then the certificate; so a ca.crt.next means "finish
 * the renames" and a lone ca.key.next means "the rotation never happened".
 */
export async function recoverRotation(dir: string): Promise<void> {
  const exists = (f: string) => Deno.lstat(join(dir, f)).then(() => true, () => false);
  const certNext = await exists(FILES.caCert + NEXT);
  if (certNext) {
    if (await exists(FILES.caKey + NEXT)) {
      await Deno.rename(join(dir, FILES.caKey + NEXT), join(dir, FILES.caKey));
    }
    if (await exists(FILES.caChain + NEXT)) {
      await Deno.rename(join(dir, FILES.caChain + NEXT), join(dir, FILES.caChain));
    }
    await Deno.rename(join(dir, FILES.caCert + NEXT), join(dir, FILES.caCert));
  } else {
    for (const f of [FILES.caKey, FILES.caChain]) {
      await Deno.remove(join(dir, f + NEXT)).catch(() => {});
    }
  }
}

export interface OpenPkiOptions {
  /** This node's name: CN and DNS SAN of node.crt. */
  nodeName: string;
  /** Further DNS names for node.crt. */
  dnsNames?: readonly string[];
  /** The concrete IP addresses this node listens on (IP SANs of node.crt). */
  ipAddresses?: readonly string[];
  /** CN of admin.crt (default "admin"). */
  adminName?: string;
  /** Lifetime of leaves issued here (default 30 days). */
  leafTtlSeconds?: number;
  /** Lifetime of a root created here (default 10 years). */
  caTtlSeconds?: number;
  /** Time source (tests pass a fake clock). */
  clock?: () => Date;
}

/** PEM material for node:tls `createServer`/`connect` options. */
export interface TlsCredentials {
  key: string;
  /** The leaf, followed by the intermediates above it (bring-your-own intermediate). */
  cert: string;
  /** The trust bundle. */
  ca: string;
}

/**
 * The CAs trusted at `now`: `current` plus retired ones whose overlap has not ended; with
 * `withChains`, also the certificates above them (the trust bundle). Duplicates removed.
 */
export function trusted(
  current: readonly x509.X509Certificate[],
  chain: readonly x509.X509Certificate[],
  retired: readonly RetiredCa[],
  now: Date,
  withChains: boolean,
): x509.X509Certificate[] {
  const certs = [...current, ...(withChains ? chain : [])];
  for (const r of retired) {
    if (new Date(r.trustUntil).getTime() <= now.getTime()) continue;
    certs.push(...parseCertificates(r.certPem, FILES.retired));
    if (withChains && r.chainPem.trim()) {
      certs.push(...parseCertificates(r.chainPem, FILES.retired));
    }
  }
  return certs.filter((c, i) => certs.findIndex((o) => o.equal(c)) === i);
}
