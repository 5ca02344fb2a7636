/**
 * The joining side of `ballast serve --etcd ... --join TOKEN` (docs/TLS.md, "Joining a
 * cluster"). The node:
 *
 *   1. checks the cluster CA certificate in etcd against the token's pin, before sending
 *      anything; a mismatch stops here (JOIN_TOKEN_CA_MISMATCH);
 *   2. generates its own key and a CSR for its name and addresses (the key never leaves);
 *   3. picks a ready member from the node records and POSTs {token, csr, nodeName} to its
 *      /v1/cluster/join over HTTPS, trusting only the pinned CA;
 *   4. checks the answer (certificate for its key, role node, its name, under the CA; a KEK
 *      that decrypts the CA key) and writes cluster.kek, node.key (0600) and node.crt
 *      atomically, the KEK first: from then on the node is a member.
 * @module
 */

import { join } from "node:path";
import {
  createCsr,
  exportPrivateKeyPem,
  FILES,
  KEY_MODE,
  keyMatches,
  parseCertificates,
  PUBLIC_MODE,
  verifyPeer,
  writeAtomic,
} from "../../ca/mod.ts";
import {
  type ApiErrorBody,
  BallastError,
  errorMessage,
  fromErrorBody,
  InvalidArgumentError,
  UnavailableError,
} from "../../mod/errors.ts";
import type { Logger } from "../common/mod.ts";
import { NODE_PREFIX } from "../nodes/mod.ts";
import type { StateStore } from "../store/mod.ts";
import { writeKek } from "./_ca_record.ts";
import { type ClusterCaRecord, decodeKek, openCaKey } from "./_crypto.ts";
import { caPinOf, formatJoinToken, joinRefused, type JoinToken } from "./join_token.ts";

/**
 * The route a joining node calls with its join token, before it has a certificate (the
 * API serves it without a client certificate; admission.ts decides).
 */
export const JOIN_PATH = "/v1/cluster/join";

const JOIN_TIMEOUT_MS = 15_000;

/** POST /v1/cluster/join request body. */
export interface JoinRequest {
  token: string;
  csr: string;
  nodeName: string;
}

/** POST /v1/cluster/join response body (only ever sent over the verified TLS channel). */
export interface JoinResponse {
  certificate: string;
  caBundle: string;
  /** The cluster key-encryption key, base64. */
  kek: string;
}

export interface JoinOptions {
  pkiDir: string;
  store: StateStore;
  record: ClusterCaRecord;
  token: JoinToken;
  nodeName: string;
  names: { dnsNames: string[]; ipAddresses: string[] };
  log: Logger;
}

/** API URLs (https) of ready members, this node excluded. */
export async function readyMembers(store: StateStore, self: string): Promise<string[]> {
  const { kvs } = await store.list(NODE_PREFIX);
  const alive = new Set(
    kvs.map((kv) => kv.key.slice(NODE_PREFIX.length)).filter((k) => k.endsWith("/alive"))
      .map((k) => k.slice(0, -"/alive".length)),
  );
  const urls: string[] = [];
  for (const kv of kvs) {
    const name = kv.key.slice(NODE_PREFIX.length);
    if (name.includes("/") || name === self || !alive.has(name)) continue;
    try {
      const api = (JSON.parse(kv.value) as { apiAddress?: string }).apiAddress;
      if (typeof api === "string" && api.startsWith("https://")) urls.push(api);
    } catch { /* a record this version cannot read: skip it */ }
  }
  return urls;
}

/** Joins the cluster; returns the KEK (already written to pkiDir/cluster.kek). */
export async function joinCluster(o: JoinOptions): Promise<Uint8Array> {
  const log = o.log.child({ joinToken: o.token.id });
  const caCert = parseCertificates(o.record.certPem, "cluster CA certificate")[0];
  const actualPin = await caPinOf(caCert.rawData);
  const retiredPins = await Promise.all(
    (o.record.retired ?? []).map((r) =>
      caPinOf(parseCertificates(r.certPem, "retired cluster CA")[0].rawData)
    ),
  );
  if (o.record.pin === actualPin && retiredPins.includes(o.token.caPin)) {
    throw joinRefused(
      "JOIN_TOKEN_CA_MISMATCH",
      `the token pins CA sha256 ${o.token.caPin}, which this cluster has rotated out ` +
        "(`ballast ca rotate`): make a new token with `ballast cluster join-token`; nothing was sent",
    );
  }
  if (o.token.caPin !== actualPin || o.record.pin !== actualPin) {
    throw joinRefused(
      "JOIN_TOKEN_CA_MISMATCH",
      `the token pins CA sha256 ${o.token.caPin}, but this cluster's CA in etcd is sha256 ` +
        `${actualPin}: the token is for another cluster or was altered; nothing was sent`,
    );
  }
  const members = await readyMembers(o.store, o.nodeName);
  if (members.length === 0) {
    throw new UnavailableError(
      "--join: no ready member with a TLS API found in etcd to join through; start it first",
    );
  }
  const csr = await createCsr({ role: "node", name: o.nodeName, ...o.names });
  const body: JoinRequest = {
    token: formatJoinToken(o.token),
    csr: csr.csrPem,
    nodeName: o.nodeName,
  };
  const answer = await postJoin(members, o.record.certPem, body, log);

  const certs = parseCertificates(answer.certificate, "joined node certificate");
  if (!(await keyMatches(csr.keys.privateKey, certs[0]))) {
    throw new BallastError("INTERNAL", "the member returned a certificate for another key");
  }
  const v = await verifyPeer(answer.certificate, {
    now: new Date(),
    roots: [caCert],
    requiredEku: "serverAuth",
    allowedRoles: ["node"],
  });
  if (!v.ok || v.identity.name !== o.nodeName) {
    throw new BallastError(
      "INTERNAL",
      `the member returned an unusable certificate: ${v.ok ? "wrong name" : v.reason}`,
    );
  }
  const kek = decodeKek(answer.kek, "the KEK from the member");
  await openCaKey(kek, o.record.key, o.record.pin); // it must open the CA key before we keep it

  await writeKek(o.pkiDir, kek); // creates pkiDir (0700) if needed
  await writeAtomic(
    join(o.pkiDir, FILES.key("node")),
    await exportPrivateKeyPem(csr.keys.privateKey),
    KEY_MODE,
  );
  await writeAtomic(join(o.pkiDir, FILES.cert("node")), answer.certificate, PUBLIC_MODE);
  await writeAtomic(join(o.pkiDir, FILES.bundle), answer.caBundle, PUBLIC_MODE);
  log.info({ serial: v.identity.serial }, "joined the cluster: node certificate and KEK installed");
  return kek;
}

/** POSTs the join to each member in turn until one answers; refusals stop at once. */
async function postJoin(
  members: string[],
  caPem: string,
  body: JoinRequest,
  log: Logger,
): Promise<JoinResponse> {
  const client = Deno.createHttpClient({ caCerts: [caPem] });
  const failures: string[] = [];
  try {
    for (const api of members) {
      let res: Response;
      try {
        res = await fetch(api + JOIN_PATH, {
          method: "POST",
          headers: { "content-type": "application/json", accept: "application/json" },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(JOIN_TIMEOUT_MS),
          client,
        } as RequestInit);
      } catch (err) {
        const why = errorMessage(err).split("\n")[0];
        log.warn({ member: api, reason: why }, "join: member unreachable, trying the next");
        failures.push(`${api}: ${why}`);
        continue;
      }
      const text = await res.text();
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch {
        parsed = undefined;
      }
      if (!res.ok) {
        const e = parsed as ApiErrorBody | undefined;
        if (e?.error?.code) throw fromErrorBody(e, res.status);
        throw new BallastError("INTERNAL", `join: HTTP ${res.status} from ${api}`);
      }
      const r = parsed as Partial<JoinResponse> | undefined;
      if (
        typeof r?.certificate !== "string" || typeof r.caBundle !== "string" ||
        typeof r.kek !== "string"
      ) {
        throw new InvalidArgumentError(`join: ${api} answered without certificate/caBundle/kek`);
      }
      return r as JoinResponse;
    }
  } finally {
    client.close();
  }
  throw new UnavailableError(`--join: no member answered: ${failures.join("; ")}`);
}
