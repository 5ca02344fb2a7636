/**
 * The master's read lease: no stale reads from a master that another member may have
 * replaced (issue 12). A master serves a replicated volume's requests only while every member
 * it replicates to (in sync, or being resynced: any member that could be promoted) has
 * answered it within the lease: it PINGs each once a second; a member answers while the
 * master's epoch is still the newest it has seen, and notes when it did (CopyEpochs.granted).
 *
 * The PINGs of every volume a node masters go out together: once a second, one PINGS request
 * per member node (wire.ts) carrying (volume, epoch) for each of its volumes, answered with a
 * status per volume, so the cost grows with the member nodes, not with the groups (2,000
 * groups made ~4,000 round trips a second, see docs/BENCHMARKS.md). Batching changes none of
 * the reasoning below: each volume's answer is judged as its own PING's was, on its own
 * epoch, with the time the PINGS was SENT; a STATUS_STALE_EPOCH fences that volume only, and
 * a PINGS left unanswered counts as a miss of that member for each volume in it. A member
 * node of an older version, which answers PINGS with STATUS_BAD_REQUEST, is PINGed a volume
 * at a time as before (it is still asked, so its groups keep their lease during an upgrade).
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
import type { PeerLink, PeerLinks } from "./links.ts";
import type { ReplicaTarget } from "./replicator.ts";
import {
  decodePingStatuses,
  MAX_PINGS,
  pingsRequest,
  type Reply,
  replyMessage,
  STATUS_BAD_REQUEST,
  STATUS_OK,
  STATUS_STALE_EPOCH,
  T_PING,
} from "./wire.ts";

/** How long a member's answer lets the master serve, measured from the answer. */
export const LEASE_MS = 4000;
/** The part of LEASE_MS the master counts on, measured from sending. */
const MASTER_SHARE = 0.9;
/** How often the master PINGs each member node (for all its volumes at once). */
export const PING_EVERY_MS = 1000;
/** A PING(S) not answered within this is no renewal (the lease lapses on its own). */
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

/** The master's side for one volume (main thread): its members' answers, the view. */
export class LeaseKeeper {
  readonly view: LeaseView;
  readonly uuid: string;
  readonly #pinger: LeasePinger;
  readonly #log: Logger;
  #epoch = 0;
  #members: ReplicaTarget[] = [];
  /** When the last answered PING to each member was sent. */
  readonly #answered = new Map<string, number>();
  /** PINGs missed in a row per member. */
  readonly #misses = new Map<string, number>();
  readonly #onFailed: ((node: string, reason: string) => void) | undefined;

  constructor(
    view: LeaseView,
    o: {
      uuid: string;
      pinger: LeasePinger;
      log: Logger;
      /** A member missed MISSES_TO_FAIL PINGs in a row (and again every so many). */
      onFailed?: (node: string, reason: string) => void;
    },
  ) {
    this.view = view;
    this.#onFailed = o.onFailed;
    this.uuid = o.uuid;
    this.#pinger = o.pinger;
    this.#log = o.log;
  }

  get epoch(): number {
    return this.#epoch;
  }

  /** The members to PING (those with an address). */
  get members(): readonly ReplicaTarget[] {
    return this.#members;
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
      this.#pinger.remove(this);
      return;
    }
    this.#pinger.add(this);
    // A member new to the set is asked at once (requests wait for its answer).
    for (const m of members) if (!before.has(m.node)) this.#pinger.soon(m.node);
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

  /** Member `node` answered the PING of `epoch` SENT at `sent` with `status`. */
  answered(node: string, epoch: number, sent: number, status: number, reason: string): void {
    if (epoch !== this.#epoch) return;
    if (status !== STATUS_OK && status !== STATUS_STALE_EPOCH) {
      // It answered, but could not grant (its disk full, say: the epoch is written first).
      // Renewing nothing from it, the lease would lapse for good: it fails as a silent one.
      return this.missed(node, epoch, reason);
    }
    this.#misses.delete(node);
    if (status === STATUS_OK) {
      const prev = this.#answered.get(node) ?? -Infinity;
      if (sent > prev && this.#members.some((x) => x.node === node)) {
        this.#answered.set(node, sent);
        this.#publish();
      }
    } else if (status === STATUS_STALE_EPOCH) {
      if (this.view.state() !== "fenced") {
        this.#log.error(
          { uuid: this.uuid, epoch, replica: node, reason },
          "this master was replaced (a member has seen a newer epoch): serving nothing more",
        );
      }
      this.view.fence(true);
    }
  }

  /** Member `node` did not answer the PING of `epoch`: no renewal; after a few, reported. */
  missed(node: string, epoch: number, reason: string): void {
    if (epoch !== this.#epoch || !this.#members.some((x) => x.node === node)) return;
    const misses = (this.#misses.get(node) ?? 0) + 1;
    this.#misses.set(node, misses);
    if (misses % MISSES_TO_FAIL === 0) {
      this.#log.warn(
        { uuid: this.uuid, epoch, replica: node, reason },
        "member does not answer the lease PINGs; reporting it failed",
      );
      this.#onFailed?.(node, reason);
    }
  }

  stop(): void {
    this.#pinger.remove(this);
  }
}

/** One volume's PING in a PINGS, as sent. */
interface Sent {
  keeper: LeaseKeeper;
  epoch: number;
}

/**
 * What to PING now: per member node, its address and the volumes whose lease it holds (pure).
 * A member without an address is not asked (sending to it would fail anyway).
 */
export function pingPlan(
  keepers: Iterable<{ members: readonly ReplicaTarget[] }>,
): Map<string, { address: string; keepers: number[] }> {
  const plan = new Map<string, { address: string; keepers: number[] }>();
  let i = 0;
  for (const k of keepers) {
    for (const m of k.members) {
      if (m.address === "") continue;
      let p = plan.get(m.node);
      if (!p) plan.set(m.node, p = { address: m.address, keepers: [] });
      p.keepers.push(i);
    }
    i++;
  }
  return plan;
}

/**
 * The PINGs of every volume this thread masters: once every PING_EVERY_MS, one PINGS per
 * member node (one outstanding at a time per node); a node new to some volume is asked at
 * once. See the module doc.
 */
export class LeasePinger {
  readonly #links: () => PeerLinks | undefined;
  readonly #log: Logger;
  readonly #keepers = new Set<LeaseKeeper>();
  /** Nodes with a PINGS outstanding. */
  readonly #busy = new Set<string>();
  /** Nodes to ask as soon as possible (a new member), after any outstanding PINGS. */
  readonly #due = new Set<string>();
  /** Links to nodes that do not know PINGS (an older version): PINGed a volume at a time. */
  readonly #single = new WeakSet<PeerLink>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #soon: ReturnType<typeof setTimeout> | undefined;

  constructor(links: () => PeerLinks | undefined, log: Logger) {
    this.#links = links;
    this.#log = log;
  }

  add(k: LeaseKeeper): void {
    this.#keepers.add(k);
    this.#timer ??= setInterval(() => this.#round(), PING_EVERY_MS);
  }

  remove(k: LeaseKeeper): void {
    this.#keepers.delete(k);
    if (this.#keepers.size > 0) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Asks `node` as soon as possible (the volumes that became masters together go as one). */
  soon(node: string): void {
    this.#due.add(node);
    this.#soon ??= setTimeout(() => {
      this.#soon = undefined;
      this.#round(this.#due);
    }, 0);
  }

  stop(): void {
    clearInterval(this.#timer);
    clearTimeout(this.#soon);
    this.#timer = this.#soon = undefined;
    this.#keepers.clear();
  }

  /** Sends a PINGS to every member node (to those of `only`), unless one is outstanding. */
  #round(only?: Set<string>): void {
    const links = this.#links();
    if (!links) return;
    const keepers = [...this.#keepers];
    for (const [node, p] of pingPlan(keepers)) {
      if (only && !only.has(node)) continue;
      if (this.#busy.has(node)) {
        this.#due.add(node);
        continue;
      }
      this.#due.delete(node);
      const sent = p.keepers.map((i) => ({ keeper: keepers[i], epoch: keepers[i].epoch }));
      this.#busy.add(node);
      this.#ping(links, node, p.address, sent).finally(() => {
        this.#busy.delete(node);
        if (this.#due.has(node)) this.soon(node);
      });
    }
  }

  async #ping(links: PeerLinks, node: string, address: string, sent: Sent[]): Promise<void> {
    if (sent.length > MAX_PINGS) {
      for (let i = 0; i < sent.length; i += MAX_PINGS) {
        await this.#ping(links, node, address, sent.slice(i, i + MAX_PINGS));
      }
      return;
    }
    const at = performance.now();
    let link: PeerLink;
    let reply: Reply;
    try {
      link = await links.get(node, address);
      if (this.#single.has(link)) return await this.#pingEach(link, node, sent);
      const req = pingsRequest(sent.map((s) => ({ volume: s.keeper.uuid, epoch: s.epoch })));
      reply = await link.request(req, PING_TIMEOUT_MS);
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      for (const s of sent) s.keeper.missed(node, s.epoch, reason);
      return;
    }
    if (reply.status === STATUS_BAD_REQUEST) {
      this.#log.info(
        { replica: node, reason: replyMessage(reply) },
        "member node does not know PINGS (an older version): PINGing a volume at a time",
      );
      this.#single.add(link);
      return await this.#pingEach(link, node, sent);
    }
    let statuses: number[];
    try {
      statuses = reply.status === STATUS_OK
        ? decodePingStatuses(reply.body, sent.length)
        : sent.map(() => reply.status);
    } catch (err) {
      for (const s of sent) s.keeper.missed(node, s.epoch, (err as Error).message);
      return;
    }
    sent.forEach((s, i) => {
      const reason = reply.status !== STATUS_OK
        ? replyMessage(reply)
        : statuses[i] === STATUS_STALE_EPOCH
        ? `epoch ${s.epoch} refused: the member has seen a newer one`
        : `the member could not grant the lease (status ${statuses[i]}: its log says why; ` +
          `a full disk?)`;
      s.keeper.answered(node, s.epoch, at, statuses[i], reason);
    });
  }

  /** The PINGs of `sent`, one request per volume (a node of an older version). */
  async #pingEach(link: PeerLink, node: string, sent: Sent[]): Promise<void> {
    await Promise.all(sent.map(async ({ keeper, epoch }) => {
      const at = performance.now();
      try {
        const reply = await link.request(
          { type: T_PING, flags: 0, volume: keeper.uuid, epoch },
          PING_TIMEOUT_MS,
        );
        keeper.answered(node, epoch, at, reply.status, replyMessage(reply));
      } catch (err) {
        keeper.missed(node, epoch, err instanceof Error ? err.message : String(err));
      }
    }));
  }
}
