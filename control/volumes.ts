/**
 * VolumeService: the volume lifecycle over the state store (records, with
 * compare-and-swap) and the data plane (files and NBD exports).
 *
 * Records live as JSON at `/ballast/volumes/<name>`. Create writes the record as
 * "creating" (put-if-absent), asks the data plane for the file, then flips it to
 * "ready"; a failure deletes the record so nothing is left half-created. Delete
 * flips to "deleting", asks the data plane, then removes the record. `reconcile()`
 * at node start finishes whatever a crash interrupted.
 *
 * Cluster mode (several nodes on one etcd): a node only keeps local files for the
 * volumes whose record names it as `master`. List and get work from any node (live
 * allocation and connection counts only on the master). A delete or resize asked of
 * another node changes the record through compare-and-swap; the master sees the
 * change through its watch on the records (`startWatching()`) and applies it to its
 * local store: "deleting" -> delete the file, then the record; a larger sizeBytes ->
 * grow the file.
 * @module
 */

import {
  AlreadyExistsError,
  BallastError,
  ConflictError,
  FailedPreconditionError,
  NotFoundError,
  ResourceExhaustedError,
} from "../mod/errors.ts";
import type {
  CreateVolumeRequest,
  UpdateVolumeRequest,
  Volume,
  VolumeState,
} from "../mod/types.ts";
import type { DataPlane, VolumeSpec } from "../data/plane.ts";
import type { Logger } from "./log.ts";
import type { KeyValue, StateStore, Watch } from "./state_store.ts";
import {
  checkDescription,
  checkLabels,
  checkReplicas,
  checkVolumeName,
  checkVolumeSize,
  describeSize,
} from "./_volume_rules.ts";

export const VOLUME_PREFIX = "/ballast/volumes/";
/** How often an update retries after losing a compare-and-swap race. */
const CAS_ATTEMPTS = 5;
/** How long a delete asked of a non-master node waits for the master to finish it. */
const REMOTE_DELETE_WAIT_MS = 5_000;
const REMOTE_DELETE_POLL_MS = 100;
/** Retry delay bounds of the record watch after the store failed. */
const WATCH_BACKOFF_MS = [100, 5_000] as const;

/** What is stored: a Volume without its live fields, plus the hand-over fields below. */
export type VolumeRecord = Omit<Volume, "allocatedBytes" | "connections"> & {
  /** Set with state "deleting" by a non-master node: the master deletes with force. */
  deleteForce?: boolean;
  /** Written by the master when it refused a delete asked elsewhere (state back to ready). */
  deleteRefused?: string;
};

export interface VolumeServiceOptions {
  store: StateStore;
  dataPlane: DataPlane;
  logger: Logger;
  nodeName: string;
  /** Cluster mode: the store is shared with other nodes (etcd); see startWatching(). */
  clusterMode?: boolean;
  now?: () => Date;
}

/** What `reconcile()` did. */
export interface ReconcileReport {
  opened: string[];
  failed: string[];
  finishedDeletes: string[];
  removedCreating: string[];
}

/** The volume lifecycle. All methods throw BallastError subclasses. */
export class VolumeService {
  readonly #store: StateStore;
  readonly #plane: DataPlane;
  readonly #log: Logger;
  readonly #node: string;
  readonly #cluster: boolean;
  readonly #now: () => Date;
  /** Per-volume chains serializing mutations from this process. */
  readonly #locks = new Map<string, Promise<unknown>>();
  /** Size of each local store this node has created, opened or grown (master only). */
  readonly #localSize = new Map<string, number>();
  #watchStop: AbortController | undefined;
  #watchLoop: Promise<void> | undefined;

  constructor(options: VolumeServiceOptions) {
    this.#store = options.store;
    this.#plane = options.dataPlane;
    this.#log = options.logger;
    this.#node = options.nodeName;
    this.#cluster = options.clusterMode ?? false;
    this.#now = options.now ?? (() => new Date());
  }

  /** Creates a volume and its data file; returns it "ready". */
  async create(request: CreateVolumeRequest): Promise<Volume> {
    const name = checkVolumeName(request.name);
    const sizeBytes = checkVolumeSize(request.size);
    const replicas = checkReplicas(request.replicas ?? 0);
    const labels = checkLabels(request.labels ?? {});
    const description = checkDescription(request.description ?? "");
    if (replicas > 0) {
      throw new FailedPreconditionError(
        this.#cluster
          ? `cannot create volume "${name}" with ${replicas} replicas: replication is not ` +
            `implemented yet; use replicas 0`
          : `cannot create volume "${name}" with ${replicas} replicas: replicas need cluster mode ` +
            `(this node runs single-node with the embedded store); use replicas 0`,
        { field: "replicas" },
      );
    }
    // Placement: the volume lives on the node that was asked. Choosing a node across
    // the cluster (spread, free capacity, cordon) is later work.
    return await this.#locked(name, async () => {
      const now = this.#now().toISOString();
      const record: VolumeRecord = {
        name,
        uuid: crypto.randomUUID(),
        sizeBytes,
        replicas,
        master: this.#node,
        epoch: 1,
        state: "creating",
        labels,
        description,
        createdAt: now,
        updatedAt: now,
      };
      const key = VOLUME_PREFIX + name;
      const put = await this.#store.txn(
        [{ key, target: "version", op: "==", value: 0 }],
        [{ type: "put", key, value: JSON.stringify(record) }],
      );
      if (!put.succeeded) throw new AlreadyExistsError("volume", name);
      const log = this.#log.child({ volume: name, uuid: record.uuid });
      try {
        await this.#plane.createVolume(specOf(record));
      } catch (err) {
        log.warn({ err: String(err) }, "data plane could not create volume; removing record");
        await this.#store.txn(
          [{ key, target: "modRevision", op: "==", value: put.revision }],
          [{ type: "delete", key }],
        );
        throw dataPlaneError(err, `cannot create volume "${name}"`);
      }
      this.#localSize.set(name, sizeBytes);
      const ready: VolumeRecord = { ...record, state: "ready" };
      const flip = await this.#store.txn(
        [{ key, target: "modRevision", op: "==", value: put.revision }],
        [{ type: "put", key, value: JSON.stringify(ready) }],
      );
      if (!flip.succeeded) {
        throw new ConflictError(`volume "${name}" changed while it was being created`);
      }
      log.info({ sizeBytes }, "volume created");
      return this.#withLive(ready);
    });
  }

  /** Every volume, sorted by name, with live allocation and connection counts. */
  async list(): Promise<Volume[]> {
    const { kvs } = await this.#store.list(VOLUME_PREFIX);
    return kvs.map((kv) => this.#withLive(parseRecord(kv)));
  }

  /** One volume with its live fields. */
  async get(name: string): Promise<Volume> {
    checkVolumeName(name);
    const kv = await this.#store.get(VOLUME_PREFIX + name);
    if (!kv) throw new NotFoundError("volume", name);
    return this.#withLive(parseRecord(kv));
  }

  /** Grows a volume (shrinking is refused). */
  resize(name: string, size: number | string): Promise<Volume> {
    return this.update(name, { size });
  }

  /** Changes size (grow only), labels (replaced as a whole) and/or description. */
  async update(name: string, request: UpdateVolumeRequest): Promise<Volume> {
    checkVolumeName(name);
    const sizeBytes = request.size === undefined ? undefined : checkVolumeSize(request.size);
    const labels = request.labels === undefined ? undefined : checkLabels(request.labels);
    const description = request.description === undefined
      ? undefined
      : checkDescription(request.description);
    return await this.#locked(name, () =>
      this.#casUpdate(name, async (rec) => {
        if (rec.state !== "ready") {
          throw new FailedPreconditionError(
            `volume "${name}" is ${rec.state}; only a ready volume can be changed`,
            { state: rec.state },
          );
        }
        const next: VolumeRecord = { ...rec };
        if (sizeBytes !== undefined && sizeBytes !== rec.sizeBytes) {
          if (sizeBytes < rec.sizeBytes) {
            throw new FailedPreconditionError(
              `cannot shrink volume "${name}" from ${describeSize(rec.sizeBytes)} to ` +
                `${describeSize(sizeBytes)}: volumes can only grow`,
              { field: "size", sizeBytes: rec.sizeBytes },
            );
          }
          // On another node only the record changes; the master's watch grows its file.
          if (rec.master === this.#node) {
            try {
              await this.#plane.resizeVolume(name, sizeBytes);
            } catch (err) {
              throw dataPlaneError(err, `cannot resize volume "${name}"`);
            }
            this.#localSize.set(name, sizeBytes);
          }
          next.sizeBytes = sizeBytes;
        }
        if (labels !== undefined) next.labels = labels;
        if (description !== undefined) next.description = description;
        next.updatedAt = this.#now().toISOString();
        return next;
      }).then((rec) => this.#withLive(rec)));
  }

  /**
   * Deletes a volume and its data. Refused (FailedPreconditionError) while NBD
   * clients are connected unless `force`, which disconnects them.
   */
  async delete(name: string, options: { force?: boolean } = {}): Promise<void> {
    checkVolumeName(name);
    return await this.#locked(name, async () => {
      let previous: VolumeState = "ready";
      let master = this.#node;
      const marked = await this.#casUpdate(name, (rec) => {
        previous = rec.state === "deleting" ? "ready" : rec.state;
        master = rec.master;
        const next: VolumeRecord = {
          ...rec,
          state: "deleting",
          updatedAt: this.#now().toISOString(),
          deleteRefused: undefined,
        };
        if (rec.master !== this.#node) next.deleteForce = options.force ?? false;
        return next;
      });
      if (master !== this.#node) return await this.#awaitRemoteDelete(name, marked);
      try {
        await this.#deleteData(name, options.force ?? false);
      } catch (err) {
        await this.#casUpdate(name, (rec) => ({ ...rec, state: previous })).catch((e) =>
          this.#log.error({ volume: name, err: String(e) }, "could not restore volume state")
        );
        throw dataPlaneError(err, `cannot delete volume "${name}"`);
      }
      this.#localSize.delete(name);
      await this.#store.delete(VOLUME_PREFIX + name);
      this.#log.info({ volume: name, force: options.force ?? false }, "volume deleted");
    });
  }

  /**
   * After marking another node's volume "deleting": waits (a few seconds) for its
   * master to remove the record, and reports a refusal (clients connected) as
   * FailedPreconditionError. If the master does not answer in time the record stays
   * "deleting" and the master finishes it when it next watches or starts.
   */
  async #awaitRemoteDelete(name: string, marked: VolumeRecord): Promise<void> {
    const log = this.#log.child({ volume: name, master: marked.master });
    const deadline = Date.now() + REMOTE_DELETE_WAIT_MS;
    while (Date.now() < deadline) {
      const kv = await this.#store.get(VOLUME_PREFIX + name);
      if (!kv) {
        log.info("volume deleted by its master");
        return;
      }
      const rec = parseRecord(kv);
      if (rec.uuid !== marked.uuid) return; // deleted and created again meanwhile
      if (rec.state !== "deleting") {
        throw new FailedPreconditionError(
          rec.deleteRefused ??
            `volume "${name}" is ${rec.state} again: its master node "${rec.master}" did not delete it`,
          { state: rec.state },
        );
      }
      await new Promise((r) => setTimeout(r, REMOTE_DELETE_POLL_MS));
    }
    log.warn(
      { waitedMs: REMOTE_DELETE_WAIT_MS },
      "master has not finished the delete yet; the volume stays deleting until it does",
    );
  }

  /**
   * Cluster mode: follows the volume records from the store (list, then watch from
   * the list revision + 1; a compacted watch re-lists) so this node applies changes
   * that other nodes made to the volumes it is master of. Stop with stopWatching().
   */
  startWatching(): void {
    if (this.#watchLoop) return;
    const stop = new AbortController();
    this.#watchStop = stop;
    this.#watchLoop = this.#watchRecords(stop.signal);
  }

  /** Stops the record watch and waits for a change being applied to finish. */
  async stopWatching(): Promise<void> {
    this.#watchStop?.abort();
    await this.#watchLoop;
    this.#watchLoop = undefined;
    this.#watchStop = undefined;
  }

  async #watchRecords(stop: AbortSignal): Promise<void> {
    let backoff: number = WATCH_BACKOFF_MS[0];
    while (!stop.aborted) {
      let watch: Watch | undefined;
      const cancel = () => watch?.cancel();
      stop.addEventListener("abort", cancel);
      try {
        const { kvs, revision } = await this.#store.list(VOLUME_PREFIX);
        for (const kv of kvs) {
          if (stop.aborted) return;
          await this.#applyRemoteChange(parseRecord(kv));
        }
        if (stop.aborted) return;
        watch = this.#store.watch(VOLUME_PREFIX, { startRevision: revision + 1 });
        for await (const msg of watch) {
          backoff = WATCH_BACKOFF_MS[0];
          if (msg.kind === "compacted") {
            this.#log.info(
              { compactRevision: msg.compactRevision },
              "volume watch compacted; listing again",
            );
            break;
          }
          for (const ev of msg.events) {
            if (stop.aborted) return;
            if (ev.type === "put") await this.#applyRemoteChange(parseRecord(ev.kv));
          }
        }
      } catch (err) {
        if (stop.aborted) return;
        this.#log.warn({ err: String(err), retryMs: backoff }, "volume watch failed; retrying");
        await abortableSleep(backoff, stop);
        backoff = Math.min(backoff * 2, WATCH_BACKOFF_MS[1]);
      } finally {
        stop.removeEventListener("abort", cancel);
        watch?.cancel();
      }
    }
  }

  /** Applies a record change to this node's local store if this node is its master. */
  async #applyRemoteChange(seen: VolumeRecord): Promise<void> {
    if (seen.master !== this.#node) return;
    const grow = seen.state === "ready" && this.#localSize.has(seen.name) &&
      this.#localSize.get(seen.name)! < seen.sizeBytes;
    if (seen.state !== "deleting" && !grow) return;
    await this.#locked(seen.name, async () => {
      // Re-read: a mutation from this process may have run in between.
      const kv = await this.#store.get(VOLUME_PREFIX + seen.name);
      if (!kv) return;
      const rec = parseRecord(kv);
      if (rec.master !== this.#node || rec.uuid !== seen.uuid) return;
      const log = this.#log.child({ volume: rec.name, uuid: rec.uuid });
      if (rec.state === "deleting") await this.#finishRemoteDelete(kv, rec, log);
      else if (rec.state === "ready") await this.#applyRemoteResize(rec, log);
    }).catch((err) =>
      this.#log.error({ volume: seen.name, err: String(err) }, "could not apply volume change")
    );
  }

  async #finishRemoteDelete(kv: KeyValue, rec: VolumeRecord, log: Logger): Promise<void> {
    const force = rec.deleteForce ?? false;
    try {
      // A volume not exported here (failed to open) may still have a file to remove.
      const exported = this.#plane.volumeStatus(rec.name) !== undefined ||
        await this.#plane.openVolume(specOf(rec)).then(() => true, () => false);
      if (exported) await this.#deleteData(rec.name, force);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      log.warn({ err: why }, "refused a delete asked by another node");
      const back: VolumeRecord = {
        ...rec,
        state: "ready",
        deleteForce: undefined,
        deleteRefused:
          `cannot delete volume "${rec.name}" on its master node "${this.#node}": ${why}`,
        updatedAt: this.#now().toISOString(),
      };
      await this.#store.txn(
        [{ key: kv.key, target: "modRevision", op: "==", value: kv.modRevision }],
        [{ type: "put", key: kv.key, value: JSON.stringify(back) }],
      );
      return;
    }
    this.#localSize.delete(rec.name);
    await this.#store.txn(
      [{ key: kv.key, target: "modRevision", op: "==", value: kv.modRevision }],
      [{ type: "delete", key: kv.key }],
    );
    log.info({ force }, "volume deleted (asked by another node)");
  }

  async #applyRemoteResize(rec: VolumeRecord, log: Logger): Promise<void> {
    const local = this.#localSize.get(rec.name);
    if (local === undefined || local >= rec.sizeBytes) return;
    await this.#plane.resizeVolume(rec.name, rec.sizeBytes);
    this.#localSize.set(rec.name, rec.sizeBytes);
    log.info({ from: local, sizeBytes: rec.sizeBytes }, "volume grown (asked by another node)");
  }

  /**
   * Brings the data plane in line with the records at node start: exports every
   * ready (or previously failed) volume, finishes interrupted deletes and removes
   * leftovers of interrupted creates.
   */
  async reconcile(): Promise<ReconcileReport> {
    const report: ReconcileReport = {
      opened: [],
      failed: [],
      finishedDeletes: [],
      removedCreating: [],
    };
    const { kvs } = await this.#store.list(VOLUME_PREFIX);
    for (const kv of kvs) {
      const rec = parseRecord(kv);
      const log = this.#log.child({ volume: rec.name, uuid: rec.uuid });
      if (rec.master !== this.#node) continue;
      if (rec.state === "deleting" || rec.state === "creating") {
        try {
          // Export whatever file a crash left so the data plane can delete it; a
          // missing file means there is nothing to delete.
          const exists = await this.#plane.openVolume(specOf(rec)).then(() => true, () => false);
          if (exists) await this.#deleteData(rec.name, true);
          await this.#store.txn(
            [{ key: kv.key, target: "modRevision", op: "==", value: kv.modRevision }],
            [{ type: "delete", key: kv.key }],
          );
          const list = rec.state === "deleting" ? report.finishedDeletes : report.removedCreating;
          list.push(rec.name);
          log.info({ state: rec.state }, "finished interrupted operation: volume removed");
        } catch (err) {
          log.error({ err: String(err), state: rec.state }, "could not remove volume");
        }
        continue;
      }
      try {
        await this.#plane.openVolume(specOf(rec));
        this.#localSize.set(rec.name, rec.sizeBytes);
        report.opened.push(rec.name);
        if (rec.state === "failed") await this.#setState(kv, rec, "ready");
      } catch (err) {
        report.failed.push(rec.name);
        log.error({ err: String(err) }, "cannot open volume; marking it failed");
        if (rec.state !== "failed") await this.#setState(kv, rec, "failed");
      }
    }
    return report;
  }

  async #setState(kv: KeyValue, rec: VolumeRecord, state: VolumeState): Promise<void> {
    const next = { ...rec, state, updatedAt: this.#now().toISOString() };
    await this.#store.txn(
      [{ key: kv.key, target: "modRevision", op: "==", value: kv.modRevision }],
      [{ type: "put", key: kv.key, value: JSON.stringify(next) }],
    );
  }

  /** Asks the data plane to delete; a volume it does not know is already gone. */
  async #deleteData(name: string, force: boolean): Promise<void> {
    try {
      await this.#plane.deleteVolume(name, { force });
    } catch (err) {
      if (err instanceof NotFoundError) return;
      throw err;
    }
  }

  /**
   * Read-modify-write with compare-and-swap on modRevision, retried when another
   * writer got there first. `change` may throw to abort.
   */
  async #casUpdate(
    name: string,
    change: (rec: VolumeRecord) => VolumeRecord | Promise<VolumeRecord>,
  ): Promise<VolumeRecord> {
    const key = VOLUME_PREFIX + name;
    for (let attempt = 1; attempt <= CAS_ATTEMPTS; attempt++) {
      const kv = await this.#store.get(key);
      if (!kv) throw new NotFoundError("volume", name);
      const next = await change(parseRecord(kv));
      const res = await this.#store.txn(
        [{ key, target: "modRevision", op: "==", value: kv.modRevision }],
        [{ type: "put", key, value: JSON.stringify(next) }],
      );
      if (res.succeeded) return next;
      this.#log.debug({ volume: name, attempt }, "volume update lost a race; retrying");
    }
    throw new ConflictError(
      `volume "${name}" kept changing during the update (${CAS_ATTEMPTS} attempts); retry`,
      { name },
    );
  }

  #withLive(record: VolumeRecord): Volume {
    const { deleteForce: _f, deleteRefused: _r, ...rec } = record;
    if (rec.master !== this.#node) return rec;
    const live = this.#plane.volumeStatus(rec.name);
    return live
      ? { ...rec, allocatedBytes: live.allocatedBytes, connections: live.connections }
      : rec;
  }

  /** Runs `fn` after every earlier mutation of the same volume from this process. */
  #locked<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#locks.get(name) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.catch(() => {});
    this.#locks.set(name, tail);
    tail.then(() => {
      if (this.#locks.get(name) === tail) this.#locks.delete(name);
    });
    return run;
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done);
  });
}

/** The data plane's view of a volume record. */
function specOf(rec: VolumeRecord): VolumeSpec {
  return {
    name: rec.name,
    uuid: rec.uuid,
    sizeBytes: rec.sizeBytes,
    description: rec.description,
  };
}

function parseRecord(kv: KeyValue): VolumeRecord {
  return JSON.parse(kv.value) as VolumeRecord;
}

/** Keeps BallastErrors; turns a full disk into ResourceExhaustedError; wraps the rest. */
function dataPlaneError(err: unknown, what: string): BallastError {
  if (err instanceof BallastError) return err;
  const code = (err as { code?: unknown })?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (code === "ENOSPC" || /ENOSPC|no space left/i.test(message)) {
    return new ResourceExhaustedError(`${what}: no space left on the data disk`, { cause: err });
  }
  return new BallastError("INTERNAL", `${what}: ${message}`, { cause: err });
}
