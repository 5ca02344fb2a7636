/**
 * Issuing: the self-signed root, leaf certificates for each role, PKCS#10 requests and
 * signing them under a policy, renewal. Pure functions over keys and certificates; the
 * on-disk store is in _store.ts.
 * @module
 */
import { BallastError, InvalidArgumentError } from "../mod/errors.ts";
import { generateKeyPair, randomSerial, signingAlgorithm } from "./_keys.ts";
import {
  ALL_VOLUMES,
  EKU_OID,
  grantText,
  type LeafSpec,
  leafSubject,
  normalizeSpec,
  readIdentity,
  type Role,
  ROLE_EKUS,
  specAltNames,
} from "./_profile.ts";
import { x509 } from "./_x509.ts";

export const DAY_SECONDS = 86_400;
/** Leaf lifetime unless configured. */
export const DEFAULT_LEAF_TTL_SECONDS = 30 * DAY_SECONDS;
/** Root CA lifetime unless configured. */
export const DEFAULT_CA_TTL_SECONDS = 3650 * DAY_SECONDS;
/** notBefore is set this far before "now" to tolerate clock skew between hosts. */
export const BACKDATE_SECONDS = 60;

/** A CA that can sign: its certificate, its private key, and the chain above it (BYO). */
export interface Issuer {
  cert: x509.X509Certificate;
  key: CryptoKey;
  /** Certificates above `cert` up to the operator's root (empty for a Ballast root). */
  chain?: readonly x509.X509Certificate[];
}

/** Lifetime and clock for one issuance. */
export interface IssueOptions {
  /** Lifetime in seconds (default 30 days for leaves, 10 years for a root). */
  ttlSeconds?: number;
  /** The time to issue at (default: the current time). */
  now?: Date;
}

function checkTtl(ttl: number): number {
  if (!Number.isFinite(ttl) || ttl <= 0) {
    throw new InvalidArgumentError(`invalid ttlSeconds ${ttl}: expected a positive number`, {
      field: "ttlSeconds",
    });
  }
  return ttl;
}

/** Creates a self-signed v3 root CA with a new ECDSA P-256 key unless `keys` is given. */
export async function createRootCa(
  options: IssueOptions & { commonName?: string; pathLength?: number; keys?: CryptoKeyPair } = {},
): Promise<{ cert: x509.X509Certificate; keys: CryptoKeyPair }> {
  const now = options.now ?? new Date();
  const ttl = checkTtl(options.ttlSeconds ?? DEFAULT_CA_TTL_SECONDS);
  const keys = options.keys ?? await generateKeyPair();
  const serialNumber = randomSerial();
  // Distinct names per root: during a rotation overlap two roots sit in one trust store, and
  // TLS libraries look issuers up by name first.
  const cn = options.commonName ?? `Ballast CA ${serialNumber.slice(0, 8)}`;
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber,
    name: [{ CN: [cn] }, { O: ["Ballast"] }],
    notBefore: new Date(now.getTime() - BACKDATE_SECONDS * 1000),
    notAfter: new Date(now.getTime() + ttl * 1000),
    keys,
    signingAlgorithm: signingAlgorithm(keys.privateKey),
    extensions: [
      new x509.BasicConstraintsExtension(true, options.pathLength ?? 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys };
}

/**
 * Issues a v3 leaf for `spec` over `publicKey`, signed by `issuer`. notAfter is capped at the
 * issuer's own notAfter.
 */
export async function issueLeaf(
  issuer: Issuer,
  publicKey: CryptoKey | x509.PublicKey,
  spec: LeafSpec,
  options: IssueOptions = {},
): Promise<x509.X509Certificate> {
  const s = normalizeSpec(spec);
  const now = options.now ?? new Date();
  const ttl = checkTtl(options.ttlSeconds ?? DEFAULT_LEAF_TTL_SECONDS);
  const notAfter = Math.min(now.getTime() + ttl * 1000, issuer.cert.notAfter.getTime());
  return await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: leafSubject(s),
    issuer: issuer.cert.subjectName,
    notBefore: new Date(now.getTime() - BACKDATE_SECONDS * 1000),
    notAfter: new Date(notAfter),
    publicKey,
    signingKey: issuer.key,
    signingAlgorithm: signingAlgorithm(issuer.key),
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(ROLE_EKUS[s.role].map((e) => EKU_OID[e]), false),
      new x509.SubjectAlternativeNameExtension(specAltNames(s), false),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
      await authorityKeyId(issuer.cert),
    ],
  });
}

/** authorityKeyIdentifier = the issuer's subjectKeyIdentifier (RFC 5280 section 4.2.1.1). */
async function authorityKeyId(ca: x509.X509Certificate): Promise<x509.Extension> {
  const ski = ca.getExtension(x509.SubjectKeyIdentifierExtension);
  if (ski) return new x509.AuthorityKeyIdentifierExtension(ski.keyId, false);
  return await x509.AuthorityKeyIdentifierExtension.create(ca.publicKey, false);
}

/** A new key (unless given) and a PKCS#10 request for `spec`, signed by that key. */
export async function createCsr(
  spec: LeafSpec,
  keys?: CryptoKeyPair,
): Promise<{ csr: x509.Pkcs10CertificateRequest; csrPem: string; keys: CryptoKeyPair }> {
  const s = normalizeSpec(spec);
  const k = keys ?? await generateKeyPair();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: leafSubject(s),
    keys: k,
    signingAlgorithm: signingAlgorithm(k.privateKey),
    extensions: [new x509.SubjectAlternativeNameExtension(specAltNames(s), false)],
  });
  return { csr, csrPem: csr.toString("pem"), keys: k };
}

/** What a CSR may obtain. Names and grants not listed here are refused. */
export interface CsrPolicy {
  /** The role to grant; a CSR asking for another role is refused. */
  role: Role;
  /** The CN the CSR must carry (e.g. the node name bound to a join token). */
  name?: string;
  /** DNS names the CSR may request (a node's own name is always allowed). */
  dnsNames?: readonly string[];
  /** IP addresses the CSR may request, or "any". */
  ipAddresses?: readonly string[] | "any";
  /**
   * nbd-client: grant texts that may be granted (`*` allows any; `db1` allows `db1` and
   * `db1:ro`; `db1:ro` only `db1:ro`). Default: none.
   */
  volumes?: readonly string[];
  /**
   * nbd-client: binds the granted volumes to their incarnation: volume name -> the uuid the
   * certificate's grant then carries. Grants of names not listed are bound by name.
   */
  bind?: Readonly<Record<string, string>>;
}

function denied(message: string): BallastError {
  return new BallastError("PERMISSION_DENIED", `CSR refused: ${message}`);
}

/**
 * Signs a PKCS#10 request after checking its signature and that everything it asks for is
 * allowed by `policy`. Extensions other than the names are never copied from the request:
 * basicConstraints, keyUsage and extendedKeyUsage come from the role.
 */
export async function signCsr(
  issuer: Issuer,
  csrPem: string,
  policy: CsrPolicy,
  options: IssueOptions = {},
): Promise<x509.X509Certificate> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (cause) {
    throw new InvalidArgumentError("not a PKCS#10 certificate request (PEM or DER)", { cause });
  }
  if (!(await csr.verify().catch(() => false))) {
    throw new InvalidArgumentError("CSR signature does not verify");
  }
  const id = readIdentity(csr);
  if (typeof id === "string") throw denied(id);
  if (id.role !== policy.role) {
    throw denied(`asks for role ${id.role}, policy grants ${policy.role}`);
  }
  if (policy.name !== undefined && id.name !== policy.name) {
    throw denied(
      `name ${JSON.stringify(id.name)} is not the expected ${JSON.stringify(policy.name)}`,
    );
  }
  const dnsOk = new Set((policy.dnsNames ?? []).map((d) => d.toLowerCase()));
  if (id.role === "node") dnsOk.add(id.name.toLowerCase());
  for (const d of id.dnsNames) {
    if (!dnsOk.has(d.toLowerCase())) throw denied(`DNS name ${d} is not allowed`);
  }
  for (const ip of id.ipAddresses) {
    if (policy.ipAddresses !== "any" && !(policy.ipAddresses ?? []).includes(ip)) {
      throw denied(`IP address ${ip} is not allowed`);
    }
  }
  const grantable = policy.volumes ?? [];
  for (const g of id.grants) {
    const ok = grantable.includes(ALL_VOLUMES) || grantable.includes(g.volume) ||
      (g.readOnly && grantable.includes(grantText(g)));
    if (!ok) throw denied(`volume ${JSON.stringify(grantText(g))} is not grantable`);
  }
  // A request names volumes; the incarnation bound to is the signer's to say, never the CSR's.
  const grants = id.grants.map(({ volume, readOnly }) => {
    const uuid = policy.bind?.[volume];
    return uuid === undefined ? { volume, readOnly } : { volume, readOnly, uuid };
  });
  return await issueLeaf(issuer, csr.publicKey, { ...id, grants }, options);
}

/**
 * Whether a certificate has used up `fraction` of its lifetime at `now` (default: two
 * thirds, so a 30-day certificate renews after 20 days).
 */
export function needsRenewal(
  cert: x509.X509Certificate,
  now: Date = new Date(),
  fraction = 2 / 3,
): boolean {
  // The lifetime counts from when the certificate was issued: notBefore is set BACKDATE_SECONDS
  // earlier for clock skew, which would otherwise make a short-lived certificate (--cert-ttl 30s)
  // due at once, and renewed at every check.
  const end = cert.notAfter.getTime();
  const issued = Math.min(cert.notBefore.getTime() + BACKDATE_SECONDS * 1000, end);
  return now.getTime() >= issued + (end - issued) * fraction;
}

/**
 * Reissues a leaf with the same role, name, names and grants. With `keys` the new
 * certificate is for that key (key rotation); otherwise for the old certificate's key.
 */
export async function renewLeaf(
  issuer: Issuer,
  cert: x509.X509Certificate,
  options: IssueOptions & { keys?: CryptoKeyPair } = {},
): Promise<x509.X509Certificate> {
  const id = readIdentity(cert);
  if (typeof id === "string") throw new InvalidArgumentError(`cannot renew: ${id}`);
  const publicKey = options.keys?.publicKey ?? cert.publicKey;
  return await issueLeaf(issuer, publicKey, id, options);
}
