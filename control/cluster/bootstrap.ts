/**
 * The cluster CA in etcd (docs/TLS.md, "Joining a cluster"). In cluster mode with TLS,
 * before the node opens its PKI:
 *
 *   no CA in etcd, no --join    first node: create the CA (or take the one already in
 *                               DIR/pki), write a new KEK to DIR/pki/cluster.kek, then store
 *                               the CA with put-if-absent (txn version == 0). A node that
 *                               loses that race stops and tells the operator to join.
 *   CA in etcd, KEK here        a member restarting: load the CA from etcd.
 *   CA in etcd, no KEK, --join  join through a ready member (join.ts).
 *   CA in etcd, no KEK          exit 1: this cluster already has a CA, join with a token.
 *
 * Then the CA certificate and its decrypted key are written to DIR/pki (ca.crt, ca.key
 * 0600, atomically), where openPki() finds them: every member issues its admin certificate
 * and renews its own certificates like the first node. etcd only ever holds the key sealed
 * (_crypto.ts); the KEK never goes to etcd or the logs.
 * @module
 */

import { join } from "node:path";
import {
  adoptCa,
  createRootCa,
  exportPrivateKeyPem,
  FILES,
  parseCertificates,
  readOptional,
} from "../../ca/mod.ts";
import { FailedPreconditionError } from "../../mod/errors.ts";
import type { ListenAddress, Logger } from "../common/mod.ts";
import type { StateStore } from "../store/mod.ts";
import { certificateNames, pkiDirOf } from "../tls/mod.ts";
import {
  CLUSTER_CA_KEY,
  type ClusterKeys,
  KEK_FILE,
  openClusterCaKey,
  putCaRecord,
  readClusterCa,
  readKek,
  writeKek,
} from "./_ca_record.ts";
import { type ClusterCaRecord, newKek, sealCaKey } from "./_crypto.ts";
import { joinCluster } from "./join.ts";
import { caPinOf, parseJoinToken } from "./join_token.ts";

/** What the bootstrap reads of the node's configuration (a ServeConfig has all of it). */
export interface ClusterNodeConfig {
  dataDir: string;
  nodeName: string;
  apiListen: ListenAddress;
  nbdListen: ListenAddress;
  /** `--join TOKEN`. */
  joinToken?: string;
  /** `--etcd-prefix` and the endpoints, named in errors. */
  etcd?: { prefix: string; endpoints?: string[] };
  /** `--new-cluster`: a former member may found a cluster where etcd has none. */
  newCluster?: boolean;
  /** This data directory started a node before (it records its node name once started). */
  startedBefore?: boolean;
}

/** The message for a node that has no KEK and no token while the cluster has a CA. */
export const NEEDS_JOIN_MESSAGE = "this cluster already has a CA; run `ballast cluster " +
  "join-token` on a member and start with `--join TOKEN` (env BALLAST_JOIN_TOKEN)";

/**
 * Makes DIR/pki hold the cluster CA before openPki(). Returns undefined when the node runs
 * with an external CA (no CA key: certificates are signed outside Ballast, no joining).
 */
export async function prepareClusterPki(
  config: ClusterNodeConfig,
  store: StateStore,
  log: Logger,
): Promise<ClusterKeys | undefined> {
  const dir = pkiDirOf(config.dataDir);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  let kek = await readKek(dir);
  let record = await readClusterCa(store);
  const token = config.joinToken === undefined
    ? undefined
    : parseJoinToken(config.joinToken, "--join");
  if (!record) {
    if (token) {
      throw new FailedPreconditionError(
        `--join: this cluster has no CA in etcd yet (key ${CLUSTER_CA_KEY} under ` +
          `--etcd-prefix ${config.etcd?.prefix || "/"}): is --etcd/--etcd-prefix the ` +
          "cluster's? The first node starts without --join",
      );
    }
    if (kek && config.startedBefore && !config.newCluster) {
      // A member (its KEK, and it ran before) that finds no cluster: most likely the wrong
      // etcd or prefix. Founding one there would make every copy here an orphan of it.
      throw new FailedPreconditionError(
        `this node is a member of a cluster (${join(dir, KEK_FILE)}), but etcd ` +
          `(${config.etcd?.endpoints?.join(",") ?? "--etcd"}) has no cluster under --etcd-prefix ` +
          `${config.etcd?.prefix || "/"}: is --etcd/--etcd-prefix the cluster's? Started ` +
          `here, it would found another cluster, and every volume copy on this node would be ` +
          `moved aside as an orphan of it. If the cluster's etcd was lost and this node is to ` +
          `found it again with its CA, start it once with --new-cluster on`,
      );
    }
    const created = await createClusterCa(dir, store, config.nodeName, kek, log);
    if (!created) return undefined;
    [record, kek] = [created.record, created.kek];
  } else if (!kek) {
    if (!token) throw new FailedPreconditionError(NEEDS_JOIN_MESSAGE);
    kek = await joinCluster({
      pkiDir: dir,
      store,
      record,
      token,
      nodeName: config.nodeName,
      names: certificateNames(config.nodeName, [config.apiListen, config.nbdListen]),
      log,
    });
  } else if (token) {
    log.info("this node is a member already (pki/cluster.kek present): --join is ignored");
  }
  await installCaFiles(dir, record, kek, log);
  return { pin: record.pin, kek };
}

/**
 * First node: the CA from DIR/pki if there is one with its key, else a new root; sealed
 * under the KEK (new unless given) and stored put-if-absent. The KEK is on disk before the
 * record is in etcd, so a crash never leaves a CA in etcd that no node can decrypt.
 */
async function createClusterCa(
  dir: string,
  store: StateStore,
  nodeName: string,
  existingKek: Uint8Array | undefined,
  log: Logger,
): Promise<{ record: ClusterCaRecord; kek: Uint8Array } | undefined> {
  const localCert = await readOptional(join(dir, FILES.caCert));
  const localKey = await readOptional(join(dir, FILES.caKey));
  let certPem: string;
  let keyPem: string;
  let chainPem = "";
  if (localCert !== undefined && localKey === undefined) {
    log.warn(
      "external CA mode (no CA key on this node): the CA is not stored in etcd and nodes " +
        "cannot join with tokens; sign each node's certificates with your CA",
    );
    return undefined;
  }
  if (localCert !== undefined && localKey !== undefined) {
    [certPem, keyPem] = [localCert, localKey];
    chainPem = await readOptional(join(dir, FILES.caChain)) ?? "";
  } else {
    const { cert, keys } = await createRootCa();
    certPem = cert.toString("pem") + "\n";
    keyPem = await exportPrivateKeyPem(keys.privateKey);
  }
  const pin = await caPinOf(parseCertificates(certPem, FILES.caCert)[0].rawData);
  const kek = existingKek ?? newKek();
  if (!existingKek) await writeKek(dir, kek);
  const record: ClusterCaRecord = {
    version: 1,
    certPem,
    chainPem,
    pin,
    key: await sealCaKey(kek, keyPem, pin),
    createdAt: new Date().toISOString(),
    createdBy: nodeName,
  };
  const stored = await putCaRecord(
    store,
    { key: CLUSTER_CA_KEY, target: "version", op: "==", value: 0 },
    record,
  );
  if (!stored) {
    if (!existingKek) await Deno.remove(join(dir, KEK_FILE)).catch(() => {});
    throw new FailedPreconditionError(
      "another node created this cluster's CA at the same time (etcd key " +
        `${CLUSTER_CA_KEY}); this node did not become a member: run \`ballast cluster ` +
        "join-token` on a member and start with `--join TOKEN`",
    );
  }
  log.info(
    { caSha256: pin, key: CLUSTER_CA_KEY, reused: localCert !== undefined },
    "cluster CA stored in etcd (private key sealed with AES-256-GCM under the cluster KEK)",
  );
  return { record, kek };
}

/**
 * Writes the cluster CA (certificate, chain, decrypted key) into DIR/pki where it differs,
 * and the CAs the cluster retired (a node that was down during `ca rotate` still trusts the
 * old root for the rest of the overlap).
 */
async function installCaFiles(
  dir: string,
  record: ClusterCaRecord,
  kek: Uint8Array,
  log: Logger,
): Promise<void> {
  const keyPem = await openClusterCaKey(record, kek);
  const hadCa = (await readOptional(join(dir, FILES.caCert))) !== undefined;
  const changed = await adoptCa(
    dir,
    { certPem: record.certPem, keyPem, chainPem: record.chainPem },
    record.retired ?? [],
    new Date(),
  );
  if (changed && hadCa) {
    log.warn("the local CA differs from the cluster CA in etcd: installed the cluster's");
  }
}
