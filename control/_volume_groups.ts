/**
 * Replicated volumes in cluster mode: creation across the placed members, the members'
 * side of create and delete, and one GroupDriver per group this node hosts.
 *
 * Everything about a group lives in the volume's own record key, so groups never
 * contend with each other:
 *
 * - create: the node asked places the group (place() over the node list), writes the
 *   record "creating" with `created: []`, and waits (10 s) for every member to create
 *   its copy (members see the record through their record watch and CAS themselves
 *   into `created`). All there: the record flips to "ready". A member failed or did
 *   not answer: the record goes "deleting" with `remaining` = the members that made a
 *   copy (or is removed if none did), each removes its copy, and the caller gets an
 *   error naming the node and why;
 * - ready: each member runs a GroupDriver; only the master exports the volume;
 * - delete: the record goes "deleting" with `remaining` = members; the master deletes
 *   first (it may refuse while NBD clients are connected), then the others; the last
 *   one removes the record;
 * - grow: `sizeBytes` in the record changes by CAS (any node); every member grows its
 *   copy to the record's size when it sees the record (growCopy), so a member that was
 *   down grows when it comes back and lists the records. Copies never shrink.
 * @module
 */

import { AlreadyExistsError, ConflictError, FailedPreconditionError } from "../mod/errors.ts";
import type { NodeInfo } from "../mod/types.ts";
import type { DataPlane } from "../data/plane.ts";
import { GroupDriver } from "./group/driver.ts";
import { LeaseWatch } from "./group/lease_watch.ts";
import { place } from "./group/placement.ts";
import { type GroupRecord, newRecord } from "./group/record.ts";
import {
  abandonCreate,
  copyDeleted,
  markGroupDeleting,
  staleCreateMs,
} from "./_volume_group_record.ts";
import type { Logger } from "./log.ts";
import type { KeyValue, StateStore } from "./state_store.ts";
import {
  abortableSleep,
  parseRecord,
  specOf,
  VOLUME_PREFIX,
  type VolumeRecord,
} from "./_volume_record.ts";

const CREATE_WAIT_MS = 10_000;
const CLEANUP_WAIT_MS = 5_000;
const POLL_MS = 100;
const CAS_ATTEMPTS = 20;

export interface VolumeGroupsOptions {
  store: StateStore;
  plane: DataPlane;
  logger: Logger;
  nodeName: string;
  listNodes: () => Promise<NodeInfo[]>;
  now: () => Date;
  createWaitMs?: number;
  /** How long a member's lease must stay gone before the groups act on it (LeaseWatch). */
  leaseGraceMs?: number;
}

/** What create() needs besides placement. */
export type GroupCreate = Omit<VolumeRecord, "master" | "epoch" | "state" | "group"> & {
  spreadBy?: string;
};

export class VolumeGroups {
  readonly #o: VolumeGroupsOptions;
  readonly #log: Logger;
  readonly #leases: LeaseWatch;
  readonly #drivers = new Map<string, { uuid: string; driver: GroupDriver }>();
  /** Uuids of copies this process made during a create (watch events can be stale). */
  readonly #made = new Set<string>();
  /** Newest record seen of each group hosted here (the spec the host exports). */
  readonly #records = new Map<string, VolumeRecord>();
  /** Size each local copy is known to have at least, so a record event costs no I/O. */
  readonly #sized = new Map<string, { uuid: string; sizeBytes: number }>();

  constructor(options: VolumeGroupsOptions) {
    this.#o = options;
    this.#log = options.logger;
    this.#leases = new LeaseWatch({
      store: options.store,
      logger: options.logger,
      graceMs: options.leaseGraceMs,
    });
  }

  /** Starts the shared lease watch. */
  start(): void {
    this.#leases.start().catch(() => {});
  }

  /** Stops every driver (exports stay up for the shutdown) and the lease watch. */
  async stop(): Promise<void> {
    await Promise.all([...this.#drivers.values()].map((d) => d.driver.stop()));
    this.#drivers.clear();
    await this.#leases.stop();
  }

  /** Places and creates a replicated volume; returns the "ready" record. */
  async create(input: GroupCreate): Promise<VolumeRecord> {
    const { name, replicas, sizeBytes, spreadBy } = input;
    const nodes = await this.#o.listNodes();
    const placed = place(
      { replicas, sizeBytes, ...(spreadBy ? { spreadBy } : {}) },
      nodes.map((n) => ({
        name: n.name,
        labels: n.labels,
        state: n.state,
        freeBytes: n.freeBytes,
      })),
    );
    if (!placed.ok) {
      throw new FailedPreconditionError(
        `cannot place volume "${name}" with ${replicas} replica${replicas === 1 ? "" : "s"}: ` +
          placed.reason,
        { field: "replicas" },
      );
    }
    const group = newRecord(
      placed.master,
      placed.replicas,
      spreadBy ? { replicas, spreadBy } : { replicas },
    );
    const { spreadBy: _s, ...base } = input;
    const record: VolumeRecord = {
      ...base,
      master: group.master,
      epoch: group.epoch,
      state: "creating",
      group,
      created: [],
    };
    const key = VOLUME_PREFIX + name;
    const put = await this.#o.store.txn(
      [{ key, target: "version", op: "==", value: 0 }],
      [{ type: "put", key, value: JSON.stringify(record) }],
    );
    if (!put.succeeded) throw new AlreadyExistsError("volume", name);
    const log = this.#log.child({ volume: name, uuid: record.uuid, epoch: 1 });
    log.info({ members: group.members, reasoning: placed.reasoning }, "volume group placed");

    const deadline = Date.now() + (this.#o.createWaitMs ?? CREATE_WAIT_MS);
    let reason: string | undefined;
    while (reason === undefined) {
      const kv = await this.#o.store.get(key);
      const rec = kv && parseRecord(kv);
      if (!kv || !rec || rec.uuid !== record.uuid || rec.state !== "creating") {
        throw new ConflictError(`volume "${name}" changed while it was being created`);
      }
      if (rec.createFailed) {
        reason = rec.createFailed;
        break;
      }
      const missing = group.members.filter((m) => !rec.created?.includes(m));
      if (missing.length === 0) {
        const { created: _c, ...rest } = rec;
        const ready: VolumeRecord = { ...rest, state: "ready" };
        const flip = await this.#o.store.txn(
          [{ key, target: "modRevision", op: "==", value: kv.modRevision }],
          [{ type: "put", key, value: JSON.stringify(ready) }],
        );
        if (flip.succeeded) {
          log.info({ members: group.members, master: group.master }, "volume group created");
          return ready;
        }
        continue;
      }
      if (Date.now() > deadline) {
        reason = `node${missing.length > 1 ? "s" : ""} ${missing.join(", ")} did not create ` +
          `${missing.length > 1 ? "their copies" : "its copy"} within ${
            (this.#o.createWaitMs ?? CREATE_WAIT_MS) / 1000
          } s (down or unreachable?)`;
        break;
      }
      await abortableSleep(POLL_MS);
    }
    log.warn({ reason }, "volume group creation failed; removing every copy");
    const left = await this.#abandon(name, record.uuid);
    throw new FailedPreconditionError(
      `cannot create volume "${name}": ${reason}` +
        (left.length === 0
          ? "; nothing was left behind"
          : `; copies on ${left.join(", ")} are being removed`),
      { field: "replicas" },
    );
  }

  /** Undoes a failed create; returns the members whose copy was not removed in time. */
  async #abandon(name: string, uuid: string): Promise<string[]> {
    await this.#cas(name, uuid, abandonCreate);
    const deadline = Date.now() + CLEANUP_WAIT_MS;
    while (true) {
      const kv = await this.#o.store.get(VOLUME_PREFIX + name);
      const rec = kv && parseRecord(kv);
      if (!rec || rec.uuid !== uuid) return [];
      if (Date.now() > deadline) return rec.remaining ?? [];
      await abortableSleep(POLL_MS);
    }
  }

  /** The record of a delete asked of this node (see markGroupDeleting). */
  markDeleting(rec: VolumeRecord, force: boolean): VolumeRecord {
    const staleMs = staleCreateMs(this.#o.createWaitMs ?? CREATE_WAIT_MS);
    return markGroupDeleting(rec, { force, now: this.#o.now(), staleMs });
  }

  /** A group record as listed or changed (from the record watch), one at a time. */
  async handle(kv: KeyValue, rec: VolumeRecord): Promise<void> {
    const g = rec.group!;
    const self = this.#o.nodeName;
    const running = this.#drivers.get(rec.name);
    const member = g.members.includes(self);
    if (running && (running.uuid !== rec.uuid || !member)) await this.#stopDriver(rec.name);
    if (!member) return;
    this.#records.set(rec.name, rec);
    if (rec.state === "creating") await this.#createCopy(rec);
    else if (rec.state === "ready") {
      await this.growCopy(rec).catch((err) =>
        this.#log.warn(
          { volume: rec.name, uuid: rec.uuid, sizeBytes: rec.sizeBytes, err: String(err) },
          "could not grow the local copy to the record's size; trying again at the next change",
        )
      );
      this.#driverFor(rec).recordChanged(kv);
    } else if (rec.state === "deleting") await this.#deleteCopy(rec);
  }

  /**
   * Grows this node's copy of a group it is a member of to the record's size (never
   * shrinks): the master's export shows the new size to new NBD connections, a
   * replica's file grows in place. Known sizes are cached, so only a change costs I/O.
   */
  async growCopy(rec: VolumeRecord): Promise<void> {
    if (!rec.group?.members.includes(this.#o.nodeName)) return;
    const known = this.#sized.get(rec.name);
    if (known?.uuid === rec.uuid && known.sizeBytes >= rec.sizeBytes) return;
    const before = await this.#o.plane.resizeVolume(rec.name, rec.sizeBytes, { uuid: rec.uuid });
    this.#sized.set(rec.name, { uuid: rec.uuid, sizeBytes: Math.max(before, rec.sizeBytes) });
    if (before < rec.sizeBytes) {
      this.#log.info(
        { volume: rec.name, uuid: rec.uuid, from: before, sizeBytes: rec.sizeBytes },
        "local copy grown to the record's size",
      );
    }
  }

  /** A record was deleted: stop its driver (its copy was removed before). */
  async deleted(name: string): Promise<void> {
    const uuid = this.#records.get(name)?.uuid;
    if (uuid) this.#made.delete(uuid);
    this.#records.delete(name);
    this.#sized.delete(name);
    if (this.#drivers.has(name)) await this.#stopDriver(name);
  }

  /** After a (re-)listing: stop drivers of groups that no longer exist. */
  async listed(names: Set<string>): Promise<void> {
    for (const name of [...this.#drivers.keys()]) {
      if (!names.has(name)) await this.deleted(name);
    }
  }

  #driverFor(rec: VolumeRecord): GroupDriver {
    const running = this.#drivers.get(rec.name);
    if (running) return running.driver;
    const name = rec.name;
    const plane = this.#o.plane;
    const log = this.#log.child({ volume: name, uuid: rec.uuid });
    const driver = new GroupDriver({
      store: this.#o.store,
      key: VOLUME_PREFIX + name,
      self: this.#o.nodeName,
      logger: log,
      leases: this.#leases,
      host: {
        serve: async (epoch, writeGate) => {
          const current = this.#records.get(name);
          if (!current) return;
          await plane.openVolume(specOf(current), { writeGate });
          log.info({ epoch, nbd: plane.nbdAddress }, "volume exported (group master)");
        },
        stopServing: async (epoch) => {
          await plane.closeVolume(name);
          log.info({ epoch }, "volume export stopped");
        },
        written: () => {
          const st = plane.volumeStatus(name);
          return st !== undefined && (st.writes > 0 || st.allocatedBytes > 0);
        },
      },
      decode: (value) => {
        const r = JSON.parse(value) as VolumeRecord;
        return r.state === "ready" && r.uuid === rec.uuid ? r.group : undefined;
      },
      encode: (value, group: GroupRecord) =>
        JSON.stringify({
          ...JSON.parse(value) as VolumeRecord,
          master: group.master,
          epoch: group.epoch,
          group,
          updatedAt: this.#o.now().toISOString(),
        }),
    });
    this.#drivers.set(name, { uuid: rec.uuid, driver });
    log.info({ members: rec.group?.members }, "group driver started");
    driver.start();
    return driver;
  }

  async #stopDriver(name: string): Promise<void> {
    const running = this.#drivers.get(name);
    if (!running) return;
    this.#drivers.delete(name);
    await running.driver.stop({ release: true });
    this.#log.info({ volume: name }, "group driver stopped");
  }

  /** Member side of create: make the local copy (not exported) and say so in the record. */
  async #createCopy(rec: VolumeRecord): Promise<void> {
    const self = this.#o.nodeName;
    if (rec.created?.includes(self) || rec.createFailed || this.#made.has(rec.uuid)) return;
    this.#made.add(rec.uuid);
    const log = this.#log.child({ volume: rec.name, uuid: rec.uuid });
    let failure: string | undefined;
    try {
      await this.#o.plane.createVolume(specOf(rec), { export: false });
    } catch (err) {
      failure = `node ${self} could not create its copy: ${(err as Error).message ?? err}`;
      log.warn({ err: String(err) }, "could not create the local copy of a new volume");
    }
    let kept = false;
    await this.#cas(rec.name, rec.uuid, (cur) => {
      if (cur.state !== "creating") return undefined;
      if (failure !== undefined) {
        return cur.createFailed ? undefined : { ...cur, createFailed: failure };
      }
      kept = true;
      return { ...cur, created: [...new Set([...(cur.created ?? []), self])].sort() };
    });
    if (failure === undefined && !kept) {
      // The create was abandoned meanwhile and this copy is not on anyone's list.
      await this.#o.plane.deleteVolume(rec.name, { force: true, uuid: rec.uuid });
      log.info("removed the copy of an abandoned create");
    } else if (kept) log.info("local copy of a new volume created");
  }

  /** Member side of delete: the master first (it may refuse), then the others. */
  async #deleteCopy(rec: VolumeRecord): Promise<void> {
    const self = this.#o.nodeName;
    const master = rec.group!.master;
    const remaining = rec.remaining ?? rec.group!.members;
    if (!remaining.includes(self)) {
      if (this.#drivers.has(rec.name)) await this.#stopDriver(rec.name);
      // Removed already, or made by a create this node had not recorded (a crash
      // between making the copy and saying so, then the create was undone): remove.
      await this.#o.plane.deleteVolume(rec.name, { force: true, uuid: rec.uuid });
      return;
    }
    if (self !== master && remaining.includes(master)) return; // wait for the master
    const log = this.#log.child({ volume: rec.name, uuid: rec.uuid });
    const status = this.#o.plane.volumeStatus(rec.name);
    if (status && status.connections > 0 && !rec.deleteForce) {
      const why = `volume "${rec.name}" has ${status.connections} NBD client(s) connected to ` +
        `its master node "${self}"; disconnect them or use --force`;
      log.warn({ connections: status.connections }, "refused a delete: clients connected");
      await this.#cas(rec.name, rec.uuid, (cur) => {
        if (cur.state !== "deleting") return undefined;
        const { remaining: _r, deleteForce: _f, ...rest } = cur;
        return { ...rest, state: "ready", deleteRefused: why };
      });
      return;
    }
    await this.#stopDriver(rec.name);
    await this.#o.plane.deleteVolume(rec.name, { force: true, uuid: rec.uuid });
    await this.#cas(rec.name, rec.uuid, (cur) => copyDeleted(cur, self));
    log.info("local copy deleted");
  }

  /**
   * Read-modify-write of one volume record by CAS, retried on conflicts. `change`
   * returns the next record, "delete", or undefined for no change. Stops quietly when
   * the record is gone or belongs to another uuid.
   */
  async #cas(
    name: string,
    uuid: string,
    change: (rec: VolumeRecord) => VolumeRecord | "delete" | undefined,
  ): Promise<void> {
    const key = VOLUME_PREFIX + name;
    for (let attempt = 1; attempt <= CAS_ATTEMPTS; attempt++) {
      const kv = await this.#o.store.get(key);
      if (!kv) return;
      const rec = parseRecord(kv);
      if (rec.uuid !== uuid) return;
      const next = change(rec);
      if (next === undefined) return;
      const res = await this.#o.store.txn(
        [{ key, target: "modRevision", op: "==", value: kv.modRevision }],
        [
          next === "delete" ? { type: "delete", key } : {
            type: "put",
            key,
            value: JSON.stringify(next),
          },
        ],
      );
      if (res.succeeded) return;
    }
    throw new ConflictError(`volume "${name}" kept changing (${CAS_ATTEMPTS} attempts)`);
  }
}
