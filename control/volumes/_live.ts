/**
 * Live status of a volume: what only the node serving it knows (allocation, connections, and
 * for a group master the resyncs under way and the members' root hashes), and the volume as
 * `volume get` shows it from any node.
 *
 * The serving node answers from memory (its data plane and ResyncTracker); another node asks
 * it through the node-to-node API (GET /v1/peer/volumes/{name}, PeerStatusSource) with a
 * short timeout. Nothing of it is written to the store: the view is as fresh as the answer,
 * and when the serving node cannot be asked the volume is shown from its record alone, with
 * `live.error` saying why.
 * @module
 */

import { errorMessage, FailedPreconditionError, NotFoundError } from "../../mod/errors.ts";
import type {
  LiveResync,
  NodeInfo,
  Volume,
  VolumeEvent,
  VolumeLiveStatus,
  VolumeMember,
  VolumeMemberVerdict,
  VolumeVerifyReport,
} from "../../mod/types.ts";
import { parseEvents, pendingEvents } from "../events/mod.ts";
import type { KeyValue } from "../store/mod.ts";
import type { DataPlane } from "../../data/plane.ts";
import type { VolumeGroups } from "./_groups.ts";
import { memberStatus, phaseReason, seenGroup, unrecordedFailures } from "./_members.ts";
import { toVolume, type VolumeRecord } from "./_record.ts";

/** How long a master's data plane may take to give its members' root hashes. */
export const ROOTS_TIMEOUT_MS = 1_500;

/** Asks another node what it knows first-hand of a volume it serves. */
export interface PeerStatusSource {
  /** Node `node`'s answer to GET /v1/peer/volumes/{name}; throws when it cannot be had. */
  volumeStatus(node: string, name: string): Promise<VolumeLiveStatus>;
  /** Node `node`'s POST /v1/peer/volumes/{name}/verify (its master compares the copies). */
  verifyVolume?(node: string, name: string, deep: boolean): Promise<VolumeVerifyReport>;
}

/** The members of one group this node serves as master (for /metrics). */
export interface ServedGroup {
  volume: string;
  sizeBytes: number;
  members: VolumeMember[];
  /** Its master here is refused by a member that has seen a newer epoch (fencedReason()). */
  fenced?: boolean;
}

/**
 * Why a group whose master is fenced below the record's epoch serves nothing: a member has
 * seen a newer epoch than the record says, so the record is behind its members (etcd restored
 * from an older snapshot; docs/OPERATIONS.md "Backup and restore").
 */
export function fencedReason(rec: VolumeRecord): string {
  return `master ${rec.group?.master ?? rec.master} is refused by a member that has seen a ` +
    `newer epoch than the record's ${rec.group?.epoch ?? rec.epoch}: the group record is ` +
    `behind its members (etcd restored from an older snapshot?), and nobody serves the ` +
    `volume; see docs/OPERATIONS.md "Backup and restore"`;
}

export interface LiveContext {
  plane: DataPlane;
  node: string;
  groups?: VolumeGroups;
  peers?: PeerStatusSource;
  now: () => Date;
}

/**
 * This node's first-hand status of the volume of `rec`, or undefined when it does not
 * export it. With `roots`, a group master asks its data plane for the members' root hashes
 * (bounded by ROOTS_TIMEOUT_MS; left out when the data plane has none or is too slow).
 */
export async function localLive(
  ctx: LiveContext,
  rec: VolumeRecord,
  options: { roots: boolean },
): Promise<VolumeLiveStatus | undefined> {
  const master = rec.group !== undefined && rec.group.master === ctx.node;
  const status = ctx.plane.volumeStatus(rec.name);
  const failed = master ? ctx.groups?.serveFailure(rec.name) : undefined;
  if (!status && failed) {
    // Master, but its export failed (a full disk): say so rather than "not exported here".
    const at = ctx.now().toISOString();
    const none = { allocatedBytes: 0, connections: 0, resyncs: [], resyncFailures: [] };
    return {
      name: rec.name,
      uuid: rec.uuid,
      node: ctx.node,
      observedAt: at,
      ...none,
      exportFailed: failed,
    };
  }
  if (!status) return undefined;
  const roots = master && options.roots ? await rootsOf(ctx.plane, rec.name) : undefined;
  const iso = (ms: number) => new Date(ms).toISOString();
  const blocked = master ? ctx.groups?.members.blocked(rec.name) : undefined;
  const unrecorded = master ? unrecordedFailures(ctx.groups?.actor(rec.name)) : undefined;
  return {
    name: rec.name,
    uuid: rec.uuid,
    node: ctx.node,
    observedAt: ctx.now().toISOString(),
    allocatedBytes: status.allocatedBytes,
    connections: status.connections,
    resyncs: master ? resyncsOf(ctx, rec) : [],
    resyncFailures: master
      ? (ctx.groups?.resyncs.failures(rec.name) ?? []).map((f) => ({ ...f, at: iso(f.at) }))
      : [],
    ...(roots ? { roots } : {}),
    ...(blocked ? { membershipBlocked: blocked } : {}),
    ...(unrecorded ? { unrecorded } : {}),
    ...(master && status.fenced ? { fenced: true } : {}),
  };
}

/**
 * Why the master of group `rec` serves nothing although the record may say healthy, from what
 * it knows first-hand (`live`): its members refuse its epoch, or its export fails (a full
 * disk). Undefined when neither. `volume get`, `volume list` and the metrics say the same.
 */
export function masterRefusal(
  rec: VolumeRecord,
  live: Pick<VolumeLiveStatus, "fenced" | "exportFailed" | "node">,
): string | undefined {
  if (!rec.group) return undefined;
  if (live.fenced) return fencedReason(rec);
  if (live.exportFailed) {
    return `its master ${live.node} cannot export it: ${live.exportFailed} (it tries again)`;
  }
  return undefined;
}

/**
 * The volume of `record` as `volume list` shows it: the record, its phase as this node sees
 * the leases, and for a volume this node masters its live counts and masterRefusal().
 */
export function listedView(ctx: LiveContext, record: VolumeRecord): Volume {
  const v = seenPhase(toVolume(record), record, ctx.groups?.leaseGone() ?? []);
  if (v.master !== ctx.node) return v;
  const live = ctx.plane.volumeStatus(v.name);
  const exportFailed = ctx.groups?.serveFailure(v.name);
  const refused = masterRefusal(record, { node: ctx.node, fenced: live?.fenced, exportFailed });
  const seen = refused ? { ...v, phase: "unavailable" as const, phaseReason: refused } : v;
  return live
    ? { ...seen, allocatedBytes: live.allocatedBytes, connections: live.connections }
    : seen;
}

/** localLive() for the node-to-node route: NotFoundError when this node does not export it. */
export async function exportStatus(
  ctx: LiveContext,
  rec: VolumeRecord | undefined,
  name: string,
): Promise<VolumeLiveStatus> {
  const live = rec && await localLive(ctx, rec, { roots: true });
  if (live) return live;
  throw new NotFoundError("volume export", name);
}

/**
 * Resyncs under way: the ones the control plane started (ResyncTracker, from their first
 * moment) with the data plane's progress where it reported some; and those that finished
 * while the record does not list their member in sync yet (the master's compare-and-swap is
 * on its way), with `finishedAt`, so that the member does not look out of sync meanwhile.
 */
function resyncsOf(ctx: LiveContext, rec: VolumeRecord): LiveResync[] {
  const running = runningResyncs(ctx, rec);
  const inSync = rec.group?.inSync ?? [];
  const done = (ctx.groups?.resyncs.finished(rec.name) ?? []).filter((f) =>
    !inSync.includes(f.member) && !running.some((r) => r.member === f.member) &&
    f.at >= Date.parse(rec.outOfSync?.[f.member]?.since ?? "1970-01-01T00:00:00Z")
  ).map((f): LiveResync => {
    const r = f.result as Partial<Record<string, number>> | undefined;
    return {
      member: f.member,
      startedAt: new Date(f.startedAt).toISOString(),
      finishedAt: new Date(f.at).toISOString(),
      pass: r?.passes ?? 1,
      comparedBytes: rec.sizeBytes,
      totalBytes: rec.sizeBytes,
      sentBytes: r?.sentBytes ?? 0,
      zeroedBytes: r?.zeroedBytes ?? 0,
      hashBytes: r?.hashBytes ?? 0,
    };
  });
  return [...running, ...done].sort((a, b) => a.member < b.member ? -1 : 1);
}

function runningResyncs(ctx: LiveContext, rec: VolumeRecord): LiveResync[] {
  const progress = ctx.plane.resyncStatus?.(rec.name) ?? [];
  const tracked = ctx.groups?.resyncs.running(rec.name) ?? [];
  const members = [
    ...new Set([...tracked.map((t) => t.member), ...progress.map((p) => p.replica)]),
  ];
  const limit = ctx.plane.resyncRateBytesPerSecond ?? 0;
  return members.sort().map((member) => {
    const p = progress.find((x) => x.replica === member);
    const startedAt = p?.startedAt ?? tracked.find((t) => t.member === member)!.startedAt;
    return {
      member,
      startedAt: new Date(startedAt).toISOString(),
      pass: p?.pass ?? 0,
      ...(p?.waiting ? { waiting: true } : {}),
      comparedBytes: p?.comparedBytes ?? 0,
      totalBytes: p?.totalBytes ?? rec.sizeBytes,
      sentBytes: p?.sentBytes ?? 0,
      zeroedBytes: p?.zeroedBytes ?? 0,
      hashBytes: p?.hashBytes ?? 0,
      ...(p?.copyingSince !== undefined
        ? {
          regionsToCopy: p.regionsToCopy,
          regionsCopied: p.regionsCopied,
          copyingSince: new Date(p.copyingSince).toISOString(),
        }
        : {}),
      ...(limit > 0 ? { rateLimitBytesPerSecond: limit } : {}),
    };
  });
}

/** The members' root hashes from the data plane, JSON-ready (null: not asked). */
async function rootsOf(
  plane: DataPlane,
  name: string,
): Promise<Record<string, string | null> | undefined> {
  if (!plane.memberRoots) return undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<undefined>((r) =>
    timer = setTimeout(() => r(undefined), ROOTS_TIMEOUT_MS)
  );
  try {
    const got = await Promise.race([plane.memberRoots(name).catch(() => undefined), late]);
    if (!got) return undefined;
    return Object.fromEntries(Object.entries(got).map(([m, h]) => [m, h ?? null]));
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The volume of `rec` as `volume get` shows it: its record, the live fields from the node
 * serving it (this one, or asked through `ctx.peers`), and for a group each member's state.
 */
export async function volumeView(ctx: LiveContext, rec: VolumeRecord): Promise<Volume> {
  const v = toVolume(rec);
  const gone = ctx.groups?.leaseGone() ?? [];
  let live: VolumeLiveStatus | undefined;
  let error: string | undefined;
  if (rec.master === ctx.node) {
    live = await localLive(ctx, rec, { roots: true });
    if (!live) error = `node ${ctx.node} does not export it now`;
  } else if (gone.includes(rec.master)) {
    error = `node ${rec.master} is down (its liveness lease is gone)`;
  } else if (ctx.peers) {
    try {
      live = await ctx.peers.volumeStatus(rec.master, rec.name);
      if (live.uuid !== rec.uuid) {
        error = `node ${rec.master} serves another volume of that name`;
        live = undefined;
      }
    } catch (err) {
      error = `node ${rec.master} did not answer: ${errorMessage(err)}`;
    }
  } else {
    error = `node ${rec.master} was not asked (no node-to-node API here)`;
  }
  if (!rec.group && !ctx.peers) return seenPhase(live ? withLiveFields(v, live) : v, rec, gone);
  const out: Volume = seenPhase(live ? withLiveFields(v, live) : { ...v }, rec, gone);
  if (rec.group) {
    out.memberStatus = memberStatus({
      group: rec.group,
      sizeBytes: rec.sizeBytes,
      notes: rec.outOfSync,
      gone,
      stopped: ctx.groups?.leaseStopped() ?? [],
      live,
      liveError: error,
      now: ctx.now().getTime(),
    });
    Object.assign(out, seenPhase(out, rec, gone));
    // What the master knows first-hand and the record does not say (yet): its members refuse
    // it (fenced), or it found a replica failing and could not record that (etcd unreachable).
    let seen = seenGroup(rec.group, gone);
    const refused = live && masterRefusal(rec, live);
    if (refused) seen = { ...seen, phase: "unavailable" };
    else if (seen.phase === "healthy" && live?.unrecorded) seen = { ...seen, phase: "degraded" };
    out.phase = seen.phase;
    const why = refused || phaseReason(seen, out.memberStatus);
    if (why) out.phaseReason = why;
  }
  out.live = live
    ? { node: live.node, observedAt: live.observedAt }
    : { node: rec.master, error: error! };
  return out;
}

/**
 * `v` with a note in its phase reason when members share the failure domain its --spread-by
 * keeps them apart by (a node's label changed since placement): `volume get` says so.
 */
export async function spreadChecked(
  v: Volume,
  listNodes: (() => Promise<NodeInfo[]>) | undefined,
): Promise<Volume> {
  const by = v.spreadBy;
  if (by === undefined || !v.members || !listNodes) return v;
  const nodes = await listNodes().catch(() => undefined);
  if (!nodes) return v;
  const members = new Map<string, string[]>();
  for (const m of v.members) {
    const value = nodes.find((n) => n.name === m)?.labels[by];
    if (value !== undefined) members.set(value, [...(members.get(value) ?? []), m]);
  }
  const shared = [...members].filter(([, ms]) => ms.length > 1)
    .map(([value, ms]) => `${ms.join(" and ")} share ${by}=${value}`);
  if (shared.length === 0) return v;
  const note = `spread by ${by} broken: ${shared.join(", ")} (a label changed since ` +
    `placement): one ${by} failing takes more than one copy`;
  return { ...v, phaseReason: v.phaseReason ? `${v.phaseReason}; ${note}` : note };
}

/**
 * The events of `rec` (their keys as listed from the store), oldest first, followed by the
 * ones this node sees that no member could write yet (control/events/ pendingEvents).
 */
export function eventsView(ctx: LiveContext, rec: VolumeRecord, kvs: KeyValue[]): VolumeEvent[] {
  const written = parseEvents(kvs, rec.name, rec.uuid);
  if (!rec.group || rec.state !== "ready") return written;
  const seen = seenGroup(rec.group, ctx.groups?.leaseGone() ?? []);
  const facts = { stopped: ctx.groups?.leaseStopped() ?? [] };
  return [...written, ...pendingEvents(rec, seen, ctx.now(), facts)];
}

/** `v` (of `rec`) with its phase and down members as this node sees the leases (seenGroup). */
export function seenPhase(v: Volume, rec: VolumeRecord, gone: readonly string[]): Volume {
  if (!rec.group && rec.master && gone.includes(rec.master)) {
    const why = `its node ${rec.master} is down (liveness lease gone): a volume without ` +
      `replicas has no other copy; it is served again when the node is back`;
    return { ...v, phase: "unavailable", phaseReason: why };
  }
  const seen = rec.group && seenGroup(rec.group, gone);
  return seen && seen !== rec.group ? { ...v, down: seen.down, phase: seen.phase } : v;
}

function withLiveFields(v: Volume, live: VolumeLiveStatus): Volume {
  return {
    ...v,
    allocatedBytes: live.allocatedBytes,
    connections: live.connections,
    ...(live.membershipBlocked ? { membershipBlocked: live.membershipBlocked } : {}),
  };
}

/**
 * The members of every group this node serves as master, from memory (the records its watch
 * keeps, the lease watch, the data plane; no root hashes): what /metrics reports.
 */
export async function servedGroups(ctx: LiveContext): Promise<ServedGroup[]> {
  const out: ServedGroup[] = [];
  for (const rec of ctx.groups?.served() ?? []) {
    const live = await localLive(ctx, rec, { roots: false });
    out.push({
      volume: rec.name,
      sizeBytes: rec.sizeBytes,
      members: memberStatus({
        group: rec.group!,
        sizeBytes: rec.sizeBytes,
        notes: rec.outOfSync,
        gone: ctx.groups!.leaseGone(),
        stopped: ctx.groups!.leaseStopped(),
        live,
        now: ctx.now().getTime(),
      }),
      ...(live?.fenced ? { fenced: true } : {}),
    });
  }
  return out;
}

/**
 * `volume verify` of the volume of `rec`: this node's data plane compares the copies when it
 * is the master; otherwise the master is asked (unless `local`: a peer's request).
 */
export async function verifyVolume(
  ctx: LiveContext,
  rec: VolumeRecord,
  options: { deep: boolean; local?: boolean },
): Promise<VolumeVerifyReport> {
  const name = rec.name;
  if (rec.master !== ctx.node) {
    if (options.local) throw new NotFoundError("volume export", name);
    if (!ctx.peers?.verifyVolume) {
      throw new FailedPreconditionError(
        `volume "${name}" is served by node ${rec.master}: run verify against that node`,
      );
    }
    return await ctx.peers.verifyVolume(rec.master, name, options.deep);
  }
  if (!ctx.plane.verifyVolume || !ctx.plane.volumeStatus(name)) {
    throw new FailedPreconditionError(`volume "${name}" is not exported on ${ctx.node} now`);
  }
  const r = await ctx.plane.verifyVolume(name, { deep: options.deep });
  // A replica compared though the record does not list it in sync is being resynced: its
  // differences are what its resync has still to copy.
  const lagging = (m: VolumeMemberVerdict) =>
    m.role === "replica" && rec.group !== undefined && !rec.group.inSync.includes(m.node);
  const members = [
    ...r.members.map((m) => lagging(m) ? { ...m, resyncing: true } : m),
    ...uncompared(rec, r.members.map((m) => m.node)),
  ];
  // A member being resynced is not in sync yet, and a suspect master is no reference: NOT OK.
  const ok = members.every((m) =>
    m.equal === true && m.corruptCount === 0 && !m.error && !m.resyncing && !m.suspect
  );
  return {
    name,
    node: ctx.node,
    ...(rec.group ? { epoch: rec.group.epoch } : {}),
    ...r,
    members,
    ok,
  };
}

/**
 * The members of `rec`'s group that the master did not compare (`compared`: those it did):
 * a member down, or out of sync and not being resynced, is listed with why, so that a
 * verification with a member away is never reported as every copy equal (pure).
 */
export function uncompared(rec: VolumeRecord, compared: string[]): VolumeMemberVerdict[] {
  const g = rec.group;
  if (!g) return [];
  return g.members.filter((m) => !compared.includes(m)).map((m) => {
    const note = rec.outOfSync?.[m]?.reason;
    const state = g.down.includes(m) ? "down" : "out of sync";
    return {
      node: m,
      role: m === g.master ? "master" : "replica",
      differing: [],
      differingCount: 0,
      corrupt: [],
      corruptCount: 0,
      error: `not compared: the member is ${state}` + (note ? ` (${note})` : ""),
    };
  });
}
