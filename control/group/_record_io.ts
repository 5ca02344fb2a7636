/**
 * The store side of a GroupDriver (private to driver.ts): the read of the group's key and
 * the lease-guarded CAS, each outcome turned into the machine's event. It keeps the raw
 * values of recent revisions, so a CAS rewrites the rest of the stored value (the group
 * record sits inside a larger one, see GroupDriverOptions.decode/encode).
 *
 * The CAS is ONE transaction whose compares are the key's modRevision plus the lease guard
 * (each guarded-down node's alive key absent, each guarded-up node's present); its failure
 * branch reads the key and the guarded alive keys, which come back as "cas-lost" with the
 * fresh record and lease facts.
 * @module
 */

import type { Logger } from "../common/mod.ts";
import { aliveKey, livenessCompares } from "../nodes/mod.ts";
import type { Compare, Op, StateStore } from "../store/mod.ts";
import type { GroupEvent } from "./machine.ts";
import { describeRecord, type GroupRecord, type LeaseGuard } from "./record.ts";

/**
 * The stored value with a new group record, and (optionally) more operations to apply in
 * the same transaction as its write (e.g. the volume's history, kept under other keys).
 */
export type Encoded = string | { value: string; ops: Op[] };

/** Raw record values kept by revision, so a CAS can rewrite the rest of the value. */
const RAW_KEEP = 8;

export interface GroupRecordIoOptions {
  store: StateStore;
  /** The key holding the group record. */
  key: string;
  decode(value: string): GroupRecord | undefined;
  encode(value: string, record: GroupRecord): Encoded;
  logger: Logger;
}

/** Reads and CASes one group's record; see the module doc. */
export class GroupRecordIo {
  readonly #store: StateStore;
  readonly #key: string;
  readonly #decode: (value: string) => GroupRecord | undefined;
  readonly #encode: (value: string, record: GroupRecord) => Encoded;
  readonly #log: Logger;
  readonly #raw = new Map<number, string>();

  constructor(o: GroupRecordIoOptions) {
    this.#store = o.store;
    this.#key = o.key;
    this.#decode = o.decode;
    this.#encode = o.encode;
    this.#log = o.logger;
  }

  /** A get of the group's key: "read-result", or undefined when the record is gone. */
  async read(): Promise<GroupEvent | undefined> {
    const kv = await this.#store.get(this.#key);
    const record = kv && this.#decode(kv.value);
    if (!kv || !record) {
      this.#log.debug("group: record gone; waiting to be stopped");
      return undefined;
    }
    this.remember(kv.modRevision, kv.value);
    return { type: "read-result", current: { revision: kv.modRevision, record } };
  }

  /** The guarded CAS: "cas-won", "cas-lost" with fresh facts, or undefined (record gone). */
  async cas(
    expectedRevision: number,
    record: GroupRecord,
    guard: LeaseGuard,
  ): Promise<GroupEvent | undefined> {
    const key = this.#key;
    let base = this.#raw.get(expectedRevision);
    if (base === undefined) {
      const kv = await this.#store.get(key);
      if (kv?.modRevision === expectedRevision) base = kv.value;
    }
    const guarded = [...guard.down, ...guard.up];
    const reads: Op[] = [
      { type: "get", key },
      ...guarded.map((n): Op => ({ type: "get", key: aliveKey(n) })),
    ];
    let res;
    if (base === undefined) {
      // The value at the expected revision is gone, so the CAS cannot apply: read the
      // record and the guarded leases in one snapshot and re-plan from them.
      res = await this.#store.txn([], reads, []);
    } else {
      const encoded = this.#encode(base, record);
      const value = typeof encoded === "string" ? encoded : encoded.value;
      const more = typeof encoded === "string" ? [] : encoded.ops;
      const compares: Compare[] = [
        { key, target: "modRevision", op: "==", value: expectedRevision },
        ...livenessCompares(guard.down, guard.up),
      ];
      res = await this.#store.txn(compares, [{ type: "put", key, value }, ...more], reads);
      if (res.succeeded) {
        this.remember(res.revision, value);
        this.#log.info(
          { epoch: record.epoch, guard, revision: res.revision },
          `group: CAS won: ${describeRecord(record)}`,
        );
        return { type: "cas-won", revision: res.revision };
      }
    }
    const got = (i: number) => {
      const r = res.responses[i];
      return r?.type === "get" ? r.kvs[0] : undefined;
    };
    const kv = got(0);
    const current = kv && this.#decode(kv.value);
    if (!kv || !current) return undefined;
    this.remember(kv.modRevision, kv.value);
    const leases = guarded.map((node, i) => ({ node, up: got(i + 1) !== undefined }));
    if (kv.modRevision < expectedRevision) {
      this.#log.warn(
        { expectedRevision, revision: kv.modRevision },
        "group: the record is older than the one this node knew: the store's history went " +
          "back (etcd restored from a snapshot?); planning from the store's record",
      );
    }
    this.#log.info(
      { epoch: current.epoch, wanted: describeRecord(record), leases },
      `group: CAS lost; re-planning from ${describeRecord(current)}`,
    );
    return {
      type: "cas-lost",
      current: { revision: kv.modRevision, record: current },
      leases,
    };
  }

  /** Keeps `value` as the record's raw value at `revision`. */
  remember(revision: number, value: string): void {
    this.#raw.set(revision, value);
    if (this.#raw.size > RAW_KEEP) {
      const oldest = Math.min(...this.#raw.keys());
      this.#raw.delete(oldest);
    }
  }
}
