/**
 * The execute step of the transmission loop ("Request types"): runs one admitted request
 * against the export's store and hands its reply to the reply step. Reads, writes, trims
 * and zeroing run synchronously (the store's pread/pwrite hit the page cache); FLUSH and
 * FUA reply once the store's flush completes, while later requests keep flowing.
 * @module
 */

import * as C from "./constants.ts";
import type { Request, StatusDescriptor } from "./codec.ts";
import { StreamedReadError } from "./_replies.ts";
import { notMaster } from "./errno.ts";
import type { ReplicatedOp } from "../replication/replicator.ts";
import { F_NO_HOLE, T_FLUSH, T_TRIM, T_WRITE, T_ZERO } from "../replication/wire.ts";
import {
  answerFailure,
  executeChange,
  type ExecuteContext,
  flushThenReply,
  repairThenFail,
  REPLACED_CONNECTION,
  replicateThenReply,
  replicating,
} from "./_change.ts";
import { FENCED_WHY, type LiveExport } from "../exports.ts";
import { readBulk } from "../store/mod.ts";
import {
  OP_BLOCK_STATUS,
  OP_CACHE,
  OP_FLUSH,
  OP_READ,
  OP_TRIM,
  OP_WRITE,
  OP_WRITE_ZEROES,
} from "../stats.ts";

/** Most descriptors one BLOCK_STATUS reply carries ("MAY return less descriptors"). */
const MAX_DESCRIPTORS = 1024;
const STATUS_HOLE = C.NBD_STATE_HOLE | C.NBD_STATE_ZERO;

export type { ExecuteContext };

/** The statistics kind (stats.ts OP_*) of an NBD command: the one mapping. */
export function opOf(type: number): number {
  switch (type) {
    case C.NBD_CMD_WRITE:
      return OP_WRITE;
    case C.NBD_CMD_FLUSH:
      return OP_FLUSH;
    case C.NBD_CMD_TRIM:
      return OP_TRIM;
    case C.NBD_CMD_WRITE_ZEROES:
      return OP_WRITE_ZEROES;
    case C.NBD_CMD_BLOCK_STATUS:
      return OP_BLOCK_STATUS;
    case C.NBD_CMD_CACHE:
      return OP_CACHE;
    default:
      return OP_READ;
  }
}

/** Commands that change data: they pass the write gate and honour FUA. */
export function isDataChanging(type: number): boolean {
  return type === C.NBD_CMD_WRITE || type === C.NBD_CMD_TRIM ||
    type === C.NBD_CMD_WRITE_ZEROES;
}

/** How long a request waits for a group master to renew a lapsed lease before it fails. */
const LEASE_WAIT_MS = 15_000;

/** Requests that read or change data: a replaced master must serve none (lease.ts). */
function needsLease(type: number): boolean {
  return type === C.NBD_CMD_READ || type === C.NBD_CMD_BLOCK_STATUS || isDataChanging(type);
}

/**
 * The lease check before executing an admitted request: true when it may run now; otherwise
 * a promise that resolves true once the group master renewed its lease, or false when it
 * cannot after answering the request: ESHUTDOWN when another member replaced this one
 * (errno.ts notMaster), EIO when no renewal came within LEASE_WAIT_MS.
 */
export function checkLease(req: Request, run: ExecuteContext): true | Promise<boolean> {
  if (!needsLease(req.type) || run.exp.lease.state() === "ok") return true;
  return (async () => {
    const t0 = performance.now();
    for (;;) {
      const state = run.exp.lease.state();
      if (state === "ok") return true;
      if (state === "fenced" || performance.now() - t0 > LEASE_WAIT_MS) {
        answerFailure(
          req,
          run,
          opOf(req.type),
          t0,
          state === "fenced"
            ? notMaster(`this node no longer serves the volume: ${FENCED_WHY}`)
            : new Error(
              `this node could not renew its lease as the volume's master from its members ` +
                `within ${LEASE_WAIT_MS / 1000} s`,
            ),
        );
        return false;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
}

/**
 * Executes a valid request and queues its reply. `payload` is where a WRITE's data starts.
 * Returns a promise when the request waits before it is applied (see executeChange): the
 * connection waits for it before it executes the next request.
 */
export function execute(
  req: Request,
  run: ExecuteContext,
  payload: number,
): Promise<void> | undefined {
  const t0 = performance.now();
  const { exp, replies } = run;
  const store = exp.store;
  const kind = opOf(req.type);
  const seconds = () => (performance.now() - t0) / 1000;
  try {
    switch (req.type) {
      case C.NBD_CMD_READ:
        // Through the store's bulk reads, whatever their size: no kernel readahead, so data
        // that comes from the disk is cached in 4 KiB folios and the small writes that follow
        // into it stay cheap (file_store.ts; docs/BENCHMARKS.md, "Cold reads and the folios
        // they leave"). The store reads ahead for sequential readers itself.
        replies.read(req, (into) => readBulk(store, into, req.offset));
        exp.stats.record(kind, req.length, seconds(), false);
        return;
      case C.NBD_CMD_WRITE:
        return executeChange(
          req,
          run,
          kind,
          t0,
          run.input.buf.subarray(payload, payload + req.length),
          (data) => store.write(data!, req.offset),
          (data) => ({ type: T_WRITE, offset: req.offset, data: data!, flags: 0 }),
        );
      case C.NBD_CMD_TRIM:
        return executeChange(
          req,
          run,
          kind,
          t0,
          undefined,
          () => store.trim(req.offset, req.length),
          () => ({ type: T_TRIM, offset: req.offset, length: req.length, flags: 0 }),
        );
      case C.NBD_CMD_WRITE_ZEROES: {
        if ((req.flags & C.NBD_CMD_FLAG_FAST_ZERO) && !store.canFastZero) {
          // FAST_ZERO: "fail quickly" rather than write zeroes slowly (ENOTSUP with the flag).
          replies.error(req, "ENOTSUP", "fast zero not possible on this store");
          exp.stats.record(kind, 0, 0, true);
          return;
        }
        const noHole = (req.flags & C.NBD_CMD_FLAG_NO_HOLE) !== 0;
        return executeChange(
          req,
          run,
          kind,
          t0,
          undefined,
          () =>
            store.writeZeroes(
              req.offset,
              req.length,
              !noHole,
              (req.flags & C.NBD_CMD_FLAG_FAST_ZERO) !== 0,
            ),
          () => ({
            type: T_ZERO,
            offset: req.offset,
            length: req.length,
            flags: noHole ? F_NO_HOLE : 0,
          }),
        );
      }
      case C.NBD_CMD_FLUSH:
        if (replicating(exp)) {
          replicateThenReply(req, run, kind, t0, [{ type: T_FLUSH, flags: 0 }]);
          return;
        }
        flushThenReply(req, run, kind, 0, t0);
        return;
      case C.NBD_CMD_CACHE:
        break; // data is served from the page cache already
      case C.NBD_CMD_BLOCK_STATUS:
        replies.blockStatus(req, C.BASE_ALLOCATION_ID, describeAllocation(req, exp));
        exp.stats.record(kind, req.length, seconds(), false);
        return;
    }
  } catch (err) {
    answerFailure(req, run, kind, t0, err);
    return;
  }
  replies.ok(req);
  exp.stats.record(kind, req.length, seconds(), false);
}

/**
 * A WRITE too large to buffer whole (above STREAM_THRESHOLD): `pieces` yields its payload as
 * it arrives, each piece valid until the next is asked for, and each is written to the
 * store at once (and sent to the replicas of a group master). The regions are entered
 * before the first piece. After a failure the rest is still read (and dropped) to keep the
 * stream in step, and the request is answered with the failure.
 */
export async function executeStreamedWrite(
  req: Request,
  run: ExecuteContext,
  pieces: AsyncIterable<Uint8Array>,
): Promise<void> {
  const t0 = performance.now();
  let done = 0;
  let failure: unknown;
  const offset = req.offset;
  const { exp } = run;
  try {
    await exp.tracker?.enter(offset, req.length);
  } catch (err) {
    failure = err;
  }
  const entered = failure === undefined;
  const leave = () => {
    if (entered) exp.tracker?.leave(offset, req.length);
  };
  const ops: ReplicatedOp[] = [];
  for await (const piece of pieces) {
    if (failure === undefined) {
      try {
        if (run.fenced?.()) throw notMaster(REPLACED_CONNECTION);
        exp.store.write(piece, offset + done);
        if (replicating(exp)) {
          ops.push({ type: T_WRITE, offset: offset + done, data: piece.slice(), flags: 0 });
        }
      } catch (err) {
        failure = err;
      }
    }
    done += piece.length;
  }
  if (failure !== undefined) {
    // Pieces written before the failure reached no replica: repairThenFail sends them.
    if (entered && replicating(exp)) {
      repairThenFail(req, run, OP_WRITE, t0, failure, undefined, leave);
    } else {
      leave();
      answerFailure(req, run, OP_WRITE, t0, failure);
    }
  } else if (ops.length > 0) replicateThenReply(req, run, OP_WRITE, t0, ops, undefined, leave);
  else {
    leave();
    if ((req.flags & C.NBD_CMD_FLAG_FUA) !== 0) flushThenReply(req, run, OP_WRITE, req.length, t0);
    else {
      run.replies.ok(req);
      exp.stats.record(OP_WRITE, req.length, (performance.now() - t0) / 1000, false);
    }
  }
}

/** A READ too large for one reply batch (above STREAM_THRESHOLD), sent in pieces. */
export async function executeStreamedRead(req: Request, run: ExecuteContext): Promise<void> {
  const t0 = performance.now();
  const store = run.exp.store;
  try {
    await run.replies.readStreamed(req, (into, offset) => readBulk(store, into, offset));
  } catch (err) {
    if (!(err instanceof StreamedReadError)) throw err; // the connection cannot go on
    run.log.error({ type: req.type, offset: req.offset, length: req.length }, err.message);
    run.exp.stats.record(OP_READ, 0, (performance.now() - t0) / 1000, true);
    return;
  }
  run.exp.stats.record(OP_READ, req.length, (performance.now() - t0) / 1000, false);
}

/** base:allocation extents for the range ("Metadata querying"). */
function describeAllocation(req: Request, exp: LiveExport): StatusDescriptor[] {
  const extents = exp.store.extents(req.offset, req.length);
  const max = (req.flags & C.NBD_CMD_FLAG_REQ_ONE) !== 0 ? 1 : MAX_DESCRIPTORS;
  const ds: StatusDescriptor[] = [];
  for (const e of extents) {
    if (ds.length === max) break;
    ds.push({ length: e.length, flags: e.hole ? STATUS_HOLE : 0 });
  }
  if (ds.length === 0) ds.push({ length: req.length, flags: 0 });
  return ds;
}
