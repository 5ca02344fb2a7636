/**
 * Each member of a replicated volume as an operator sees it (VolumeMember): its role, its
 * state, why, its replication lag, the resync under way and its root hash. Pure: it reads
 * the group record, the notes of why members left the in-sync set (_sync_notes.ts), which
 * nodes' liveness leases are gone, and what the master knows first-hand (VolumeLiveStatus),
 * so that every node answers alike and tests need no cluster.
 *
 * State, first match wins:
 *
 * - down: the node's liveness lease is gone, or the group record lists it down;
 * - in-sync: the record lists it in sync (the master always is);
 * - resyncing: the master runs a resync of it;
 * - out-of-sync: anything else.
 * @module
 */

import type { LiveResync, MemberResync, VolumeLiveStatus, VolumeMember } from "../../mod/types.ts";
import { type ActorState, type GroupRecord, phaseOf } from "../group/mod.ts";
import type { SyncNotes } from "./_sync_notes.ts";

export interface MemberInputs {
  group: GroupRecord;
  sizeBytes: number;
  notes?: SyncNotes;
  /** Nodes whose liveness lease is gone now. */
  gone: readonly string[];
  /** Of those, the nodes that stopped cleanly (their stopping mark seen). */
  stopped?: readonly string[];
  /** What the master reported, if it could be asked. */
  live?: VolumeLiveStatus;
  /** Why the master could not be asked, if it could not. */
  liveError?: string;
  /** Now, ms since the epoch (this node's clock). */
  now: number;
}

/** The members, master first, then the replicas by name. */
export function memberStatus(i: MemberInputs): VolumeMember[] {
  const g = i.group;
  const order = [g.master, ...g.members.filter((m) => m !== g.master).sort()];
  return order.filter((m) => g.members.includes(m)).map((node) => member(i, node));
}

function member(i: MemberInputs, node: string): VolumeMember {
  const g = i.group;
  const role = node === g.master ? "master" : "replica";
  const note = i.notes?.[node];
  const inSync = g.inSync.includes(node);
  const lag = inSync ? { lagSeconds: 0 } : note
    ? {
      outOfSyncSince: note.since,
      lagSeconds: Math.max(0, Math.floor((i.now - Date.parse(note.since)) / 1000)),
    }
    : {};
  const rootHash = i.live?.roots?.[node] ?? undefined;
  const base = { node, role, ...(rootHash ? { rootHash } : {}) } as const;
  // The master asks the members it replicates to and keeps the answers a few seconds, so
  // a member that has just left shows the root from before: equal, though it is behind.
  const { rootHash: _stale, ...unrooted } = base;
  const notRecorded = "not in the group's in-sync set (no reason recorded)";
  if (i.gone.includes(node) || g.down.includes(node)) {
    const stopped = i.stopped?.includes(node) ?? false;
    const why = stopped
      ? "the node stopped (its lease revoked at its clean stop)"
      : i.gone.includes(node)
      ? "the node's liveness lease is gone (stopped, crashed, or cut off from etcd)"
      : "the group record lists it down (its lease expired); it takes itself off the list " +
        "once back";
    const before = inSync ? "" : `; out of sync before: ${note?.reason ?? notRecorded}`;
    return {
      ...unrooted,
      state: "down",
      reason: why + before,
      lagBytes: inSync ? 0 : i.sizeBytes,
      ...lag,
    };
  }
  const unrecorded = i.live?.unrecorded;
  if (inSync && unrecorded?.members.includes(node)) {
    // The master knows first-hand; the record follows once etcd takes the change.
    const reason = "replication to it failed; the master has not recorded it out of sync yet" +
      (unrecorded.writesHeld ? " (it cannot reach etcd?): writes wait until it has" : "");
    return { ...unrooted, state: "out-of-sync", reason, lagBytes: 0, ...lag };
  }
  if (inSync) return { ...base, state: "in-sync", lagBytes: 0, ...lag };
  const running = i.live?.resyncs.find((r) => r.member === node);
  const failed = i.live?.resyncFailures.find((f) => f.member === node);
  // Why it left the in-sync set, and why the last resync failed.
  const why = [
    note?.reason ?? notRecorded,
    ...(failed ? [`the last resync failed at ${failed.at}: ${failed.message}`] : []),
  ];
  if (running && i.live) {
    const at = Date.parse(running.finishedAt ?? i.live.observedAt);
    const resync = resyncView(running, i.sizeBytes, at);
    // Not answered yet (unreachable?): said why, as for a member out of sync.
    const waiting = running.waiting && !running.finishedAt ? { reason: why.join("; ") } : {};
    return { ...base, state: "resyncing", ...waiting, lagBytes: resync.bytesLeft, ...lag, resync };
  }
  const reason = [
    ...why,
    ...(i.live ? [] : [`resync progress unknown (${i.liveError ?? "the master was not asked"})`]),
  ].join("; ");
  return { ...unrooted, state: "out-of-sync", reason, lagBytes: i.sizeBytes, ...lag };
}

/**
 * A resync's progress for operators: percent of the current pass, bytes left, the compare and
 * send rates since it started, and the ETA of the pass (resyncEta) (`at`: when the master
 * answered, by its own clock like `startedAt`, so clock skew between nodes does not count).
 */
export function resyncView(r: LiveResync, sizeBytes: number, at: number): MemberResync {
  const total = r.totalBytes > 0 ? r.totalBytes : sizeBytes;
  const { compared, done, seconds } = compareWork(r, total, at);
  const percent = total > 0 ? Math.floor(compared / total * 1000) / 10 : 0;
  const bytesLeft = total - compared;
  const rate = seconds > 0 && done > 0 ? Math.round(done / seconds) : 0;
  const sent = r.sentBytes + r.zeroedBytes;
  const eta = r.finishedAt ? 0 : resyncEta(r, at);
  return {
    pass: r.pass,
    ...(r.waiting ? { waiting: true } : {}),
    percent,
    comparedBytes: compared,
    totalBytes: total,
    bytesLeft,
    sentBytes: r.sentBytes,
    zeroedBytes: r.zeroedBytes,
    rateBytesPerSecond: rate,
    sendRateBytesPerSecond: seconds > 0 ? Math.round(sent / seconds) : 0,
    ...(r.rateLimitBytesPerSecond ? { rateLimitBytesPerSecond: r.rateLimitBytesPerSecond } : {}),
    ...(r.regionsToCopy !== undefined
      ? { regionsToCopy: r.regionsToCopy, regionsCopied: r.regionsCopied ?? 0 }
      : {}),
    ...(eta !== undefined ? { etaSeconds: eta } : {}),
    startedAt: r.startedAt,
    ...(r.finishedAt ? { finishedAt: r.finishedAt } : {}),
  };
}

/**
 * The bytes resync `r` (of a volume of `total` bytes) has compared in its current pass, in all
 * its passes together (`done`), and the seconds since it started, as the master saw it at `at`.
 */
function compareWork(
  r: LiveResync,
  total: number,
  at: number,
): { compared: number; done: number; seconds: number } {
  const compared = Math.min(r.comparedBytes, total);
  const done = Math.max(0, r.pass - 1) * total + compared;
  return { compared, done, seconds: (at - Date.parse(r.startedAt)) / 1000 };
}

/** An ETA waits until the pass has copied this many regions (or a quarter of them, if fewer)... */
export const ETA_MIN_REGIONS = 8;
/** ...and has been copying for this long (seconds). */
export const ETA_MIN_SECONDS = 2;

/**
 * Seconds until the current pass of resync `r` ends, as the master saw it at `at` (pure), or
 * undefined while there is too little to go by ("estimating"). A pass first compares the hash
 * trees (the regions found equal count as compared at once), then copies each differing
 * region, whose cost is mostly per region (block hashes asked and compared, a round trip)
 * rather than per byte (scattered 4 KiB changes were seen to resync at about 1 MiB of volume
 * a second), so bytes compared per second, swollen by the equal regions, promise too early an
 * end.
 * So: regions left / regions copied per second since the copying began. Masters of older
 * versions report no regions: their bytes left at the bytes compared per second since the
 * start, after as long a wait.
 */
export function resyncEta(r: LiveResync, at: number): number | undefined {
  if (r.regionsToCopy === undefined || r.copyingSince === undefined) {
    const { compared, done, seconds } = compareWork(r, r.totalBytes, at);
    if (seconds < ETA_MIN_SECONDS || done <= 0) return undefined;
    return Math.ceil((r.totalBytes - compared) / (done / seconds));
  }
  const copied = r.regionsCopied ?? 0;
  const left = r.regionsToCopy - copied;
  if (left <= 0) return 0;
  const seconds = (at - Date.parse(r.copyingSince)) / 1000;
  const enough = Math.min(ETA_MIN_REGIONS, Math.ceil(r.regionsToCopy / 4));
  if (copied < enough || seconds < ETA_MIN_SECONDS) return undefined;
  return Math.ceil(left / (copied / seconds));
}

/**
 * Why a group is not healthy, in a line (Volume.phaseReason); undefined when healthy. Read off
 * the record's phase and the member states above, so `volume get` on any node says the same:
 *
 * - degraded: each member not in sync, with its state and why;
 * - failing-over: the master is down and which in-sync members may take over;
 * - unavailable: the master is down and no in-sync member is up.
 */
export function phaseReason(g: GroupRecord, members: VolumeMember[]): string | undefined {
  const master = members.find((m) => m.node === g.master);
  const masterDown = `master ${g.master} is down` +
    (master?.state === "down" && master.reason ? ` (${master.reason})` : "");
  if (g.phase === "unavailable") {
    const others = members.filter((m) => m.node !== g.master && m.state !== "in-sync");
    const lagging = others.length === 0
      ? ""
      : `; not in sync: ${others.map((m) => `${m.node} (${m.state})`).join(", ")}`;
    return `no in-sync member is up: ${masterDown}${lagging}; nobody serves the volume until ` +
      `${g.master} is back`;
  }
  if (g.phase === "failing-over") {
    const up = g.inSync.filter((m) => m !== g.master && !g.down.includes(m));
    return `${masterDown}; in-sync ${up.join(", ")} takes over`;
  }
  if (g.phase !== "degraded") return undefined;
  const parts = members.filter((m) => m.state !== "in-sync").map((m) => {
    const what = m.state === "resyncing" && m.resync
      ? m.resync.finishedAt
        ? "resync finished, being marked in sync"
        : m.resync.waiting
        ? `resyncing (waiting for it to answer${m.reason ? `; ${m.reason}` : ""})`
        : `resyncing (${m.resync.percent.toFixed(1)}% of the current pass compared)`
      : `${m.state === "out-of-sync" ? "out of sync" : m.state}${m.reason ? `: ${m.reason}` : ""}`;
    return `${m.role} ${m.node} ${what}`;
  });
  return parts.length > 0 ? parts.join("; ") : "a member is out of sync or down";
}

/**
 * The replicas a master's group driver found failing and has not recorded out of sync yet
 * (its reports the record does not reflect), and whether writes wait at its write gate:
 * VolumeLiveStatus.unrecorded. Normally for milliseconds; for as long as etcd is unreachable.
 */
export function unrecordedFailures(
  s: ActorState | undefined,
): VolumeLiveStatus["unrecorded"] {
  const inSync = s?.known?.record.inSync ?? [];
  const members = (s?.reports ?? []).filter((r) => !r.inSync && inSync.includes(r.replica))
    .map((r) => r.replica);
  return members.length > 0 ? { members, writesHeld: s!.holding !== undefined } : undefined;
}

/**
 * Group `g` as this node sees it now (pure): members whose liveness lease it sees gone
 * (`gone`) count as down, and the phase follows (phaseOf). Only a live member writes the
 * record, so when the master and every member that could take over are dead the record keeps
 * the last phase written (`degraded`, or `healthy` when they died together): `volume get`
 * and `volume list` show this instead, e.g. `unavailable`.
 */
export function seenGroup(g: GroupRecord, gone: readonly string[]): GroupRecord {
  const more = g.members.filter((m) => gone.includes(m) && !g.down.includes(m));
  if (more.length === 0) return g;
  const down = [...g.down, ...more];
  return { ...g, down, phase: phaseOf({ ...g, down }) };
}
