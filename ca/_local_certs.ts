/**
 * The node's own certificates in a PKI directory, node.crt and admin.crt with their keys:
 * loading them, issuing what is missing or no longer right, renewing, and in external CA
 * mode the CSR and the import of what the operator's CA signed. The Pki (_store.ts) holds
 * the CA; these ask it to issue and to verify.
 * @module
 */

import { join } from "node:path";
import { FailedPreconditionError, InvalidArgumentError } from "../mod/errors.ts";
import { KEY_MODE, PUBLIC_MODE, readOptional, writeAtomic } from "./_fs.ts";
import { createCsr, needsRenewal } from "./_issue.ts";
import {
  certificatesPem,
  exportPrivateKeyPem,
  generateKeyPair,
  importPrivateKeyPem,
  keyMatches,
  parseCertificates,
  publicKeyOf,
} from "./_keys.ts";
import { FILES, LOCAL_CERTS, type LocalCert } from "./_layout.ts";
import { type LeafSpec, normalizeSpec, readIdentity, type Role, ROLE_EKUS } from "./_profile.ts";
import type { VerifyPeerOptions, VerifyResult } from "./_verify.ts";
import type { x509 } from "./_x509.ts";

/** A local certificate as loaded: PEM and parsed forms of the certificate and its key. */
export interface LocalCertificate {
  cert: x509.X509Certificate;
  certPem: string;
  key: CryptoKey;
  keyPem: string;
}

/** What the local certificates need from the Pki that holds the CA. */
export interface LocalIssuer {
  readonly dir: string;
  clock(): Date;
  /** The subject node.crt or admin.crt must have. */
  spec(which: LocalCert): LeafSpec;
  /** Whether there is a CA key here (else external mode: CSRs for the operator's CA). */
  canIssue(): boolean;
  /** Throws, naming the mode, when there is no CA key. */
  requireIssuer(): void;
  /** Issues a leaf for `publicKey` and records it in the issued index. */
  issue(spec: LeafSpec, publicKey: CryptoKey): Promise<x509.X509Certificate>;
  /** The leaf followed by the intermediates a peer needs. */
  leafPem(cert: x509.X509Certificate): string;
  /** verifyPeer against the Pki's trusted CAs and revocations. */
  verify(
    cert: string | Uint8Array,
    options: Omit<VerifyPeerOptions, "roots" | "revokedSerials" | "now"> & { now?: Date },
  ): Promise<VerifyResult>;
}

/** node.crt and admin.crt of one PKI directory. */
export class LocalCerts {
  readonly #ca: LocalIssuer;
  readonly #local = new Map<LocalCert, LocalCertificate>();

  constructor(ca: LocalIssuer) {
    this.#ca = ca;
  }

  #path(file: string): string {
    return join(this.#ca.dir, file);
  }

  /** Why a local certificate must be reissued now, or undefined if it is fine. */
  async problem(which: LocalCert, cert: x509.X509Certificate): Promise<string | undefined> {
    const spec = normalizeSpec(this.#ca.spec(which));
    for (const eku of ROLE_EKUS[spec.role]) {
      const r = await this.#ca.verify(cert.toString("pem"), { requiredEku: eku });
      if (!r.ok) return r.reason;
    }
    const id = readIdentity(cert);
    if (typeof id === "string") return id;
    if (id.role !== spec.role || id.name !== spec.name) return "role or name changed";
    const missing = [
      ...spec.dnsNames.filter((d) => !id.dnsNames.includes(d)),
      ...spec.ipAddresses.filter((ip) => !id.ipAddresses.includes(ip)),
    ];
    return missing.length ? `names missing: ${missing.join(", ")}` : undefined;
  }

  /** Loads node.crt/admin.crt, issuing (or requesting, in external mode) what is missing. */
  async ensure(which: LocalCert): Promise<void> {
    const certPem = await readOptional(this.#path(FILES.cert(which)));
    const keyPem = await readOptional(this.#path(FILES.key(which)));
    if (certPem === undefined || keyPem === undefined) {
      if (this.#ca.canIssue()) return void await this.#issue(which, await generateKeyPair());
      const pending = await readOptional(this.#path(FILES.pendingKey(which)));
      if (pending === undefined) await this.createCsr(which);
      return;
    }
    const cert = parseCertificates(certPem, FILES.cert(which))[0];
    let key = await importPrivateKeyPem(keyPem, FILES.key(which), cert.publicKey);
    if (!(await keyMatches(key, cert))) {
      // A crash between writing the key and the certificate: reconcile, never guess.
      const pendingPem = await readOptional(this.#path(FILES.pendingKey(which)));
      const pending = pendingPem && await importPrivateKeyPem(pendingPem, FILES.pendingKey(which));
      if (pending && await keyMatches(pending, cert)) {
        await Deno.rename(this.#path(FILES.pendingKey(which)), this.#path(FILES.key(which)));
        key = pending;
      } else if (this.#ca.canIssue()) {
        return void await this.#issue(which, {
          privateKey: key,
          publicKey: await publicKeyOf(key),
        });
      } else {
        throw new FailedPreconditionError(
          `${FILES.key(which)} does not match ${FILES.cert(which)}`,
        );
      }
    }
    this.#local.set(which, { cert, certPem, key, keyPem: await exportPrivateKeyPem(key) });
    if (this.#ca.canIssue() && await this.problem(which, cert)) {
      await this.#issue(which, { privateKey: key, publicKey: await publicKeyOf(key) });
    }
  }

  async #issue(which: LocalCert, keys: CryptoKeyPair): Promise<x509.X509Certificate> {
    const cert = await this.#ca.issue(this.#ca.spec(which), keys.publicKey);
    const keyPem = await exportPrivateKeyPem(keys.privateKey);
    const certPem = this.#ca.leafPem(cert);
    await writeAtomic(this.#path(FILES.key(which)), keyPem, KEY_MODE);
    await writeAtomic(this.#path(FILES.cert(which)), certPem, PUBLIC_MODE);
    this.#local.set(which, { cert, certPem, key: keys.privateKey, keyPem });
    return cert;
  }

  /** The node's own certificate and key, or undefined while it awaits import (external). */
  get(which: LocalCert): LocalCertificate | undefined {
    return this.#local.get(which);
  }

  /** Local certificates still waiting for an externally signed certificate. */
  pending(): LocalCert[] {
    return LOCAL_CERTS.filter((w) => !this.#local.has(w));
  }

  /** Reissues node.crt or admin.crt under the current CA, with the same key or a new one. */
  async renew(which: LocalCert, options: { newKey?: boolean } = {}): Promise<x509.X509Certificate> {
    this.#ca.requireIssuer();
    const l = this.#local.get(which);
    const keys = options.newKey || !l
      ? await generateKeyPair()
      : { privateKey: l.key, publicKey: await publicKeyOf(l.key) };
    return await this.#issue(which, keys);
  }

  /**
   * Renews local certificates past `fraction` of their life or no longer valid (revoked,
   * CA rotated). External mode writes a CSR instead. Returns what was renewed or requested.
   */
  async renewDue(fraction: number): Promise<LocalCert[]> {
    const done: LocalCert[] = [];
    for (const which of LOCAL_CERTS) {
      const l = this.#local.get(which);
      const problem = l ? await this.problem(which, l.cert) : undefined;
      if (l && !needsRenewal(l.cert, this.#ca.clock(), fraction) && !problem) continue;
      // A revoked certificate gets a new key too: it may have been revoked because its key
      // leaked, and a certificate for the same key would give the leak back its access.
      const revoked = problem?.endsWith(" is revoked") ?? false;
      if (this.#ca.canIssue()) await this.renew(which, { newKey: revoked });
      else if (await readOptional(this.#path(FILES.csr(which))) === undefined) {
        await this.createCsr(which);
      } else continue;
      done.push(which);
    }
    return done;
  }

  /** Writes a new key (pending) and CSR for node/admin; returns the CSR PEM. */
  async createCsr(which: LocalCert): Promise<string> {
    const { csrPem, keys } = await createCsr(this.#ca.spec(which));
    await writeAtomic(
      this.#path(FILES.pendingKey(which)),
      await exportPrivateKeyPem(keys.privateKey),
      KEY_MODE,
    );
    await writeAtomic(this.#path(FILES.csr(which)), csrPem + "\n", PUBLIC_MODE);
    return csrPem;
  }

  /**
   * Installs an externally signed node/admin certificate (PEM, optionally followed by its
   * chain). It must match the pending or current key, carry the right role and verify
   * against the trusted CAs.
   */
  async importSigned(which: LocalCert, certPem: string): Promise<void> {
    const certs = parseCertificates(certPem, "imported certificate");
    const cert = certs[0];
    const pendingPem = await readOptional(this.#path(FILES.pendingKey(which)));
    const current = this.#local.get(which);
    const pending = pendingPem === undefined
      ? undefined
      : await importPrivateKeyPem(pendingPem, FILES.pendingKey(which));
    const key = pending && await keyMatches(pending, cert)
      ? pending
      : current && await keyMatches(current.key, cert)
      ? current.key
      : undefined;
    if (!key) {
      const id = readIdentity(cert);
      const other = which === "node" ? "admin" : "node";
      const hint = typeof id !== "string" && id.role === other
        ? `: it is an ${other} certificate (role ${id.role}); import it with --which ${other}`
        : "";
      throw new InvalidArgumentError(
        `imported certificate does not match ${FILES.pendingKey(which)} or ` +
          `${FILES.key(which)}${hint}`,
      );
    }
    const role: Role = which === "node" ? "node" : "admin";
    for (const eku of ROLE_EKUS[role]) {
      const r = await this.#ca.verify(certPem, { requiredEku: eku, allowedRoles: [role] });
      if (!r.ok) throw new InvalidArgumentError(`imported certificate refused: ${r.reason}`);
    }
    const pem = certificatesPem(certs);
    await writeAtomic(this.#path(FILES.cert(which)), pem, PUBLIC_MODE);
    if (key === pending) {
      await Deno.rename(this.#path(FILES.pendingKey(which)), this.#path(FILES.key(which)));
    }
    await Deno.remove(this.#path(FILES.csr(which))).catch(() => {});
    this.#local.set(which, { cert, certPem: pem, key, keyPem: await exportPrivateKeyPem(key) });
  }
}
