/**
 * The cluster routes (docs/TLS.md, "Joining a cluster"):
 *
 *   POST /v1/cluster/join-tokens  admin only: a single-use token expiring after `ttl`
 *   POST /v1/cluster/join         no client certificate (control/_api_auth.ts): a joining
 *                                 node trades a valid token and a CSR for its certificate,
 *                                 the trust bundle and the cluster KEK
 *
 * etcd keeps only the SHA-256 of a token's secret, with its expiry, under a lease that
 * outlives the expiry by an hour (so a late join hears "expired", not "unknown"). A join
 * consumes the token with a transaction comparing the record's modRevision, so of two nodes
 * racing with one token exactly one gets in.
 * @module
 */

import type { Hono } from "hono";
import { type Pki, readIdentity, x509 } from "../../ca/mod.ts";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
} from "../../mod/errors.ts";
import { parseDuration } from "../../mod/duration.ts";
import type { JoinTokenInfo } from "../../mod/types.ts";
import { type ApiEnv, JOIN_PATH } from "./_auth.ts";
import { optionalBody } from "./_ca.ts";
import { checkNodeName, checkQuery, readJsonObject, rejectUnknownFields } from "./_validate.ts";
import { type ClusterCa, JOIN_TOKEN_PREFIX } from "../cluster/_ca_record.ts";
import { toBase64 } from "../cluster/_crypto.ts";
import type { JoinResponse } from "../cluster/join.ts";
import {
  checkJoinToken,
  formatJoinToken,
  joinRefused,
  type JoinTokenRecord,
  newJoinToken,
  parseJoinToken,
  sha256Hex,
} from "../cluster/join_token.ts";
import { NODE_PREFIX } from "../nodes/registry.ts";
import type { StateStore } from "../store/state_store.ts";

/** What the cluster routes need from ApiDeps. */
export interface ClusterRouteDeps {
  store?: StateStore;
  pki?: Pki;
  /** Present in cluster mode with TLS (the CA is in etcd). */
  cluster?: ClusterCa;
}

export const DEFAULT_TOKEN_TTL_SECONDS = 3600;
export const MAX_TOKEN_TTL_SECONDS = 7 * 86_400;
/** How long a token record outlives its expiry (clear "expired"/"used" answers). */
const RECORD_GRACE_SECONDS = 3600;
const MAX_CSR = 16 * 1024;

/** Mounts the /v1/cluster routes. */
export function registerClusterRoutes(app: Hono<ApiEnv>, deps: ClusterRouteDeps) {
  const need = () => {
    if (!deps.cluster || !deps.store || !deps.pki) {
      throw new FailedPreconditionError(
        "joining needs cluster mode with TLS (--etcd, TLS on) and the cluster CA in etcd",
      );
    }
    return { cluster: deps.cluster, store: deps.store, pki: deps.pki };
  };

  app.post("/v1/cluster/join-tokens", async (c) => {
    checkQuery(c, []);
    const { cluster, store } = need();
    const body = await optionalBody(c);
    rejectUnknownFields(body, ["ttl"]);
    const ttl = body.ttl === undefined ? DEFAULT_TOKEN_TTL_SECONDS : parseDuration(body.ttl, "ttl");
    if (ttl > MAX_TOKEN_TTL_SECONDS) {
      throw new InvalidArgumentError(`invalid ttl: join tokens live at most 7d`, { field: "ttl" });
    }
    const now = new Date();
    const lease = await store.grantLease(ttl + RECORD_GRACE_SECONDS);
    for (let attempt = 0; attempt < 5; attempt++) {
      const token = newJoinToken(cluster.pin);
      const record: JoinTokenRecord = {
        id: token.id,
        secretSha256: await sha256Hex(token.secret),
        createdAt: now.toISOString(),
        expiresAt: new Date(now.getTime() + ttl * 1000).toISOString(),
        createdBy: c.get("identity")?.name,
      };
      const key = JOIN_TOKEN_PREFIX + token.id;
      const r = await store.txn(
        [{ key, target: "version", op: "==", value: 0 }],
        [{ type: "put", key, value: JSON.stringify(record), lease }],
      );
      if (!r.succeeded) continue; // id taken: draw another
      c.get("log").info({ tokenId: token.id, expiresAt: record.expiresAt }, "join token created");
      const info: JoinTokenInfo = {
        token: formatJoinToken(token),
        id: token.id,
        expiresAt: record.expiresAt,
      };
      return c.json(info, 201);
    }
    throw new FailedPreconditionError("could not pick a free join token id; try again");
  });

  app.post(JOIN_PATH, async (c) => {
    checkQuery(c, []);
    const { cluster, store, pki } = need();
    const body = await readJsonObject(c);
    rejectUnknownFields(body, ["token", "csr", "nodeName"]);
    if (typeof body.token !== "string") {
      throw new InvalidArgumentError('missing or non-string field "token"', { field: "token" });
    }
    const token = parseJoinToken(body.token, "token");
    if (typeof body.nodeName !== "string") {
      throw new InvalidArgumentError('missing or non-string field "nodeName"', {
        field: "nodeName",
      });
    }
    const nodeName = checkNodeName(body.nodeName);
    const csrPem = typeof body.csr === "string" && body.csr.length <= MAX_CSR
      ? body.csr
      : undefined;
    if (!csrPem) {
      throw new InvalidArgumentError(`field "csr" must be a PEM CSR of up to ${MAX_CSR} chars`, {
        field: "csr",
      });
    }
    const log = c.get("log").child({ tokenId: token.id, joining: nodeName });
    const key = JOIN_TOKEN_PREFIX + token.id;
    const secretHash = await sha256Hex(token.secret);
    const check = async () => {
      const kv = await store.get(key);
      const record = kv ? JSON.parse(kv.value) as JoinTokenRecord : undefined;
      const r = checkJoinToken(record, token, secretHash, cluster.pin, new Date());
      if (!r.ok) {
        log.warn({ reason: r.error.details?.reason }, "join refused");
        throw r.error;
      }
      return { kv: kv!, record: record! };
    };
    const { kv, record } = await check();

    // Check what the CSR asks for before spending the token on it.
    const csrId = await inspectCsr(csrPem, nodeName);
    if (await store.get(NODE_PREFIX + nodeName)) throw new AlreadyExistsError("node", nodeName);

    const used: JoinTokenRecord = { ...record, usedAt: new Date().toISOString(), usedBy: nodeName };
    const consumed = await store.txn(
      [{ key, target: "modRevision", op: "==", value: kv.modRevision }],
      [{
        type: "put",
        key,
        value: JSON.stringify(used),
        ...(kv.lease ? { lease: kv.lease } : {}),
      }],
    );
    if (!consumed.succeeded) {
      await check(); // says why (normally: used by the racing node)
      log.warn({ reason: "JOIN_TOKEN_USED" }, "join refused: lost the race for the token");
      throw joinRefused("JOIN_TOKEN_USED", `token ${token.id} was used concurrently`);
    }
    const { cert, certPem } = await pki.signCsr(csrPem, {
      role: "node",
      name: nodeName,
      dnsNames: csrId.dnsNames,
      ipAddresses: "any",
    });
    log.info(
      { serial: cert.serialNumber, dnsNames: csrId.dnsNames, ipAddresses: csrId.ipAddresses },
      "node joined the cluster: certificate issued and cluster KEK handed over",
    );
    const answer: JoinResponse = {
      certificate: certPem,
      caBundle: pki.trustBundlePem(),
      kek: toBase64(cluster.kek),
    };
    return c.json(answer, 201);
  });
}

/** The CSR must be well-formed, self-signed, and ask for role node with this name. */
async function inspectCsr(csrPem: string, nodeName: string) {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (cause) {
    throw new InvalidArgumentError('field "csr" is not a PKCS#10 request', {
      cause,
      field: "csr",
    });
  }
  if (!(await csr.verify().catch(() => false))) {
    throw new InvalidArgumentError("CSR signature does not verify", { field: "csr" });
  }
  const id = readIdentity(csr);
  if (typeof id === "string") throw new InvalidArgumentError(`CSR: ${id}`, { field: "csr" });
  if (id.role !== "node" || id.name !== nodeName) {
    throw new InvalidArgumentError(
      `the CSR asks for ${id.role} ${JSON.stringify(id.name)}, not node ${
        JSON.stringify(nodeName)
      }`,
      { field: "csr" },
    );
  }
  return id;
}
