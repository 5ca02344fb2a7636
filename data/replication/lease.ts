/**
 * The master's read lease: no stale reads from a master that another member may have
 * replaced (issue 12). A master serves a replicated volume's requests only while every member
 * it replicates to (in sync, or being resynced: any member that could be promoted) has
 * answered it within the lease: it PINGs each once a second; a member answers while the
 * master's epoch is still the newest it has seen, and notes when it did (CopyEpochs.granted).
 *
 *   - The master counts on an answer for MASTER_SHARE of LEASE_MS after it SENT the request
 *     (the member answered later than that).
 *   - A member promoted to master raises its copy's epoch (from then on it refuses the old
 *     master) and serves only LEASE_MS after the last answer it gave (and LEASE_MS after its
 *     own start, since a restart forgets the answers given before it).
 *   So the old master stops before the new one starts, whatever the scheduling: both sides
 *   measure LEASE_MS on their own monotonic clock (performance.now(), which keeps running
 *   while a process is stopped), and only their rates must agree within 10%. A master
 *   frozen (SIGSTOP) past the lease serves nothing when it resumes: its first request finds
 *   the lease lapsed and waits while the next PING learns it was fenced.
 *
 * A healthy group keeps its lease through an etcd outage: only the members are asked.
 *
 * The lease state lives in shared memory (a LeaseView per volume) so that the data workers
 * check it on every request with their own clock, corrected to the main thread's.
 * @module
 */

import type { Logger } from "pino";
import type { PeerLinks } from "./links.ts";
import type { ReplicaTarget } from "./replicator.ts";
import { replyMessage, STATUS_OK, STATUS_STALE_EPOCH, T_PING } from "./wire.ts";

/** How long a member's answer lets the master serve, measured from the answer. */
export const LEASE_MS = 4000;
/** The part of LEASE_MS the master counts on, measured from sending. */
const MASTER_SHARE = 0.9;
/** How often the master PINGs each member. */
export const PING_EVERY_MS = 1000;
/** A PING not answered within this is no renewal (the lease lapses on its own). */
const PING_TIMEOUT_MS = 2000;
/**
 * PINGs in a row a member may leave unanswered before it is reported failed (to be marked
 * out of sync like a member that fails a write): an idle volume notices a dead member too,
 * and its reads do not wait for a member that will not answer.
 */
const MISSES_TO_FAIL = 2;
/** When this process started, on its monotonic clock. */
const STARTED = performance.now();

const VALID_UNTIL = 0;
const FENCED = 1;

/** What a request finds: serve, wait for a renewal, or fail (this master was replaced). */
export type LeaseState = "ok" | "lapsed" | "fenced";

/**
 * The lease of one volume as every thread sees it: the main thread's LeaseKeeper writes it,
 * request handlers read it. `clockOffset`: add to this thread's performance.now() to get an
 * upper bound of the main thread's (NaN until known: a finite lease counts as lapsed).
 */
export class LeaseView {
  readonly buffer: SharedArrayBuffer;
  readonly #v: Float64Array;
  clockOffset: number;

  constructor(buffer?: SharedArrayBuffer, clockOffset = 0) {
    this.buffer = buffer ?? new SharedArrayBuffer(16);
    this.#v = new Float64Array(this.buffer);
    if (!buffer) this.#v[VALID_UNTIL] = Infinity;
    this.clockOffset = clockOffset;
  }

  state(): LeaseState {
    if (this.#v[FENCED] !== 0) return "fenced";
    const until = this.#v[VALID_UNTIL];
    if (until === Infinity) return "ok";
    return performance.now() + this.clockOffset < until ? "ok" : "lapsed";
  }

  /** Main thread: the lease holds until `until` (performance.now() time; Infinity: always). */
  set(until: number): void {
    this.#v[VALID_UNTIL] = until;
  }

  /** Main thread: a member has seen a newer epoch: serve nothing more. */
  fence(fenced: boolean): void {
    this.#v[FENCED] = fenced ? 1 : 0;
  }
}

/**
 * How long a member about to serve the copy it last answered a master for at `lastGranted`
 * (performance.now(), undefined: never since this process started) must wait first.
 */
export function promotionWait(lastGranted: number | undefined): number {
  const since = Math.max(lastGranted ?? STARTED, STARTED);
  return Math.max(0, since + LEASE_MS - performance.now());
}

/** The master's side for one volume (main thread): PINGs the members, updates the view. */
export class LeaseKeeper {
  readonly view: LeaseView;
  readonly #uuid: string;
  readonly #links: () => PeerLinks | undefined;
  readonly #log: Logger;
  #epoch = 0;
  #members: ReplicaTarget[] = [];
  /** When the last answered PING to each member was sent. */
  readonly #answered = new Map<string, number>();
  /** PINGs missed in a row per member. */
  readonly #misses = new Map<string, number>();
  readonly #onFailed: ((node: string, reason: string) => void) | undefined;
  /** Members with a PING outstanding (one at a time each). */
  readonly #pinging = new Set<string>();
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(
    view: LeaseView,
    o: {
      uuid: string;
      links: () => PeerLinks | undefined;
      log: Logger;
      /** A member missed MISSES_TO_FAIL PINGs in a row (and again every so many). */
      onFailed?: (node: string, reason: string) => void;
    },
  ) {
    this.view = view;
    this.#onFailed = o.onFailed;
    this.#uuid = o.uuid;
    this.#links = o.links;
    this.#log = o.log;
  }

  /** The members to hold the lease from at `epoch` (a new epoch clears a fence). */
  set(epoch: number, members: ReplicaTarget[]): void {
    if (epoch !== this.#epoch) {
      this.#epoch = epoch;
      this.#answered.clear();
      this.#misses.clear();
      this.view.fence(false);
    }
    const before = new Set(this.#members.map((m) => m.node));
    this.#members = [...members];
    for (const n of [...this.#answered.keys(), ...this.#misses.keys()]) {
      if (!members.some((m) => m.node === n)) {
        this.#answered.delete(n);
        this.#misses.delete(n);
      }
    }
    this.#publish();
    if (members.length === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      return;
    }
    this.#timer ??= setInterval(() => this.#pingAll(), PING_EVERY_MS);
    // A member new to the set is asked at once (requests wait for its answer).
    for (const m of members) if (!before.has(m.node)) void this.#ping(m);
  }

  #publish(): void {
    if (this.#members.length === 0) {
      this.view.set(Infinity);
      return;
    }
    let until = Infinity;
    for (const m of this.#members) {
      const sent = this.#answered.get(m.node);
      until = Math.min(until, sent === undefined ? -Infinity : sent + LEASE_MS * MASTER_SHARE);
    }
    this.view.set(until);
  }

  #pingAll(): void {
    for (const m of this.#members) void this.#ping(m);
  }

  async #ping(m: ReplicaTarget): Promise<void> {
    const links = this.#links();
    if (!links || m.address === "" || this.#pinging.has(m.node)) return;
    this.#pinging.add(m.node);
    try {
      await this.#pingOnce(links, m);
    } finally {
      this.#pinging.delete(m.node);
    }
  }

  async #pingOnce(links: PeerLinks, m: ReplicaTarget): Promise<void> {
    const epoch = this.#epoch;
    const sent = performance.now();
    try {
      const link = await links.get(m.node, m.address);
      const reply = await link.request(
        { type: T_PING, flags: 0, volume: this.#uuid, epoch },
        PING_TIMEOUT_MS,
      );
      if (epoch !== this.#epoch) return;
      this.#misses.delete(m.node);
      if (reply.status === STATUS_OK) {
        const prev = this.#answered.get(m.node) ?? -Infinity;
        if (sent > prev && this.#members.some((x) => x.node === m.node)) {
          this.#answered.set(m.node, sent);
          this.#publish();
        }
      } else if (reply.status === STATUS_STALE_EPOCH) {
        if (this.view.state() !== "fenced") {
          this.#log.error(
            { uuid: this.#uuid, epoch, replica: m.node, reason: replyMessage(reply) },
            "this master was replaced (a member has seen a newer epoch): serving nothing more",
          );
        }
        this.view.fence(true);
      }
    } catch (err) {
      // No answer: no renewal, and after a few misses the member is reported.
      if (epoch !== this.#epoch || !this.#members.some((x) => x.node === m.node)) return;
      const misses = (this.#misses.get(m.node) ?? 0) + 1;
      this.#misses.set(m.node, misses);
      if (misses % MISSES_TO_FAIL === 0) {
        const reason = err instanceof Error ? err.message : String(err);
        this.#log.warn(
          { uuid: this.#uuid, epoch, replica: m.node, reason },
          "member does not answer the lease PINGs; reporting it failed",
        );
        this.#onFailed?.(m.node, reason);
      }
    }
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
