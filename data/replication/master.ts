/**
 * The master's replication state on the main thread, for every group volume this node
 * serves as master: the epoch and the members to send to (those the record lists in sync,
 * and those being resynced), fencing a new epoch, and the resyncs under way.
 * @module
 */

import type { Logger } from "pino";
import { FailedPreconditionError } from "../../mod/errors.ts";
import type { HashState } from "./hash_state.ts";
import { LeaseKeeper, LeasePinger, type LeaseView } from "./lease.ts";
import { type ConnectNode, PeerLinks } from "./links.ts";
import { type ReplicaReasons, type ReplicaTarget, Replicator } from "./replicator.ts";
import {
  type Ask,
  RateLimit,
  ResyncError,
  type ResyncProgress,
  resyncReplica,
  type ResyncResult,
} from "./resync.ts";
import { MemberSessions } from "./sessions.ts";
import { F_CHEAP, replyMessage, STATUS_OK, T_FENCE, T_TREE } from "./wire.ts";
import {
  logVerified,
  notFromSuspect,
  outvoted,
  resyncAfterVerify,
  resyncAgainAfterVerify,
  suspectMaster,
  verifiedOut,
  verifyCopies,
  type VerifyReport,
} from "./verify.ts";
import { CHEAP_REGIONS } from "./replica.ts";

/** How long roots() answers from its last look. */
const ROOTS_CACHE_MS = 5000;

/** What replication needs of an exported volume (a LiveExport). */
export interface ReplicatedExport {
  readonly name: string;
  readonly uuid: string;
  readonly lease: LeaseView;
  onReplicasFailed: ((nodes: string[], reasons?: ReplicaReasons) => Promise<void>) | undefined;
}

/** How long a new master waits for members to accept its epoch before serving anyway. */
const FENCE_WAIT_MS = 2000;

export class MasterReplication<E extends ReplicatedExport = ReplicatedExport> {
  readonly #exports: { lookup(name: string): E | undefined };
  /** Sends the composed targets to every thread that serves the volume (resolves: applied). */
  readonly #apply: (e: E, epoch: number, targets: ReplicaTarget[]) => Promise<void>;
  readonly #connect: ConnectNode | undefined;
  readonly #hashesOf: (e: E) => Promise<HashState | undefined>;
  readonly #rate: number;
  /** Volumes whose copy here a deep verification found suspect (suspectMaster), and why. */
  readonly #suspect = new Map<string, string>();
  /** One budget per rate for every resync this node runs (--resync-rate is per node). */
  readonly #limits = new Map<number, RateLimit>();
  readonly #log: Logger;
  #links: PeerLinks | undefined;
  /** Targets per exported group volume: in sync, and being resynced. */
  readonly #targets = new Map<
    string,
    { epoch: number; inSync: ReplicaTarget[]; resyncing: ReplicaTarget[] }
  >();
  readonly #resyncs = new Map<string, { progress?: ResyncProgress; abort: AbortController }>();
  /** Each member's session of each volume since its last resync (sessions.ts). */
  readonly #sessions: MemberSessions;
  readonly #leases = new Map<string, LeaseKeeper>();
  /** The lease PINGs of every volume served here, one PINGS per member node (lease.ts). */
  readonly #pinger: LeasePinger;
  readonly #roots = new Map<
    string,
    { at: number; roots: Record<string, string | undefined> }
  >();
  readonly #self: string;

  constructor(o: {
    exports: { lookup(name: string): E | undefined };
    apply: (e: E, epoch: number, targets: ReplicaTarget[]) => Promise<void>;
    connectNode?: ConnectNode;
    /** The hash state of an exported volume's copy. */
    hashesOf: (e: E) => Promise<HashState | undefined>;
    /** This node's name (the master's entry in roots()). */
    self: string;
    resyncRateBytesPerSecond?: number;
    log: Logger;
  }) {
    this.#hashesOf = o.hashesOf;
    this.#self = o.self;
    this.#exports = o.exports;
    this.#apply = o.apply;
    this.#connect = o.connectNode;
    this.#rate = o.resyncRateBytesPerSecond ?? 0;
    this.#log = o.log;
    this.#pinger = new LeasePinger(() => this.#mainLinks(), o.log);
    this.#sessions = new MemberSessions(o.log);
  }

  /** `e` is served as master at `epoch`, replicating to `targets`. */
  open(
    e: E,
    r: {
      epoch: number;
      targets: ReplicaTarget[];
      onReplicasFailed: (nodes: string[], reasons?: ReplicaReasons) => Promise<void>;
    },
    /** `reconcile`: this node succeeds an earlier master, or its own earlier process (compare the copies). */
    options: { reconcile?: boolean } = {},
  ): void {
    e.onReplicasFailed = r.onReplicasFailed;
    const before = this.#targets.get(e.name);
    this.#sessions.keepEpoch(e.name, r.epoch); // those resume() began, or an earlier open's
    this.#targets.set(e.name, { epoch: r.epoch, inSync: r.targets, resyncing: [] });
    this.#compose(e);
    if (options.reconcile && before?.epoch !== r.epoch) {
      // After the export is in the table (open() runs just before it is added).
      setTimeout(() => {
        for (const m of r.targets) void this.#reconcile(e, m, r.epoch);
      }, 0);
    }
  }

  /**
   * A master new at `epoch` (promoted, or restarted) compares its copy with each in-sync
   * member's: the previous master may have died with writes applied on some members and not
   * others (never acknowledged, but the copies must not stay different). Differing blocks
   * are copied as in a resync; equal copies cost a root comparison.
   */
  async #reconcile(e: E, member: ReplicaTarget, epoch: number): Promise<void> {
    try {
      const r = await this.resync(e.name, member, epoch, { reconcile: true });
      if (r.sentBytes + r.zeroedBytes > 0) {
        this.#log.warn(
          { volume: e.name, replica: member.node, epoch, sentBytes: r.sentBytes },
          "a member held writes the previous master never acknowledged; now equal",
        );
      }
    } catch (err) {
      this.#log.warn(
        { volume: e.name, replica: member.node, epoch, err: (err as Error).message },
        "could not compare a member's copy after the change of master",
      );
    }
  }

  /**
   * Sends the composed targets of `e` to every thread: the in-sync members and those being
   * resynced. A member stays among the resyncing ones until the record lists it in sync,
   * so that no write is sent to neither.
   */
  #compose(e: E): Promise<void> {
    const t = this.#targets.get(e.name);
    if (!t) return Promise.resolve();
    const inSync = new Set(t.inSync.map((x) => x.node));
    t.resyncing = t.resyncing.filter((x) => !inSync.has(x.node));
    const targets = [...t.inSync, ...t.resyncing].map((x) => this.#sessions.tagged(e.name, x));
    // The lease is held from every member that could be promoted: all the targets.
    let keeper = this.#leases.get(e.name);
    if (keeper && keeper.view !== e.lease) {
      keeper.stop();
      keeper = undefined;
    }
    if (!keeper) {
      keeper = new LeaseKeeper(e.lease, {
        uuid: e.uuid,
        pinger: this.#pinger,
        log: this.#log.child({ volume: e.name }),
        onFailed: (node, reason) => this.#memberFailed(e, node, reason),
      });
      this.#leases.set(e.name, keeper);
    }
    keeper.set(t.epoch, targets);
    return this.#apply(e, t.epoch, targets);
  }

  /**
   * A member stopped answering PINGs: reported as a failed write would report it (the
   * record then shows it out of sync, and the lease no longer counts on it). A resync in
   * progress to it stops.
   */
  #memberFailed(e: E, node: string, reason: string): void {
    const t = this.#targets.get(e.name);
    if (!t) return;
    const resyncing = t.resyncing.some((x) => x.node === node);
    if (resyncing) {
      this.#resyncs.get(`${e.name}\u0000${node}`)?.abort.abort(
        new ResyncError(`replica ${node} stopped answering: ${reason}`),
      );
      return;
    }
    this.#reportFailed(
      e,
      node,
      reason,
      "could not mark a silent member out of sync (will retry at the next misses)",
    );
  }

  /** Has the record show `node` out of sync, saying `why`; a failure to is logged (`what`). */
  #reportFailed(e: E, node: string, why: string, what: string): void {
    e.onReplicasFailed?.([node], { [node]: why }).catch((err) =>
      this.#log.warn({ volume: e.name, replica: node, err: (err as Error).message }, what)
    );
  }

  /** `v` is served here again at an epoch it served before: new sessions (sessions.ts). */
  resume(v: { name: string; uuid: string }, epoch: number, members: ReplicaTarget[]) {
    const links = this.#mainLinks();
    return links ? this.#sessions.resume(links, v, epoch, members) : Promise.resolve();
  }

  /** The main thread's links (fencing, resync), opened on first use. */
  #mainLinks(): PeerLinks | undefined {
    if (!this.#connect) return undefined;
    this.#links ??= new PeerLinks(this.#connect, this.#log);
    return this.#links;
  }

  /**
   * A new master's fencing: asks `members` to refuse requests of epochs below `epoch` for
   * copy `uuid`. Bounded: a member that does not answer quickly is down or cut off, and
   * learns the epoch when it is next asked (it cannot be in the record's in-sync set with
   * this one).
   */
  async fence(uuid: string, epoch: number, members: ReplicaTarget[]): Promise<void> {
    const links = this.#mainLinks();
    if (!links || members.length === 0) return;
    const r = new Replicator(uuid, links, this.#log.child({ uuid }));
    r.setTargets(epoch, members.filter((m) => m.address !== ""));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const res = await Promise.race([
      r.send({ type: T_FENCE, flags: 0 }),
      new Promise<{ failed: { node: string }[] }>((resolve) => {
        timer = setTimeout(
          () => resolve({ failed: members.map((m) => ({ node: m.node })) }),
          FENCE_WAIT_MS,
        );
      }),
    ]);
    clearTimeout(timer);
    this.#log.info(
      {
        uuid,
        epoch,
        fenced: members.map((m) => m.node),
        unreachable: res.failed.map((f) => f.node),
      },
      "members fenced below the new epoch",
    );
  }

  /** New targets of an exported group volume (its record changed). */
  set(name: string, epoch: number, targets: ReplicaTarget[]): void {
    const e = this.#exports.lookup(name);
    const t = this.#targets.get(name);
    if (!e?.onReplicasFailed || !t) return;
    if (epoch !== t.epoch) {
      t.resyncing = [];
      this.#sessions.clear(name);
    }
    t.epoch = epoch;
    t.inSync = targets;
    this.#compose(e);
  }

  /**
   * Delta Sync of `replica`'s copy of `name` (served here as master at `epoch`): the member
   * becomes a target at once, then only what differs is sent (resync.ts). Resolves when
   * the copies are equal; on failure the member is no target any more.
   */
  async resync(
    name: string,
    replica: ReplicaTarget,
    epoch: number,
    options: { rateBytesPerSecond?: number; reconcile?: boolean; onStarted?: () => void } = {},
  ): Promise<ResyncResult> {
    const e = this.#exports.lookup(name);
    const t = this.#targets.get(name);
    const links = this.#mainLinks();
    const hashes = e ? await this.#hashesOf(e) : undefined;
    if (!e || !t || !links || !hashes || t.epoch !== epoch) {
      throw new FailedPreconditionError(
        `volume "${name}" is not replicated from here at epoch ${epoch}`,
      );
    }
    const suspect = this.#suspect.get(name);
    if (suspect && !options.reconcile) throw new ResyncError(notFromSuspect(suspect, this.#self));
    const key = `${name}\u0000${replica.node}`;
    if (this.#resyncs.has(key)) {
      throw new FailedPreconditionError(`${replica.node} is already resyncing ${name}`);
    }
    const abort = new AbortController();
    const entry: { progress?: ResyncProgress; abort: AbortController } = { abort };
    this.#resyncs.set(key, entry);
    try {
      // Every write applied after this, on any thread, reaches the member too. A member that
      // is no target yet starts a new session first, so that nothing sent to it before,
      // on a link given up since, can land after the resync compared its region.
      const target = [...t.inSync, ...t.resyncing].some((x) => x.node === replica.node);
      if (!options.reconcile && !target) {
        await this.#sessions.start(links, e, replica, epoch).catch((err) => {
          // As when the member does not answer the resync's first question (resync.ts).
          const reason = err instanceof Error ? err.message : String(err);
          // A new member that has not made its copy yet is asked again (newCopyRetry).
          this.#log.child({ volume: name })[reason.includes("no copy of") ? "debug" : "warn"](
            { replica: replica.node, epoch, reason },
            "resync could not start",
          );
          throw err;
        });
        if (t.epoch !== epoch) {
          throw new ResyncError(`the master's epoch moved on from ${epoch} to ${t.epoch}`);
        }
        t.resyncing.push(replica);
      }
      await this.#compose(e);
      const rate = options.rateBytesPerSecond ?? this.#rate;
      if (!this.#limits.has(rate)) this.#limits.set(rate, new RateLimit(rate));
      return await resyncReplica({
        hashes,
        uuid: e.uuid,
        epoch,
        replica: this.#sessions.tagged(name, replica),
        links,
        log: this.#log.child({ volume: name }),
        purpose: options.reconcile ? "check" : "resync",
        limit: this.#limits.get(rate),
        onProgress: (p) => (entry.progress = p),
        ...(options.onStarted ? { onStarted: options.onStarted } : {}),
        signal: abort.signal,
      });
    } catch (err) {
      if (!options.reconcile) {
        t.resyncing = t.resyncing.filter((x) => x.node !== replica.node);
        this.#compose(e);
      }
      throw err;
    } finally {
      this.#resyncs.delete(key);
    }
  }

  /**
   * The root hash (hex) of each member's copy of `name` and of this master's, asked cheaply
   * (a copy with many regions changed lately answers nothing rather than rehash them now).
   * Kept for ROOTS_CACHE_MS: `volume get` may ask every second.
   */
  async roots(name: string): Promise<Record<string, string | undefined>> {
    const e = this.#exports.lookup(name);
    const t = this.#targets.get(name);
    if (!e || !t) return {};
    const cached = this.#roots.get(name);
    if (cached && performance.now() - cached.at < ROOTS_CACHE_MS) return cached.roots;
    const hashes = await this.#hashesOf(e);
    const out: Record<string, string | undefined> = {};
    out[this.#self] = await hashes?.root(CHEAP_REGIONS);
    const links = this.#mainLinks();
    const levels = hashes?.levels() ?? 1;
    await Promise.all([...t.inSync, ...t.resyncing].map(async (m) => {
      try {
        const link = await links!.get(m.node, m.address);
        const reply = await link.request({
          type: T_TREE,
          flags: F_CHEAP,
          volume: e.uuid,
          epoch: t.epoch,
          level: levels - 1,
          first: 0,
          count: 1,
        }, 1500);
        out[m.node] = reply.status === STATUS_OK
          ? [...reply.body].map((b) => b.toString(16).padStart(2, "0")).join("")
          : undefined;
      } catch {
        out[m.node] = undefined;
      }
    }));
    this.#roots.set(name, { at: performance.now(), roots: out });
    return out;
  }

  /**
   * `volume verify`: compares every member's copy of `name` with this master's (verify.ts).
   * Members that do not answer are reported with the reason.
   */
  async verify(name: string, deep: boolean): Promise<VerifyReport> {
    const e = this.#exports.lookup(name);
    const t = this.#targets.get(name);
    const hashes = e ? await this.#hashesOf(e) : undefined;
    if (!e || !hashes) {
      throw new FailedPreconditionError(`volume "${name}" is not served here`);
    }
    const links = this.#mainLinks();
    const asks = new Map<string, Ask>();
    for (const m of t ? [...t.inSync, ...t.resyncing] : []) {
      asks.set(m.node, async (r) => {
        if (!links) throw new Error("no peer channel on this node");
        const link = await links.get(m.node, m.address);
        const reply = await link.request({ ...r, volume: e.uuid, epoch: t!.epoch } as never);
        if (reply.status !== STATUS_OK) throw new Error(replyMessage(reply));
        return reply.body;
      });
    }
    const inSync = t?.inSync.map((m) => m.node) ?? [];
    const resyncing = (t?.resyncing ?? []).map((m) => m.node).filter((n) => !inSync.includes(n));
    const report = await verifyCopies(this.#self, hashes, asks, deep, new Set(resyncing));
    outvoted(report, inSync);
    for (const node of resyncAgainAfterVerify(report, resyncing)) this.#resyncAgain(e, node);
    // Suspect until the master moves (forget()): a later verification may lack the votes.
    const suspect = suspectMaster(report) ?? this.#suspect.get(name);
    if (suspect) this.#suspect.set(name, report.members[0].suspect = suspect);
    for (const node of resyncAfterVerify(report, inSync)) {
      this.#log.warn(
        { volume: name, replica: node, suspect },
        "deep verification: the member's copy differs from the master's or is corrupt; " +
          "taking it out of sync so that a resync copies the differing blocks",
      );
      if (!suspect) report.members.find((m) => m.node === node)!.resyncing = true;
      this.#memberFailed(e, node, verifiedOut(suspect));
    }
    logVerified(this.#log, name, report);
    return report;
  }

  /**
   * A deep verification found (and marked) a corruption in the copy of `node`, which is
   * being resynced: a resync under way stops (the driver starts it again, and the new one
   * sees the marked regions differ); one that has finished, its in-sync CAS pending, is
   * reported failed, so the record does not take the member in with the corruption.
   */
  #resyncAgain(e: E, node: string): void {
    const running = this.#resyncs.get(`${e.name}\u0000${node}`);
    this.#log.warn(
      { volume: e.name, replica: node, running: running !== undefined },
      "deep verification: a corruption in the copy of a member being resynced; its resync " +
        "starts again so that it copies the corrupt blocks",
    );
    if (running) {
      running.abort.abort(
        new ResyncError(
          "volume verify --deep found a corruption in the member's copy: the resync starts again",
        ),
      );
      return;
    }
    this.#reportFailed(
      e,
      node,
      "volume verify --deep found a corruption in its copy after its resync (resynced again " +
        "to repair it)",
      "could not take a resynced member with a corruption out of sync",
    );
  }

  /** Resyncs of `name` under way. */
  status(name: string): ResyncProgress[] {
    const out: ResyncProgress[] = [];
    for (const [key, r] of this.#resyncs) {
      if (key.split("\u0000")[0] === name && r.progress) out.push(r.progress);
    }
    return out;
  }

  /** Whether this master of `name` was fenced (a member has seen a newer epoch). */
  fenced(name: string): boolean {
    return this.#leases.get(name)?.view.state() === "fenced";
  }

  /** `name` is no longer served here: its resyncs stop. */
  forget(name: string): void {
    this.#targets.delete(name);
    this.#suspect.delete(name);
    this.#sessions.clear(name);
    this.#roots.delete(name);
    this.#leases.get(name)?.stop();
    this.#leases.delete(name);
    for (const [key, r] of this.#resyncs) {
      if (key.split("\u0000")[0] === name) {
        r.abort.abort(new ResyncError(`volume "${name}" is no longer served here`));
      }
    }
  }

  /** Stops every resync under way here, saying why (the node is stopping, say). */
  stopResyncs(reason: string): void {
    for (const r of this.#resyncs.values()) r.abort.abort(new ResyncError(reason));
  }

  close(): void {
    for (const k of this.#leases.values()) k.stop();
    this.#leases.clear();
    this.#pinger.stop();
    this.stopResyncs("the data plane is stopping");
    this.#links?.closeAll();
  }
}
