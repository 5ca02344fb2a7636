/**
 * Why and since when each member of a group is out of sync, noted in the volume record
 * (`outOfSync`, next to the group record) by the node whose compare-and-swap takes the
 * member out of the in-sync set. Pure: the driver's encode calls it with the record before
 * and after the change, so it costs etcd nothing beyond the group changes themselves (no
 * write per I/O or per resync step).
 *
 * The group record (group/record.ts) keeps who is in sync, not why a member left, so the
 * reason is read off the change that took it out:
 *
 * - it was the master and another member took over at a higher epoch (its node went down
 *   or stopped cleanly): the writes acknowledged since reach it by a resync;
 * - it is (or was) recorded down: its liveness lease expired, or its node stopped cleanly
 *   (it wrote its stopping mark before revoking its lease: NodeFacts);
 * - otherwise the master took it out at the same epoch: a replicated write or its lease
 *   PINGs failed, with the data plane's words when the master noted them (FailureReasons:
 *   "replica n4 refused: ENOSPC ...", "did not answer within 5000 ms"), or, without
 *   replication, the master took a write it never got.
 * @module
 */

import { goneWhy, type NodeFacts } from "../events/mod.ts";
import type { GroupRecord } from "../group/mod.ts";

/** Member -> when it left the in-sync set (ISO 8601) and why. */
export type SyncNotes = Record<string, { since: string; reason: string }>;

/** The reasons noted; exported for tests and docs. */
export const SYNC_REASONS = {
  replaced: (epoch: number, stopped = false) =>
    `it was master until epoch ${epoch}; ${
      stopped ? "its node stopped (cleanly)" : "it went down"
    } and another member took over: the writes acknowledged since reach it by a resync ` +
    `when it is back`,
  down: goneWhy("its node", false),
  stopped: goneWhy("its node", true),
  writeFailed: "a replicated write to it failed (connection lost, refused by the member, or " +
    "no answer in time)",
  failed: (cause: string) => `replication to it failed: ${cause}`,
  unreplicated: "the master took a write it did not get (replication is off: cluster mode " +
    "without TLS)",
} as const;

/**
 * The notes after the group changed from `prev` to `next` (at `now`): members still out of
 * sync keep their note, members newly out get one, members back in sync lose theirs.
 * Undefined when no member is out of sync.
 */
export function nextSyncNotes(
  prev: GroupRecord | undefined,
  next: GroupRecord,
  notes: SyncNotes | undefined,
  now: Date,
  o: { replicates: boolean; causes?: ReadonlyMap<string, string>; facts?: NodeFacts },
): SyncNotes | undefined {
  const out: SyncNotes = {};
  for (const m of next.members) {
    if (next.inSync.includes(m)) continue;
    const kept = notes?.[m];
    if (kept && prev !== undefined && !prev.inSync.includes(m)) {
      out[m] = kept;
      continue;
    }
    if (prev === undefined || !prev.inSync.includes(m)) continue; // out before: reason unknown
    out[m] = {
      since: now.toISOString(),
      reason: reasonOf(m, prev, next, o),
    };
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

function reasonOf(
  m: string,
  prev: GroupRecord,
  next: GroupRecord,
  o: { replicates: boolean; causes?: ReadonlyMap<string, string>; facts?: NodeFacts },
): string {
  if (prev.master === m && next.master !== m) {
    return SYNC_REASONS.replaced(prev.epoch, o.facts?.stopped?.includes(m) ?? false);
  }
  if (next.down.includes(m) || prev.down.includes(m)) {
    return o.facts?.stopped?.includes(m) ? SYNC_REASONS.stopped : SYNC_REASONS.down;
  }
  if (!o.replicates) return SYNC_REASONS.unreplicated;
  const cause = o.causes?.get(m);
  return cause ? SYNC_REASONS.failed(cause) : SYNC_REASONS.writeFailed;
}

/** How long a noted failure may wait for the change that takes its member out of sync. */
const CAUSE_TTL_MS = 60_000;

/**
 * What the data plane said of each replica that failed, per volume served here, kept until the
 * group change that takes the member out of sync reads it (at most CAUSE_TTL_MS: a failure
 * reported while the member was already out of sync is never read).
 */
export class FailureReasons {
  readonly #noted = new Map<string, Map<string, { cause: string; at: number }>>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Wraps the hook that reports failed replicas of `volume` so that it notes why first. */
  hook<R>(
    volume: string,
    report: (nodes: string[]) => R,
  ): (nodes: string[], reasons?: Record<string, string>) => R {
    return (nodes, reasons) => {
      for (const [node, cause] of Object.entries(reasons ?? {})) this.note(volume, node, cause);
      return report(nodes);
    };
  }

  note(volume: string, node: string, cause: string): void {
    let m = this.#noted.get(volume);
    if (!m) this.#noted.set(volume, m = new Map());
    m.set(node, { cause, at: this.#now() });
  }

  /** The recent causes of `volume`'s members (node -> words); old ones are dropped. */
  causes(volume: string): ReadonlyMap<string, string> {
    const m = this.#noted.get(volume);
    const out = new Map<string, string>();
    for (const [node, n] of m ?? []) {
      if (this.#now() - n.at > CAUSE_TTL_MS) m!.delete(node);
      else out.set(node, n.cause);
    }
    if (m?.size === 0) this.#noted.delete(volume);
    return out;
  }
}
