/**
 * Unreplicated volumes held by this node (the volume lives on its master only):
 * creating them, bringing the data plane in line with the records at node start, and applying
 * changes other nodes asked for through the record (delete, grow). Used by
 * VolumeService (service.ts).
 * @module
 */

import {
  AlreadyExistsError,
  ConflictError,
  errorMessage,
  FailedPreconditionError,
  NotFoundError,
  UnavailableError,
} from "../../mod/errors.ts";
import { formatSize } from "../../mod/size.ts";
import type { NodeInfo, VolumeState } from "../../mod/types.ts";
import type { DataPlane } from "../../data/plane.ts";
import { abortableSleep, type Logger } from "../common/mod.ts";
import type { KeyValue, StateStore } from "../store/mod.ts";
import {
  dataPlaneError,
  parseRecord,
  specOf,
  VOLUME_PREFIX,
  type VolumeRecord,
} from "./_record.ts";

const RAISED = "the copy is larger than its record (a resize grew it and could not record " +
  "it): the record is raised to the copy's size";

/** How long a delete asked of a non-master node waits for the master to finish it. */
const REMOTE_DELETE_WAIT_MS = 5_000;
const REMOTE_DELETE_POLL_MS = 100;

/** What these functions share with VolumeService. */
export interface LocalContext {
  store: StateStore;
  plane: DataPlane;
  log: Logger;
  node: string;
  now: () => Date;
  /** Size of each local store this node has created, opened or grown (master only). */
  localSize: Map<string, number>;
}

/**
 * An unreplicated volume is placed on the node asked: a cordoned one takes none, as it takes
 * no member of a group (cordon means no new placements). `getNode`: the registry's get (for
 * this node, a few reads and no probe; not its list, which probes every node).
 */
export async function refuseIfCordoned(
  ctx: LocalContext,
  getNode: ((name: string) => Promise<NodeInfo>) | undefined,
  name: string,
): Promise<void> {
  const self = await getNode?.(ctx.node).catch((err) => {
    if (err instanceof NotFoundError) return undefined; // not registered yet
    throw err;
  });
  if (self?.state !== "cordoned") return;
  throw new FailedPreconditionError(
    `cannot create volume "${name}" on node "${ctx.node}": the node is cordoned ` +
      `(${self.reason}) and takes no new volumes; create it through another node's API, or ` +
      `\`ballast node uncordon ${ctx.node}\``,
    { node: ctx.node, state: "cordoned" },
  );
}

/**
 * Creates an unreplicated volume on this node: the record "creating" (put-if-absent),
 * the file, then "ready"; a data-plane failure removes the record again.
 */
export async function createLocal(
  ctx: LocalContext,
  fields: Omit<VolumeRecord, "master" | "epoch" | "state">,
): Promise<VolumeRecord> {
  const record: VolumeRecord = { ...fields, master: ctx.node, epoch: 1, state: "creating" };
  const { name } = record;
  const key = VOLUME_PREFIX + name;
  const put = await ctx.store.txn(
    [{ key, target: "version", op: "==", value: 0 }],
    [{ type: "put", key, value: JSON.stringify(record) }],
  );
  if (!put.succeeded) throw new AlreadyExistsError("volume", name);
  const log = ctx.log.child({ volume: name, uuid: record.uuid });
  try {
    await ctx.plane.createVolume(specOf(record));
  } catch (err) {
    log.warn({ err }, "data plane could not create volume; removing record");
    await ctx.store.txn(
      [{ key, target: "modRevision", op: "==", value: put.revision }],
      [{ type: "delete", key }],
    );
    throw dataPlaneError(err, `cannot create volume "${name}"`);
  }
  ctx.localSize.set(name, record.sizeBytes);
  const ready: VolumeRecord = { ...record, state: "ready" };
  const flip = await ctx.store.txn(
    [{ key, target: "modRevision", op: "==", value: put.revision }],
    [{ type: "put", key, value: JSON.stringify(ready) }],
  );
  if (!flip.succeeded) {
    throw new ConflictError(`volume "${name}" changed while it was being created`);
  }
  log.info({ sizeBytes: record.sizeBytes }, "volume created");
  return ready;
}

/** What `reconcile()` did. */
export interface ReconcileReport {
  opened: string[];
  failed: string[];
  finishedDeletes: string[];
  removedCreating: string[];
  /** Uuids of copies of volumes deleted (--force) while this node was down, removed. */
  removedDeleted: string[];
  /** Uuids of copies no record names, moved to DATA/orphaned/ (_orphans.ts). */
  movedOrphans: string[];
}

/**
 * Deletes unreplicated volume `name` (existing): the record "deleting" (with `force`, which
 * also tells the directory whether forwarded clients stay), then the file and the record
 * when this node is its master, else what its master does (awaitRemoteDelete). A refusal
 * (clients connected) puts the record back as it was. `casUpdate`: the service's.
 */
export async function deleteUnreplicated(
  ctx: LocalContext,
  name: string,
  force: boolean,
  casUpdate: (change: (rec: VolumeRecord) => VolumeRecord) => Promise<VolumeRecord>,
): Promise<DeleteOutcome> {
  let previous: VolumeState = "ready";
  let master = ctx.node;
  const marked = await casUpdate((rec) => {
    previous = rec.state === "deleting" ? "ready" : rec.state;
    master = rec.master;
    const at = ctx.now().toISOString();
    return {
      ...rec,
      state: "deleting",
      updatedAt: at,
      deleteRefused: undefined,
      deleteForce: force,
    };
  });
  if (master !== ctx.node) return await awaitRemoteDelete(ctx, name, marked);
  try {
    await deleteData(ctx.plane, name, force);
  } catch (err) {
    await casUpdate((rec) => ({ ...rec, state: previous, deleteForce: undefined })).catch((e) =>
      ctx.log.error({ volume: name, err: e }, "could not restore volume state")
    );
    throw dataPlaneError(err, `cannot delete volume "${name}"`);
  }
  ctx.localSize.delete(name);
  await ctx.store.delete(VOLUME_PREFIX + name);
  ctx.log.info({ volume: name, force }, "volume deleted");
  return undefined;
}

/** A delete accepted but not finished (a member must still remove its copy), or undefined. */
export type DeleteOutcome = { pending: string } | undefined;

/**
 * After marking another node's volume "deleting": waits (a few seconds) for its
 * master to remove the record, and reports a refusal (clients connected) as
 * FailedPreconditionError. If the master does not answer in time the record stays
 * "deleting" and the master finishes it when it next watches or starts: then what the
 * delete waits for, in words ({pending}); undefined once the volume is gone.
 */
export async function awaitRemoteDelete(
  ctx: LocalContext,
  name: string,
  marked: VolumeRecord,
): Promise<DeleteOutcome> {
  const log = ctx.log.child({ volume: name, master: marked.master });
  const deadline = Date.now() + REMOTE_DELETE_WAIT_MS;
  let last = marked;
  while (Date.now() < deadline) {
    const kv = await ctx.store.get(VOLUME_PREFIX + name);
    if (!kv) {
      log.info("volume deleted by its master");
      return undefined;
    }
    const rec = parseRecord(kv);
    if (rec.uuid !== marked.uuid) return undefined; // deleted and created again meanwhile
    if (rec.state !== "deleting") {
      throw new FailedPreconditionError(
        rec.deleteRefused ??
          `volume "${name}" is ${rec.state} again: its master node "${rec.master}" did not delete it`,
        { state: rec.state },
      );
    }
    last = rec;
    await abortableSleep(REMOTE_DELETE_POLL_MS);
  }
  const left = last.group ? (last.remaining ?? last.group.members) : [last.master];
  const pending = `waiting for ${left.length > 1 ? "nodes" : "node"} ${left.join(", ")} to ` +
    `remove ${left.length > 1 ? "their copies" : "its copy"} (a node that is down does so ` +
    `when it comes back)`;
  log.warn({ waitedMs: REMOTE_DELETE_WAIT_MS, remaining: left }, `delete not finished: ${pending}`);
  return { pending };
}

/**
 * Cluster mode: applies a change of an unreplicated volume's record (from the record
 * watch) if this node is its master: "deleting" deletes the file, then the record; a
 * larger size grows the file. `locked` serializes it with this process's own
 * mutations of the volume. Throws on store errors (the caller retries).
 */
export async function applyRemoteChange(
  ctx: LocalContext,
  seen: VolumeRecord,
  locked: (fn: () => Promise<void>) => Promise<void>,
): Promise<void> {
  if (seen.master !== ctx.node) return;
  const local = ctx.localSize.get(seen.name);
  const grow = seen.state === "ready" && local !== undefined && local < seen.sizeBytes;
  if (seen.state !== "deleting" && !grow) return;
  await locked(async () => {
    // Re-read: a mutation from this process may have run in between.
    const kv = await ctx.store.get(VOLUME_PREFIX + seen.name);
    if (!kv) return;
    const rec = parseRecord(kv);
    if (rec.master !== ctx.node || rec.uuid !== seen.uuid) return;
    const log = ctx.log.child({ volume: rec.name, uuid: rec.uuid });
    if (rec.state === "deleting") await finishRemoteDelete(ctx, kv, rec, log);
    else if (rec.state === "ready") await applyRemoteResize(ctx, rec, log);
  });
}

async function finishRemoteDelete(
  ctx: LocalContext,
  kv: KeyValue,
  rec: VolumeRecord,
  log: Logger,
): Promise<void> {
  const force = rec.deleteForce ?? false;
  try {
    // A volume not exported here (failed to open) may still have a file to remove.
    const exported = ctx.plane.volumeStatus(rec.name) !== undefined ||
      await ctx.plane.openVolume(specOf(rec)).then(() => true, () => false);
    if (exported) await deleteData(ctx.plane, rec.name, force);
  } catch (err) {
    const why = errorMessage(err);
    log.warn({ reason: why }, "refused a delete asked by another node");
    const back: VolumeRecord = {
      ...rec,
      state: "ready",
      deleteForce: undefined,
      deleteRefused: `cannot delete volume "${rec.name}" on its master node "${ctx.node}": ${why}`,
      updatedAt: ctx.now().toISOString(),
    };
    await ctx.store.txn(
      [{ key: kv.key, target: "modRevision", op: "==", value: kv.modRevision }],
      [{ type: "put", key: kv.key, value: JSON.stringify(back) }],
    );
    return;
  }
  ctx.localSize.delete(rec.name);
  await ctx.store.txn(
    [{ key: kv.key, target: "modRevision", op: "==", value: kv.modRevision }],
    [{ type: "delete", key: kv.key }],
  );
  log.info({ force }, "volume deleted (asked by another node)");
}

async function applyRemoteResize(
  ctx: LocalContext,
  rec: VolumeRecord,
  log: Logger,
): Promise<void> {
  const local = ctx.localSize.get(rec.name);
  if (local === undefined || local >= rec.sizeBytes) return;
  await ctx.plane.resizeVolume(rec.name, rec.sizeBytes);
  ctx.localSize.set(rec.name, rec.sizeBytes);
  log.info({ from: local, sizeBytes: rec.sizeBytes }, "volume grown (asked by another node)");
}

/**
 * Brings the data plane in line with the records at node start: exports every
 * ready (or previously failed) volume, finishes interrupted deletes and removes
 * leftovers of interrupted creates.
 */
export async function reconcileLocal(ctx: LocalContext): Promise<ReconcileReport> {
  const report: ReconcileReport = {
    opened: [],
    failed: [],
    finishedDeletes: [],
    removedCreating: [],
    removedDeleted: [],
    movedOrphans: [],
  };
  const { kvs } = await ctx.store.list(VOLUME_PREFIX);
  for (const kv of kvs) {
    const rec = parseRecord(kv);
    const log = ctx.log.child({ volume: rec.name, uuid: rec.uuid });
    // Replicated volumes are brought up by their group drivers (startWatching).
    if (rec.master !== ctx.node || rec.group) continue;
    if (rec.state === "deleting" || rec.state === "creating") {
      try {
        // Export whatever file a crash left so the data plane can delete it; a
        // missing file means there is nothing to delete.
        const exists = await ctx.plane.openVolume(specOf(rec)).then(() => true, () => false);
        if (exists) await deleteData(ctx.plane, rec.name, true);
        await ctx.store.txn(
          [{ key: kv.key, target: "modRevision", op: "==", value: kv.modRevision }],
          [{ type: "delete", key: kv.key }],
        );
        const list = rec.state === "deleting" ? report.finishedDeletes : report.removedCreating;
        list.push(rec.name);
        log.info({ state: rec.state }, "finished interrupted operation: volume removed");
      } catch (err) {
        log.error({ err, state: rec.state }, "could not remove volume");
      }
      continue;
    }
    try {
      await ctx.plane.openVolume(specOf(rec));
      // A copy larger than its record: a resize grew the file and could not write the record
      // (grownNotRecorded); clients may have seen and used that size, so it is kept.
      const size = Math.max(rec.sizeBytes, ctx.plane.volumeStatus(rec.name)?.sizeBytes ?? 0);
      if (size > rec.sizeBytes) log.warn({ file: size, record: rec.sizeBytes }, RAISED);
      ctx.localSize.set(rec.name, size);
      report.opened.push(rec.name);
      if (rec.state === "failed" || size > rec.sizeBytes) {
        await setState(ctx, kv, { ...rec, sizeBytes: size, stateReason: undefined }, "ready");
      }
    } catch (err) {
      report.failed.push(rec.name);
      log.error({ err }, "cannot open volume; marking it failed");
      const why = `node ${ctx.node} could not open its copy: ${errorMessage(err)}`;
      if (rec.state !== "failed" || rec.stateReason !== why) {
        await setState(ctx, kv, { ...rec, stateReason: why }, "failed");
      }
    }
  }
  return report;
}

async function setState(
  ctx: LocalContext,
  kv: KeyValue,
  rec: VolumeRecord,
  state: VolumeState,
): Promise<void> {
  const next = { ...rec, state, updatedAt: ctx.now().toISOString() };
  await ctx.store.txn(
    [{ key: kv.key, target: "modRevision", op: "==", value: kv.modRevision }],
    [{ type: "put", key: kv.key, value: JSON.stringify(next) }],
  );
}

/** Asks the data plane to delete; a volume it does not know is already gone. */
export async function deleteData(plane: DataPlane, name: string, force: boolean): Promise<void> {
  try {
    await plane.deleteVolume(name, { force });
  } catch (err) {
    if (err instanceof NotFoundError) return;
    throw err;
  }
}

/**
 * The error of a resize whose file grew but whose record could not be written (a full disk
 * under the state store, an etcd outage): the file cannot shrink again safely (clients may
 * have seen the new size), so the operator is told what holds; the next start raises the
 * record to the file's size (reconcileLocal), and the same resize again completes it.
 */
export function grownNotRecorded(name: string, sizeBytes: number, err: unknown): Error {
  const cause = errorMessage(err);
  return new UnavailableError(
    `volume "${name}": its file was grown to ${formatSize(sizeBytes)}, but the record could ` +
      `not be written (${cause}); new clients see the new size. Run the same resize again ` +
      `once the state store can be written (the next start of the node records it too)`,
    { cause: err },
  );
}
