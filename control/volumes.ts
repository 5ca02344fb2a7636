/**
 * VolumeService: the volume lifecycle over the state store (records, with
 * compare-and-swap) and the data plane (files and NBD exports).
 *
 * Records live as JSON at `/ballast/volumes/<name>`. Create writes the record as
 * "creating" (put-if-absent), asks the data plane for the file, then flips it to
 * "ready"; a failure deletes the record so nothing is left half-created. Delete
 * flips to "deleting", asks the data plane, then removes the record. `reconcile()`
 * at node start finishes whatever a crash interrupted.
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
import type { KeyValue, StateStore } from "./state_store.ts";
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

/** What is stored: a Volume without its live fields. */
export type VolumeRecord = Omit<Volume, "allocatedBytes" | "connections">;

export interface VolumeServiceOptions {
  store: StateStore;
  dataPlane: DataPlane;
  logger: Logger;
  nodeName: string;
  /** Cluster mode allows replicas > 0 (a later issue); single-node mode does not. */
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
    if (replicas > 0 && !this.#cluster) {
      throw new FailedPreconditionError(
        `cannot create volume "${name}" with ${replicas} replicas: replicas need cluster mode ` +
          `(this node runs single-node with the embedded store); use replicas 0`,
        { field: "replicas" },
      );
    }
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
          try {
            await this.#plane.resizeVolume(name, sizeBytes);
          } catch (err) {
            throw dataPlaneError(err, `cannot resize volume "${name}"`);
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
      await this.#casUpdate(name, (rec) => {
        previous = rec.state === "deleting" ? "ready" : rec.state;
        return { ...rec, state: "deleting", updatedAt: this.#now().toISOString() };
      });
      try {
        await this.#deleteData(name, options.force ?? false);
      } catch (err) {
        await this.#casUpdate(name, (rec) => ({ ...rec, state: previous })).catch((e) =>
          this.#log.error({ volume: name, err: String(e) }, "could not restore volume state")
        );
        throw dataPlaneError(err, `cannot delete volume "${name}"`);
      }
      await this.#store.delete(VOLUME_PREFIX + name);
      this.#log.info({ volume: name, force: options.force ?? false }, "volume deleted");
    });
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

  #withLive(rec: VolumeRecord): Volume {
    if (rec.master !== this.#node) return { ...rec };
    const live = this.#plane.volumeStatus(rec.name);
    return live
      ? { ...rec, allocatedBytes: live.allocatedBytes, connections: live.connections }
      : { ...rec };
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
