/**
 * The execute step of a connection attached to a volume that another node serves (attach
 * anywhere, data/proxy/): each request goes to the volume's master through the connection's
 * forwarder and is answered when the master answered it (the forwarder holds it across a
 * failover). Validation, shutdown and ordering of replies stay the connection's own.
 *
 * BLOCK_STATUS is answered here, describing the range as data ("Metadata querying": a server
 * may always report allocated data): the master is asked with simple replies only. CACHE is
 * advisory and answered at once.
 * @module
 */

import * as C from "./constants.ts";
import type { Request } from "./codec.ts";
import type { InputBuffer } from "./_input.ts";
import { errnoName } from "./errno.ts";
import type { ExecuteContext } from "./_change.ts";
import { opOf } from "./_execute.ts";
import { PayloadPool } from "../net/mod.ts";

/** READs at least this large get a reply buffer of their own, filled as their data arrives. */
const OWN_READ_BYTES = 128 * 1024;

/** Flags the master gets: DF only means something with structured replies, not used there. */
const FORWARDED_FLAGS = C.NBD_CMD_FLAG_FUA | C.NBD_CMD_FLAG_NO_HOLE | C.NBD_CMD_FLAG_FAST_ZERO;

/**
 * WRITE payloads are copied into buffers of this thread's pool and held there until the
 * master answered (the forwarder may send them again after a failover); a fresh buffer per
 * request cost more than the rest of a large WRITE's forwarding (docs/BENCHMARKS.md,
 * "Forwarding CPU per request").
 */
const payloads = new PayloadPool();

/**
 * Forwards a valid request; `payload` is a WRITE's data, copied here into a pooled buffer
 * unless `pooled` (it is one already, from forwardStreamedWrite): the forwarder holds it
 * until the master answered, then it goes back to the pool. Returns a promise when the client
 * must be held back until the forwarder has room again.
 */
export function forwardRequest(
  req: Request,
  run: ExecuteContext,
  payload: Uint8Array | undefined,
  pooled = false,
): Promise<void> | undefined {
  const t0 = performance.now();
  const { exp, replies } = run;
  const kind = opOf(req.type);
  if (req.type === C.NBD_CMD_BLOCK_STATUS) {
    replies.blockStatus(req, C.BASE_ALLOCATION_ID, [{ length: req.length, flags: 0 }]);
    exp.stats.record(kind, req.length, 0, false);
    return undefined;
  }
  if (req.type === C.NBD_CMD_CACHE) {
    replies.ok(req);
    exp.stats.record(kind, req.length, 0, false);
    return undefined;
  }
  const reply = replies.deferred(req);
  const isRead = req.type === C.NBD_CMD_READ;
  // A large READ's data goes from the master's connection straight into the client's reply
  // (a buffer of its own); a small one is copied into the reply batch when it arrives.
  const readReply = isRead && req.length >= OWN_READ_BYTES ? reply.readReply!() : undefined;
  const bytes = req.type === C.NBD_CMD_FLUSH ? 0 : req.length;
  let data: Uint8Array | undefined;
  if (req.type === C.NBD_CMD_WRITE) {
    if (pooled) data = payload;
    else {
      data = payloads.take(req.length);
      data.set(payload!);
    }
  }
  const type = req.type;
  const offset = req.offset;
  run.begin();
  return run.forward!.submit(
    {
      type,
      flags: req.flags & FORWARDED_FLAGS,
      offset,
      length: req.length,
      data,
      into: readReply?.data,
    },
    (r) => {
      const seconds = (performance.now() - t0) / 1000;
      if (data !== undefined) payloads.give(data);
      if (r.error === 0) {
        if (readReply) readReply.send();
        else if (isRead) reply.data!(r.data!);
        else reply.ok();
        exp.stats.record(kind, bytes, seconds, false);
      } else {
        const errno = errnoName(r.error);
        const message = r.message ?? `the volume's master answered ${errno}`;
        run.log.warn({ type, offset, length: bytes, errno }, message);
        reply.error(errno, message);
        exp.stats.record(kind, 0, seconds, true);
      }
      run.end();
    },
  );
}

/** A WRITE too large to buffer arrives in pieces: gathered whole, then forwarded. */
export async function forwardStreamedWrite(
  req: Request,
  run: ExecuteContext,
  pieces: AsyncIterable<Uint8Array>,
): Promise<void> {
  const data = payloads.take(req.length);
  let at = 0;
  try {
    for await (const piece of pieces) {
      data.set(piece, at);
      at += piece.length;
    }
  } catch (err) {
    payloads.give(data);
    throw err;
  }
  await forwardRequest(req, run, data, true);
}

/** A buffered WRITE's payload, in place in the input buffer (other requests have none). */
export function payloadOf(req: Request, input: InputBuffer, at: number): Uint8Array | undefined {
  return req.type === C.NBD_CMD_WRITE ? input.buf.subarray(at, at + req.length) : undefined;
}
