/**
 * The member's side of joining (docs/TLS.md, "Joining a cluster"): making join tokens and
 * admitting a node that presents one.
 *
 *   issueJoinToken()  a single-use token expiring after `ttl`
 *   admitNode()       a joining node trades a valid token and a CSR for its certificate,
 *                     the trust bundle and the cluster KEK
 *
 * etcd keeps only the SHA-256 of a token's secret, with its expiry, under a lease that
 * outlives the expiry by an hour (so a late join hears "expired", not "unknown"), and a MAC
 * under the cluster KEK, so that a record planted in etcd admits nobody. A join
 * consumes the token with a transaction comparing the record's modRevision, so of two nodes
 * racing with one token exactly one gets in.
 * @module
 */

import { readIdentity, x509 } from "../../ca/mod.ts";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
} from "../../mod/errors.ts";
import type { JoinTokenInfo } from "../../mod/types.ts";
import type { Logger } from "../common/mod.ts";
import { NODE_PREFIX } from "../nodes/mod.ts";
import { toBase64 } from "./_crypto.ts";
import type { JoinResponse } from "./join.ts";
import {
  checkJoinToken,
  constantTimeEqual,
  formatJoinToken,
  joinRefused,
  type JoinToken,
  type JoinTokenRecord,
  newJoinToken,
  recordMac,
  sha256Hex,
} from "./join_token.ts";
import type { ClusterMember } from "./member.ts";

/** Join token records: `<prefix><id>`. */
export const JOIN_TOKEN_PREFIX = "/ballast/cluster/join-tokens/";
export const DEFAULT_TOKEN_TTL_SECONDS = 3600;
export const MAX_TOKEN_TTL_SECONDS = 7 * 86_400;
/** That bound, for parseDuration's errors. */
export const MAX_TOKEN_TTL = { seconds: MAX_TOKEN_TTL_SECONDS, said: "7d" };
/** How long a token record outlives its expiry (clear "expired"/"used" answers). */
const RECORD_GRACE_SECONDS = 3600;

/** Makes a join token living `ttlSeconds` (at most MAX_TOKEN_TTL_SECONDS). */
export async function issueJoinToken(
  member: ClusterMember,
  o: { ttlSeconds: number; createdBy?: string; log: Logger },
): Promise<JoinTokenInfo> {
  const { store, keys } = member;
  const ttl = o.ttlSeconds;
  if (ttl > MAX_TOKEN_TTL_SECONDS) {
    throw new InvalidArgumentError(`invalid ttl: join tokens live at most 7d`, { field: "ttl" });
  }
  const now = new Date();
  const lease = await store.grantLease(ttl + RECORD_GRACE_SECONDS);
  for (let attempt = 0; attempt < 5; attempt++) {
    const token = newJoinToken(keys.pin);
    const fields = {
      id: token.id,
      secretSha256: await sha256Hex(token.secret),
      createdAt: now.toISOString(),
      expiresAt: new Date(now.getTime() + ttl * 1000).toISOString(),
      createdBy: o.createdBy,
    };
    const record: JoinTokenRecord = { ...fields, mac: await recordMac(keys.kek, fields) };
    const key = JOIN_TOKEN_PREFIX + token.id;
    const r = await store.txn(
      [{ key, target: "version", op: "==", value: 0 }],
      [{ type: "put", key, value: JSON.stringify(record), lease }],
    );
    if (!r.succeeded) continue; // id taken: draw another
    o.log.info({ tokenId: token.id, expiresAt: record.expiresAt }, "join token created");
    return { token: formatJoinToken(token), id: token.id, expiresAt: record.expiresAt };
  }
  throw new FailedPreconditionError("could not pick a free join token id; try again");
}

/**
 * Admits node `nodeName` presenting `token` and a CSR: checks the token, then the CSR and
 * that no node of that name exists, consumes the token and signs the node's certificate.
 */
export async function admitNode(
  member: ClusterMember,
  o: { token: JoinToken; nodeName: string; csrPem: string; log: Logger },
): Promise<JoinResponse> {
  const { store, pki, keys } = member;
  const { token, nodeName, csrPem } = o;
  const log = o.log.child({ tokenId: token.id, joining: nodeName });
  const key = JOIN_TOKEN_PREFIX + token.id;
  const secretHash = await sha256Hex(token.secret);
  const check = async () => {
    const kv = await store.get(key);
    let record = kv ? JSON.parse(kv.value) as JoinTokenRecord : undefined;
    if (record && !constantTimeEqual(record.mac ?? "", await recordMac(keys.kek, record))) {
      // Not made by a member (they all hold the KEK): written into etcd by someone else.
      log.warn("a join token record no member made (its MAC does not verify) was ignored");
      record = undefined;
    }
    const r = checkJoinToken(record, token, secretHash, keys.pin, new Date());
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
  return { certificate: certPem, caBundle: pki.trustBundlePem(), kek: toBase64(keys.kek) };
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
