/**
 * CA rotation in cluster mode (docs/TLS.md, "Rotating the CA"). The cluster CA record in
 * etcd (_ca_record.ts) is the one source of truth:
 *
 *   rotateClusterCa()    on the member asked (`ballast ca rotate`): a new root, its key
 *                        sealed under the cluster KEK, and the old CA moved to the record's
 *                        `retired` list with `trustUntil = now + overlap`, written by
 *                        compare-and-swap on the record's revision (two rotations racing:
 *                        one wins, the other is told to retry).
 *   ClusterCaFollower    on every member: watches the record and adopts each new one
 *                        (Pki.adoptCa: the new CA, the retired ones trusted until their
 *                        trustUntil, node.crt and admin.crt reissued), then reloads the TLS
 *                        contexts in place. Live connections are not cut; a member that was
 *                        down adopts at its next start (prepareClusterPki).
 *
 * Client certificates issued under the old root stay valid until the overlap ends; join
 * tokens pin the CA and must be made again after a rotation.
 * @module
 */

import { createRootCa, exportPrivateKeyPem, type Pki } from "../../ca/mod.ts";
import { ConflictError, FailedPreconditionError } from "../../mod/errors.ts";
import type { Logger } from "../common/mod.ts";
import { followPrefix, freshGet, type KeyValue, type StateStore } from "../store/mod.ts";
import { CLUSTER_CA_KEY, type ClusterKeys, openClusterCaKey, putCaRecord } from "./_ca_record.ts";
import { type ClusterCaRecord, parseCaRecord, sealCaKey } from "./_crypto.ts";
import { caPinOf } from "./join_token.ts";

/** Rotates the cluster CA in etcd; members adopt it from their watch. Returns the new record. */
export async function rotateClusterCa(
  store: StateStore,
  cluster: ClusterKeys,
  o: { overlapSeconds: number; nodeName: string; now?: Date },
): Promise<ClusterCaRecord> {
  const kv = await freshGet(store, CLUSTER_CA_KEY);
  if (!kv) throw new FailedPreconditionError(`no cluster CA in etcd (key ${CLUSTER_CA_KEY})`);
  const current = parseCaRecord(kv.value, CLUSTER_CA_KEY);
  if (current.chainPem.trim() !== "") {
    throw new FailedPreconditionError(
      "the cluster CA is an operator-supplied intermediate, which Ballast does not replace " +
        "with a CA of its own; rotating it in cluster mode is not supported yet (docs/TLS.md, " +
        '"Not yet")',
    );
  }
  const now = o.now ?? new Date();
  const { cert, keys } = await createRootCa({ now });
  const keyPem = await exportPrivateKeyPem(keys.privateKey);
  const pin = await caPinOf(cert.rawData);
  const until = new Date(now.getTime() + o.overlapSeconds * 1000).toISOString();
  const next: ClusterCaRecord = {
    version: 1,
    certPem: cert.toString("pem") + "\n",
    chainPem: "",
    pin,
    key: await sealCaKey(cluster.kek, keyPem, pin),
    createdAt: now.toISOString(),
    createdBy: o.nodeName,
    // The overlap bounds the CAs retired before too (ca/_ca_files.ts, rotateCa).
    retired: [
      ...(current.retired ?? []).filter((r) => new Date(r.trustUntil) > now).map((r) =>
        Date.parse(r.trustUntil) > Date.parse(until) ? { ...r, trustUntil: until } : r
      ),
      {
        certPem: current.certPem,
        chainPem: current.chainPem,
        retiredAt: now.toISOString(),
        trustUntil: until,
      },
    ],
  };
  const stored = await putCaRecord(
    store,
    { key: CLUSTER_CA_KEY, target: "modRevision", op: "==", value: kv.modRevision },
    next,
  );
  if (!stored) {
    throw new ConflictError(
      "the cluster CA changed while rotating (another rotation at the same time?); " +
        "check `ballast ca show` and retry if it still shows the old root",
    );
  }
  return next;
}

/** Keeps this member's PKI on the cluster's current CA; see the module doc. */
export class ClusterCaFollower {
  readonly #store: StateStore;
  readonly #pki: Pki;
  readonly #keys: ClusterKeys;
  readonly #log: Logger;
  readonly #onChanged: () => void | Promise<void>;
  readonly #stop = new AbortController();
  #loop?: Promise<void>;
  /** One adoption at a time, in record order (the watch and rotate() both call #adopt). */
  #adopting: Promise<void> = Promise.resolve();

  constructor(o: {
    store: StateStore;
    pki: Pki;
    keys: ClusterKeys;
    log: Logger;
    /** Called after the CA or the trust bundle changed: reload the TLS contexts. */
    onChanged: () => void | Promise<void>;
  }) {
    this.#store = o.store;
    this.#pki = o.pki;
    this.#keys = o.keys;
    this.#log = o.log.child({ component: "ca-rotation" });
    this.#onChanged = o.onChanged;
  }

  start(): void {
    const adoptFrom = (kvs: readonly KeyValue[]) => {
      const kv = kvs.findLast((k) => k.key === CLUSTER_CA_KEY && k.value !== "");
      return kv ? this.#adopt(parseCaRecord(kv.value, CLUSTER_CA_KEY)) : undefined;
    };
    // The prefix also holds ca/issued/ and ca/revoked/: only the record itself matters here.
    this.#loop = followPrefix(this.#store, CLUSTER_CA_KEY, {
      onList: (kvs) => adoptFrom(kvs),
      onEvents: (events) => adoptFrom(events.filter((e) => e.type === "put").map((e) => e.kv)),
    }, { signal: this.#stop.signal, logger: this.#log, what: "cluster CA" });
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    await this.#loop;
    await this.#adopting;
  }

  /** `ballast ca rotate` on this member: rotate in etcd, then adopt here at once. */
  async rotate(o: { overlapSeconds: number; nodeName: string }): Promise<void> {
    const record = await rotateClusterCa(this.#store, this.#keys, o);
    this.#log.warn(
      { caSha256: record.pin, overlapSeconds: o.overlapSeconds },
      "cluster CA rotated in etcd; every member adopts it",
    );
    await this.#adopt(record);
  }

  #adopt(record: ClusterCaRecord): Promise<void> {
    const run = this.#adopting.then(async () => {
      const keyPem = await openClusterCaKey(record, this.#keys.kek);
      const changed = await this.#pki.adoptCa(
        { certPem: record.certPem, keyPem, chainPem: record.chainPem },
        record.retired ?? [],
      );
      this.#keys.pin = record.pin;
      if (!changed) return;
      this.#log.warn(
        { caSha256: record.pin, retired: (record.retired ?? []).length },
        "adopted the cluster CA: certificates reissued, TLS contexts reloaded",
      );
      await this.#onChanged();
    });
    this.#adopting = run.catch(() => {});
    return run;
  }
}
