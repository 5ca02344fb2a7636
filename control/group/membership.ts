/**
 * Membership changes of a volume group, decided by its serving master: replacing a member
 * that stayed away too long, and following a changed replica count (`volume update
 * --replicas N`). Pure: the caller passes the record, the nodes as last seen and since when
 * it has seen each member absent, and gets the next record (or nothing) with the reasoning,
 * or why a wanted change cannot be made. The caller writes the record by compare-and-swap.
 *
 * Rules:
 *
 * - only the master decides, and never about itself (a dead master is replaced by failover,
 *   machine.ts, not here);
 * - more replicas than desired: the surplus goes, down or absent members first, then out of
 *   sync ones (longest absent first, then by name), in-sync ones last, each time one on a
 *   cordoned node before the others. The master stays, and
 *   it is always in sync, so an in-sync copy always remains;
 * - a replica absent (down, or out of sync and unreachable) for `replaceAfterMs` or more is
 *   replaced: a node chosen by the placement rules (placeAdditional) joins out of sync and
 *   is seeded by Delta Sync, and the absent one leaves the record in the same write. With no
 *   eligible node it stays, nothing changes, and `blocked` says why;
 * - fewer replicas than desired: nodes chosen the same way join out of sync;
 * - a member that joins is never in sync: it can be promoted only after a resync made its
 *   copy equal to the master's, as any other lagging member.
 * @module
 */

import { placeAdditional, type PlacementNode } from "./placement.ts";
import { type GroupRecord, phaseOf } from "./record.ts";

export interface MembershipInput {
  record: GroupRecord;
  /** The node deciding: nothing is planned unless it is the record's master. */
  self: string;
  sizeBytes: number;
  /** What a new member is sent (the master's allocated bytes), when known. */
  needBytes?: number;
  /** The cluster's nodes as last seen (state, labels, free bytes). */
  nodes: readonly PlacementNode[];
  /** Members seen absent (down, or out of sync and unreachable), since when (ms). */
  absentSince: Readonly<Record<string, number>>;
  /** Now (ms, the same clock as `absentSince`). */
  now: number;
  replaceAfterMs: number;
}

export interface MembershipChange {
  record: GroupRecord;
  /** Nodes that join (out of sync, to be seeded). */
  added: string[];
  /** Members that leave: surplus, or replaced. */
  removed: string[];
  /** Those of `removed` that were absent too long and are replaced. */
  replaced: string[];
  /** One line per decision, for logs and tests. */
  reasoning: string[];
}

export interface MembershipPlan {
  change?: MembershipChange;
  /** A wanted change that cannot be made now (no eligible node), and why. */
  blocked?: string;
}

/** The membership change the master `input.self` wants; see the module doc. */
export function planMembership(i: MembershipInput): MembershipPlan {
  const r = i.record;
  if (r.master !== i.self || r.down.includes(i.self) || !r.members.includes(i.self)) return {};
  const desired = r.desired.replicas;
  const replicas = r.members.filter((m) => m !== r.master);
  const absentMs = (m: string) =>
    i.absentSince[m] === undefined ? undefined : Math.max(0, i.now - i.absentSince[m]);
  const isAbsent = (m: string) => r.down.includes(m) || absentMs(m) !== undefined;
  const reasoning: string[] = [];

  // Surplus first: the least useful replicas go.
  const removed: string[] = [];
  if (replicas.length > desired) {
    // Absent first, then out of sync, then in sync; within each, one on a cordoned node
    // (being moved off) before the others. An in-sync copy never goes for an out-of-sync one.
    const cordoned = (m: string) => i.nodes.some((n) => n.name === m && n.state === "cordoned");
    const rank = (m: string) =>
      isAbsent(m) ? 0 : (r.inSync.includes(m) ? 3 : 1) + (cordoned(m) ? 0 : 1);
    const order = [...replicas].sort((a, b) =>
      rank(a) - rank(b) || (absentMs(b) ?? -1) - (absentMs(a) ?? -1) || compareNames(a, b)
    );
    for (const m of order.slice(0, replicas.length - desired)) {
      removed.push(m);
      const state = isAbsent(m)
        ? "absent"
        : (r.inSync.includes(m) ? "in sync" : "out of sync") + (cordoned(m) ? ", cordoned" : "");
      reasoning.push(`replicas lowered to ${desired}: ${m} leaves (${state})`);
    }
  }
  const kept = replicas.filter((m) => !removed.includes(m));
  // Absent for long enough: to be replaced, longest absent first.
  const stale = kept
    .filter((m) => (absentMs(m) ?? -1) >= i.replaceAfterMs)
    .sort((a, b) => absentMs(b)! - absentMs(a)! || compareNames(a, b));
  const healthy = kept.filter((m) => !stale.includes(m));
  const free = desired - kept.length;
  const need = free + stale.length;

  let added: string[] = [];
  let blocked: string | undefined;
  if (need > 0) {
    const placed = placeAdditional(
      {
        replicas: need,
        sizeBytes: i.sizeBytes,
        ...(i.needBytes !== undefined ? { needBytes: i.needBytes } : {}),
        ...(r.desired.spreadBy ? { spreadBy: r.desired.spreadBy } : {}),
      },
      i.nodes,
      [r.master, ...healthy],
      [...removed, ...stale],
    );
    added = placed.nodes;
    if (placed.short) {
      const what = [
        ...stale.map((m) =>
          `replace ${m} (absent for ${Math.round(absentMs(m)! / 1000)} s, more than ${
            Math.round(i.replaceAfterMs / 1000)
          } s)`
        ),
        ...(free > 0 ? [`add ${free} replica${free === 1 ? "" : "s"} (${desired} wanted)`] : []),
      ];
      blocked = `cannot ${what.join(" and ")}: ${placed.short}`;
    }
    reasoning.push(...placed.reasoning);
  }
  // New nodes fill the free places first, then replace the stale members.
  const dropped = stale.slice(0, Math.max(0, added.length - Math.max(0, free)));
  for (const m of dropped) {
    reasoning.push(
      `${m} replaced: absent for ${Math.round(absentMs(m)! / 1000)} s (replace after ${
        Math.round(i.replaceAfterMs / 1000)
      } s)`,
    );
  }
  const leaving = [...removed, ...dropped];
  if (leaving.length === 0 && added.length === 0) return blocked ? { blocked } : {};
  const members = [...r.members.filter((m) => !leaving.includes(m)), ...added].sort(compareNames);
  const inSync = r.inSync.filter((m) => members.includes(m));
  const down = r.down.filter((m) => members.includes(m));
  // The key order of record.ts's withPhase, so that equal records serialize equally.
  const base = { epoch: r.epoch, master: r.master, members, inSync, down, desired: r.desired };
  const record: GroupRecord = { ...base, phase: phaseOf(base) };
  return {
    change: {
      record,
      added,
      removed: leaving.sort(compareNames),
      replaced: [...dropped].sort(compareNames),
      reasoning,
    },
    ...(blocked ? { blocked } : {}),
  };
}

/** One line for tests and logs, e.g. "+n4 -n3 [n1,n2,n4] (blocked: ...)". */
export function describeMembership(p: MembershipPlan): string {
  const parts: string[] = [];
  if (p.change) {
    const c = p.change;
    parts.push(
      [...c.added.map((m) => `+${m}`), ...c.removed.map((m) => `-${m}`)].join(" ") +
        ` [${c.record.members}] in-sync [${c.record.inSync}]`,
    );
  }
  if (p.blocked) parts.push(`blocked: ${p.blocked}`);
  return parts.length > 0 ? parts.join("; ") : "no change";
}

/** Code-unit order, independent of locale. */
function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
