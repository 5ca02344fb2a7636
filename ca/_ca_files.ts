/**
 * The CA files of a PKI directory: creating Ballast's own root, installing an operator's CA
 * (bring your own: an intermediate with its key, or only CA certificates for external
 * signing), and rotating to a new CA with an overlap.
 * @module
 */
import { join } from "node:path";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
} from "../mod/errors.ts";
import { certificateVersion } from "./_der.ts";
import { KEY_MODE, PUBLIC_MODE, readOptional, writeAtomic } from "./_fs.ts";
import { createRootCa } from "./_issue.ts";
import {
  exportPrivateKeyPem,
  importPrivateKeyPem,
  keyMatches,
  parseCertificates,
} from "./_keys.ts";
import { FILES, NEXT, recoverRotation, type RetiredCa } from "./_layout.ts";
import { x509 } from "./_x509.ts";

/** Operator-supplied CA material (PEM). */
export interface CaMaterial {
  /** The issuing CA certificate; in external mode (no key) one or more CA certificates. */
  certPem: string;
  /** Its PKCS#8 private key; omit for external mode. */
  keyPem?: string;
  /** Certificates above the CA up to the operator's root, nearest first. */
  chainPem?: string;
}

export interface RotateCaOptions extends Partial<CaMaterial> {
  /** How long the old CA stays trusted (default: the leaf TTL). */
  overlapSeconds?: number;
}

/** Refuses certificates that cannot act as a CA (v3, basicConstraints CA:TRUE, keyCertSign). */
export function checkCaCertificate(cert: x509.X509Certificate, what: string): void {
  const v = certificateVersion(new Uint8Array(cert.rawData));
  if (v !== 3) throw new InvalidArgumentError(`${what}: "${cert.subject}" is X.509 v${v}, not v3`);
  if (!cert.getExtension(x509.BasicConstraintsExtension)?.ca) {
    throw new InvalidArgumentError(`${what}: "${cert.subject}" is not a CA (basicConstraints)`);
  }
  const ku = cert.getExtension(x509.KeyUsagesExtension);
  if (ku && !(ku.usages & x509.KeyUsageFlags.keyCertSign)) {
    throw new InvalidArgumentError(`${what}: "${cert.subject}" lacks keyUsage keyCertSign`);
  }
}

/** Checks operator CA material: CA certificates, a matching key, a chain that links up. */
async function checkMaterial(m: CaMaterial, now: Date): Promise<void> {
  const certs = parseCertificates(m.certPem, "CA certificate");
  for (const c of certs) checkCaCertificate(c, "CA certificate");
  if (m.keyPem !== undefined) {
    if (certs.length !== 1) {
      throw new InvalidArgumentError("with a CA key, give exactly one CA certificate");
    }
    const key = await importPrivateKeyPem(m.keyPem, "CA key", certs[0].publicKey);
    if (!(await keyMatches(key, certs[0]))) {
      throw new InvalidArgumentError("the CA key does not match the CA certificate");
    }
  }
  const t = now.getTime();
  if (certs.some((c) => t < c.notBefore.getTime() || t > c.notAfter.getTime())) {
    throw new InvalidArgumentError("a CA certificate is not valid now");
  }
  const chain = m.chainPem?.trim() ? parseCertificates(m.chainPem, "CA chain") : [];
  let below = certs[0];
  for (const c of chain) {
    checkCaCertificate(c, "CA chain");
    const linked = below.issuer === c.subject &&
      await below.verify({ publicKey: c, signatureOnly: true }).catch(() => false);
    if (!linked) {
      throw new InvalidArgumentError(
        `CA chain: "${below.subject}" is not signed by "${c.subject}"`,
      );
    }
    below = c;
  }
}

/** Creates Ballast's own root in an empty directory. */
export async function createInternalCa(
  dir: string,
  options: { now: Date; ttlSeconds?: number },
): Promise<void> {
  const { cert, keys } = await createRootCa(options);
  // Key first: ca.crt is what marks the CA as present.
  await writeAtomic(join(dir, FILES.caKey), await exportPrivateKeyPem(keys.privateKey), KEY_MODE);
  await writeAtomic(join(dir, FILES.caCert), cert.toString("pem") + "\n", PUBLIC_MODE);
}

/**
 * Bring your own CA: installs an operator's CA into a directory that has none yet. With
 * `keyPem` this node issues under it ("intermediate" mode); without, certificates are
 * signed outside Ballast ("external" mode). Run before the first openPki().
 */
export async function installCa(
  dir: string,
  material: CaMaterial,
  now = new Date(),
): Promise<void> {
  await checkMaterial(material, now);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  if (await readOptional(join(dir, FILES.caCert)) !== undefined) {
    throw new AlreadyExistsError("CA certificate", join(dir, FILES.caCert));
  }
  if (material.keyPem !== undefined) {
    await writeAtomic(join(dir, FILES.caKey), material.keyPem.trim() + "\n", KEY_MODE);
  } else {
    await Deno.remove(join(dir, FILES.caKey)).catch(() => {});
  }
  await writeAtomic(join(dir, FILES.caChain), material.chainPem?.trim() ?? "", PUBLIC_MODE);
  await writeAtomic(join(dir, FILES.caCert), material.certPem.trim() + "\n", PUBLIC_MODE);
}

/**
 * Replaces the CA: the old certificate (and chain) moves to the retired list, trusted for
 * `overlapSeconds`; the new one is written as *.next files and renamed into place (see
 * recoverRotation for the crash rules).
 */
export async function rotateCa(
  dir: string,
  mode: "internal" | "intermediate" | "external",
  options: RotateCaOptions & { now: Date; overlapSeconds: number; caTtlSeconds?: number },
): Promise<void> {
  const { now, overlapSeconds } = options;
  if (!Number.isFinite(overlapSeconds) || overlapSeconds < 0) {
    throw new InvalidArgumentError(`invalid overlapSeconds ${overlapSeconds}`, {
      field: "overlapSeconds",
    });
  }
  let next: CaMaterial;
  if (options.certPem !== undefined) {
    const m = { certPem: options.certPem, keyPem: options.keyPem, chainPem: options.chainPem };
    if (mode !== "external" && m.keyPem === undefined) {
      throw new InvalidArgumentError("this node signs certificates: rotating needs the new CA key");
    }
    await checkMaterial(m, now);
    next = m;
  } else if (mode === "internal") {
    const { cert, keys } = await createRootCa({ now, ttlSeconds: options.caTtlSeconds });
    next = { certPem: cert.toString("pem"), keyPem: await exportPrivateKeyPem(keys.privateKey) };
  } else {
    throw new FailedPreconditionError(
      `this node's CA is yours (mode ${mode}), so Ballast does not make a new one: ` +
        (mode === "intermediate"
          ? "sign a new intermediate under your root and rotate to it with `ballast ca rotate " +
            "--ca-cert NEW.crt --ca-key NEW.key [--ca-chain ROOT.crt]`"
          : "rotate to your new CA with `ballast ca rotate --ca-cert NEW.crt`, then have it " +
            "sign the node's and admin's certificates (ca csr, ca import)") +
        " (API: certPem, keyPem, chainPem)",
      { mode },
    );
  }
  const oldCert = await readOptional(join(dir, FILES.caCert));
  if (oldCert === undefined) throw new FailedPreconditionError("no CA to rotate");
  // The overlap bounds every CA retired before too: a rotation because a key leaked (a short
  // overlap) must not leave an older CA trusted for the rest of a longer one.
  const trustUntil = new Date(now.getTime() + overlapSeconds * 1000).toISOString();
  const retired = (await readRetired(dir, now)).map((r) =>
    Date.parse(r.trustUntil) > Date.parse(trustUntil) ? { ...r, trustUntil } : r
  );
  retired.push({
    certPem: oldCert,
    chainPem: await readOptional(join(dir, FILES.caChain)) ?? "",
    retiredAt: now.toISOString(),
    trustUntil,
  });
  await writeRetired(dir, retired);
  await replaceCa(dir, next);
}

/**
 * Cluster mode: makes `material` (the cluster's current CA, with its key) this directory's CA,
 * and trusts the CAs the cluster retired until their own `trustUntil`, merged with those this
 * directory retired itself. The local CA it replaces is not kept unless the cluster retired
 * it. Returns whether the CA files changed (then reload and reissue the local certificates).
 */
export async function adoptCa(
  dir: string,
  material: CaMaterial & { keyPem: string },
  clusterRetired: readonly RetiredCa[],
  now: Date,
): Promise<boolean> {
  await checkMaterial(material, now);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await recoverRotation(dir);
  // The cluster's record says until when a CA it retired is trusted (a later rotation may
  // have shortened it); a CA only this directory retired keeps its own date.
  const byCert = new Map<string, RetiredCa>();
  for (const r of [...await readRetired(dir, now), ...clusterRetired]) {
    const key = r.certPem.trim();
    if (key === material.certPem.trim()) continue;
    byCert.set(key, r);
  }
  for (const [key, r] of byCert) if (new Date(r.trustUntil) <= now) byCert.delete(key);
  const retired = [...byCert.values()];
  const retiredText = await readOptional(join(dir, FILES.retired));
  if (retiredText === undefined ? retired.length > 0 : retiredText !== retiredJson(retired)) {
    await writeRetired(dir, retired);
  }
  const same = async (file: string, text: string | undefined) =>
    (await readOptional(join(dir, file)) ?? "").trim() === (text ?? "").trim();
  if (
    await same(FILES.caCert, material.certPem) && await same(FILES.caKey, material.keyPem) &&
    await same(FILES.caChain, material.chainPem)
  ) {
    return false;
  }
  await replaceCa(dir, material);
  return true;
}

/** The retired CAs still trusted at `now`. */
async function readRetired(dir: string, now: Date): Promise<RetiredCa[]> {
  const text = await readOptional(join(dir, FILES.retired));
  return (text ? JSON.parse(text) as RetiredCa[] : [])
    .filter((r) => new Date(r.trustUntil).getTime() > now.getTime());
}

function retiredJson(retired: readonly RetiredCa[]): string {
  return JSON.stringify(retired, null, 2) + "\n";
}

async function writeRetired(dir: string, retired: readonly RetiredCa[]): Promise<void> {
  await writeAtomic(join(dir, FILES.retired), retiredJson(retired), PUBLIC_MODE);
}

/** Writes the next CA as *.next files and renames them into place (see recoverRotation). */
async function replaceCa(dir: string, next: CaMaterial): Promise<void> {
  if (next.keyPem !== undefined) {
    await writeAtomic(join(dir, FILES.caKey + NEXT), next.keyPem.trim() + "\n", KEY_MODE);
  }
  await writeAtomic(join(dir, FILES.caChain + NEXT), next.chainPem?.trim() ?? "", PUBLIC_MODE);
  await writeAtomic(join(dir, FILES.caCert + NEXT), next.certPem.trim() + "\n", PUBLIC_MODE);
  await recoverRotation(dir);
}
