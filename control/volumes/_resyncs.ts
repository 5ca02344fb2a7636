/**
 * The resyncs this node runs as a group master, as the control plane sees them: which are
 * under way (from the moment the data plane's resync is called, before it reports any
 * progress) and the last failure of each member's resync. In memory only: it is live
 * status, asked for by `volume get` and /metrics, never written to the store.
 *
 * Two moments of a resync are written to the volume's history by the master
 * (runResync): its start, once the member answered (a member that has just died is never
 * announced: the attempt fails before, is logged "resync could not start" and retried), and
 * its interruption after that start, with why and how far it got.
 * @module
 */

import { errorMessage } from "../../mod/errors.ts";
import type { Logger } from "../common/mod.ts";
import {
  type EventDraft,
  masterResumed,
  resyncInterrupted,
  type ResyncReach,
  resyncStarted,
} from "../events/mod.ts";
import type { GroupRecord } from "../group/mod.ts";
import type { StateStore } from "../store/mod.ts";
import { appendEvents, type VolumeRecord } from "./_record.ts";
import { newCopyRetry } from "./_member_copies.ts";
import type { DataPlane } from "../../data/plane.ts";

/** Member -> value, per volume. */
type PerMember<T> = Map<string, Map<string, T>>;

/** A resync that succeeded: when, and what it returned (the data plane's ResyncResult). */
export interface FinishedResync {
  member: string;
  startedAt: number;
  at: number;
  result: unknown;
}

export class ResyncTracker {
  readonly #running: PerMember<number> = new Map();
  readonly #failed: PerMember<{ message: string; at: number }> = new Map();
  readonly #finished: PerMember<Omit<FinishedResync, "member">> = new Map();
  /** Why the last resync of a member recorded in the history as interrupted stopped. */
  readonly #interrupted: PerMember<string> = new Map();
  /** Resyncs run through runResync, until their events are written. */
  readonly #inflight = new Set<Promise<unknown>>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /**
   * Runs `fn`, the resync of `member`'s copy of `volume`: under way meanwhile; a failure
   * (thrown) is kept until a later resync of that member succeeds.
   */
  async run<T>(volume: string, member: string, fn: () => Promise<T>): Promise<T> {
    const startedAt = this.#now();
    put(this.#running, volume, member, startedAt);
    drop(this.#finished, volume, member);
    try {
      const result = await fn();
      drop(this.#failed, volume, member);
      drop(this.#interrupted, volume, member);
      put(this.#finished, volume, member, { startedAt, at: this.#now(), result });
      return result;
    } catch (err) {
      this.fail(volume, member, errorMessage(err));
      throw err;
    } finally {
      drop(this.#running, volume, member);
    }
  }

  /** A resync of `member` could not even start (say, no peer address). */
  fail(volume: string, member: string, message: string): void {
    put(this.#failed, volume, member, { message, at: this.#now() });
    drop(this.#finished, volume, member);
  }

  /**
   * The last successful resync of each member of `volume` (kept until its next resync or a
   * failure): between its end and the record listing the member in sync, `volume get` shows
   * it finished rather than out of sync (control/volumes/_live.ts).
   */
  finished(volume: string): FinishedResync[] {
    return [...(this.#finished.get(volume) ?? [])].map(([member, f]) => ({ member, ...f }));
  }

  /** Resyncs of `volume` under way: member and start (ms since the epoch). */
  running(volume: string): Array<{ member: string; startedAt: number }> {
    return [...(this.#running.get(volume) ?? [])].map(([member, startedAt]) => ({
      member,
      startedAt,
    }));
  }

  /**
   * The error of `member`'s last resync that the history recorded as interrupted, until one
   * succeeds; `error` given: notes it.
   */
  interrupted(volume: string, member: string, error?: string): string | undefined {
    if (error !== undefined) put(this.#interrupted, volume, member, error);
    return this.#interrupted.get(volume)?.get(member);
  }

  /** The last failure of each member of `volume` whose resync has not succeeded since. */
  failures(volume: string): Array<{ member: string; message: string; at: number }> {
    return [...(this.#failed.get(volume) ?? [])].map(([member, f]) => ({ member, ...f }));
  }

  /** Counts `p` (a runResync) as under way until it settles (see settled()). */
  track<T>(p: Promise<T>): Promise<T> {
    this.#inflight.add(p);
    const done = () => this.#inflight.delete(p);
    p.then(done, done);
    return p;
  }

  /**
   * Resolves once every tracked resync settled, or after `ms` (by default how long a stopping
   * node waits for its resyncs to record their interruption).
   */
  async settled(ms = 3_000): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      Promise.allSettled([...this.#inflight]),
      new Promise((r) => timer = setTimeout(r, ms)),
    ]);
    clearTimeout(timer);
  }

  /** `volume` is gone or no longer served here. */
  forget(volume: string): void {
    this.#failed.delete(volume);
    this.#finished.delete(volume);
    this.#interrupted.delete(volume);
  }
}

function put<T>(map: PerMember<T>, volume: string, member: string, value: T): void {
  let m = map.get(volume);
  if (!m) map.set(volume, m = new Map());
  m.set(member, value);
}

function drop<T>(map: PerMember<T>, volume: string, member: string): void {
  const m = map.get(volume);
  if (!m) return;
  m.delete(member);
  if (m.size === 0) map.delete(volume);
}

/** What the master knows when a started resync of `member` at `epoch` stops early. */
export interface Interruption {
  self: string;
  member: string;
  epoch: number;
  /** The group as this node last saw it (undefined: the record is gone). */
  group: GroupRecord | undefined;
  /** Nodes whose liveness lease is gone now. */
  gone: readonly string[];
  /** This node is shutting down. */
  stopping: boolean;
  /** The epoch this node serves the volume at now (undefined: it does not serve it). */
  serving: number | undefined;
  /** The data plane's words. */
  error: string;
}

/** Why a started resync stopped, in words (pure): the first that applies. */
export function interruptionReason(i: Interruption): string {
  const g = i.group;
  if (i.stopping) return `this node (${i.self}, the master) is stopping`;
  if (!g || !g.members.includes(i.member)) return "the member was removed from the group";
  if (g.master !== i.self || g.epoch !== i.epoch) {
    return `the master changed (now ${g.master} at epoch ${g.epoch})`;
  }
  if (g.handover) {
    return `the master hands over to ${g.handover.to} (${g.handover.reason}) and closed its export`;
  }
  if (i.serving !== i.epoch) return `this node stopped serving the volume: ${i.error}`;
  if (i.gone.includes(i.member) || g.down.includes(i.member)) {
    return `the member's node is down (liveness lease gone): ${i.error}`;
  }
  return `the member failed: ${i.error}`;
}

/** What runResync needs of the node. */
export interface ResyncRun {
  volume: string;
  /** The copy resynced (its record's uuid). */
  uuid: string;
  store: StateStore;
  self: string;
  member: string;
  epoch: number;
  tracker: ResyncTracker;
  log: Logger;
  /** The data plane's resync; calls `onStarted` once the member answered. */
  resync(onStarted: () => void): Promise<unknown>;
  /** The group, the gone leases, whether this node stops and what it serves, when it stops. */
  now(): Omit<Interruption, "self" | "member" | "epoch" | "error">;
}

/**
 * Runs (tracked) the resync of `r.member`, writing its start once the member answered and,
 * if it then stops before the end, an interruption event with why and how far it got (also
 * logged). A failure to write an event is logged, never the resync's failure.
 */
export function runResync(r: ResyncRun): Promise<void> {
  return r.tracker.track(resyncWithEvents(r));
}

async function resyncWithEvents(r: ResyncRun): Promise<void> {
  let started: Promise<void> | undefined;
  // Only while this node is the master at the resync's epoch: once it was replaced, the
  // change that replaced it recorded the resync's end (events/history.ts).
  const by = { master: r.self, epoch: r.epoch };
  const write = (e: EventDraft) =>
    appendEvents(r.store, r.volume, r.uuid, [e], by).then(
      (written) => {
        if (!written) {
          r.log.debug(
            { replica: r.member, event: e.type },
            "resync event not recorded: the record no longer names this master at this epoch, or the volume changed",
          );
        }
      },
      (err) =>
        r.log.warn({ replica: r.member, err, event: e.type }, "could not record a resync event"),
    );
  // A retry after an interruption the history recorded writes its start only once it ends
  // otherwise than that one did: a member failing the same way every retry (a full disk)
  // would fill the history, which keeps the last 100 events, with pairs of lines and push out
  // why it left.
  const lastFailure = r.tracker.interrupted(r.volume, r.member);
  let answered: Date | undefined;
  // Written when the member answered, or, after a recorded interruption, once the resync
  // ended otherwise: stamped with when it answered either way.
  const start = () => started ??= write(resyncStarted(r.self, r.member, answered));
  try {
    await r.tracker.run(r.volume, r.member, () =>
      r.resync(() => {
        answered = new Date();
        if (lastFailure === undefined) start();
      }));
    if (answered) await start(); // written before the caller records the member in sync
  } catch (err) {
    if (answered && lastFailure !== undefined && errorMessage(err) === lastFailure) {
      r.log.warn(
        { replica: r.member, epoch: r.epoch, error: lastFailure },
        "resync failed again as before (not recorded in the history again)",
      );
    } else if (answered) {
      await start();
      const reason = interruptionReason({
        self: r.self,
        member: r.member,
        epoch: r.epoch,
        error: errorMessage(err),
        ...r.now(),
      });
      const reach = reachOf(err);
      r.log.warn({ replica: r.member, epoch: r.epoch, reason, ...reach }, "resync interrupted");
      await write(resyncInterrupted(r.self, r.member, reason, reach));
      r.tracker.interrupted(r.volume, r.member, errorMessage(err));
    }
    throw err;
  }
}

/** The progress a data plane's ResyncError carries, if any. */
function reachOf(err: unknown): ResyncReach | undefined {
  const p = (err as { progress?: Partial<ResyncReach> })?.progress;
  if (!p || typeof p.comparedBytes !== "number") return undefined;
  return {
    pass: p.pass ?? 0,
    comparedBytes: p.comparedBytes,
    totalBytes: p.totalBytes ?? 0,
    sentBytes: p.sentBytes ?? 0,
    zeroedBytes: p.zeroedBytes ?? 0,
  };
}

/** What resyncHost needs besides what runResync does. */
export interface ResyncHostOptions extends Omit<ResyncRun, "member" | "epoch" | "resync"> {
  plane: Pick<DataPlane, "resync">;
  /** A node's peer address ("" when unknown). */
  address(node: string): Promise<string>;
}

/**
 * The group driver's resync of a member (GroupHost.resync): false when it cannot run here (no
 * replication, or no known peer address, kept as the member's last failure); throws when
 * it failed; true when the copies are equal.
 */
export function resyncHost(
  o: ResyncHostOptions,
): (member: string, epoch: number) => Promise<boolean> {
  return async (member, epoch) => {
    const resync = o.plane.resync?.bind(o.plane);
    if (!resync) return false;
    const address = await o.address(member);
    if (!address) {
      o.tracker.fail(o.volume, member, `node ${member} has no known peer address`);
      return false;
    }
    await runResync({
      ...o,
      member,
      epoch,
      resync: (onStarted) =>
        newCopyRetry(() => resync(o.volume, { node: member, address }, epoch, { onStarted })),
    });
    return true;
  };
}

/**
 * Records that `master` serves `rec` again at `epoch` after its node restarted (the data
 * plane said `resumed`): without it a restart that nobody took over from leaves no trace in
 * the history. In the background; a failure is logged.
 */
export function noteResumed(
  store: StateStore,
  rec: VolumeRecord,
  master: string,
  epoch: number,
  log: Logger,
): void {
  appendEvents(store, rec.name, rec.uuid, [masterResumed(master, epoch)], { master, epoch })
    .catch((err) => log.warn({ err, epoch }, "could not record serving again after a restart"));
}
