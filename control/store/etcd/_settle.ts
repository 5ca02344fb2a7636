/**
 * Deciding what became of a write whose answer was lost (private to the etcd store).
 * Pure functions over the store model; _write.ts does the reading.
 *
 * A write (put, delete or txn) is sent as one etcd transaction. When the connection
 * breaks before the answer arrives (leader killed, deadline), the transaction either
 * applied at some revision M after `base` (the newest revision the client had seen
 * when it sent it) or never will (once a leader has served a linearizable read in
 * its own term, entries of a dead leader that did not commit are gone for good).
 *
 * One etcd transaction is the only writer at its revision, so the events at M are
 * exactly its writes. The write path reads the history (base, R] and asks, for each
 * revision: do these events explain exactly this branch's writes? If so, and the
 * transaction's compares evaluated at M - 1 pick that branch, it applied at M.
 * If no revision qualifies it did not apply and may be sent again.
 * @module
 */

import {
  type Compare,
  compareHolds,
  type KeyValue,
  type Op,
  type OpResult,
  type TxnResult,
  type WatchEvent,
} from "../mod.ts";

/** A write transaction as the store model states it. */
export interface TxnModel {
  compares: Compare[];
  success: Op[];
  failure: Op[];
}

const isWrite = (op: Op) => op.type !== "get";

/** Whether a branch writes anything. */
export function writes(ops: Op[]): boolean {
  return ops.some(isWrite);
}

function covers(op: Op, key: string): boolean {
  return op.type === "delete" && (op.prefix ? key.startsWith(op.key) : key === op.key);
}

/**
 * Whether `events` (all events of one revision) are exactly what `ops` write: every
 * put has its event with the same value and lease, every event belongs to an op, and
 * there is at least one event. Deletes of missing keys leave no event.
 */
export function explains(ops: Op[], events: WatchEvent[]): boolean {
  if (events.length === 0) return false;
  const puts = ops.filter((op): op is Extract<Op, { type: "put" }> => op.type === "put");
  for (const e of events) {
    if (e.type === "put") {
      const put = puts.find((p) => p.key === e.kv.key);
      if (!put || put.value !== e.kv.value || (put.lease ?? 0) !== e.kv.lease) return false;
    } else if (!ops.some((op) => covers(op, e.kv.key))) return false;
  }
  return puts.every((p) => events.some((e) => e.type === "put" && e.kv.key === p.key));
}

/** Events grouped by revision, ascending. */
export function byRevision(events: WatchEvent[]): Map<number, WatchEvent[]> {
  const out = new Map<number, WatchEvent[]>();
  for (const e of events) {
    const list = out.get(e.kv.modRevision);
    if (list) list.push(e);
    else out.set(e.kv.modRevision, [e]);
  }
  return new Map([...out].sort((a, b) => a[0] - b[0]));
}

/** Revisions, ascending, whose events are exactly the writes of `ops`. */
export function candidates(ops: Op[], history: Map<number, WatchEvent[]>): number[] {
  if (!writes(ops)) return [];
  return [...history].filter(([, evs]) => explains(ops, evs)).map(([rev]) => rev);
}

/** Whether every compare holds, given each compared key's kv (missing: undefined). */
export function comparesHold(
  compares: Compare[],
  kvs: ReadonlyMap<string, KeyValue | undefined>,
): boolean {
  return compares.every((c) => compareHolds(c, kvs.get(c.key)));
}

/**
 * For each get op of a branch applied at M, the revision whose state it saw: M - 1
 * before the branch's first write, M after its last; undefined when a get sits
 * between writes (its result cannot be read back, the outcome stays unknown).
 */
export function getRevisions(ops: Op[], m: number): (number | undefined)[] {
  const first = ops.findIndex(isWrite);
  const last = ops.findLastIndex(isWrite);
  return ops.map((op, i) => {
    if (op.type !== "get") return undefined;
    if (i < first) return m - 1;
    if (i > last) return m;
    return undefined;
  });
}

/** The result a branch applied at M returned, rebuilt from its events and get reads. */
export function appliedResult(
  ops: Op[],
  succeeded: boolean,
  m: number,
  events: WatchEvent[],
  gets: ReadonlyMap<number, KeyValue[]>,
): TxnResult {
  const responses: OpResult[] = ops.map((op, i) => {
    if (op.type === "put") return { type: "put", revision: m };
    if (op.type === "delete") {
      const deleted = events.filter((e) => e.type === "delete" && covers(op, e.kv.key)).length;
      return { type: "delete", deleted };
    }
    return { type: "get", kvs: gets.get(i) ?? [] };
  });
  return { succeeded, revision: m, responses };
}
