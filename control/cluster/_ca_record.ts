/**
 * The cluster CA record in etcd and the KEK file beside the node's PKI: where they live,
 * reading and writing them, and opening the sealed CA key. The bootstrap (bootstrap.ts),
 * the joining side (join.ts) and rotation (rotation.ts) build on this layer.
 * @module
 */

import { join } from "node:path";
import { KEY_MODE, parseCertificates, readOptional, writeAtomic } from "../../ca/mod.ts";
import { FailedPreconditionError, UnavailableError } from "../../mod/errors.ts";
import type { Compare, StateStore } from "../store/mod.ts";
import { type ClusterCaRecord, decodeKek, openCaKey, parseCaRecord, toBase64 } from "./_crypto.ts";
import { caPinOf } from "./join_token.ts";

/** Where the CA record lives (under the --etcd-prefix namespace). */
export const CLUSTER_CA_KEY = "/ballast/cluster/ca";
/** The key-encryption key, base64, in DIR/pki. */
export const KEK_FILE = "cluster.kek";

/**
 * What a member holds of its cluster's CA: the pin join tokens carry and the KEK that
 * opens the sealed CA key. `pin` follows rotations (ClusterCaFollower updates it).
 */
export interface ClusterKeys {
  /** SHA-256 (hex) of the current CA certificate's DER, as pinned by join tokens. */
  pin: string;
  /** The key-encryption key, handed to joining nodes over TLS. */
  kek: Uint8Array;
}

/** The node's KEK, or undefined when it has none (not a member yet). */
export async function readKek(pkiDir: string): Promise<Uint8Array | undefined> {
  const path = join(pkiDir, KEK_FILE);
  const text = await readOptional(path);
  return text === undefined ? undefined : decodeKek(text, path);
}

/** Writes the KEK, 0600, atomically. */
export async function writeKek(pkiDir: string, kek: Uint8Array): Promise<void> {
  await Deno.mkdir(pkiDir, { recursive: true, mode: 0o700 });
  await writeAtomic(join(pkiDir, KEK_FILE), toBase64(kek) + "\n", KEY_MODE);
}

/** The CA record in etcd, or undefined when the cluster has none yet. */
export async function readClusterCa(store: StateStore): Promise<ClusterCaRecord | undefined> {
  const kv = await store.get(CLUSTER_CA_KEY);
  return kv ? parseCaRecord(kv.value, CLUSTER_CA_KEY) : undefined;
}

/**
 * Writes `record` to CLUSTER_CA_KEY if `compare` holds; says whether it was written. An
 * unknown outcome (etcd unavailable mid-write) is settled by reading back: the sealed key
 * is unique to this attempt (PLATFORM.md, etcd3 pitfalls).
 */
export async function putCaRecord(
  store: StateStore,
  compare: Compare,
  record: ClusterCaRecord,
): Promise<boolean> {
  try {
    const r = await store.txn(
      [compare],
      [{ type: "put", key: CLUSTER_CA_KEY, value: JSON.stringify(record) }],
    );
    return r.succeeded;
  } catch (err) {
    if (!(err instanceof UnavailableError)) throw err;
    const now = await readClusterCa(store).catch(() => undefined);
    if (now === undefined) throw err;
    return now.pin === record.pin && now.key.ciphertext === record.key.ciphertext;
  }
}

/** The record's CA key, after checking the certificate against its pin. */
export async function openClusterCaKey(record: ClusterCaRecord, kek: Uint8Array): Promise<string> {
  const cert = parseCertificates(record.certPem, `etcd ${CLUSTER_CA_KEY}`)[0];
  if (await caPinOf(cert.rawData) !== record.pin) {
    throw new FailedPreconditionError(
      `etcd ${CLUSTER_CA_KEY}: the certificate does not match its recorded pin`,
    );
  }
  return await openCaKey(kek, record.key, record.pin);
}
