/**
 * Translation between the StateStore model and etcd's v3 protobuf messages as the
 * `etcd3` package's raw RPC clients carry them (keepCase field names, int64 as
 * decimal strings, keys and values as bytes), plus the key namespace (private to
 * etcd_store.ts).
 * @module
 */

import { Buffer } from "node:buffer";
import { InvalidArgumentError } from "../../../mod/errors.ts";
import {
  checkCompare,
  checkCount,
  checkKey,
  checkPrefix,
  checkValue,
  type Compare,
  type KeyValue,
  type Op,
  type OpResult,
  type WatchEvent,
} from "../mod.ts";

/** etcd's KeyValue as decoded by proto-loader (longs as strings). */
export interface PbKeyValue {
  key: Buffer;
  value: Buffer;
  create_revision: string;
  mod_revision: string;
  version: string;
  lease: string;
}

export interface PbHeader {
  revision: string;
}

export interface PbEvent {
  type: "Put" | "Delete";
  kv: PbKeyValue;
  prev_kv: PbKeyValue | null;
}

export interface PbRequestOp {
  request_range?: { key: Buffer; range_end?: Buffer };
  request_put?: { key: Buffer; value: Buffer; lease: string };
  request_delete_range?: { key: Buffer; range_end?: Buffer };
}

export interface PbResponseOp {
  response: "response_range" | "response_put" | "response_delete_range" | "response_txn";
  response_range?: { kvs: PbKeyValue[] };
  response_delete_range?: { deleted: string };
}

export interface PbCompare {
  result: "Equal" | "Greater" | "Less" | "NotEqual";
  target: "Version" | "Create" | "Mod" | "Value" | "Lease";
  key: Buffer;
  version?: string;
  create_revision?: string;
  mod_revision?: string;
  value?: Buffer;
  lease?: string;
}

const decoder = new TextDecoder();
const RESULT = { "==": "Equal", "!=": "NotEqual", "<": "Less", ">": "Greater" } as const;

/** The smallest key greater than every key starting with `prefix` ("\0" = no end). */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i]++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/** Maps store keys into the configured namespace and back. */
export class Namespace {
  readonly #prefix: Buffer;

  constructor(prefix: string) {
    this.#prefix = Buffer.from(prefix, "utf8");
  }

  key(key: string): Buffer {
    return Buffer.concat([this.#prefix, Buffer.from(key, "utf8")]);
  }

  /** Whether a raw etcd key lies inside the namespace. */
  contains(key: Buffer): boolean {
    return key.length >= this.#prefix.length &&
      this.#prefix.equals(key.subarray(0, this.#prefix.length));
  }

  /** key and range_end selecting every key with `prefix` inside the namespace. */
  range(prefix: string): { key: Buffer; range_end: Buffer } {
    const key = this.key(prefix);
    if (key.length === 0) return { key: Buffer.from([0]), range_end: Buffer.from([0]) };
    return { key, range_end: prefixEnd(key) };
  }

  /** key (and range_end when `prefix`) for a get/delete op. */
  select(key: string, prefix: boolean | undefined): { key: Buffer; range_end?: Buffer } {
    return prefix ? this.range(key) : { key: this.key(key) };
  }

  kv(kv: PbKeyValue): KeyValue {
    return {
      key: decoder.decode(kv.key.subarray(this.#prefix.length)),
      value: decoder.decode(kv.value),
      createRevision: Number(kv.create_revision),
      modRevision: Number(kv.mod_revision),
      version: Number(kv.version),
      lease: Number(kv.lease),
    };
  }

  event(e: PbEvent): WatchEvent {
    const event: WatchEvent = { type: e.type === "Put" ? "put" : "delete", kv: this.kv(e.kv) };
    if (e.prev_kv) event.prevKv = this.kv(e.prev_kv);
    return event;
  }

  compare(c: Compare, i: number): PbCompare {
    checkCompare(c, i);
    const key = this.key(c.key);
    const result = RESULT[c.op];
    switch (c.target) {
      case "version":
        return { key, result, target: "Version", version: String(c.value) };
      case "createRevision":
        return { key, result, target: "Create", create_revision: String(c.value) };
      case "modRevision":
        return { key, result, target: "Mod", mod_revision: String(c.value) };
      case "value":
        return { key, result, target: "Value", value: Buffer.from(c.value, "utf8") };
      case "lease":
        return { key, result, target: "Lease", lease: String(c.value) };
    }
  }

  /**
   * One request op. Keys, values and leases are checked here; etcd itself enforces
   * that a branch writes each key at most once (mapped to InvalidArgumentError).
   */
  op(op: Op, field: string): PbRequestOp {
    if (op?.type === "put") {
      checkKey(op.key, `${field}.key`);
      checkValue(op.value, `${field}.value`);
      if (op.lease !== undefined) checkCount(op.lease, `${field}.lease`);
      return {
        request_put: {
          key: this.key(op.key),
          value: Buffer.from(op.value, "utf8"),
          lease: String(op.lease ?? 0),
        },
      };
    }
    if (op?.type === "delete" || op?.type === "get") {
      if (op.prefix) checkPrefix(op.key, `${field}.key`);
      else checkKey(op.key, `${field}.key`);
      const selected = this.select(op.key, op.prefix);
      return op.type === "get" ? { request_range: selected } : { request_delete_range: selected };
    }
    throw new InvalidArgumentError(`${field}.type must be put, delete or get`, {
      field: `${field}.type`,
    });
  }

  result(r: PbResponseOp, revision: number): OpResult {
    switch (r.response) {
      case "response_range":
        return { type: "get", kvs: (r.response_range?.kvs ?? []).map((kv) => this.kv(kv)) };
      case "response_put":
        return { type: "put", revision };
      case "response_delete_range":
        return { type: "delete", deleted: Number(r.response_delete_range?.deleted ?? 0) };
      default:
        throw new Error(`unexpected txn response ${r.response}`);
    }
  }
}
