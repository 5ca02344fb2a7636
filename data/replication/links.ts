/**
 * The master's side of the peer channel for replication: one link per replica node and
 * thread, carrying requests for every volume and matching replies by id. A link that fails
 * (the connection breaks, or a reply does not come within the timeout) fails every request
 * on it and is replaced by a new connection at the next request.
 * @module
 */

import type { Logger } from "pino";
import { PayloadPool } from "../net/mod.ts";
import type { PeerConnection } from "../peer/mod.ts";
import {
  decodeReply,
  encodeRequest,
  encodeWriteHead,
  HEADER_BYTES,
  type Reply,
  type Request,
  T_WRITE,
} from "./wire.ts";

/** How long a replica may take to answer a request before it counts as failed. */
export const REPLICA_TIMEOUT_MS = 5_000;
/** WRITEs with this much data or more are sent without copying the data into the frame. */
export const WRITE_BY_REFERENCE = 64 * 1024;

/** Why a request to a replica failed without an answer. */
export class LinkError extends Error {
  override name = "LinkError";
}

type NewRequest = Request extends infer R ? R extends { id: number } ? Omit<R, "id"> : never
  : never;

/** A request waiting for its reply. */
interface Pending {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  /** performance.now() by which the reply must have come. */
  deadline: number;
  timeoutMs: number;
}

export class PeerLink {
  readonly node: string;
  readonly #conn: PeerConnection;
  readonly #log: Logger;
  #next = 1;
  /** Waiting requests by id, oldest first. */
  readonly #pending = new Map<number, Pending>();
  /**
   * One timer for all waiting requests (not one per request, which costs more than the rest
   * of sending a request): it fires at the earliest deadline it knows of and looks again; it
   * is not cleared when the requests are answered (arming it again per batch was 1-3% of a
   * master's CPU in a profile), only when the link fails.
   */
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #dead: Error | undefined;

  /** Buffers for the frames of small WRITEs, given back once the socket wrote them. */
  readonly #frames: PayloadPool;

  constructor(conn: PeerConnection, log: Logger, frames = new PayloadPool()) {
    this.node = conn.peerNode;
    this.#conn = conn;
    this.#log = log;
    this.#frames = frames;
    this.#read();
  }

  get alive(): boolean {
    return this.#dead === undefined;
  }

  async #read(): Promise<void> {
    try {
      for await (const batch of this.#conn.batches()) {
        for (const frame of batch) {
          let reply: Reply;
          try {
            reply = decodeReply(frame);
          } catch (err) {
            this.#fail(
              new LinkError(`replica ${this.node} sent garbage: ${(err as Error).message}`),
            );
            return;
          }
          const p = this.#pending.get(reply.id);
          if (!p) continue; // timed out already
          this.#pending.delete(reply.id);
          p.resolve(reply);
        }
      }
      this.#fail(new LinkError(`replica ${this.node} closed the connection`));
    } catch (err) {
      this.#fail(
        new LinkError(`connection to replica ${this.node} failed: ${(err as Error).message}`),
      );
    }
  }

  #fail(err: Error): void {
    if (this.#dead) return;
    this.#dead = err;
    this.#disarm();
    // Reset, not closed: frames of this link that the kernel has not delivered yet are
    // dropped. A closed socket would go on sending them (across a partition, for minutes),
    // and a WRITE arriving after a resync on a newer link had made that region equal would
    // silently undo a newer write on a copy the record calls in sync.
    this.#conn.abort();
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    this.#log.warn({ replica: this.node, reason: err.message }, "replication link lost");
  }

  #disarm(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
  }

  /** Arms the timer for `deadline` unless it fires earlier already. */
  #arm(deadline: number): void {
    if (deadline >= this.#timerAt) return;
    clearTimeout(this.#timer);
    this.#timerAt = deadline;
    this.#timer = setTimeout(() => this.#expire(), Math.max(0, deadline - performance.now()));
    // Left armed when the requests are answered (it then finds none and stops), so it must
    // not keep the process alive.
    Deno.unrefTimer(this.#timer);
  }

  /** The timer fired: a request past its deadline fails the link; else wait for the next. */
  #expire(): void {
    this.#timer = undefined;
    this.#timerAt = Infinity;
    const now = performance.now();
    let next = Infinity;
    for (const p of this.#pending.values()) {
      if (p.deadline <= now) {
        this.#fail(
          new LinkError(`replica ${this.node} did not answer within ${p.timeoutMs} ms`),
        );
        return;
      }
      next = Math.min(next, p.deadline);
    }
    if (next < Infinity) this.#arm(next);
  }

  /**
   * Sends a request and resolves with its reply; rejects with LinkError on failure. A small
   * WRITE's data is copied into the frame here; a large one is sent by reference, and
   * `taken` (when given) is called once, with true when the socket has written the frame
   * (its buffers may be reused then), false when it will not (never reuse them then).
   * `session`: the target's replication session (wire.ts), when not given in `r`.
   */
  request(
    r: NewRequest,
    timeoutMs = REPLICA_TIMEOUT_MS,
    taken?: (ok: boolean) => void,
    session = r.session ?? 0,
  ): Promise<Reply> {
    if (this.#dead) {
      taken?.(false);
      return Promise.reject(this.#dead);
    }
    const id = this.#next++;
    if (this.#next > 0xffff_ffff) this.#next = 1;
    const req = { ...r, id, session } as Request;
    // A large WRITE's data goes by reference after its head: it is the caller's own copy. A
    // small one is copied into a pooled frame: a fresh buffer per 4 KiB WRITE cost the
    // master an allocation and collector work per request (docs/BENCHMARKS.md, "Run 7").
    const large = req.type === T_WRITE && req.data.length >= WRITE_BY_REFERENCE;
    const pooled = req.type === T_WRITE && !large;
    const frame = large
      ? encodeWriteHead(req)
      : pooled
      ? encodeRequest(req, this.#frames.take(HEADER_BYTES + 8 + req.data.length))
      : encodeRequest(req);
    return new Promise<Reply>((resolve, reject) => {
      const deadline = performance.now() + timeoutMs;
      this.#pending.set(id, { resolve, reject, deadline, timeoutMs });
      this.#arm(deadline);
      this.#conn.send(frame, large ? req.data : undefined).then(
        () => {
          if (pooled) this.#frames.give(frame);
          taken?.(true);
        },
        (err) => {
          taken?.(false);
          this.#fail(new LinkError(`sending to replica ${this.node} failed: ${err.message}`));
        },
      );
    });
  }

  close(): void {
    this.#fail(new LinkError(`link to replica ${this.node} closed`));
  }
}

/** Opens a peer connection to `node` at "host:port". */
export type ConnectNode = (node: string, address: string) => Promise<PeerConnection>;

/** This thread's links, one per replica node, opened on first use and after a failure. */
export class PeerLinks {
  readonly #connect: ConnectNode;
  readonly #log: Logger;
  readonly #links = new Map<string, PeerLink>();
  readonly #opening = new Map<string, Promise<PeerLink>>();
  /** Buffers for the large WRITEs this thread sends by reference (Replicator.send). */
  readonly payloads = new PayloadPool();
  /** Buffers for the frames of the small WRITEs this thread sends (PeerLink.request). */
  readonly frames = new PayloadPool(4 * 1024 * 1024);

  constructor(connect: ConnectNode, log: Logger) {
    this.#connect = connect;
    this.#log = log;
  }

  /** The open link to `node`, if there is one alive (no waiting). */
  live(node: string): PeerLink | undefined {
    const link = this.#links.get(node);
    return link?.alive ? link : undefined;
  }

  get(node: string, address: string): Promise<PeerLink> {
    const link = this.#links.get(node);
    if (link?.alive) return Promise.resolve(link);
    let opening = this.#opening.get(node);
    if (!opening) {
      opening = this.#connect(node, address).then(
        (conn) => {
          const l = new PeerLink(conn, this.#log, this.frames);
          this.#links.set(node, l);
          return l;
        },
      ).finally(() => this.#opening.delete(node));
      this.#opening.set(node, opening);
    }
    return opening;
  }

  closeAll(): void {
    for (const l of this.#links.values()) l.close();
    this.#links.clear();
  }
}
