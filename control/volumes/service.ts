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
 * Cluster mode (several nodes on one etcd): a node keeps local files only for the volumes
 * it holds. List and get work from any node (live counts only on the master). A delete or
 * resize asked of another node changes the record by compare-and-swap; each member sees
 * it through its watch on the records (`startWatching()`) and applies it to its own copy
 * ("deleting": delete the file, then the record; a larger size: grow it), also after being down.
 *
 * Replicated volumes (cluster mode, replicas > 0) are volume groups: placed across
 * nodes, their group record inside the volume record, one driver per member
 * (_groups.ts). How the records are followed (one serial, retrying lane per
 * volume behind the record watch) is _follow.ts.
 * @module
 */

import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from "../../mod/errors.ts";
import type {
  CreateVolumeRequest,
  DrainProgress,
  NodeInfo,
  NodeRemoval,
  UpdateVolumeRequest,
  Volume,
  VolumeEvent,
  VolumeLiveStatus,
  VolumeVerifyReport,
} from "../../mod/types.ts";
import type { DataPlane } from "../../data/plane.ts";
import type { Logger } from "../common/mod.ts";
import type { StateStore } from "../store/mod.ts";
import {
  checkDescription,
  checkLabels,
  checkReplicas,
  checkSpreadBy,
  checkVolumeName,
  checkVolumeSize,
  describeSize,
  labelChange,
} from "./rules.ts";
import {
  casRecord,
  dataPlaneError,
  parseRecord,
  sameVolumeRecord,
  VOLUME_PREFIX,
  type VolumeRecord,
} from "./_record.ts";
import { VolumeGroups } from "./_groups.ts";
import { followVolumeRecords } from "./_follow.ts";
import { awaitMembers, withReplicas } from "./_replica_count.ts";
import {
  drainNode,
  type DrainNodes,
  type DrainOptions,
  removeNode,
  type RemoveNodes,
} from "./_drain.ts";

import { eventsPrefix } from "../events/mod.ts";
import { ORPHAN_MIN_AGE_MS, removeOrphans } from "./_orphans.ts";
import {
  eventsView,
  exportStatus,
  listedView,
  type LiveContext,
  type PeerStatusSource,
  type ServedGroup,
  servedGroups,
  spreadChecked,
  verifyVolume,
  volumeView,
} from "./_live.ts";
import {
  applyRemoteChange,
  awaitRemoteDelete,
  createLocal,
  type DeleteOutcome,
  deleteUnreplicated,
  grownNotRecorded,
  type LocalContext,
  reconcileLocal,
  type ReconcileReport,
  refuseIfCordoned,
} from "./_local.ts";

export {
  type DrainNodes,
  type DrainOptions,
  type PeerStatusSource,
  type ReconcileReport,
  type ServedGroup,
  VOLUME_PREFIX,
  type VolumeRecord,
};

export interface VolumeServiceOptions {
  store: StateStore;
  dataPlane: DataPlane;
  logger: Logger;
  nodeName: string;
  /** Cluster mode: the store is shared with other nodes (etcd); see startWatching(). */
  clusterMode?: boolean;
  /** Cluster mode: the nodes to place replicated volumes on (NodeRegistry.list). */
  listNodes?: () => Promise<NodeInfo[]>;
  /** One node as the registry sees it (NodeRegistry.get): is this one cordoned. */
  getNode?: (name: string) => Promise<NodeInfo>;
  /** Cluster mode: how long a create waits for every member's copy; default 10 s. */
  groupCreateWaitMs?: number;
  /** Cluster mode: a member's lease must stay gone this long before groups act on it. */
  leaseGraceMs?: number;
  /** Replicated volumes replicate their writes (cluster mode with TLS: a peer channel). */
  replicates?: boolean;
  /** Cluster mode: a member absent this long is replaced by its master; default 5 min. */
  replaceAfterMs?: number;
  /** Cluster mode: the serving node's live status (GET /v1/peer/volumes/{name}) for get(). */
  peers?: PeerStatusSource;
  /** reconcile(): a copy without a record is removed once older than this; default 10 min. */
  orphanMinAgeMs?: number;
  /** [first, cap] of the retry backoff of a failed record change; default [500, 30000]. */
  retryBackoffMs?: readonly [number, number];
  now?: () => Date;
}

/** The volume lifecycle. All methods throw BallastError subclasses. */
export class VolumeService {
  readonly #store: StateStore;
  readonly #plane: DataPlane;
  readonly #log: Logger;
  readonly #node: string;
  readonly #now: () => Date;
  /** Per-volume chains serializing mutations from this process. */
  readonly #locks = new Map<string, Promise<unknown>>();
  #follow: { stop(): Promise<void> } | undefined;
  readonly #orphanMinAgeMs: number;
  readonly #retryBackoffMs: readonly [number, number] | undefined;
  /** Cluster mode: replicated volumes. */
  readonly #groups: VolumeGroups | undefined;
  readonly #ctx: LocalContext;
  readonly #live: LiveContext;
  readonly #listNodes: (() => Promise<NodeInfo[]>) | undefined;
  readonly #getNode: ((name: string) => Promise<NodeInfo>) | undefined;

  constructor(options: VolumeServiceOptions) {
    this.#store = options.store;
    this.#plane = options.dataPlane;
    this.#log = options.logger;
    this.#node = options.nodeName;
    this.#now = options.now ?? (() => new Date());
    this.#orphanMinAgeMs = options.orphanMinAgeMs ?? ORPHAN_MIN_AGE_MS;
    this.#retryBackoffMs = options.retryBackoffMs;
    this.#listNodes = options.listNodes;
    this.#getNode = options.getNode;
    this.#ctx = {
      store: this.#store,
      plane: this.#plane,
      log: this.#log,
      node: this.#node,
      now: this.#now,
      localSize: new Map(),
    };
    if (options.clusterMode) {
      this.#groups = new VolumeGroups({
        store: this.#store,
        plane: this.#plane,
        logger: this.#log,
        nodeName: this.#node,
        listNodes: options.listNodes ?? (() => Promise.resolve([])),
        now: this.#now,
        createWaitMs: options.groupCreateWaitMs,
        leaseGraceMs: options.leaseGraceMs,
        replicates: options.replicates,
        replaceAfterMs: options.replaceAfterMs,
      });
    }
    this.#live = {
      plane: this.#plane,
      node: this.#node,
      groups: this.#groups,
      peers: options.peers,
      now: this.#now,
    };
  }

  /** Creates a volume and its data file; returns it "ready". */
  async create(request: CreateVolumeRequest): Promise<Volume> {
    const name = checkVolumeName(request.name);
    const sizeBytes = checkVolumeSize(request.size);
    const replicas = checkReplicas(request.replicas ?? 0);
    const labels = checkLabels(request.labels ?? {});
    const description = checkDescription(request.description ?? "");
    const spreadBy = request.spreadBy === undefined ? undefined : checkSpreadBy(request.spreadBy);
    if (replicas > 0 && !this.#groups) {
      throw new FailedPreconditionError(
        `cannot create volume "${name}" with ${replicas} replicas: replicas need cluster mode ` +
          `(this node runs single-node with the embedded store); use replicas 0`,
        { field: "replicas" },
      );
    }
    if (spreadBy !== undefined && replicas === 0) {
      const msg = `invalid spreadBy "${spreadBy}": spreading needs replicas > 0`;
      throw new InvalidArgumentError(msg, { field: "spreadBy" });
    }
    if (replicas === 0) await refuseIfCordoned(this.#ctx, this.#getNode, name);
    return await this.#locked(name, async () => {
      const now = this.#now().toISOString();
      const fields = {
        name,
        uuid: crypto.randomUUID(),
        sizeBytes,
        replicas,
        labels,
        description,
        createdAt: now,
        updatedAt: now,
      };
      // Replicated: placed across nodes; unreplicated: on the node that was asked.
      const rec = replicas > 0
        ? await this.#groups!.create({ ...fields, ...(spreadBy ? { spreadBy } : {}) })
        : await createLocal(this.#ctx, fields);
      return this.#withLive(rec);
    });
  }

  /** Every volume, sorted by name, with live allocation and connection counts. */
  async list(): Promise<Volume[]> {
    const { kvs } = await this.#store.list(VOLUME_PREFIX);
    return kvs.map((kv) => this.#withLive(parseRecord(kv)));
  }

  /**
   * One volume with its live fields, from the node serving it (asked through `peers` when
   * that is another node), and for a group each member's state (_live.ts).
   */
  async get(name: string): Promise<Volume> {
    checkVolumeName(name);
    const kv = await this.#store.get(VOLUME_PREFIX + name);
    if (!kv) throw new NotFoundError("volume", name);
    return await spreadChecked(await volumeView(this.#live, parseRecord(kv)), this.#listNodes);
  }

  /** The recent history of replicated volume `name`, oldest first (control/events/). */
  async events(name: string): Promise<VolumeEvent[]> {
    checkVolumeName(name);
    const [kv, listed] = await Promise.all([
      this.#store.get(VOLUME_PREFIX + name),
      this.#store.list(eventsPrefix(name)),
    ]);
    if (!kv) throw new NotFoundError("volume", name);
    return eventsView(this.#live, parseRecord(kv), listed.kvs);
  }

  /** `node drain`: moves every master off `node` (_drain.ts); yields its progress. */
  drain(
    node: string,
    nodes: DrainNodes,
    options: DrainOptions = {},
  ): AsyncGenerator<DrainProgress> {
    return drainNode({ store: this.#store, nodes, log: this.#log }, node, options);
  }

  /** `node remove`: forgets a node gone for good, once no record counts on it (_drain.ts). */
  removeNode(node: string, nodes: RemoveNodes): Promise<NodeRemoval> {
    return removeNode({ store: this.#store, nodes, log: this.#log }, node);
  }

  /**
   * What this node knows first-hand of volume `name` it exports (the node-to-node route);
   * NotFoundError when it does not export it.
   */
  async liveStatus(name: string): Promise<VolumeLiveStatus> {
    checkVolumeName(name);
    const kv = await this.#store.get(VOLUME_PREFIX + name);
    return await exportStatus(this.#live, kv && parseRecord(kv), name);
  }

  /**
   * `volume verify`: the master compares every member's copy with its own (data/replication/
   * verify.ts); asked of the master's node when that is another one. `local`: answer only
   * for a volume this node serves (the node-to-node route).
   */
  async verify(
    name: string,
    options: { deep: boolean; local?: boolean },
  ): Promise<VolumeVerifyReport> {
    checkVolumeName(name);
    const kv = await this.#store.get(VOLUME_PREFIX + name);
    if (!kv) throw new NotFoundError("volume", name);
    return await verifyVolume(this.#live, parseRecord(kv), options);
  }

  /**
   * The members of every group this node serves as master, from memory (the records its
   * watch keeps, the lease watch, the data plane): what /metrics reports.
   */
  servedGroups(): Promise<ServedGroup[]> {
    return servedGroups(this.#live);
  }

  /** Grows a volume (shrinking is refused). */
  resize(name: string, size: number | string): Promise<Volume> {
    return this.update(name, { size });
  }

  /**
   * Changes size (grow only), the replica count of a replicated volume (its master adds or
   * removes members: _replica_count.ts), labels (replaced as a whole) and/or description.
   */
  async update(name: string, request: UpdateVolumeRequest): Promise<Volume> {
    checkVolumeName(name);
    const replicas = request.replicas === undefined ? undefined : checkReplicas(request.replicas);
    const sizeBytes = request.size === undefined ? undefined : checkVolumeSize(request.size);
    const relabel = labelChange(request);
    const description = request.description === undefined
      ? undefined
      : checkDescription(request.description);
    let grown: number | undefined; // this node's file, grown before the record is written
    let refused: unknown; // the change's own verdict on a fresh record (not a failed write)
    const change = async (rec: VolumeRecord): Promise<VolumeRecord> => {
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
        // A group's record changes first; each member grows its copy (below, watch).
        if (rec.master === this.#node && !rec.group) {
          try {
            await this.#plane.resizeVolume(name, sizeBytes);
          } catch (err) {
            throw dataPlaneError(err, `cannot resize volume "${name}"`);
          }
          this.#ctx.localSize.set(name, sizeBytes);
          grown = sizeBytes;
        }
        next.sizeBytes = sizeBytes;
      }
      if (relabel) next.labels = relabel(rec.labels);
      if (description !== undefined) next.description = description;
      if (replicas !== undefined && replicas !== rec.replicas) {
        // A raise is checked against the nodes (room for the data) now; the master places.
        const raise = rec.group !== undefined && replicas > rec.group.members.length - 1;
        const nodes = raise ? await this.#listNodes?.() : undefined;
        const need = raise ? (await volumeView(this.#live, rec)).allocatedBytes : undefined;
        Object.assign(next, withReplicas(next, replicas, nodes, need));
      }
      // A change that changes nothing leaves updatedAt alone ("nothing changed").
      if (!sameVolumeRecord(next, rec)) next.updatedAt = this.#now().toISOString();
      return next;
    };
    return await this.#locked(
      name,
      () =>
        this.#casUpdate(name, (rec) =>
          change(rec).catch((err) => {
            refused = err;
            throw err;
          })).catch((err) => {
            throw grown === undefined || err === refused ? err : grownNotRecorded(name, grown, err);
          }).then(async (rec) => {
            if (rec.group && sizeBytes !== undefined) await this.#growOwnCopy(rec);
            if (rec.group && replicas !== undefined) {
              rec = await awaitMembers(this.#store, rec, replicas);
            }
            return this.#withLive(rec);
          }),
    );
  }

  /** After a group's record grew: this node's copy grows now (the others' on their watch). */
  async #growOwnCopy(rec: VolumeRecord): Promise<void> {
    try {
      await this.#groups?.growCopy(rec);
    } catch (err) {
      throw dataPlaneError(
        err,
        `volume "${rec.name}" was resized to ${describeSize(rec.sizeBytes)}, but node ` +
          `"${this.#node}" could not grow its copy yet (it tries again at the next change ` +
          `or restart)`,
      );
    }
  }

  /**
   * Deletes a volume and its data. Refused (FailedPreconditionError) while NBD
   * clients are connected unless `force`, which disconnects them. A group with members
   * down is refused too unless `force`: then it is deleted on the live members, and
   * the down ones remove their copies when they come back.
   */
  async delete(name: string, options: { force?: boolean } = {}): Promise<DeleteOutcome> {
    checkVolumeName(name);
    const force = options.force ?? false;
    return await this.#locked(name, async () => {
      const kv = await this.#store.get(VOLUME_PREFIX + name);
      if (!kv) throw new NotFoundError("volume", name);
      if (parseRecord(kv).group && this.#groups) {
        // Every live member removes its copy, the master first (_groups.ts).
        const marked = await this.#groups.markDeleting(name, force);
        return marked ? await awaitRemoteDelete(this.#ctx, name, marked) : undefined;
      }
      const casUpdate = (fn: (rec: VolumeRecord) => VolumeRecord) => this.#casUpdate(name, fn);
      return await deleteUnreplicated(this.#ctx, name, force, casUpdate);
    });
  }

  /**
   * Cluster mode: follows the volume records from the store (list, then watch from
   * the list revision + 1; a compacted watch re-lists) so this node applies changes
   * that other nodes made to the volumes it is master of. Stop with stopWatching().
   */
  startWatching(): void {
    if (this.#follow) return;
    this.#follow = followVolumeRecords({
      store: this.#store,
      log: this.#log,
      groups: this.#groups,
      unreplicated: (rec) => applyRemoteChange(this.#ctx, rec, (fn) => this.#locked(rec.name, fn)),
      retryBackoffMs: this.#retryBackoffMs,
    });
  }

  /** Stops the record watch and the group drivers; waits for changes being applied. */
  async stopWatching(): Promise<void> {
    const follow = this.#follow;
    this.#follow = undefined;
    await follow?.stop();
  }

  /**
   * Brings the data plane in line with the records at node start: exports every
   * ready (or previously failed) unreplicated volume, finishes interrupted deletes,
   * removes leftovers of interrupted creates, and removes copies whose record is gone
   * (_orphans.ts). Replicated volumes come up through their group drivers
   * (startWatching).
   */
  async reconcile(): Promise<ReconcileReport> {
    const report = await reconcileLocal(this.#ctx);
    // Only in cluster mode, where forced deletes leave copies on down members behind.
    if (!this.#groups) return report;
    const cleaned = await removeOrphans({ ...this.#ctx, minAgeMs: this.#orphanMinAgeMs })
      .catch((err) => {
        this.#log.warn({ err }, "orphan cleanup failed; trying at the next start");
        return { removedDeleted: [], movedOrphans: [] };
      });
    return { ...report, ...cleaned };
  }

  /**
   * Read-modify-write by compare-and-swap (casRecord: fresh reads, retried when another
   * writer got there first) of a volume that must exist. `change` may throw to abort.
   */
  async #casUpdate(
    name: string,
    change: (rec: VolumeRecord) => VolumeRecord | Promise<VolumeRecord>,
  ): Promise<VolumeRecord> {
    const next = await casRecord(this.#store, name, undefined, change);
    if (next === undefined || next === "delete") throw new NotFoundError("volume", name);
    return next;
  }

  #withLive(record: VolumeRecord): Volume {
    return listedView(this.#live, record);
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
