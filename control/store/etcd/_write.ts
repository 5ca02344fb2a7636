/**
 * The write path of the etcd store (private to etcd_store.ts): every put, delete and
 * txn goes to etcd as one transaction, and is applied at most once.
 *
 * - A failure that proves the request never reached raft (no connection, no
 *   leader, proposal dropped) is simply repeated on the next member.
 * - Any other transient failure leaves the outcome unknown. The write path then
 *   settles it itself (see _settle.ts): a linearizable read on the current
 *   leader gives revision R, the history (base, R] is read through a watch, and a
 *   revision whose events are exactly this transaction's writes, with its compares
 *   evaluated at the revision before picking that branch, means it applied: its
 *   result is returned. Otherwise it did not apply and is sent again (its own
 *   compares decide afresh). If a repeat then finds its compares false, the history
 *   is searched once more, since the earlier attempt may have landed in between.
 * - When the outcome cannot be settled within the call's budget (etcd down,
 *   history compacted), the caller gets UnavailableError saying so.
 * - While etcd is down (every call failing for a whole request timeout), a write is
 *   only sent after a read succeeded, so calls fail fast with "not applied".
 *
 * Limits. A transaction is recognized by its effects: if another client made
 * exactly the same writes under compares that held, after this one was sent (two
 * clients both moving a counter from "5" to "6"), that write is taken for this one
 * and both succeed. Writes that must be told apart need distinct values (Ballast's
 * records carry updatedAt). And a request still queued inside a live member when
 * the settling read ran could apply after it; guarded transactions whose success
 * branch writes a compared key (every CAS in Ballast) cannot then apply twice.
 * @module
 */

import { Buffer } from "node:buffer";
import { UnavailableError } from "../../../mod/errors.ts";
import type { KeyValue, TxnResult, WatchEvent } from "../mod.ts";
import type { Namespace, PbHeader, PbKeyValue, PbResponseOp } from "./_codec.ts";
import type { WatchStream } from "./_watch.ts";
import { type Attempt, type EndpointPool, isTransient, notApplied, sleep } from "./_conn.ts";
import {
  appliedResult,
  byRevision,
  candidates,
  comparesHold,
  getRevisions,
  type TxnModel,
  writes,
} from "./_settle.ts";

export type { TxnModel };

export interface WriteContext {
  pool: EndpointPool;
  ns: Namespace;
  /** Records a response header's revision and returns it. */
  observe(header: PbHeader | undefined): number;
  /** The highest revision this client has seen. */
  seen(): number;
}

/** The etcd TxnRequest of a model, already encoded (Namespace.compare/op). */
export interface PbTxnRequest {
  compare: unknown[];
  success: unknown[];
  failure: unknown[];
}

/** More history than this between send and settle: too much to search, outcome unknown. */
const MAX_HISTORY = 10_000;

/** Runs a write transaction at most once; see the module doc. */
export async function writeTxn(
  ctx: WriteContext,
  what: string,
  model: TxnModel,
  req: PbTxnRequest,
): Promise<TxnResult> {
  const { pool } = ctx;
  const deadline = Date.now() + pool.budget();
  if (pool.down) await probe(ctx, what, deadline);
  const base = ctx.seen();
  const send = (a: Attempt) => sendTxn(ctx, req, a);
  let unknown = false;
  let backoff = 25;
  for (let n = 1;; n++) {
    let result: TxnResult;
    try {
      result = await pool.attempt(send, deadline, n);
    } catch (err) {
      if (!isTransient(err)) throw err;
      if (!notApplied(err)) {
        unknown = true;
        const settled = await settle(ctx, model, base, undefined, deadline).catch((e) => {
          throw pool.unavailable(what, e, "outcome unknown");
        });
        if (settled) return settled;
      }
      if (Date.now() + backoff >= deadline) throw pool.unavailable(what, err, "not applied");
      await sleep(backoff);
      backoff = Math.min(backoff * 2, 500);
      continue;
    }
    if (unknown && !result.succeeded && writes(model.success)) {
      // An earlier attempt may have applied and made this one's compares fail.
      const settled = await settle(ctx, model, base, result.revision, deadline).catch((e) => {
        throw pool.unavailable(what, e, "outcome unknown");
      });
      if (settled) return settled;
    }
    return result;
  }
}

/** One attempt of an encoded transaction (a write here, or a read-only txn of the store). */
export async function sendTxn(
  ctx: Pick<WriteContext, "ns" | "observe">,
  req: PbTxnRequest,
  { client, options }: Attempt,
): Promise<TxnResult> {
  const r = await client.kv.txn(req as never, options);
  const revision = ctx.observe(r.header as PbHeader);
  const responses = (r.responses as unknown as PbResponseOp[]).map((o) =>
    ctx.ns.result(o, revision)
  );
  return { succeeded: r.succeeded, revision, responses };
}

/** The current revision, read on a member (retried like any read, within `timeoutMs`). */
export function readRevision(
  ctx: Pick<WriteContext, "pool" | "ns" | "observe">,
  what: string,
  timeoutMs?: number,
): Promise<number> {
  return ctx.pool.call(what, async ({ client, options }) => {
    const r = await client.kv.range({ key: ctx.ns.key("\0"), count_only: true }, options);
    return ctx.observe(r.header as PbHeader);
  }, timeoutMs);
}

const remaining = (deadline: number) => Math.max(1, deadline - Date.now());

const revision = (ctx: WriteContext, what: string, deadline: number) =>
  readRevision(ctx, what, remaining(deadline));

/** While etcd is down: a quick read first, so a write is only sent to a live etcd. */
async function probe(ctx: WriteContext, what: string, deadline: number): Promise<void> {
  try {
    await revision(ctx, what, deadline);
  } catch (err) {
    if (!(err instanceof UnavailableError)) throw err;
    throw ctx.pool.unavailable(what, err.cause ?? err, "not applied");
  }
}

/**
 * The result of the transaction if it applied after `base` (up to revision `upTo`,
 * default: the current revision read linearizably), undefined if it did not.
 * Rejects when that cannot be found out.
 */
async function settle(
  ctx: WriteContext,
  model: TxnModel,
  base: number,
  upTo: number | undefined,
  deadline: number,
): Promise<TxnResult | undefined> {
  const to = upTo ?? await revision(ctx, "settle", deadline);
  if (to <= base) return undefined;
  if (to - base > MAX_HISTORY) {
    throw new Error(`${to - base} revisions since the write was sent; too many to search`);
  }
  const history = byRevision(await readHistory(ctx, base + 1, to, deadline));
  const keys = [...new Set(model.compares.map((c) => c.key))];
  for (const [ops, succeeded] of [[model.success, true], [model.failure, false]] as const) {
    for (const m of candidates(ops, history)) {
      const before = await readAt(ctx, keys.map((key) => ({ key })), m - 1, deadline);
      const kvs = new Map(keys.map((key, i) => [key, before[i][0]]));
      if (comparesHold(model.compares, kvs) !== succeeded) continue;
      const gets = new Map<number, KeyValue[]>();
      const revs = getRevisions(ops, m);
      for (const [i, op] of ops.entries()) {
        if (op.type !== "get") continue;
        const rev = revs[i];
        if (rev === undefined) throw new Error("a get between writes cannot be read back");
        gets.set(i, (await readAt(ctx, [op], rev, deadline))[0]);
      }
      return appliedResult(ops, succeeded, m, history.get(m)!, gets);
    }
  }
  return undefined;
}

/** Keys (or prefixes) as they were at revision `rev`. */
function readAt(
  ctx: WriteContext,
  selections: { key: string; prefix?: boolean }[],
  rev: number,
  deadline: number,
): Promise<KeyValue[][]> {
  return ctx.pool.call("settle", ({ client, options }) =>
    Promise.all(selections.map(async (s) => {
      const r = await client.kv.range(
        { ...ctx.ns.select(s.key, s.prefix), revision: String(rev) },
        options,
      );
      return (r.kvs as PbKeyValue[]).map((kv) => ctx.ns.kv(kv));
    })), remaining(deadline));
}

/**
 * Every event in this namespace with revision in [from, to]. The watch covers the
 * whole keyspace, because only there is an event at `to` certain to exist (every
 * revision is some write's), which tells that the history is complete.
 */
function readHistory(
  ctx: WriteContext,
  from: number,
  to: number,
  deadline: number,
): Promise<WatchEvent[]> {
  return ctx.pool.call("settle", async ({ client, options }) => {
    const stream = (await client.watchClient.watch(options)) as unknown as WatchStream;
    const events: WatchEvent[] = [];
    return await new Promise<WatchEvent[]>((resolve, reject) => {
      stream.on("data", (r) => {
        if (r.compact_revision && r.compact_revision !== "0") {
          reject(new Error(`history up to revision ${r.compact_revision} was compacted`));
          return;
        }
        if (r.canceled) {
          reject(new Error(`etcd canceled the watch: ${r.cancel_reason}`));
          return;
        }
        let last = 0;
        for (const e of r.events ?? []) {
          last = Number(e.kv.mod_revision);
          if (last <= to && ctx.ns.contains(e.kv.key)) events.push(ctx.ns.event(e));
        }
        if (last >= to) resolve(events);
      });
      stream.on("error", reject);
      stream.on("end", () => reject(new Error("watch stream ended")));
      stream.write({
        create_request: {
          key: Buffer.from([0]),
          range_end: Buffer.from([0]),
          start_revision: String(from),
        },
      });
    }).finally(() => {
      try {
        stream.cancel();
      } catch { /* closed */ }
    });
  }, remaining(deadline));
}
