/**
 * A replicated volume's recent history (`ballast volume events`): what each change of its
 * record did to the group, in words, kept as one small key per event beside the record.
 *
 * The events are read off the record before and after a change (pure: historyOf), and
 * written in the SAME transaction as that change (withHistory): no etcd request beyond the
 * group's own compare-and-swaps, which happen only on membership changes, never per I/O.
 * Keys are `/ballast/volume-events/<name>/<uuid>/<seq>`, seq counted in the volume record
 * (`eventSeq`), so a write needs no read: it puts the new events and deletes the ones that
 * fall out of the last EVENTS_KEEP. The record's watchers never see them (another prefix),
 * and a record that grows with every event would be sent to every node on every change.
 *
 * Two events no group field shows are written by the master on its own (a compare-and-swap
 * that only advances `eventSeq`, once per resync, never per step): a resync's start, once its
 * member answered (resyncStarted), and its interruption with how far it got
 * (resyncInterrupted). The record keeps the resyncs started and not yet ended (`resyncs`), so
 * that one whose master dies (kill -9: it can say nothing) is closed by the change that
 * replaces that master, with an interruption event of its own: every resync-started ends in
 * the history, back in sync or interrupted.
 * @module
 */

import { formatSize } from "../../mod/size.ts";
import type { VolumeEvent } from "../../mod/types.ts";
import type { GroupRecord } from "../group/mod.ts";
import type { Op } from "../store/mod.ts";

/** What the history reads of a volume record (_record.ts's VolumeRecord). */
export interface HistoryRecord {
  name: string;
  uuid: string;
  state: string;
  group?: GroupRecord;
  outOfSync?: Record<string, { reason: string }>;
  eventSeq?: number;
  /** Why the master refused the last delete (the record went back to ready). */
  deleteRefused?: string;
  /** The resyncs started and not ended yet, by member (kept by withHistory). */
  resyncs?: Record<string, OpenResync>;
}

/** A resync whose start is recorded and whose end is not: by which master, at which epoch. */
export interface OpenResync {
  master: string;
  epoch: number;
}

export const EVENTS_PREFIX = "/ballast/volume-events/";
/** How the reason noted for a member that joins starts (volumes/_membership.ts). */
export const NEW_MEMBER = "new member";
/** Events kept per volume. */
export const EVENTS_KEEP = 100;

/** The prefix of a volume's events (every uuid under that name). */
export function eventsPrefix(name: string): string {
  return `${EVENTS_PREFIX}${name}/`;
}

/** The key of event `seq` of copy `uuid` of volume `name`. */
export function eventKey(name: string, uuid: string, seq: number): string {
  return `${eventsPrefix(name)}${uuid}/${String(seq).padStart(12, "0")}`;
}

/** An event before it is numbered and stamped. */
/** An event to write; `at` when it happened earlier than it is written (default: then). */
export type EventDraft = Omit<VolumeEvent, "seq" | "at" | "epoch" | "master"> & { at?: string };
type Draft = EventDraft;

/**
 * What the writer knows of the nodes beyond the records: those whose liveness lease went
 * because they stopped cleanly (the node wrote its stopping mark, then revoked its lease), so
 * that a member "down" or a master replaced says "stopped" rather than "lease expired".
 */
export interface NodeFacts {
  stopped?: readonly string[];
}

/**
 * Why `whose` (a node, "master n2", "its node") is gone, in words: it stopped cleanly
 * (`stopped`: its stopping mark was seen), or its liveness lease expired.
 */
export function goneWhy(whose: string, stopped: boolean): string {
  return stopped ? `${whose} stopped (lease revoked)` : `${whose}'s liveness lease expired`;
}

/** What the change from `prev` to `next` did to the group, in order (no group: nothing). */
export function historyOf(
  prev: HistoryRecord | undefined,
  next: HistoryRecord,
  facts?: NodeFacts,
): Draft[] {
  const g = next.group;
  if (!g) return [];
  const p = prev?.uuid === next.uuid ? prev.group : undefined;
  const out: Draft[] = [];
  const ready = next.state === "ready";
  const wasReady = prev?.uuid === next.uuid && prev.state === "ready";
  if (ready && prev?.uuid === next.uuid && prev.state === "deleting") {
    out.push({
      type: "delete-refused",
      message: `delete refused: ${next.deleteRefused ?? "the master did not delete it"}`,
    });
  } else if (ready && !wasReady) {
    const replicas = g.members.filter((m) => m !== g.master);
    out.push({
      type: "created",
      message: `created with master ${g.master}` +
        (replicas.length > 0 ? ` and replicas ${replicas.join(", ")}` : ""),
    });
  }
  if (next.state === "deleting" && prev?.state !== "deleting") {
    out.push({ type: "deleting", message: "delete started" });
  }
  if (!p || !wasReady && !ready) return out;
  const h0 = p.handover;
  const h1 = g.handover;
  if (h1 && (!h0 || h0.to !== h1.to)) {
    out.push({
      type: "handover-requested",
      node: h1.to,
      message: `handover of the master from ${g.master} to ${h1.to} asked (${h1.reason}); ` +
        `${g.master} closes its export first`,
    });
  }
  if (p.epoch !== g.epoch || p.master !== g.master) {
    if (h0 && h0.to === g.master) {
      out.push({
        type: "handover",
        node: g.master,
        message: `${p.master} handed over to ${g.master} at epoch ${g.epoch} (${h0.reason})`,
      });
    } else {
      const why = p.down.includes(p.master) || g.down.includes(p.master)
        ? goneWhy(`master ${p.master}`, facts?.stopped?.includes(p.master) ?? false)
        : `master ${p.master} was replaced`;
      out.push({
        type: "promoted",
        node: g.master,
        message: `${g.master} promoted to master at epoch ${g.epoch}: ${why}`,
      });
    }
  } else if (h0 && !h1) {
    const why = !g.inSync.includes(h0.to)
      ? `${h0.to} is no longer in sync`
      : g.down.includes(h0.to)
      ? `${h0.to} is down`
      : "cancelled by the drain (it did not complete in time)";
    out.push({
      type: "handover-abandoned",
      node: h0.to,
      message: `handover to ${h0.to} given up: ${why}; ${g.master} serves again`,
    });
  }
  out.push(...orphanedResyncs(prev!, g));
  // Membership changes (`volume update --replicas`, replacement): written by the master.
  const added = g.members.filter((m) => !p.members.includes(m));
  const removed = p.members.filter((m) => !g.members.includes(m));
  for (const m of removed) {
    const why = added.length > 0
      ? `replaced by ${added.join(", ")}`
      : `replicas lowered to ${g.desired.replicas}`;
    out.push({
      type: "member-removed",
      node: m,
      message: `${m} removed from the group (${why}); its copy is deleted`,
    });
  }
  for (const m of added) {
    const reason = next.outOfSync?.[m]?.reason;
    out.push({
      type: "member-added",
      node: m,
      message: `${m} added` + (reason ? `: ${reason}` : ""),
    });
  }
  for (const m of g.down.filter((m) => !p.down.includes(m))) {
    const why = goneWhy("its node", facts?.stopped?.includes(m) ?? false);
    out.push({ type: "down", node: m, message: `${m} down: ${why}` });
  }
  for (const m of p.inSync.filter((m) => !g.inSync.includes(m) && g.members.includes(m))) {
    const reason = next.outOfSync?.[m]?.reason;
    out.push({
      type: "out-of-sync",
      node: m,
      message: `${m} left the in-sync set` + (reason ? `: ${reason}` : ""),
    });
  }
  for (const m of p.down.filter((m) => !g.down.includes(m) && g.members.includes(m))) {
    out.push({ type: "up", node: m, message: `${m} is up again` });
  }
  for (const m of g.inSync.filter((m) => !p.inSync.includes(m))) {
    const seeded = prev?.outOfSync?.[m]?.reason.startsWith(NEW_MEMBER) ?? false;
    const how = seeded ? "in sync: its copy is seeded" : "back in sync: its resync finished";
    out.push({ type: "in-sync", node: m, message: `${m} ${how}` });
  }
  return out;
}

/**
 * The resyncs `prev` lists as running whose master no longer serves at their epoch in `g`:
 * that master did not record their end (it died, froze, or lost the group before it could),
 * so the change that replaced it does. Only entries of `prev`'s own master and epoch (a
 * node of an older version may have carried an older one over); none for a member that left
 * the group (member-removed ends it) or is in sync.
 */
function orphanedResyncs(prev: HistoryRecord, g: GroupRecord): Draft[] {
  const p = prev.group!;
  return Object.entries(prev.resyncs ?? {})
    .filter(([m, o]) =>
      o.master === p.master && o.epoch === p.epoch &&
      (o.master !== g.master || o.epoch !== g.epoch) &&
      g.members.includes(m) && !g.inSync.includes(m)
    )
    .map(([m, o]) => ({
      type: "resync-interrupted",
      node: m,
      message: `master ${o.master}'s resync of ${m} interrupted: the master changed (now ` +
        `${g.master} at epoch ${g.epoch}) before ${o.master} recorded its end; how far it got ` +
        `is not known (the next resync compares again, copying only what differs)`,
    }));
}

/**
 * The master's own resync events (`extra`) as they go into the change from `prev` to `next`,
 * and the resyncs running after it. Running: those of `prev` still at `next`'s master and
 * epoch whose member is neither gone nor in sync, plus the starts, minus the interruptions. A
 * start for a member that left the group or is in sync is not written; a start for a member
 * whose earlier resync has no recorded end (its master restarted at the same epoch, or the
 * write of that end was lost) is preceded by that one's interruption.
 */
function resyncDrafts(
  prev: HistoryRecord | undefined,
  next: HistoryRecord,
  extra: readonly EventDraft[],
): { drafts: Draft[]; open: Record<string, OpenResync> | undefined } {
  const g = next.group;
  if (!g) return { drafts: [], open: undefined };
  const open: Record<string, OpenResync> = {};
  for (const [m, o] of Object.entries(prev?.uuid === next.uuid ? prev.resyncs ?? {} : {})) {
    const ended = o.master !== g.master || o.epoch !== g.epoch || !g.members.includes(m) ||
      g.inSync.includes(m);
    if (!ended) open[m] = o;
  }
  const drafts: Draft[] = [];
  for (const d of extra) {
    const m = d.node;
    if (m !== undefined && d.type === "resync-started") {
      if (!g.members.includes(m) || g.inSync.includes(m)) continue;
      const before = open[m];
      if (before) {
        drafts.push({
          type: "resync-interrupted",
          node: m,
          message: `master ${before.master}'s resync of ${m} interrupted: a new resync of it ` +
            `started before its end was recorded (its master restarted, or the record of its ` +
            `end was lost); how far it got is not known`,
        });
      }
      open[m] = { master: g.master, epoch: g.epoch };
    }
    if (m !== undefined && d.type === "resync-interrupted") delete open[m];
    drafts.push(d);
  }
  return { drafts, open: Object.keys(open).length > 0 ? open : undefined };
}

/** What ends a resync in the history: its member back in sync, its interruption, its removal. */
const RESYNC_ENDS = new Set(["in-sync", "resync-interrupted", "member-removed"]);

/**
 * The `resync-started` events of `events` that are not followed by an end of their own (an
 * `in-sync`, `resync-interrupted` or `member-removed` of the same member before its next
 * start): none once the group is healthy (the history's promise, checked by the e2e tests and
 * `deno task chaos`).
 */
export function unendedResyncs(events: readonly VolumeEvent[]): VolumeEvent[] {
  const unended: VolumeEvent[] = [];
  const open = new Map<string, VolumeEvent>();
  for (const e of [...events].sort((a, b) => a.seq - b.seq)) {
    if (e.node === undefined) continue;
    if (e.type === "resync-started") {
      const before = open.get(e.node);
      if (before) unended.push(before);
      open.set(e.node, e);
    } else if (RESYNC_ENDS.has(e.type)) {
      open.delete(e.node);
    }
  }
  return [...unended, ...open.values()].sort((a, b) => a.seq - b.seq);
}

/**
 * The event a master writes when the member of a resync answered and the compare begins (not
 * when it is asked to: a member that has just died would be announced for nothing).
 */
export function resyncStarted(master: string, member: string, at?: Date): EventDraft {
  return {
    ...(at ? { at: at.toISOString() } : {}),
    type: "resync-started",
    node: member,
    message: `master ${master} resyncs ${member}: it answered, the copies are being compared ` +
      `(Delta Sync: only differing blocks are sent)`,
  };
}

/**
 * The event a master writes when it serves again at the epoch it served before: its node
 * restarted (a crash, or a stop) and no other member took over meanwhile, so the pause
 * left no other change in the record.
 */
export function masterResumed(master: string, epoch: number): EventDraft {
  return {
    type: "resumed",
    node: master,
    message: `master ${master} serves again at epoch ${epoch} after its node restarted (no ` +
      `other in-sync member took over meanwhile)`,
  };
}

/** How far a resync got (the data plane's progress, in bytes of the volume). */
export interface ResyncReach {
  pass: number;
  comparedBytes: number;
  totalBytes: number;
  sentBytes: number;
  zeroedBytes: number;
}

/** The event a master writes when a resync that had started stops before its end, and why. */
export function resyncInterrupted(
  master: string,
  member: string,
  reason: string,
  reach: ResyncReach | undefined,
): EventDraft {
  const got = reach
    ? `; it had compared ${formatSize(reach.comparedBytes)} of ` +
      `${formatSize(reach.totalBytes)} (pass ${reach.pass}) and sent ` +
      `${formatSize(reach.sentBytes)}` +
      (reach.zeroedBytes > 0 ? ` (and zeroed ${formatSize(reach.zeroedBytes)})` : "")
    : "";
  return {
    type: "resync-interrupted",
    node: member,
    message: `master ${master}'s resync of ${member} interrupted: ${reason}${got}`,
  };
}

/**
 * `next` (replacing `prev`, at `at`) with its event counter advanced, and the operations to
 * put in the same transaction: the new events (those the change implies, then `extra`: what
 * the writer saw happen that no record field shows, such as a resync's start), the old ones
 * out of the window, and, when the record goes ("delete"), every event of the volume.
 */
export function withHistory<R extends HistoryRecord>(
  prev: R | undefined,
  next: R | "delete",
  at: Date,
  o: { extra?: readonly EventDraft[]; facts?: NodeFacts } = {},
): { record: R | "delete"; ops: Op[] } {
  if (next === "delete") {
    const name = prev?.name;
    return {
      record: next,
      ops: name ? [{ type: "delete", key: eventsPrefix(name), prefix: true }] : [],
    };
  }
  const { drafts: extra, open: resyncs } = resyncDrafts(prev, next, o.extra ?? []);
  const drafts = [...historyOf(prev, next, o.facts), ...extra];
  const { resyncs: _was, ...rest } = next;
  const record = { ...rest, ...(resyncs ? { resyncs } : {}) } as R;
  if (drafts.length === 0) return { record, ops: [] };
  const first = (prev?.uuid === record.uuid ? prev.eventSeq : undefined) ?? 0;
  const g = record.group!;
  const ops: Op[] = [];
  drafts.forEach((d, i) => {
    const seq = first + i + 1;
    const event: VolumeEvent = {
      seq,
      at: at.toISOString(),
      ...d,
      epoch: g.epoch,
      master: g.master,
    };
    ops.push({
      type: "put",
      key: eventKey(record.name, record.uuid, seq),
      value: JSON.stringify(event),
    });
    if (seq > EVENTS_KEEP) {
      ops.push({ type: "delete", key: eventKey(record.name, record.uuid, seq - EVENTS_KEEP) });
    }
  });
  return { record: { ...record, eventSeq: first + drafts.length }, ops };
}

/** The events of copy `uuid` among listed event keys, oldest first. */
export function parseEvents(
  kvs: { key: string; value: string }[],
  name: string,
  uuid: string,
): VolumeEvent[] {
  const prefix = `${eventsPrefix(name)}${uuid}/`;
  return kvs.filter((kv) => kv.key.startsWith(prefix))
    .map((kv) => JSON.parse(kv.value) as VolumeEvent)
    .sort((a, b) => a.seq - b.seq);
}

/**
 * What this node sees happen to group `rec` that no member has written yet. Only a live
 * member writes the record, so while the master and every member able to take over are dead
 * nothing is written, and the events would appear only once one returns, stamped then. `seen`
 * is the group as this node sees the leases (volumes/_members.ts seenGroup: members whose
 * liveness lease is gone count as down). The events are marked `pending`, with seq 0 and
 * `at` = `now`, and are written for real by the first member that can.
 */
export function pendingEvents(
  rec: HistoryRecord,
  seen: GroupRecord,
  now: Date,
  facts?: NodeFacts,
): VolumeEvent[] {
  if (!rec.group || seen === rec.group) return [];
  return historyOf(rec, { ...rec, group: seen }, facts).map((d) => ({
    seq: 0,
    at: now.toISOString(),
    ...d,
    message: `${d.message} (seen by this node; not recorded yet: a live member records it)`,
    epoch: seen.epoch,
    master: seen.master,
    pending: true,
  }));
}
