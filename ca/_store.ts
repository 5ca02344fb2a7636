/**
 * The PKI directory of one node (README.md): the CA, the node's own certificates (kept by
 * _local_certs.ts), the trust bundle, the issued index and revocations. `openPki()` creates what is missing on
 * first use and loads it afterwards. One process owns a directory at a time.
 * @module
 */
import { join } from "node:path";
import { FailedPreconditionError } from "../mod/errors.ts";
import {
  adoptCa,
  type CaMaterial,
  checkCaCertificate,
  createInternalCa,
  rotateCa,
  type RotateCaOptions,
} from "./_ca_files.ts";
import { PUBLIC_MODE, readOptional, writeAtomic } from "./_fs.ts";
import {
  type CsrPolicy,
  DEFAULT_LEAF_TTL_SECONDS,
  issueLeaf,
  type Issuer,
  signCsr,
} from "./_issue.ts";
import {
  certificatesPem,
  exportPrivateKeyPem,
  generateKeyPair,
  importPrivateKeyPem,
  keyMatches,
  parseCertificates,
} from "./_keys.ts";
import {
  FILES,
  type IssuedRecord,
  LOCAL_CERTS,
  type LocalCert,
  type OpenPkiOptions,
  recoverRotation,
  type RetiredCa,
  type RevocationRecord,
  type TlsCredentials,
  trusted,
} from "./_layout.ts";
import { type LeafSpec, normalizeSpec } from "./_profile.ts";
import { verifyPeer, type VerifyPeerOptions, type VerifyResult } from "./_verify.ts";
import { LocalCerts } from "./_local_certs.ts";
import { Registry } from "./_registry.ts";
import type { x509 } from "./_x509.ts";

/** internal: Ballast's own root; intermediate: an operator's CA key; external: no CA key. */
export type PkiMode = "internal" | "intermediate" | "external";

/** Opens (creating on first use) the PKI directory `dir`. */
export async function openPki(dir: string, options: OpenPkiOptions): Promise<Pki> {
  normalizeSpec({ role: "node", name: options.nodeName, ...options });
  normalizeSpec({ role: "admin", name: options.adminName ?? "admin" });
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await recoverRotation(dir);
  const clock = options.clock ?? (() => new Date());
  if (await readOptional(join(dir, FILES.caCert)) === undefined) {
    await createInternalCa(dir, { now: clock(), ttlSeconds: options.caTtlSeconds });
  }
  const pki = new Pki(dir, options, clock);
  await pki.reload();
  for (const which of LOCAL_CERTS) await pki.ensureLocal(which);
  await pki.writeBundle();
  return pki;
}

export type { OpenPkiOptions, TlsCredentials };

export class Pki {
  #mode: PkiMode = "external";
  #caCerts: x509.X509Certificate[] = [];
  #caKey?: CryptoKey;
  #chain: x509.X509Certificate[] = [];
  #retired: RetiredCa[] = [];
  readonly #locals: LocalCerts;
  #registry: Registry;
  #onIssued?: (rec: IssuedRecord) => void | Promise<void>;

  /** Use openPki(). */
  constructor(
    readonly dir: string,
    readonly options: OpenPkiOptions,
    readonly clock: () => Date,
  ) {
    this.#registry = new Registry(dir);
    this.#locals = new LocalCerts({
      dir,
      clock: () => this.clock(),
      spec: (which) => this.#spec(which),
      canIssue: () => this.#caKey !== undefined,
      requireIssuer: () => void this.#issuer(),
      issue: (spec, publicKey) => this.#issueAndRecord(spec, publicKey, undefined, true),
      leafPem: (cert) => this.#leafPem(cert),
      verify: (cert, options) => this.verify(cert, options),
    });
  }

  #path(file: string): string {
    return join(this.dir, file);
  }

  /** Lifetime of leaves issued here. */
  get leafTtlSeconds(): number {
    return this.options.leafTtlSeconds ?? DEFAULT_LEAF_TTL_SECONDS;
  }

  get mode(): PkiMode {
    return this.#mode;
  }

  /** The current issuing CA certificate(s) (ca.crt). */
  get caCertificates(): readonly x509.X509Certificate[] {
    return this.#caCerts;
  }

  /** Re-reads the CA, retired CAs and revocations from disk (e.g. after another process wrote). */
  async reload(): Promise<void> {
    const caPem = await readOptional(this.#path(FILES.caCert));
    if (caPem === undefined) throw new FailedPreconditionError(`no ${FILES.caCert} in ${this.dir}`);
    this.#caCerts = parseCertificates(caPem, FILES.caCert);
    const chainPem = await readOptional(this.#path(FILES.caChain)) ?? "";
    this.#chain = chainPem.trim() ? parseCertificates(chainPem, FILES.caChain) : [];
    const keyPem = await readOptional(this.#path(FILES.caKey));
    this.#caKey = undefined;
    this.#mode = "external";
    if (keyPem !== undefined) {
      const [cert] = this.#caCerts;
      checkCaCertificate(cert, FILES.caCert);
      const key = await importPrivateKeyPem(keyPem, FILES.caKey, cert.publicKey);
      if (!(await keyMatches(key, cert))) {
        throw new FailedPreconditionError(`${FILES.caKey} does not match ${FILES.caCert}`);
      }
      this.#caKey = key;
      this.#mode = (await cert.isSelfSigned()) ? "internal" : "intermediate";
    }
    const retired = await readOptional(this.#path(FILES.retired));
    this.#retired = retired ? JSON.parse(retired) as RetiredCa[] : [];
    await this.#registry.load();
  }

  /** The signing CA, or an error naming the mode when there is no CA key. */
  #issuer(): Issuer {
    if (!this.#caKey) {
      throw new FailedPreconditionError(
        "this node has no CA key (external mode): sign certificates with your CA",
        { mode: this.#mode },
      );
    }
    return { cert: this.#caCerts[0], key: this.#caKey, chain: this.#chain };
  }

  /** Issuing CAs trusted at `now`: the current ones and retired ones still in overlap. */
  trustedRoots(now: Date = this.clock()): x509.X509Certificate[] {
    return trusted(this.#caCerts, [], this.#retired, now, false);
  }

  /** ca-bundle.crt: every trusted issuing CA and the chain above it, for TLS libraries. */
  trustBundlePem(now: Date = this.clock()): string {
    return certificatesPem(trusted(this.#caCerts, this.#chain, this.#retired, now, true));
  }

  /**
   * Rewrites ca-bundle.crt (after rotation, and to drop roots whose overlap ended) when its
   * content changes: nothing is written on a check that changes nothing (a full disk, say).
   */
  async writeBundle(): Promise<void> {
    const pem = this.trustBundlePem();
    if (await readOptional(this.#path(FILES.bundle)) === pem) return;
    await writeAtomic(this.#path(FILES.bundle), pem, PUBLIC_MODE);
  }

  #spec(which: LocalCert): LeafSpec {
    const o = this.options;
    return which === "node"
      ? { role: "node", name: o.nodeName, dnsNames: o.dnsNames, ipAddresses: o.ipAddresses }
      : { role: "admin", name: o.adminName ?? "admin" };
  }

  /** The leaf followed by the intermediates a peer needs to reach the operator's root. */
  #leafPem(cert: x509.X509Certificate): string {
    const intermediates = this.#mode === "intermediate" ? [this.#caCerts[0], ...this.#chain] : [];
    return certificatesPem([cert, ...intermediates.filter((c) => c.subject !== c.issuer)]);
  }

  async #issueAndRecord(
    spec: LeafSpec,
    publicKey: CryptoKey | x509.PublicKey,
    ttl?: number,
    own = false,
  ) {
    const cert = await issueLeaf(this.#issuer(), publicKey, spec, {
      now: this.clock(),
      ttlSeconds: ttl ?? this.leafTtlSeconds,
    });
    const who = own ? this.options.nodeName : undefined;
    await this.#recorded(await this.#registry.record(cert, this.#caCerts[0], who));
    return cert;
  }

  async #recorded(rec: IssuedRecord): Promise<void> {
    await this.#onIssued?.(rec);
  }

  /**
   * Calls `listener` after each certificate issued here is recorded in issued.jsonl (a
   * cluster shares it through etcd). Certificates issued before the call are not replayed.
   */
  onIssued(listener: ((rec: IssuedRecord) => void | Promise<void>) | undefined): void {
    this.#onIssued = listener;
  }

  /** Loads node.crt/admin.crt, issuing (or requesting, in external mode) what is missing. */
  ensureLocal(which: LocalCert): Promise<void> {
    return this.#locals.ensure(which);
  }

  /** The node's own certificate and key, or undefined while it awaits import (external). */
  local(which: LocalCert): { cert: x509.X509Certificate; key: CryptoKey } | undefined {
    const l = this.#locals.get(which);
    return l && { cert: l.cert, key: l.key };
  }

  /** PEM key, certificate chain and trust bundle for node:tls. */
  credentials(which: LocalCert): TlsCredentials {
    const l = this.#locals.get(which);
    if (!l) {
      throw new FailedPreconditionError(
        `${FILES.cert(which)} is not installed yet: sign ${FILES.csr(which)} and import it`,
      );
    }
    return { key: l.keyPem, cert: l.certPem, ca: this.trustBundlePem() };
  }

  /** Local certificates still waiting for an externally signed certificate. */
  pending(): LocalCert[] {
    return this.#locals.pending();
  }

  /**
   * Issues a leaf (e.g. for an NBD consumer). Without `publicKey` a new key is generated and
   * returned as `keyPem` for the caller to hand over; it is not stored here.
   */
  async issue(
    spec: LeafSpec,
    options: { ttlSeconds?: number; publicKey?: CryptoKey } = {},
  ): Promise<{ cert: x509.X509Certificate; certPem: string; keyPem?: string }> {
    normalizeSpec(spec);
    this.#issuer();
    const keys = options.publicKey ? undefined : await generateKeyPair();
    const cert = await this.#issueAndRecord(
      spec,
      options.publicKey ?? keys!.publicKey,
      options.ttlSeconds,
    );
    const keyPem = keys && await exportPrivateKeyPem(keys.privateKey);
    return { cert, certPem: this.#leafPem(cert), ...(keyPem ? { keyPem } : {}) };
  }

  /** Signs a CSR under `policy` (see signCsr) and records it. */
  async signCsr(
    csrPem: string,
    policy: CsrPolicy,
    options: { ttlSeconds?: number } = {},
  ): Promise<{ cert: x509.X509Certificate; certPem: string }> {
    const cert = await signCsr(this.#issuer(), csrPem, policy, {
      now: this.clock(),
      ttlSeconds: options.ttlSeconds ?? this.leafTtlSeconds,
    });
    await this.#recorded(await this.#registry.record(cert, this.#caCerts[0]));
    return { cert, certPem: this.#leafPem(cert) };
  }

  /** Every certificate issued here, with revokedAt filled in. */
  list(): Promise<IssuedRecord[]> {
    return this.#registry.list();
  }

  /** Revokes a serial (idempotent); verify() refuses it from now on. */
  revoke(serial: string, reason?: string): Promise<RevocationRecord> {
    return this.#registry.revoke(serial, this.clock(), reason);
  }

  /**
   * Adds revocations made elsewhere (another cluster member) to revoked.jsonl; verify()
   * refuses them from now on. Returns the ones that were new here.
   */
  mergeRevocations(records: readonly RevocationRecord[]): Promise<RevocationRecord[]> {
    return this.#registry.merge(records);
  }

  /** The revocation of `serial`, if it is revoked here. */
  revocation(serial: string): RevocationRecord | undefined {
    return this.#registry.revocation(serial);
  }

  /** Revoked serials (normalized hex). */
  revokedSerials(): Set<string> {
    return this.#registry.serials();
  }

  /** verifyPeer against this directory's trusted CAs and revocations. */
  verify(
    cert: string | Uint8Array,
    options: Omit<VerifyPeerOptions, "roots" | "revokedSerials" | "now"> & { now?: Date },
  ): Promise<VerifyResult> {
    const now = options.now ?? this.clock();
    return verifyPeer(cert, {
      ...options,
      now,
      roots: this.trustedRoots(now),
      revokedSerials: this.#registry.serials(),
    });
  }

  /** Reissues node.crt or admin.crt under the current CA, with the same key or a new one. */
  renew(which: LocalCert, options: { newKey?: boolean } = {}): Promise<x509.X509Certificate> {
    return this.#locals.renew(which, options);
  }

  /**
   * Renews local certificates past `fraction` of their life or no longer valid (revoked,
   * CA rotated). External mode writes a CSR instead. Returns what was renewed or requested.
   */
  async renewDue(fraction = 2 / 3): Promise<LocalCert[]> {
    const done = await this.#locals.renewDue(fraction);
    await this.writeBundle();
    return done;
  }

  /** Writes a new key (pending) and CSR for node/admin; returns the CSR PEM. */
  createCsr(which: LocalCert): Promise<string> {
    return this.#locals.createCsr(which);
  }

  /**
   * Installs an externally signed node/admin certificate (PEM, optionally followed by its
   * chain). It must match the pending or current key, carry the right role and verify
   * against the trusted CAs.
   */
  importSigned(which: LocalCert, certPem: string): Promise<void> {
    return this.#locals.importSigned(which, certPem);
  }

  /**
   * Cluster mode: takes the cluster's current CA and the CAs it retired (trusted until their
   * `trustUntil`), and reissues node.crt and admin.crt if they are not from the current CA.
   * Returns whether anything changed (then the TLS contexts need reloading).
   */
  async adoptCa(
    material: CaMaterial & { keyPem: string },
    retired: readonly RetiredCa[],
  ): Promise<boolean> {
    const before = this.trustBundlePem();
    let changed = await adoptCa(this.dir, material, retired, this.clock());
    await this.reload();
    // Also after a restart, when the files were adopted before openPki(): a local certificate
    // from a retired root is still trusted, but it moves to the current one now.
    const ca = this.#caCerts[0];
    for (const which of LOCAL_CERTS) {
      const l = this.#locals.get(which);
      const current = l !== undefined &&
        await l.cert.verify({ publicKey: ca, signatureOnly: true }).catch(() => false);
      if (current) continue;
      await this.renew(which);
      changed = true;
    }
    await this.writeBundle();
    return changed || this.trustBundlePem() !== before;
  }

  /**
   * Rotates the CA: a new root (or the given BYO/external CA), the old one trusted for
   * `overlapSeconds` (default: the leaf TTL), node/admin reissued under the new CA.
   */
  async rotateCa(options: RotateCaOptions = {}): Promise<void> {
    await rotateCa(this.dir, this.#mode, {
      ...options,
      now: this.clock(),
      overlapSeconds: options.overlapSeconds ?? this.leafTtlSeconds,
      caTtlSeconds: this.options.caTtlSeconds,
    });
    await this.reload();
    if (this.#caKey) { for (const which of LOCAL_CERTS) await this.renew(which); }
    await this.writeBundle();
  }
}
