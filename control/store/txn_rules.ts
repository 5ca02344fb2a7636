/**
 * Argument checks and compare evaluation of state store transactions, shared by both
 * implementations (the embedded store evaluates compares with them; the etcd store checks
 * arguments and settles lost writes with them). The rules follow etcd so that code written
 * against the embedded store also runs against etcd: keys are non-empty, a transaction branch may not put one key twice
 * or put a key it also deletes, and a value compare on a missing key never holds.
 * @module
 */

import { InvalidArgumentError } from "../../mod/errors.ts";
import type { Compare, KeyValue, Op } from "./state_store.ts";

export function checkKey(key: unknown, field = "key"): asserts key is string {
  if (typeof key !== "string" || key.length === 0) {
    throw new InvalidArgumentError(
      `${field} must be a non-empty string, got ${JSON.stringify(key)}`,
      { field },
    );
  }
}

export function checkPrefix(prefix: unknown, field = "prefix"): asserts prefix is string {
  if (typeof prefix !== "string") {
    throw new InvalidArgumentError(`${field} must be a string, got ${typeof prefix}`, { field });
  }
}

export function checkValue(value: unknown, field = "value"): asserts value is string {
  if (typeof value !== "string") {
    throw new InvalidArgumentError(`${field} must be a string, got ${typeof value}`, { field });
  }
}

/** A non-negative safe integer (lease ids, revisions). */
export function checkCount(n: unknown, field: string, min = 0): asserts n is number {
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < min) {
    throw new InvalidArgumentError(`${field} must be an integer >= ${min}, got ${n}`, { field });
  }
}

const NUMERIC_TARGETS = new Set(["version", "createRevision", "modRevision"]);
const NUMERIC_OPS = new Set(["==", "!=", "<", ">"]);

export function checkCompare(c: Compare, i: number): void {
  const field = `compares[${i}]`;
  checkKey(c?.key, `${field}.key`);
  if (NUMERIC_TARGETS.has(c.target)) {
    if (!NUMERIC_OPS.has(c.op)) {
      throw new InvalidArgumentError(`${field}.op ${JSON.stringify(c.op)} is not ==, !=, < or >`, {
        field: `${field}.op`,
      });
    }
    checkCount(c.value, `${field}.value`);
  } else if (c.target === "value" || c.target === "lease") {
    if (c.op !== "==" && c.op !== "!=") {
      throw new InvalidArgumentError(
        `${field}.op ${JSON.stringify(c.op)} is not == or != (target ${c.target})`,
        { field: `${field}.op` },
      );
    }
    if (c.target === "value") checkValue(c.value, `${field}.value`);
    else checkCount(c.value, `${field}.value`);
  } else {
    throw new InvalidArgumentError(
      `${field}.target ${JSON.stringify((c as { target: unknown }).target)} is unknown`,
      { field: `${field}.target` },
    );
  }
}

/** Checks every op of one branch, including etcd's rule against overlapping writes. */
export function checkOps(ops: Op[], branch: string): void {
  if (!Array.isArray(ops)) {
    throw new InvalidArgumentError(`${branch} must be an array of ops`, { field: branch });
  }
  const puts = new Set<string>();
  const deletes: { key: string; prefix: boolean }[] = [];
  ops.forEach((op, i) => {
    const field = `${branch}[${i}]`;
    if (op?.type === "put") {
      checkKey(op.key, `${field}.key`);
      checkValue(op.value, `${field}.value`);
      if (op.lease !== undefined) checkCount(op.lease, `${field}.lease`);
      if (puts.has(op.key)) {
        throw new InvalidArgumentError(`${branch} puts key ${JSON.stringify(op.key)} twice`, {
          field: `${field}.key`,
        });
      }
      puts.add(op.key);
    } else if (op?.type === "delete" || op?.type === "get") {
      if (op.prefix) checkPrefix(op.key, `${field}.key`);
      else checkKey(op.key, `${field}.key`);
      if (op.type === "delete") deletes.push({ key: op.key, prefix: op.prefix === true });
    } else {
      throw new InvalidArgumentError(`${field}.type must be put, delete or get`, {
        field: `${field}.type`,
      });
    }
  });
  for (const d of deletes) {
    for (const key of puts) {
      if (d.prefix ? key.startsWith(d.key) : key === d.key) {
        throw new InvalidArgumentError(
          `${branch} both puts and deletes key ${JSON.stringify(key)}`,
          { field: branch },
        );
      }
    }
  }
}

/** Whether one compare holds for the current kv (undefined: missing key). */
export function compareHolds(c: Compare, kv: KeyValue | undefined): boolean {
  if (c.target === "value") {
    if (!kv) return false; // etcd: a value compare on a missing key always fails
    return c.op === "==" ? kv.value === c.value : kv.value !== c.value;
  }
  const actual = kv ? kv[c.target] : 0;
  switch (c.op) {
    case "==":
      return actual === c.value;
    case "!=":
      return actual !== c.value;
    case "<":
      return actual < c.value;
    case ">":
      return actual > c.value;
  }
}
