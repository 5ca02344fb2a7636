/**
 * Cluster-wide revocations and issued-certificate index (docs/TLS.md, "Revoking in a
 * cluster"). Under the --etcd-prefix namespace:
 *
 *   /ballast/cluster/ca/issued/<serial>   IssuedRecord, put-if-absent by the member that signed
 *   /ballast/cluster/ca/revoked/<serial>  RevocationRecord (+ revokedBy), put-if-absent by
 *                                         `ca revoke` on any member
 *
 * Every member lists the revoked prefix, then watches it from the list revision + 1 (a
 * compacted watch lists again, a failed one retries with backoff), and merges what it sees
 * into its local revoked.jsonl. Handshakes only ever consult that local registry: no etcd
 * read per handshake, and it keeps working while etcd is down. After each listing, records
 * this node has and etcd lacks (certificates issued before the node was a member or while
 * etcd was down, revocations made while it was down) are published put-if-absent, retried
 * with backoff until etcd takes them. A deleted revocation key is not an un-revocation.
 * @module
 */

import {
  checkSerial,
  type IssuedRecord,
  normalizeSerial,
  type Pki,
  type RevocationRecord,
} from "../../ca/mod.ts";
import { UnavailableError } from "../../mod/errors.ts";
import { abortableSleep, type Logger } from "../common/mod.ts";
import { followPrefix, type KeyValue, type StateStore } from "../store/mod.ts";

export const CA_ISSUED_PREFIX = "/ballast/cluster/ca/issued/";
export const CA_REVOKED_PREFIX = "/ballast/cluster/ca/revoked/";
const BACKOFF_MS = [100, 5_000] as const;

/** A revocation as kept in etcd: which member recorded it, too. */
export interface SharedRevocation extends RevocationRecord {
  revokedBy?: string;
}

/** What `ca revoke` did in a cluster. */
export interface ClusterRevokeResult {
  record: RevocationRecord;
  /** The serial was revoked already (the first record is returned). */
  alreadyRevoked: boolean;
  /** etcd could not be reached: revoked on this node, published when etcd is back. */
  sharePending: boolean;
}

/** The records under `prefix` this version can read; `bad` names the keys it could not. */
export function parseRecords<T extends { serial: string }>(
  kvs: readonly KeyValue[],
  prefix: string,
  required: readonly (keyof T & string)[],
): { records: T[]; bad: string[] } {
  const records: T[] = [];
  const bad: string[] = [];
  for (const kv of kvs) {
    try {
      const v = JSON.parse(kv.value) as T;
      const serial = kv.key.slice(prefix.length);
      if (
        typeof v !== "object" || v === null || normalizeSerial(String(v.serial)) !== serial ||
        required.some((f) => typeof v[f] !== "string")
      ) {
        throw new Error("bad record");
      }
      records.push({ ...v, serial });
    } catch {
      bad.push(kv.key);
    }
  }
  return { records, bad };
}

/**
 * The cluster-wide certificate list: etcd's index plus what this node issued and has not
 * published yet, `revokedAt` from the cluster's revocations or this node's, oldest first.
 */
export function joinCertificateLists(
  shared: readonly IssuedRecord[],
  local: readonly IssuedRecord[],
  revoked: readonly RevocationRecord[],
): IssuedRecord[] {
  const bySerial = new Map<string, IssuedRecord>();
  for (const r of [...shared, ...local]) {
    if (!bySerial.has(r.serial)) bySerial.set(r.serial, withoutRevokedAt(r));
  }
  const revokedAt = new Map(revoked.map((r) => [r.serial, r.revokedAt]));
  for (const r of local) {
    if (r.revokedAt && !revokedAt.has(r.serial)) revokedAt.set(r.serial, r.revokedAt);
  }
  return [...bySerial.values()]
    .map((r) => revokedAt.has(r.serial) ? { ...r, revokedAt: revokedAt.get(r.serial)! } : r)
    .sort((a, b) =>
      a.notBefore < b.notBefore ? -1 : a.notBefore > b.notBefore ? 1 : a.serial < b.serial ? -1 : 1
    );
}

function withoutRevokedAt(r: IssuedRecord): IssuedRecord {
  const { revokedAt: _, ...rest } = r;
  return rest;
}

const ISSUED_FIELDS = ["subject", "role", "name", "notBefore", "notAfter"] as const;
const REVOKED_FIELDS = ["revokedAt"] as const;

/** One member's side of the shared index and revocations; see the module doc. */
export class ClusterCertificates {
  readonly #store: StateStore;
  readonly #pki: Pki;
  readonly #nodeName: string;
  readonly #log: Logger;
  readonly #stop = new AbortController();
  /** etcd key -> value still to publish put-if-absent. */
  readonly #pending = new Map<string, string>();
  #flushing?: Promise<void>;
  #loop?: Promise<void>;

  constructor(o: { store: StateStore; pki: Pki; nodeName: string; log: Logger }) {
    this.#store = o.store;
    this.#pki = o.pki;
    this.#nodeName = o.nodeName;
    this.#log = o.log.child({ component: "ca-sync" });
  }

  /**
   * Publishes what this node issues from now on and starts the revocation watch. Resolves
   * once the first listing was merged (or failed: the watch keeps retrying).
   */
  start(): Promise<void> {
    this.#pki.onIssued((rec) => this.#issued(rec));
    return new Promise<void>((firstListing) => {
      this.#loop = this.#watch(firstListing);
    });
  }

  async stop(): Promise<void> {
    this.#pki.onIssued(undefined);
    this.#stop.abort();
    await this.#loop;
    await this.#flushing;
  }

  /** Revokes `serial` cluster-wide (put-if-absent) and on this node at once. */
  async revoke(serial: string, reason?: string): Promise<ClusterRevokeResult> {
    const s = checkSerial(serial);
    const key = CA_REVOKED_PREFIX + s;
    const rec: SharedRevocation = {
      serial: s,
      revokedAt: new Date().toISOString(),
      ...(reason ? { reason } : {}),
      revokedBy: this.#nodeName,
    };
    let shared: SharedRevocation | undefined;
    let alreadyRevoked = false;
    try {
      const r = await this.#store.txn(
        [{ key, target: "version", op: "==", value: 0 }],
        [{ type: "put", key, value: JSON.stringify(rec) }],
        [{ type: "get", key }],
      );
      if (r.succeeded) shared = rec;
      else {
        const got = r.responses[0];
        const kvs = got?.type === "get" ? got.kvs : [];
        shared = parseRecords<SharedRevocation>(kvs, CA_REVOKED_PREFIX, REVOKED_FIELDS)
          .records[0] ?? rec;
        alreadyRevoked = true;
      }
    } catch (err) {
      if (!(err instanceof UnavailableError)) throw err;
      // Refuse it here at once; publish when etcd answers again (idempotent if it did write).
      alreadyRevoked = this.#pki.revocation(s) !== undefined;
      const local = await this.#pki.revoke(s, reason);
      this.#pending.set(key, JSON.stringify({ ...local, revokedBy: this.#nodeName }));
      this.#log.warn(
        { serial: s, err },
        "etcd unavailable: certificate revoked on this node only for now; publishing it later",
      );
      void this.#kick();
      return { record: local, alreadyRevoked, sharePending: true };
    }
    await this.#pki.mergeRevocations([shared]);
    const { revokedBy: _, ...record } = shared;
    return { record, alreadyRevoked, sharePending: false };
  }

  /** Every certificate issued in the cluster, with revokedAt. */
  async list(): Promise<IssuedRecord[]> {
    const [issued, revoked, local] = await Promise.all([
      this.#store.list(CA_ISSUED_PREFIX),
      this.#store.list(CA_REVOKED_PREFIX),
      this.#pki.list(),
    ]);
    return joinCertificateLists(
      parseRecords<IssuedRecord>(issued.kvs, CA_ISSUED_PREFIX, ISSUED_FIELDS).records,
      local,
      parseRecords<SharedRevocation>(revoked.kvs, CA_REVOKED_PREFIX, REVOKED_FIELDS).records,
    );
  }

  /** Pki.onIssued: publish the new certificate; on failure leave it to the retry loop. */
  async #issued(rec: IssuedRecord): Promise<void> {
    const key = CA_ISSUED_PREFIX + rec.serial;
    const value = JSON.stringify(withoutRevokedAt(rec));
    try {
      await this.#store.txn(
        [{ key, target: "version", op: "==", value: 0 }],
        [{ type: "put", key, value }],
      );
    } catch (err) {
      this.#log.warn(
        { serial: rec.serial, err },
        "could not record the issued certificate in etcd; retrying in the background",
      );
      this.#pending.set(key, value);
      void this.#kick();
    }
  }

  /** Publishes every pending record; retries with backoff while etcd is unavailable. */
  #kick(): Promise<void> {
    this.#flushing ??= this.#flush().finally(() => this.#flushing = undefined);
    return this.#flushing;
  }

  async #flush(): Promise<void> {
    let backoff: number = BACKOFF_MS[0];
    while (this.#pending.size > 0 && !this.#stop.signal.aborted) {
      const [key, value] = this.#pending.entries().next().value!;
      try {
        await this.#store.txn(
          [{ key, target: "version", op: "==", value: 0 }],
          [{ type: "put", key, value }],
        );
        if (this.#pending.get(key) === value) this.#pending.delete(key);
        backoff = BACKOFF_MS[0];
      } catch (err) {
        this.#log.warn(
          { key, pending: this.#pending.size, err, retryMs: backoff },
          "could not publish certificate records to etcd; retrying",
        );
        await abortableSleep(backoff, this.#stop.signal);
        backoff = Math.min(backoff * 2, BACKOFF_MS[1]);
      }
    }
  }

  /** Merges the listed revocations; queues what this node has and etcd lacks. */
  async #listed(revokedKvs: readonly KeyValue[]): Promise<void> {
    const { records, bad } = parseRecords<SharedRevocation>(
      revokedKvs,
      CA_REVOKED_PREFIX,
      REVOKED_FIELDS,
    );
    if (bad.length) this.#log.warn({ keys: bad }, "unreadable revocation records in etcd");
    const added = await this.#pki.mergeRevocations(records);
    if (added.length) {
      this.#log.info(
        { serials: added.map((r) => r.serial) },
        "revocations from the cluster merged",
      );
    }
    const inEtcd = new Set(records.map((r) => r.serial));
    for (const s of this.#pki.revokedSerials()) {
      const r = this.#pki.revocation(s);
      if (r && !inEtcd.has(s)) this.#pending.set(CA_REVOKED_PREFIX + s, JSON.stringify(r));
    }
    const issued = await this.#store.list(CA_ISSUED_PREFIX);
    const published = new Set(issued.kvs.map((kv) => kv.key));
    for (const r of await this.#pki.list()) {
      const key = CA_ISSUED_PREFIX + r.serial;
      if (!published.has(key)) this.#pending.set(key, JSON.stringify(withoutRevokedAt(r)));
    }
    if (this.#pending.size) void this.#kick();
  }

  /** List, then watch from the list revision + 1 (store/follow_prefix.ts); runs until stop(). */
  async #watch(firstListing: () => void): Promise<void> {
    await followPrefix(this.#store, CA_REVOKED_PREFIX, {
      onList: async (kvs) => {
        await this.#listed(kvs);
        firstListing();
      },
      onEvents: async (events) => {
        const puts = events.filter((e) => e.type === "put").map((e) => e.kv);
        const { records } = parseRecords<SharedRevocation>(
          puts,
          CA_REVOKED_PREFIX,
          REVOKED_FIELDS,
        );
        const by = new Map(records.map((r) => [r.serial, r.revokedBy]));
        for (const r of await this.#pki.mergeRevocations(records)) {
          this.#log.warn(
            { serial: r.serial, revokedBy: by.get(r.serial) },
            "certificate revoked by another member: refused from now on",
          );
        }
      },
      onError: () => firstListing(),
    }, {
      signal: this.#stop.signal,
      logger: this.#log,
      what: "revocation",
      logCompaction: true,
      // The watch ended (compacted, or the store closed it): list again, not in a spin.
    });
    firstListing();
  }
}
