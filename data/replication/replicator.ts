/**
 * The master's side of one replicated volume on one thread: every WRITE, TRIM, WRITE_ZEROES
 * and FLUSH that the master applied locally is sent to each replica it currently targets
 * (the members the group record lists in sync, and a member being resynced), tagged with
 * the epoch, and the request's reply waits for all of them.
 *
 * A replica that fails (no answer within REPLICA_TIMEOUT_MS, a broken connection, an error)
 * is dropped from this thread's targets at once, so no later request goes to it, and is
 * reported: the caller must not acknowledge the request until the group record shows that
 * replica out of sync (LiveExport.replicasFailed). Every later request is reported with it
 * too until the record no longer lists it (setTargets): a request that did not reach a member
 * the record may still call in sync must not be acknowledged before the record says
 * otherwise, or that member could be promoted without it (found by the model checker,
 * tests/control/group/). A replica answering STATUS_STALE_EPOCH means a newer master fenced
 * this one: the request fails.
 * @module
 */

import type { Logger } from "pino";
import { errorMessage } from "../../mod/errors.ts";
import { LinkError, type PeerLink, type PeerLinks, WRITE_BY_REFERENCE } from "./links.ts";
import {
  replyMessage,
  STATUS_OK,
  STATUS_STALE_EPOCH,
  type T_FENCE,
  type T_FLUSH,
  type T_TRIM,
  T_WRITE,
  type T_ZERO,
} from "./wire.ts";

/** A member to send to: its node name and peer address. */
export interface ReplicaTarget {
  node: string;
  address: string;
  /**
   * The member's session of the copy (wire.ts, "Sessions"), given since it was last
   * resynced; every change sent to it carries it. Absent or 0: none.
   */
  session?: number;
}

/** Why each failed replica failed, by node, in words ("replica n4 refused: ENOSPC ..."). */
export type ReplicaReasons = Record<string, string>;

/** What replicating one request came to. */
export interface Replicated {
  /** Replicas that did not apply it (dropped from the targets; to be marked out of sync). */
  failed: { node: string; reason: string }[];
  /** A replica has seen a newer epoch: this node is no longer the master. */
  fenced: string | undefined;
}

export type ReplicatedOp =
  | { type: typeof T_WRITE; offset: number; data: Uint8Array; flags: number }
  | { type: typeof T_TRIM | typeof T_ZERO; offset: number; length: number; flags: number }
  | { type: typeof T_FLUSH | typeof T_FENCE; flags: number };

export class Replicator {
  readonly volume: string;
  readonly #links: PeerLinks;
  readonly #log: Logger;
  #epoch = 0;
  #targets: ReplicaTarget[] = [];
  /** Members dropped after a failure that the record may still list (node -> reason). */
  readonly #dropped = new Map<string, string>();

  constructor(volumeUuid: string, links: PeerLinks, log: Logger) {
    this.volume = volumeUuid;
    this.#links = links;
    this.#log = log;
  }

  get epoch(): number {
    return this.#epoch;
  }

  get targets(): readonly ReplicaTarget[] {
    return this.#targets;
  }

  /** Whether requests must go through send(): there are targets, or dropped members pending. */
  get active(): boolean {
    return this.#targets.length > 0 || this.#dropped.size > 0;
  }

  /**
   * The members to replicate to from now on, at `epoch` (from the group record). A member
   * dropped after a failure stays dropped while the record still lists it.
   */
  setTargets(epoch: number, targets: ReplicaTarget[]): void {
    if (epoch !== this.#epoch) this.#dropped.clear();
    this.#epoch = epoch;
    for (const node of [...this.#dropped.keys()]) {
      if (!targets.some((t) => t.node === node)) this.#dropped.delete(node);
    }
    this.#targets = targets.filter((t) => !this.#dropped.has(t.node));
  }

  /**
   * Sends `op` to every target; resolves when each answered or failed. The request leaves
   * at once (in this turn) on a link that is open already.
   *
   * `borrowed`: a WRITE's data is the caller's only until send() returns (the connection's
   * input buffer, which the next read overwrites). send() then copies what it keeps: a small
   * WRITE is copied into its frame on an open link (no copy of its own), a large one once
   * into a pooled buffer that all targets send by reference and that is reused once every
   * socket has written it. A fresh buffer per request cost the master a zeroed allocation,
   * a copy and collector work (docs/BENCHMARKS.md, "Run 6: replicated writes without a
   * fresh buffer"). Without `borrowed` the data is the caller's own copy and is sent as it is.
   */
  send(op: ReplicatedOp, borrowed = false): Promise<Replicated> {
    const targets = this.#targets;
    const out: Replicated = {
      failed: this.#dropped.size === 0
        ? []
        : [...this.#dropped].map(([node, reason]) => ({ node, reason })),
      fenced: undefined,
    };
    if (targets.length === 0) return Promise.resolve(out);
    const epoch = this.#epoch;
    let taken: ((ok: boolean) => void) | undefined;
    if (borrowed && op.type === T_WRITE) {
      if (op.data.length >= WRITE_BY_REFERENCE) {
        const copy = this.#links.payloads.take(op.data.length);
        copy.set(op.data);
        op = { ...op, data: copy };
        let left = targets.length;
        let reusable = true;
        taken = (ok) => {
          reusable &&= ok; // a socket that failed may still hold it: never reused then
          if (--left === 0 && reusable) this.#links.payloads.give(copy);
        };
      } else if (targets.some((t) => this.#links.live(t.node) === undefined)) {
        op = { ...op, data: op.data.slice() }; // a link still opening encodes it later
      }
    }
    // One request object for every target (PeerLink.request adds its own id).
    const r = { ...op, volume: this.volume, epoch } as never;
    if (targets.length === 1) {
      return this.#ask(targets[0], r, out, taken).then(() => this.#drop(out, epoch));
    }
    const asks = targets.map((t) => this.#ask(t, r, out, taken));
    return Promise.all(asks).then(() => this.#drop(out, epoch));
  }

  /** Drops the targets that failed `out` at `epoch`; returns `out`. */
  #drop(out: Replicated, epoch: number): Replicated {
    for (const f of out.failed) {
      if (this.#dropped.has(f.node) || epoch !== this.#epoch) continue;
      // A member the record stopped listing while the request was in flight (the replica
      // count was lowered) is not kept as dropped: nothing waits for the record to say what
      // it says already, and no later request reports it (the master logged each one).
      if (!this.#targets.some((t) => t.node === f.node)) continue;
      this.#dropped.set(f.node, f.reason);
      this.#targets = this.#targets.filter((t) => t.node !== f.node);
      this.#log.warn({ replica: f.node, epoch, reason: f.reason }, "replica failed; dropped");
    }
    return out;
  }

  /**
   * Sends request `r` to one target; its verdict goes into `out`. `taken` (when given) is called
   * once, when the target's socket has written the request or will not.
   */
  #ask(
    t: ReplicaTarget,
    r: Parameters<PeerLink["request"]>[0],
    out: Replicated,
    taken?: (ok: boolean) => void,
  ): Promise<void> {
    // The target's session goes into the copy PeerLink.request makes anyway.
    const s = t.session ?? 0;
    const link = this.#links.live(t.node);
    const reply = link ? link.request(r, undefined, taken, s) : this.#links.get(t.node, t.address)
      .then(
        (l) => l.request(r, undefined, taken, s),
        (err) => {
          taken?.(false);
          throw err;
        },
      );
    return reply.then((reply) => {
      if (reply.status === STATUS_OK) return;
      const msg = replyMessage(reply);
      // STATUS_STALE_SESSION here means a new session began without this thread being
      // told (it never should): the member missed this change, so it is failed.
      if (reply.status === STATUS_STALE_EPOCH) out.fenced = `replica ${t.node}: ${msg}`;
      else out.failed.push({ node: t.node, reason: `replica ${t.node} refused: ${msg}` });
    }, (err) => {
      const reason = err instanceof LinkError
        ? err.message
        : `replica ${t.node}: ${errorMessage(err)}`;
      out.failed.push({ node: t.node, reason });
    });
  }
}
