/**
 * The stored form of a volume (`/ballast/volumes/<name>`) and helpers shared by
 * VolumeService and its private parts (_follow.ts, _groups.ts).
 * @module
 */

import {
  BallastError,
  ConflictError,
  errorMessage,
  ResourceExhaustedError,
} from "../../mod/errors.ts";
import type { Volume } from "../../mod/types.ts";
import type { VolumeSpec } from "../../data/plane.ts";
import type { GroupRecord } from "../group/mod.ts";
import { livenessCompares } from "../nodes/mod.ts";
import { type Compare, freshGet, type KeyValue, type Op, type StateStore } from "../store/mod.ts";
import { leftOutOf, type Tombstone, TOMBSTONE_PREFIX } from "./_tombstones.ts";
import { nextSyncNotes, type SyncNotes } from "./_sync_notes.ts";
import { type EventDraft, type NodeFacts, type OpenResync, withHistory } from "../events/mod.ts";

export const VOLUME_PREFIX = "/ballast/volumes/";

/** What is stored: a Volume without its live and group fields, plus the hand-over fields below. */
export type VolumeRecord =
  & Omit<
    Volume,
    | "allocatedBytes"
    | "connections"
    | "members"
    | "inSync"
    | "down"
    | "phase"
    | "spreadBy"
    | "memberStatus"
    | "live"
  >
  & {
    /** Set with state "deleting" by a non-master node: the master deletes with force. */
    deleteForce?: boolean;
    /** Written by the master when it refused a delete asked elsewhere (state back to ready). */
    deleteRefused?: string;
    /**
     * Replicated volumes (cluster mode, replicas > 0): the group record (epoch, master,
     * members, in-sync members, down members, desired state, phase). `master` and
     * `epoch` above always mirror it. It changes only by CAS on this key.
     */
    group?: GroupRecord;
    /** While "creating": members that have created their local copy. */
    created?: string[];
    /** While "creating": the first member failure, e.g. "node n2: no space left". */
    createFailed?: string;
    /** While a group is "deleting": members whose copy has not been removed yet. */
    remaining?: string[];
    /**
     * While a group is "deleting" by force: members left out while down, which remove their
     * copy when back (a tombstone keeps the list once the record is gone; _group_transitions.ts).
     */
    leftOut?: string[];
    /**
     * Group members out of the in-sync set: since when and why, noted by the change that
     * took each out (_sync_notes.ts). Absent when every member is in sync.
     */
    outOfSync?: SyncNotes;
    /** Replicated volumes: events written so far (control/events/ keeps the last ones). */
    eventSeq?: number;
    /** Replicated volumes: resyncs whose start is recorded and whose end is not (events/). */
    resyncs?: Record<string, OpenResync>;
  };

/** The API view of a record (without live fields): hand-over fields dropped, group flattened. */
export function toVolume(record: VolumeRecord): Volume {
  const {
    deleteForce: _f,
    deleteRefused: _r,
    group: g,
    created: _c,
    createFailed: _cf,
    remaining: _rm,
    leftOut: _lo,
    outOfSync: _o,
    eventSeq: _e,
    resyncs: _rs,
    ...stored
  } = record;
  if (!g) return stored;
  return {
    ...stored,
    master: g.master,
    epoch: g.epoch,
    members: g.members,
    inSync: g.inSync,
    down: g.down,
    phase: g.phase,
    ...(g.desired.spreadBy ? { spreadBy: g.desired.spreadBy } : {}),
  };
}

export function parseRecord(kv: KeyValue): VolumeRecord {
  return JSON.parse(kv.value) as VolumeRecord;
}

/** The data plane's view of a volume record. */
export function specOf(rec: VolumeRecord): VolumeSpec {
  return {
    name: rec.name,
    uuid: rec.uuid,
    sizeBytes: rec.sizeBytes,
    description: rec.description,
  };
}

/** Keeps BallastErrors; turns a full disk into ResourceExhaustedError; wraps the rest. */
export function dataPlaneError(err: unknown, what: string): BallastError {
  if (err instanceof BallastError) return err;
  const code = (err as { code?: unknown })?.code;
  const message = errorMessage(err);
  if (code === "ENOSPC" || /ENOSPC|no space left/i.test(message)) {
    return new ResourceExhaustedError(`${what}: no space left on the data disk`, { cause: err });
  }
  return new BallastError("INTERNAL", `${what}: ${message}`, { cause: err });
}

/** `rec` with `leftOut` set (or dropped when empty). */
function withLeftOut(rec: VolumeRecord, leftOut: string[]): VolumeRecord {
  const { leftOut: _l, ...rest } = rec;
  return leftOut.length > 0 ? { ...rest, leftOut } : rest;
}

/** How often casRecord() retries after losing a race. */
const CAS_ATTEMPTS = 20;

/**
 * Read-modify-write of one volume record by compare-and-swap, retried on conflicts (every
 * volume change goes through here). `change` (called again on each attempt) returns the next
 * record, "delete", or undefined for no change; it gets the
 * nodes `downGuard` named for this attempt, and the same transaction requires each of
 * their liveness keys to be absent (a node that came back makes the attempt start over).
 * Returns what was applied; undefined when nothing changed, the record is gone or
 * belongs to another uuid (`uuid` undefined: any).
 */
export async function casRecord(
  store: StateStore,
  name: string,
  uuid: string | undefined,
  change: (
    rec: VolumeRecord,
    down: string[],
  ) => VolumeRecord | "delete" | undefined | Promise<VolumeRecord | "delete" | undefined>,
  options: {
    downGuard?: (rec: VolumeRecord) => Promise<string[]> | string[];
    /** Events to write with the change beyond those it implies (control/events/). */
    events?: readonly EventDraft[];
  } = {},
): Promise<VolumeRecord | "delete" | undefined> {
  const key = VOLUME_PREFIX + name;
  for (let attempt = 1; attempt <= CAS_ATTEMPTS; attempt++) {
    const kv = await freshGet(store, key);
    if (!kv) return undefined;
    const rec = parseRecord(kv);
    if (uuid !== undefined && rec.uuid !== uuid) return undefined;
    const down = (await options.downGuard?.(rec)) ?? [];
    const asked = await change(rec, down);
    if (asked === undefined) return undefined;
    // Members a forced delete leaves out: kept in the record, then in a tombstone.
    const leftOut = rec.group ? leftOutOf(rec, asked, down) : [];
    const changed = asked === "delete" ? asked : withLeftOut(asked, leftOut);
    const now = new Date();
    const tombstone: Tombstone = {
      name,
      uuid: rec.uuid,
      members: leftOut,
      deletedAt: now.toISOString(),
    };
    const buried: Op[] = asked === "delete" && leftOut.length > 0
      ? [{ type: "put", key: TOMBSTONE_PREFIX + rec.uuid, value: JSON.stringify(tombstone) }]
      : [];
    // The group's events go in the same transaction (control/events/).
    const { record: next, ops } = withHistory(rec, changed, now, { extra: options.events });
    const compares: Compare[] = [
      { key, target: "modRevision", op: "==", value: kv.modRevision },
      ...livenessCompares(down),
    ];
    const res = await store.txn(compares, [
      next === "delete" ? { type: "delete", key } : {
        type: "put",
        key,
        value: JSON.stringify(next),
      },
      ...ops,
      ...buried,
    ]);
    if (res.succeeded) return next;
  }
  throw new ConflictError(`volume "${name}" kept changing (${CAS_ATTEMPTS} attempts); retry`, {
    name,
  });
}

/**
 * The record after the group driver's change of `prev` to `group` (at `now`): why and since
 * when members are out of sync (_sync_notes.ts; `causes`: what the data plane said of each
 * replica that failed), and the events the change makes, written in the same transaction
 * (control/events/).
 */
export function groupChange(
  prev: VolumeRecord,
  group: GroupRecord,
  now: Date,
  o: { replicates: boolean; causes?: ReadonlyMap<string, string>; facts?: NodeFacts },
): { value: string; ops: Op[] } {
  const outOfSync = nextSyncNotes(prev.group, group, prev.outOfSync, now, o);
  const { outOfSync: _old, ...rest } = prev;
  const next: VolumeRecord = {
    ...rest,
    master: group.master,
    epoch: group.epoch,
    group,
    ...(outOfSync ? { outOfSync } : {}),
    updatedAt: now.toISOString(),
  };
  const { record, ops } = withHistory(prev, next, now, { facts: o.facts });
  return { value: JSON.stringify(record), ops };
}

/**
 * Writes `events` into the history of replicated volume `name` (copy `uuid`) on their own: a
 * compare-and-swap that only advances the record's event counter (and the running resyncs it
 * keeps). Nothing when the record is gone, of another copy, or not a ready group, or, with
 * `by`, when the group is no longer at that master and epoch (a master writing of its own
 * resyncs: once it was replaced, the change that replaced it recorded their end). True when
 * written.
 */
export async function appendEvents(
  store: StateStore,
  name: string,
  uuid: string,
  events: readonly EventDraft[],
  by?: { master: string; epoch: number },
): Promise<boolean> {
  const written = await casRecord(
    store,
    name,
    uuid,
    (rec) =>
      rec.group && rec.state === "ready" &&
        (!by || rec.group.master === by.master && rec.group.epoch === by.epoch)
        ? rec
        : undefined,
    { events },
  );
  return written !== undefined;
}

/** Whether two records say the same thing (labels in any order). */
export function sameVolumeRecord(a: VolumeRecord, b: VolumeRecord): boolean {
  const said = (r: VolumeRecord) =>
    JSON.stringify({ ...r, labels: Object.entries(r.labels ?? {}).sort() });
  return said(a) === said(b);
}
