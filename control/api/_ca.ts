/**
 * The CA routes under /v1/ca (admin only; _auth.ts enforces that).
 *
 * Clients generate their own keys: POST /v1/ca/certificates signs a CSR and never creates or
 * returns a private key. Role `node` is not issuable here; joining nodes get theirs through
 * the cluster's join-token flow. Revocations take effect at the next request or handshake on
 * every endpoint, because every endpoint verifies through the same Pki.
 * @module
 */

import { Hono } from "hono";
import {
  ALL_VOLUMES,
  type IssuedRecord,
  normalizeSerial,
  parseGrant,
  type Pki,
  readIdentity,
  resolveSerial,
  type Role,
  x509,
} from "../../ca/mod.ts";
import { parseDuration } from "../../mod/duration.ts";
import {
  BallastError,
  FailedPreconditionError,
  InvalidArgumentError,
  UnavailableError,
} from "../../mod/errors.ts";
import type {
  CaCertificateInfo,
  CaInfo,
  IssuedCertificate,
  List,
  Revocation,
  SignedCertificate,
} from "../../mod/types.ts";
import { caPinOf, type ClusterMember } from "../cluster/mod.ts";
import type { ApiEnv } from "./_auth.ts";
import { allowQuery, optionalBody, readJsonObject, rejectUnknownFields } from "./_validate.ts";

/** What the CA routes need from ApiDeps. */
export interface CaRouteDeps {
  pki?: Pki;
  /** This node (recorded as the rotating member in cluster mode). */
  nodeName: string;
  onCredentialsChanged?: () => void | Promise<void>;
  /** Cluster mode: list, revoke and rotate go through etcd (cluster/). */
  cluster?: ClusterMember;
  /** The volumes, to bind a certificate's grants to the volumes existing at issue time. */
  volumes?: { get(name: string): Promise<{ uuid: string }> };
}

/** Roles an admin may issue through the API. */
export const ISSUABLE_ROLES: readonly Role[] = ["admin", "nbd-client"];
const SERIAL = /^[0-9A-Fa-f:]{1,64}$/;
const MAX_PEM = 32 * 1024;

/** Upper-case, colon-separated SHA-256 of a certificate's DER (the join-token pin, spelled out). */
async function fingerprint(cert: x509.X509Certificate): Promise<string> {
  return (await caPinOf(cert.rawData)).toUpperCase().match(/../g)!.join(":");
}

async function describeCa(cert: x509.X509Certificate): Promise<CaCertificateInfo> {
  return {
    subject: cert.subject,
    issuer: cert.issuer,
    serial: normalizeSerial(cert.serialNumber),
    notBefore: cert.notBefore.toISOString(),
    notAfter: cert.notAfter.toISOString(),
    sha256Fingerprint: await fingerprint(cert),
  };
}

/** The body of GET /v1/ca. */
export async function caInfo(pki: Pki): Promise<CaInfo> {
  return {
    mode: pki.mode,
    certificates: await Promise.all(pki.caCertificates.map(describeCa)),
    trusted: await Promise.all(pki.trustedRoots().map(describeCa)),
    bundlePem: pki.trustBundlePem(),
    pending: pki.pending(),
  };
}

function pemField(body: Record<string, unknown>, field: string): string {
  const v = body[field];
  if (v === undefined) throw new InvalidArgumentError(`missing field "${field}"`, { field });
  if (typeof v !== "string" || !v.includes("-----BEGIN ")) {
    throw new InvalidArgumentError(`field "${field}" must be a PEM string`, { field });
  }
  if (v.length > MAX_PEM) {
    throw new InvalidArgumentError(`field "${field}" is longer than ${MAX_PEM} characters`, {
      field,
    });
  }
  return v;
}

function whichField(body: Record<string, unknown>): "node" | "admin" {
  const v = body.which ?? "node";
  if (v !== "node" && v !== "admin") {
    throw new InvalidArgumentError(`invalid which ${JSON.stringify(v)}: expected node or admin`, {
      field: "which",
    });
  }
  return v;
}

/** Validates a POST /v1/ca/certificates body; returns the CSR and what to grant. */
export function parseSignRequest(body: Record<string, unknown>): {
  csr: string;
  role: Role;
  name: string;
  volumes: string[];
  ttlSeconds?: number;
  anyIncarnation: boolean;
} {
  rejectUnknownFields(body, ["csr", "role", "name", "volumes", "ttl", "anyIncarnation"]);
  const csr = pemField(body, "csr");
  if (body.role === "node") {
    throw new InvalidArgumentError(
      "role node is not issuable here: joining nodes request their certificate with a join token",
      { field: "role" },
    );
  }
  if (!ISSUABLE_ROLES.includes(body.role as Role)) {
    throw new InvalidArgumentError(
      `invalid role ${JSON.stringify(body.role)}: expected ${ISSUABLE_ROLES.join(" or ")}`,
      { field: "role" },
    );
  }
  const role = body.role as Role;
  if (typeof body.name !== "string" || body.name === "") {
    throw new InvalidArgumentError('missing or non-string field "name"', { field: "name" });
  }
  let volumes: string[] = [];
  if (body.volumes !== undefined) {
    if (!Array.isArray(body.volumes) || body.volumes.some((v) => typeof v !== "string")) {
      throw new InvalidArgumentError('field "volumes" must be an array of volume names or "*"', {
        field: "volumes",
      });
    }
    volumes = body.volumes as string[];
    for (const v of volumes) parseGrant(v);
    if (role !== "nbd-client" && volumes.length > 0) {
      throw new InvalidArgumentError(`volume grants are only for role nbd-client, not ${role}`, {
        field: "volumes",
      });
    }
  }
  if (role === "nbd-client" && volumes.length === 0) {
    throw new InvalidArgumentError(
      'role nbd-client needs "volumes": the volumes the certificate may open, or ["*"] for ' +
        "all; a certificate without grants would open none",
      { field: "volumes" },
    );
  }
  const ttlSeconds = body.ttl === undefined ? undefined : parseDuration(body.ttl, "ttl");
  const any = body.anyIncarnation ?? false;
  if (typeof any !== "boolean") {
    throw new InvalidArgumentError('field "anyIncarnation" must be true or false', {
      field: "anyIncarnation",
    });
  }
  return { csr, role, name: body.name, volumes, ttlSeconds, anyIncarnation: any };
}

/**
 * Which granted volumes exist now, with their uuids: their grants are bound to them, so a
 * volume deleted and created again under the name is not opened (docs/TLS.md, "Volume
 * grants"). Names that do not exist yet, `*`, and every grant with `anyIncarnation`, are
 * bound by name.
 */
async function bindings(
  req: ReturnType<typeof parseSignRequest>,
  volumes: CaRouteDeps["volumes"],
): Promise<Record<string, string>> {
  const bind: Record<string, string> = {};
  if (req.anyIncarnation || !volumes) return bind;
  for (const { volume } of req.volumes.map(parseGrant)) {
    if (volume === ALL_VOLUMES) continue;
    try {
      bind[volume] = (await volumes.get(volume)).uuid;
    } catch (err) {
      if (!(err instanceof BallastError) || err.code !== "NOT_FOUND") throw err;
    }
  }
  return bind;
}

/** The CSR must ask for exactly the role, name and volumes of the request. */
function checkCsrMatches(req: ReturnType<typeof parseSignRequest>): void {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(req.csr);
  } catch (cause) {
    throw new InvalidArgumentError('field "csr" is not a PKCS#10 certificate request', {
      cause,
      field: "csr",
    });
  }
  const id = readIdentity(csr);
  if (typeof id === "string") throw new InvalidArgumentError(`CSR: ${id}`, { field: "csr" });
  const want = [...new Set(req.volumes)].sort().join(",");
  const got = [...new Set(id.volumes)].sort().join(",");
  const diff = id.role !== req.role
    ? `role ${id.role}, request says ${req.role}`
    : id.name !== req.name
    ? `name ${JSON.stringify(id.name)}, request says ${JSON.stringify(req.name)}`
    : want !== got
    ? `volumes [${got}], request says [${want}]`
    : undefined;
  if (diff) {
    throw new InvalidArgumentError(`the CSR does not match the request: it asks for ${diff}`, {
      field: "csr",
    });
  }
}

/** The /v1/ca sub-app. */
export function caRoutes(deps: CaRouteDeps): Hono<ApiEnv> {
  const app = new Hono<ApiEnv>();
  const pkiOf = (): Pki => {
    if (!deps.pki) {
      throw new FailedPreconditionError(
        "this node runs without TLS (no PKI): the CA endpoints are not available",
      );
    }
    return deps.pki;
  };
  const changed = async () => {
    await deps.onCredentialsChanged?.();
  };

  app.get("/", allowQuery(), async (c) => {
    return c.json(await caInfo(pkiOf()));
  });

  app.get("/certificates", allowQuery(), async (c) => {
    const pki = pkiOf();
    const shared = deps.cluster?.certificates;
    const body: List<IssuedCertificate> = {
      items: shared ? await shared.list() : await pki.list(),
    };
    return c.json(body);
  });

  app.post("/certificates", allowQuery(), async (c) => {
    const pki = pkiOf();
    const req = parseSignRequest(await readJsonObject(c));
    checkCsrMatches(req);
    const bind = await bindings(req, deps.volumes);
    const { cert, certPem } = await pki.signCsr(req.csr, {
      role: req.role,
      name: req.name,
      volumes: req.volumes,
      bind,
    }, { ttlSeconds: req.ttlSeconds });
    const id = readIdentity(cert);
    const serial = normalizeSerial(cert.serialNumber);
    c.get("log").info(
      { issued: serial, role: req.role, name: req.name, volumes: req.volumes, boundTo: bind },
      "client certificate issued",
    );
    const body: SignedCertificate = {
      certificatePem: certPem,
      caBundlePem: pki.trustBundlePem(),
      serial,
      role: typeof id === "string" ? req.role : id.role,
      name: req.name,
      volumes: typeof id === "string" ? req.volumes : id.volumes,
      grants: typeof id === "string" ? [] : id.grants,
      notAfter: cert.notAfter.toISOString(),
    };
    return c.json(body, 201);
  });

  app.post("/certificates/:serial/revoke", allowQuery(), async (c) => {
    const pki = pkiOf();
    let serial = c.req.param("serial");
    if (!SERIAL.test(serial)) {
      throw new InvalidArgumentError(`invalid serial ${JSON.stringify(serial)}: expected hex`, {
        field: "serial",
      });
    }
    const body = await optionalBody(c);
    rejectUnknownFields(body, ["reason"]);
    if (
      body.reason !== undefined && (typeof body.reason !== "string" || body.reason.length > 256)
    ) {
      throw new InvalidArgumentError('field "reason" must be a string of up to 256 characters', {
        field: "reason",
      });
    }
    const reason = body.reason as string | undefined;
    const shared = deps.cluster?.certificates;
    serial = await resolveKnownSerial(pki, shared, serial);
    let rec: Revocation;
    if (shared) {
      const r = await shared.revoke(serial, reason);
      rec = {
        ...r.record,
        alreadyRevoked: r.alreadyRevoked,
        ...(r.sharePending ? { sharePending: true } : {}),
      };
    } else {
      const alreadyRevoked = pki.revocation(serial) !== undefined;
      rec = { ...await pki.revoke(serial, reason), alreadyRevoked };
    }
    c.get("log").warn(
      { revoked: rec.serial, reason: rec.reason, alreadyRevoked: rec.alreadyRevoked },
      rec.alreadyRevoked ? "certificate was already revoked" : "certificate revoked",
    );
    return c.json(rec);
  });

  app.post("/rotate", allowQuery(), async (c) => {
    const pki = pkiOf();
    const body = await optionalBody(c);
    rejectUnknownFields(body, ["overlap", "certPem", "keyPem", "chainPem"]);
    const overlapSeconds = body.overlap === undefined
      ? pki.leafTtlSeconds
      : parseDuration(body.overlap, "overlap");
    // The operator's new CA (bring your own): certificate, key unless external, chain.
    const material = Object.fromEntries(
      (["certPem", "keyPem", "chainPem"] as const)
        .filter((f) => body[f] !== undefined)
        .map((f) => [f, pemField(body, f)]),
    );
    if (material.certPem === undefined && Object.keys(material).length > 0) {
      throw new InvalidArgumentError('missing field "certPem": the new CA certificate', {
        field: "certPem",
      });
    }
    if (deps.cluster) {
      if (material.certPem !== undefined) {
        throw new FailedPreconditionError(
          "a cluster rotates only a CA that Ballast made itself; rotating your own CA in " +
            "cluster mode is not supported yet (docs/TLS.md)",
        );
      }
      // The cluster CA lives in etcd: rotate it there; every member adopts it.
      await deps.cluster.rotation.rotate({ overlapSeconds, nodeName: deps.nodeName });
    } else {
      await pki.rotateCa({ overlapSeconds, ...material });
      c.get("log").warn({ overlapSeconds }, "CA rotated");
      await changed();
    }
    return c.json(await caInfo(pki));
  });

  app.post("/csr", allowQuery(), async (c) => {
    const pki = externalOnly(pkiOf());
    const body = await optionalBody(c);
    rejectUnknownFields(body, ["which"]);
    const which = whichField(body);
    return c.json({ which, csrPem: await pki.createCsr(which) });
  });

  app.post("/import", allowQuery(), async (c) => {
    const pki = externalOnly(pkiOf());
    const body = await readJsonObject(c);
    rejectUnknownFields(body, ["certificatePem", "which"]);
    const which = whichField(body);
    await pki.importSigned(which, pemField(body, "certificatePem"));
    c.get("log").warn({ which }, "externally signed certificate imported");
    await changed();
    return c.json(await caInfo(pki));
  });
  return app;
}

/**
 * The full serial `input` names among the certificates this CA issued (the cluster's, in
 * cluster mode), revoked ones and the node's own included; see resolveSerial. In external
 * mode the operator's CA signs client certificates the node never sees, so a full serial
 * that matches nothing is revoked as given.
 */
async function resolveKnownSerial(
  pki: Pki,
  shared: ClusterMember["certificates"] | undefined,
  input: string,
): Promise<string> {
  const own = [
    ...pki.revokedSerials(),
    ...(["node", "admin"] as const).flatMap((w) => pki.local(w)?.cert.serialNumber ?? []),
  ];
  const options = { allowUnknown: pki.mode === "external" };
  if (!shared) {
    return resolveSerial(input, [...own, ...(await pki.list()).map((r) => r.serial)], options);
  }
  let issued: IssuedRecord[];
  try {
    issued = await shared.list();
  } catch (err) {
    if (!(err instanceof UnavailableError)) throw err;
    const local = [...own, ...(await pki.list()).map((r) => r.serial)];
    try {
      return resolveSerial(input, local, options);
    } catch (notHere) {
      if (!(notHere instanceof BallastError) || notHere.code !== "NOT_FOUND") throw notHere;
      throw new UnavailableError(
        `cannot look up serial ${JSON.stringify(input)}: etcd is unavailable and this node ` +
          "did not issue it; retry when etcd answers",
        { cause: err },
      );
    }
  }
  return resolveSerial(input, [...own, ...issued.map((r) => r.serial)], options);
}

function externalOnly(pki: Pki): Pki {
  if (pki.mode !== "external") {
    throw new FailedPreconditionError(
      `this node signs its own certificates (CA mode ${pki.mode}): CSR and import are for ` +
        "external mode, where the CA key is not on the node",
      { mode: pki.mode },
    );
  }
  return pki;
}
