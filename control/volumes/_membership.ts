/**
 * The serving master's side of membership changes (group/membership.ts decides): it keeps,
 * in memory, since when it has seen each member of its groups absent, asks planMembership()
 * after every record change and every `checkEveryMs`, and writes a change as ONE
 * compare-and-swap of the volume record, guarded by its own liveness key and the new
 * members' (all present) and by the record's revision: the group record gains the new
 * members (out of sync, with a note saying why) and loses the ones that leave.
 *
 * What follows needs nothing more from here: each member's record watch (_groups.ts) has a
 * new member make its (empty, sparse) copy and a member that left delete its copy with its
 * sidecar files, and the master's group machine sees a lagging member and resyncs it (Delta
 * Sync: only blocks that differ from the new copy's zeros are sent, holes are not), then
 * marks it in sync by CAS.
 *
 * A member is absent when its liveness lease is gone (after the grace of LeaseWatch) or the
 * record lists it down, or when it is out of sync, no resync of it runs and the node list
 * shows it unreachable or down. The count starts when this master first sees it absent, so a
 * change of master starts it again (later, never sooner). A change wanted but impossible (no
 * eligible node) changes nothing: `blocked()` says why (volume get), and it is logged once
 * per new reason.
 * @module
 */

import type { NodeInfo } from "../../mod/types.ts";
import { type MembershipChange, planMembership, sameRecord } from "../group/mod.ts";
import type { Logger } from "../common/mod.ts";
import { NEW_MEMBER, withHistory } from "../events/mod.ts";
import { cordonKey, livenessCompares } from "../nodes/mod.ts";
import type { Compare, StateStore } from "../store/mod.ts";
import { parseRecord, VOLUME_PREFIX, type VolumeRecord } from "./_record.ts";

/** Default of `serve --replace-after`. */
export const REPLACE_AFTER_MS = 5 * 60_000;

/** How often a master looks at its groups between record changes. */
export function membershipCheckMs(replaceAfterMs: number): number {
  return Math.min(5_000, Math.max(250, Math.floor(replaceAfterMs / 5)));
}

export interface MembershipOptions {
  store: StateStore;
  logger: Logger;
  /** This node. */
  nodeName: string;
  listNodes: () => Promise<NodeInfo[]>;
  /** Default REPLACE_AFTER_MS. */
  replaceAfterMs?: number;
  /** Nodes the groups see down (lease gone for longer than the grace). */
  leaseDown: () => string[];
  /** Members of `volume` whose resync this node runs now. */
  resyncing: (volume: string) => string[];
  /** The data plane: how much a new member of a group this node masters is sent. */
  plane?: { volumeStatus(name: string): { allocatedBytes: number } | undefined };
  clock?: () => number;
}

/** The reason noted for a member that joins (volume get shows it while it is seeded). */
export function joinedReason(change: MembershipChange): string {
  const why = change.replaced.length > 0
    ? `replacing ${change.replaced.join(", ")}, absent too long`
    : `replicas raised to ${change.record.desired.replicas}`;
  return `${NEW_MEMBER} (${why}): its copy is being seeded by Delta Sync`;
}

/**
 * Whether a check of a group must list the nodes (pure): only when a change may be due. A
 * listing probes every live node's API (an https request, a TLS handshake on both sides,
 * nodes/probe.ts), and right after a node dies every master of a group it was in checks at
 * once: listing then made each node probe every other one in the middle of the failovers
 * (docs/BENCHMARKS.md). So a member already known absent (lease gone, or down in the record)
 * lists nothing until it has been absent for `replaceAfterMs`; a wrong replica count, or a
 * lagging member whose absence only the listing can tell (unreachable), lists as before.
 * Without a listing planMembership() would decide nothing either: nothing is due.
 */
export function needsNodeList(o: {
  replicas: readonly string[];
  desired: number;
  lagging: readonly string[];
  /** Replicas absent without a listing: lease gone, or down in the record. */
  knownAbsent: readonly string[];
  /** Since when this master has seen members absent (ms), as kept so far. */
  absentSince: ReadonlyMap<string, number> | undefined;
  now: number;
  replaceAfterMs: number;
}): boolean {
  if (o.replicas.length !== o.desired) return true;
  if (o.lagging.some((m) => !o.knownAbsent.includes(m))) return true;
  return o.knownAbsent.some((m) => o.now - (o.absentSince?.get(m) ?? o.now) >= o.replaceAfterMs);
}

export class MembershipKeeper {
  readonly #o: MembershipOptions;
  readonly #now: () => number;
  readonly #replaceAfterMs: number;
  /** Volume -> member -> since when (ms) this node has seen it absent. */
  readonly #absent = new Map<string, Map<string, number>>();
  /** Volume -> the change it cannot make, and since when. */
  readonly #blocked = new Map<string, { key: string; reason: string; since: number }>();
  readonly #busy = new Set<string>();
  #timer: ReturnType<typeof setInterval> | undefined;
  /** The last node listing, shared by the checks of one interval (one list per tick). */
  #nodes: { at: number; list: Promise<NodeInfo[]> } | undefined;

  constructor(options: MembershipOptions) {
    this.#o = options;
    this.#now = options.clock ?? Date.now;
    this.#replaceAfterMs = options.replaceAfterMs ?? REPLACE_AFTER_MS;
  }

  /** Calls `tick` (which checks the groups served here) every membershipCheckMs(). */
  start(tick: () => void): void {
    this.stop();
    this.#timer = setInterval(tick, membershipCheckMs(this.#replaceAfterMs));
  }

  stop(): void {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Why a wanted change of `volume`'s members cannot be made now, if one cannot. */
  blocked(volume: string): { reason: string; since: string } | undefined {
    const b = this.#blocked.get(volume);
    return b && { reason: b.reason, since: new Date(b.since).toISOString() };
  }

  /** `volume` is gone or no longer served here. */
  forget(volume: string): void {
    this.#absent.delete(volume);
    this.#blocked.delete(volume);
  }

  /**
   * Looks at group `rec`, which this node serves as master at its record's epoch; makes the
   * change planMembership() wants, if any. One check per volume at a time (a check asked
   * while one runs is dropped: the next record change or tick asks again).
   */
  async check(rec: VolumeRecord): Promise<void> {
    if (this.#busy.has(rec.name)) return;
    this.#busy.add(rec.name);
    try {
      await this.#check(rec);
    } finally {
      this.#busy.delete(rec.name);
    }
  }

  async #check(rec: VolumeRecord): Promise<void> {
    const g = rec.group;
    if (!g || rec.state !== "ready" || g.master !== this.#o.nodeName) return;
    const now = this.#now();
    const replicas = g.members.filter((m) => m !== g.master);
    const leaseDown = this.#o.leaseDown();
    const resyncing = this.#o.resyncing(rec.name);
    const lagging = replicas.filter((m) => !g.inSync.includes(m) && !resyncing.includes(m));
    const wantsNodes = needsNodeList({
      replicas,
      desired: g.desired.replicas,
      lagging,
      knownAbsent: replicas.filter((m) => leaseDown.includes(m) || g.down.includes(m)),
      absentSince: this.#absent.get(rec.name),
      now,
      replaceAfterMs: this.#replaceAfterMs,
    });
    const nodes = wantsNodes ? await this.#listNodes(now) : [];
    const stateOf = new Map(nodes.map((n) => [n.name, n.state]));
    const absentNow = replicas.filter((m) =>
      leaseDown.includes(m) || g.down.includes(m) ||
      (lagging.includes(m) && ["unreachable", "down"].includes(stateOf.get(m) ?? ""))
    );
    const seen = this.#absent.get(rec.name) ?? new Map<string, number>();
    for (const m of [...seen.keys()]) if (!absentNow.includes(m)) seen.delete(m);
    for (const m of absentNow) if (!seen.has(m)) seen.set(m, now);
    this.#absent.set(rec.name, seen);
    if (!wantsNodes) {
      this.#blocked.delete(rec.name);
      return;
    }
    const plan = planMembership({
      record: g,
      self: this.#o.nodeName,
      sizeBytes: rec.sizeBytes,
      needBytes: this.#o.plane?.volumeStatus(rec.name)?.allocatedBytes,
      nodes: nodes.map((n) => ({
        name: n.name,
        labels: n.labels,
        state: n.state,
        freeBytes: n.freeBytes,
        copies: n.copies,
        masters: n.masters,
      })),
      absentSince: Object.fromEntries(seen),
      now,
      replaceAfterMs: this.#replaceAfterMs,
    });
    const log = this.#o.logger.child({ volume: rec.name, uuid: rec.uuid, epoch: g.epoch });
    if (plan.blocked) {
      // Logged once per reason: the same one with a longer absence is not news.
      const key = plan.blocked.replace(/absent for \d+ s/g, "absent");
      const before = this.#blocked.get(rec.name);
      if (before?.key !== key) {
        log.warn({ reason: plan.blocked }, "group: a membership change cannot be made now");
      }
      this.#blocked.set(rec.name, {
        key,
        reason: plan.blocked,
        since: before?.key === key ? before.since : now,
      });
    } else this.#blocked.delete(rec.name);
    if (plan.change) await this.#apply(rec, plan.change, log);
  }

  /** The nodes, listed at most once per check interval (a failed listing is not kept). */
  #listNodes(now: number): Promise<NodeInfo[]> {
    const fresh = this.#nodes && now - this.#nodes.at < membershipCheckMs(this.#replaceAfterMs);
    if (!fresh) {
      const list = this.#o.listNodes();
      this.#nodes = { at: now, list };
      list.catch(() => {
        if (this.#nodes?.list === list) this.#nodes = undefined;
      });
    }
    return this.#nodes!.list;
  }

  /**
   * Writes `change` if the record is still the one it was planned on (revision), this node's
   * lease is up and every new member's lease is up; a lost race is left to the next check.
   */
  async #apply(rec: VolumeRecord, change: MembershipChange, log: Logger): Promise<void> {
    const key = VOLUME_PREFIX + rec.name;
    const kv = await this.#o.store.get(key);
    if (!kv) return;
    const cur = parseRecord(kv);
    if (cur.uuid !== rec.uuid || cur.state !== "ready" || !cur.group) return;
    if (!sameRecord(cur.group, rec.group!)) return; // changed meanwhile: the next check re-plans
    const now = new Date(this.#now()).toISOString();
    const notes = { ...(cur.outOfSync ?? {}) };
    for (const m of change.removed) delete notes[m];
    const reason = joinedReason(change);
    for (const m of change.added) notes[m] = { since: now, reason };
    const { outOfSync: _o, ...rest } = cur;
    const next: VolumeRecord = {
      ...rest,
      group: change.record,
      master: change.record.master,
      epoch: change.record.epoch,
      replicas: change.record.desired.replicas,
      ...(Object.keys(notes).length > 0 ? { outOfSync: notes } : {}),
      updatedAt: now,
    };
    // What the change did, as events written in the same transaction (control/events/).
    const { record, ops } = withHistory(cur, next, new Date(now));
    const res = await this.#o.store.txn(
      [
        { key, target: "modRevision", op: "==", value: kv.modRevision },
        ...livenessCompares([], [this.#o.nodeName, ...change.added]),
        // The node list may be seconds old: a node cordoned since takes no new member.
        ...change.added.map((n): Compare => ({
          key: cordonKey(n),
          target: "version",
          op: "==",
          value: 0,
        })),
      ],
      [{ type: "put", key, value: JSON.stringify(record) }, ...ops],
    );
    if (!res.succeeded) {
      log.info({ added: change.added, removed: change.removed }, "group: membership CAS lost");
      this.#nodes = undefined; // planned on a list that may be out of date: list again
      return;
    }
    for (const m of change.removed) this.#absent.get(rec.name)?.delete(m);
    // The listing this node plans on (up to a check interval old) counts the copies just
    // placed, so that the replacements of a node's many groups spread rather than all go to
    // the node that had the fewest copies when it was listed.
    await this.#nodes?.list.then((list) => {
      for (const n of list) {
        const d = change.added.filter((m) => m === n.name).length -
          change.removed.filter((m) => m === n.name).length;
        if (d !== 0) n.copies = Math.max(0, (n.copies ?? 0) + d);
      }
    }, () => {});
    log.info(
      {
        added: change.added,
        removed: change.removed,
        members: change.record.members,
        reasoning: change.reasoning,
      },
      `group: members changed: ${
        [...change.added.map((m) => `+${m}`), ...change.removed.map((m) => `-${m}`)].join(" ")
      }`,
    );
  }
}
