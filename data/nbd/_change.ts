/**
 * The execute step for requests that change data (WRITE, TRIM, WRITE_ZEROES): enter the
 * regions the request touches (data/replication/tracker.ts: marks them in the activity log
 * when they were clean, and waits while another thread writes there or a resync holds one),
 * apply it to the local copy, send it to the replicas of a group master, and reply once it is
 * where it must be ("MUST NOT send its reply ... until the data is persisted" for FUA; a
 * replicated request once every target applied it). The regions are left only then, so a
 * resync that locks a region never copies it while a write to it is on its way to a replica.
 *
 * The common case runs synchronously: regions entered at once, no replicas, no FUA.
 * @module
 */

import * as C from "./constants.ts";
import type { Request } from "./codec.ts";
import { type Errno, errnoOf, notMaster } from "./errno.ts";
import type { DeferredReply, Replies } from "./_replies.ts";
import type { Logger } from "pino";
import type { InputBuffer } from "./_input.ts";
import type { LiveExport, RequestForwarder } from "../exports.ts";
import type { ReplicaReasons, Replicated, ReplicatedOp } from "../replication/replicator.ts";
import { F_FUA, T_FLUSH, T_WRITE } from "../replication/wire.ts";
import { OP_FLUSH } from "../stats.ts";

/** What executing a request needs from its connection. */
export interface ExecuteContext {
  exp: LiveExport;
  /** Holds a WRITE's payload, in place. */
  input: InputBuffer;
  replies: Replies;
  log: Logger;
  /** Registers work whose reply is sent when it settles (shutdown waits for it). */
  later(work: Promise<void>): void;
  /**
   * The same without a promise: a request whose reply is sent later is counted from begin()
   * until its end() (one each; forwarded requests, _forwarded.ts).
   */
  begin(): void;
  end(): void;
  /** Set when the export is served by another node: requests go there (_forwarded.ts). */
  forward?: RequestForwarder;
  /** A forwarding node's connection replaced by a newer one of it: run no more changes. */
  fenced?: () => boolean;
}

/** The local step of a change: applies it to the store (throws on failure). */
export type Apply = (payload: Uint8Array | undefined) => void;
/** What the replicas get, built from the (stable) payload. */
export type ToReplicas = (payload: Uint8Array | undefined) => ReplicatedOp;

/** Why a change of a forwarding connection replaced by a newer one of its forwarder is refused. */
export const REPLACED_CONNECTION =
  "this connection of a forwarding node was replaced by a newer one: its requests run there";

/** Whether requests to this export go to replicas too (a group master with replicas). */
export function replicating(exp: ExecuteContext["exp"]): boolean {
  return exp.replicator?.active ?? false;
}

function isFua(req: Request): boolean {
  return (req.flags & C.NBD_CMD_FLAG_FUA) !== 0;
}

/**
 * Executes a data-changing request. `payload`: a WRITE's data, a view of the connection's
 * input buffer, valid only until the connection reads on. Returns a promise when the request
 * had to wait to enter its regions: it resolves once the request is applied locally, and the
 * connection neither reads nor executes anything else before (a READ sent after a WRITE of
 * the same range sees it, as when nothing waits), so the payload stays valid meanwhile and is
 * not copied. Copying it cost a fresh 1 MiB buffer (zeroed, page faults, GC) per 1 MiB WRITE
 * into a clean region (docs/BENCHMARKS.md, "Where the 4-connection write CPU went").
 */
export function executeChange(
  req: Request,
  run: ExecuteContext,
  kind: number,
  t0: number,
  payload: Uint8Array | undefined,
  apply: Apply,
  toReplicas: ToReplicas,
): Promise<void> | undefined {
  const entering = run.exp.tracker?.enter(req.offset, req.length);
  if (entering === undefined) {
    applyEntered(req, run, kind, t0, payload, apply, toReplicas, undefined);
    return undefined;
  }
  const reply = run.replies.deferred(req);
  const applied = entering.then(
    () => applyEntered(req, run, kind, t0, payload, apply, toReplicas, reply),
    (err: unknown) => answerFailure(req, run, kind, t0, err, reply),
  );
  run.later(applied);
  return applied;
}

/** Regions entered: apply locally, then reply now, after a flush, or after the replicas. */
function applyEntered(
  req: Request,
  run: ExecuteContext,
  kind: number,
  t0: number,
  payload: Uint8Array | undefined,
  apply: Apply,
  toReplicas: ToReplicas,
  deferred: DeferredReply | undefined,
): void {
  // `req` is the connection's and is reused for the next request: keep what is needed later.
  const { offset, length } = req;
  const tracker = run.exp.tracker;
  const leave = () => tracker?.leave(offset, length);
  if (run.fenced?.()) {
    // Checked with the change itself, after every wait (data/forwarder_fences.ts).
    leave();
    answerFailure(req, run, kind, t0, notMaster(REPLACED_CONNECTION), deferred);
    return;
  }
  try {
    apply(payload);
  } catch (err) {
    if (replicating(run.exp)) repairThenFail(req, run, kind, t0, err, deferred, leave);
    else {
      leave();
      answerFailure(req, run, kind, t0, err, deferred);
    }
    return;
  }
  if (replicating(run.exp)) {
    // The payload is only valid until the next read: Replicator.send copies what it keeps.
    replicateThenReply(req, run, kind, t0, [toReplicas(payload)], deferred, leave, true);
    return;
  }
  leave();
  if (isFua(req)) {
    flushThenReply(req, run, kind, req.length, t0, deferred);
    return;
  }
  (deferred ?? immediate(req, run)).ok();
  run.exp.stats.record(kind, req.length, (performance.now() - t0) / 1000, false);
}

function immediate(req: Request, run: ExecuteContext): DeferredReply {
  return {
    ok: () => run.replies.ok(req),
    error: (errno: Errno, message: string) => run.replies.error(req, errno, message),
  };
}

/** Answers a request whose store operation failed (the one place for that). */
export function answerFailure(
  req: Request,
  run: ExecuteContext,
  kind: number,
  t0: number,
  err: unknown,
  deferred?: DeferredReply,
): void {
  const at = { type: req.type, offset: req.offset, length: req.length };
  failWith(at, run, kind, t0, err, deferred ?? immediate(req, run));
}

/** answerFailure for the request at `at` (kept apart from the connection's reused Request). */
function failWith(
  at: { type: number; offset: number; length: number },
  run: ExecuteContext,
  kind: number,
  t0: number,
  err: unknown,
  reply: DeferredReply,
): void {
  const errno = errnoOf(err);
  const message = err instanceof Error ? err.message : String(err);
  run.log.error({ ...at, errno }, message);
  run.exp.stats.record(kind, 0, (performance.now() - t0) / 1000, true);
  reply.error(errno, message);
}

/** The largest WRITE a repair (repairThenFail) sends to the replicas at once. */
const REPAIR_PIECE = 1024 * 1024;
/** The most a repair reads back and sends: the largest WRITE a client may send. */
const REPAIR_MAX = C.MAX_REQUEST_SIZE;

/**
 * A change that failed here may still have changed part of its range (a write goes to the
 * file in 16 KiB pieces, and a full disk stops it midway: ENOSPC) and reached no replica. So
 * that the copies listed in sync stay equal, the replicas get what this copy now holds in that
 * range (read back, sent as WRITEs), then the request fails with the store's error: once they
 * applied it, or were shown out of sync (a replica that cannot take it either). When even
 * the read back fails, the request fails at once. `leave` runs when the replicas are through.
 */
export function repairThenFail(
  req: Request,
  run: ExecuteContext,
  kind: number,
  t0: number,
  err: unknown,
  deferred: DeferredReply | undefined,
  leave: () => void,
): void {
  const { exp } = run;
  const reply = deferred ?? run.replies.deferred(req);
  // The connection reuses `req` for its next request: what is needed later, now.
  const asked = { type: req.type, offset: req.offset, length: req.length };
  const fail = () => {
    leave();
    failWith(asked, run, kind, t0, err, reply);
  };
  if (asked.length > REPAIR_MAX) {
    // Too large to hold (a WRITE_ZEROES over gigabytes): the replicas leave the in-sync set
    // instead, and their resync copies what differs.
    const nodes = exp.replicator!.targets.map((t) => t.node);
    if (nodes.length === 0) return fail();
    const why = `a change of ${asked.length} bytes at ${asked.offset} failed on the master ` +
      `after it may have changed part of its range`;
    const out = exp.replicasFailed(nodes, Object.fromEntries(nodes.map((n) => [n, why])));
    run.later(out.then(fail, fail));
    return;
  }
  const ops: ReplicatedOp[] = [];
  try {
    for (let at = 0; at < asked.length; at += REPAIR_PIECE) {
      const data = new Uint8Array(Math.min(REPAIR_PIECE, asked.length - at));
      exp.store.read(data, asked.offset + at);
      ops.push({ type: T_WRITE, offset: asked.offset + at, data, flags: 0 });
    }
  } catch {
    fail();
    return;
  }
  run.log.warn(
    { type: asked.type, offset: asked.offset, length: asked.length },
    "a change failed here after it may have changed part of its range: sending the replicas " +
      "what this copy holds there, so that the copies stay equal",
  );
  const repaired = Promise.all(ops.map((op) => exp.replicator!.send(op)))
    .then((results) => afterReplicas(exp, results));
  run.later(repaired.then(fail, fail));
}

/**
 * The reply of a request applied here that the replicas must apply too: sent once every
 * replica answered, and, for FUA and FLUSH, once the local flush completed. A replica that
 * failed must first be shown out of sync in the group record (exp.replicasFailed: until
 * then the reply waits); a fenced master (a replica saw a newer epoch) fails the request
 * with ESHUTDOWN (errno.ts notMaster).
 * `done` runs when the replicas are through with it (the regions are left there).
 * `borrowed`: the WRITE data of `ops` is valid only during this call (Replicator.send).
 */
export function replicateThenReply(
  req: Request,
  run: ExecuteContext,
  kind: number,
  t0: number,
  ops: ReplicatedOp[],
  deferred?: DeferredReply,
  done?: () => void,
  borrowed = false,
): void {
  const { exp } = run;
  const rep = exp.replicator!;
  const reply = deferred ?? run.replies.deferred(req);
  const durable = kind === OP_FLUSH || isFua(req);
  const bytes = kind === OP_FLUSH ? 0 : req.length;
  // `req` is reused by the connection for the next request: what the log needs, now.
  const { type, offset, length } = req;
  const ok = () => {
    exp.stats.record(kind, bytes, (performance.now() - t0) / 1000, false);
    reply.ok();
  };
  const failed = (err: unknown) => {
    const message = err instanceof Error ? err.message : String(err);
    const errno = errnoOf(err);
    run.log.error({ type, offset, length, errno }, message);
    exp.stats.record(kind, 0, (performance.now() - t0) / 1000, true);
    reply.error(errno, message);
  };
  const send = (op: ReplicatedOp) =>
    rep.send(durable && op.type !== T_FLUSH ? { ...op, flags: op.flags | F_FUA } : op, borrowed);
  if (ops.length === 1 && !durable) {
    // The common case (a WRITE, TRIM or ZERO without FUA) with as few promises as it takes:
    // a replicated 4 KiB write made about fifteen before.
    run.begin();
    send(ops[0]).then((result) => {
      try {
        done?.();
        if (result.fenced === undefined && result.failed.length === 0) ok();
        else run.later(afterReplicas(exp, [result])!.then(ok, failed));
      } catch (err) {
        failed(err);
      } finally {
        run.end();
      }
    }, (err) => {
      // Replicator.send() does not reject; should that change, the request still ends.
      done?.();
      failed(err);
      run.end();
    });
    return;
  }
  const work = (async () => {
    const [results] = await Promise.all([
      Promise.all(ops.map(send)).finally(() => done?.()),
      durable ? exp.store.flush() : undefined,
    ]);
    await afterReplicas(exp, results);
  })();
  run.later(work.then(ok, failed));
}

/**
 * What must happen before a replicated request may be answered: nothing (undefined) when
 * every replica applied it; else a promise that resolves once the replicas that failed are
 * out of sync in the group record, or rejects (ESHUTDOWN) when a replica fenced this master.
 */
function afterReplicas(exp: LiveExport, results: Replicated[]): Promise<void> | undefined {
  let fenced: string | undefined;
  let failed: string[] | undefined;
  let reasons: ReplicaReasons | undefined; // only when one failed: no object per request
  for (const r of results) {
    fenced ??= r.fenced;
    for (const f of r.failed) {
      failed ??= [];
      if (!failed.includes(f.node)) failed.push(f.node);
      (reasons ??= {})[f.node] ??= f.reason;
    }
  }
  if (fenced) {
    return Promise.reject(notMaster(`this node is no longer the volume's master: ${fenced}`));
  }
  return failed === undefined ? undefined : exp.replicasFailed(failed, reasons);
}

/** Replies after the store's flush completes; other requests keep flowing meanwhile. */
export function flushThenReply(
  req: Request,
  run: ExecuteContext,
  kind: number,
  bytes: number,
  t0: number,
  deferred?: DeferredReply,
): void {
  const { exp } = run;
  const reply = deferred ?? run.replies.deferred(req);
  run.later(
    exp.store.flush().then(
      () => {
        exp.stats.record(kind, bytes, (performance.now() - t0) / 1000, false);
        reply.ok();
      },
      (err) => {
        const message = err instanceof Error ? err.message : String(err);
        const errno = errnoOf(err);
        run.log.error({ errno }, message);
        exp.stats.record(kind, 0, (performance.now() - t0) / 1000, true);
        reply.error(errno, message);
      },
    ),
  );
}
