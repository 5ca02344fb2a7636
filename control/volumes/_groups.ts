/**
 * Replicated volumes in cluster mode: the members' side of create, grow and delete, and one
 * GroupDriver per group this node hosts. The creator's side of create is _group_create.ts; the
 * record changes reach handle() through one serial lane per volume (_queue.ts), which retries a
 * step that failed.
 *
 * Everything about a group lives in the volume's own record key, so groups never contend with
 * each other:
 *
 * - create: each member makes its copy when it sees the record "creating" and CASes itself into
 *   `created` (a failure into `createFailed`);
 * - ready: each member runs a GroupDriver; only the master exports the volume;
 * - delete: the record goes "deleting" with `remaining` = the live members (a forced delete
 *   leaves the down ones out, and live members drop those that go down while it runs); the
 *   master deletes first (it may refuse while NBD clients are connected), then the others; the
 *   last one removes the record. A member left out removes its copy when it sees the record
 *   "deleting" or deleted, or at its next start (_orphans.ts);
 * - grow: `sizeBytes` in the record changes by CAS (any node); every member grows its copy to
 *   the record's size when it sees the record (growCopy), so a member that was down grows when
 *   it comes back and lists the records. Copies never shrink.
 * @module
 */

import { errorMessage, FailedPreconditionError } from "../../mod/errors.ts";
import type { NodeInfo } from "../../mod/types.ts";
import type { DataPlane } from "../../data/plane.ts";
import { type ActorState, GroupDriver, type GroupRecord, LeaseWatch } from "../group/mod.ts";
import { CREATE_WAIT_MS, createGroup, type GroupCreate, nodeLoad } from "./_group_create.ts";
import { copyDeleted, markGroupDeleting, staleCreateMs } from "./_group_transitions.ts";
import type { Logger } from "../common/mod.ts";
import { aliveKey } from "../nodes/mod.ts";
import type { KeyValue, StateStore } from "../store/mod.ts";
import { casRecord, groupChange, specOf, VOLUME_PREFIX, type VolumeRecord } from "./_record.ts";
import { noteResumed, resyncHost, ResyncTracker } from "./_resyncs.ts";
import { MembershipKeeper } from "./_membership.ts";
import {
  deleteGoneCopy,
  deleteLeftCopy,
  deleteLeftOutCopy,
  holdsCopy,
  leaveOutDown,
  makeJoinedCopy,
} from "./_member_copies.ts";
import { FailureReasons } from "./_sync_notes.ts";

export type { GroupCreate };

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
  /**
   * The data plane replicates writes to the members over the peer channel (cluster mode
   * with TLS). Without it, a master's first write marks the replicas out of sync.
   */
  replicates?: boolean;
  /** How long a member may stay absent before its master replaces it; default 5 min. */
  replaceAfterMs?: number;
}

export class VolumeGroups {
  readonly #o: VolumeGroupsOptions;
  readonly #log: Logger;
  readonly #leases: LeaseWatch;
  readonly #drivers = new Map<string, { uuid: string; driver: GroupDriver }>();
  /** Uuids whose copy this process made (at a create, or on joining; events can be stale). */
  readonly #made = new Set<string>();
  /** Newest record seen of each group hosted here (the spec the host exports). */
  readonly #records = new Map<string, VolumeRecord>();
  /** Members and master of every group in the cluster, as last seen (for placement). */
  readonly #placed = new Map<string, { members: readonly string[]; master: string }>();
  /** Size each local copy is known to have at least, so a record event costs no I/O. */
  readonly #sized = new Map<string, { uuid: string; sizeBytes: number }>();
  #unsubscribe: () => void = () => {};
  #stopping = false;
  /** The resyncs this node runs as master (live status, never stored). */
  readonly resyncs = new ResyncTracker();
  /** Why the replicas of groups served here failed, noted when they leave the in-sync set. */
  readonly failures: FailureReasons;
  /** Replacements and replica-count changes of the groups this node is master of. */
  readonly members: MembershipKeeper;

  constructor(options: VolumeGroupsOptions) {
    this.#o = options;
    this.#log = options.logger;
    this.failures = new FailureReasons(() => options.now().getTime());
    this.#leases = new LeaseWatch({
      store: options.store,
      logger: options.logger,
      graceMs: options.leaseGraceMs,
      self: options.nodeName,
    });
    this.members = new MembershipKeeper({
      ...options,
      leaseDown: () => this.#leases.down(),
      resyncing: (volume) => this.resyncs.running(volume).map((r) => r.member),
    });
  }

  /**
   * Starts the shared lease watch. `kick(name)` has a group's record applied again:
   * called for forced deletes under way when a member's lease comes or goes.
   */
  start(kick: (name: string) => void = () => {}): void {
    this.#unsubscribe = this.#leases.subscribe((node) => {
      for (const r of this.#records.values()) {
        const left = r.remaining ?? r.group?.members ?? [];
        if (r.state === "deleting" && r.deleteForce && left.includes(node)) kick(r.name);
      }
    });
    this.#leases.start().catch(() => {});
    this.members.start(() => this.served().forEach((rec) => this.#checkMembers(rec)));
  }

  /**
   * Has the membership keeper look at group `rec` when this node serves it as master at its
   * record's epoch (never awaited: it may list the nodes, and the record lane goes on).
   */
  #checkMembers(rec: VolumeRecord): void {
    const g = rec.group;
    const running = this.#drivers.get(rec.name);
    if (!g || !running || running.uuid !== rec.uuid) return;
    if (g.master !== this.#o.nodeName || running.driver.state.serving !== g.epoch) return;
    this.members.check(rec).catch((err) =>
      this.#log.warn({ volume: rec.name, err }, "group: membership check failed")
    );
  }

  /** Stops every driver (exports stay up for the shutdown) and the lease watch. */
  async stop(): Promise<void> {
    this.#stopping = true;
    // Resyncs this node runs as master stop now, while their interruption can be recorded.
    this.#o.plane.stopResyncs?.(`node ${this.#o.nodeName} is stopping`);
    await this.resyncs.settled();
    this.#unsubscribe();
    this.members.stop();
    await Promise.all([...this.#drivers.values()].map((d) => d.driver.stop()));
    this.#drivers.clear();
    await this.#leases.stop();
  }

  /** Places and creates a replicated volume; returns the "ready" record. */
  create(input: GroupCreate): Promise<VolumeRecord> {
    const load = () => nodeLoad(this.#placed.values());
    const { store, listNodes, createWaitMs } = this.#o;
    return createGroup({ store, log: this.#log, listNodes, load, createWaitMs }, input);
  }

  /**
   * A delete asked of this node (see markGroupDeleting): members whose liveness key is
   * absent count as down, and the CAS requires them to still be down. Returns the record
   * marked "deleting", or undefined when it was removed at once (no live member).
   */
  async markDeleting(name: string, force: boolean): Promise<VolumeRecord | undefined> {
    const staleMs = staleCreateMs(this.#o.createWaitMs ?? CREATE_WAIT_MS);
    const store = this.#o.store;
    const next = await casRecord(
      store,
      name,
      undefined,
      (rec, down) => {
        if (!rec.group) {
          throw new FailedPreconditionError(`volume "${name}" changed during the delete; retry`);
        }
        return markGroupDeleting(rec, { force, now: this.#o.now(), staleMs, down });
      },
      {
        downGuard: async (rec) => {
          const members = rec.group?.members ?? [];
          const alive = await Promise.all(members.map((m) => store.get(aliveKey(m))));
          return members.filter((_, i) => alive[i] === undefined);
        },
      },
    );
    if (next === "delete") {
      this.#log.info({ volume: name }, "volume group deleted: every member is down (forced)");
    }
    return next === "delete" ? undefined : next;
  }

  /** A group record as listed or changed (from its record lane), one at a time. */
  async handle(kv: KeyValue, rec: VolumeRecord): Promise<void> {
    const g = rec.group!;
    const self = this.#o.nodeName;
    // Another uuid under this name: the record this node knew is gone.
    const known = this.#records.get(rec.name);
    if (known && known.uuid !== rec.uuid) await this.deleted(rec.name);
    this.#placed.set(rec.name, { members: g.members, master: g.master });
    const member = g.members.includes(self);
    if (!member) {
      if (rec.state === "ready") await this.#leftGroup(rec);
      return;
    }
    this.#records.set(rec.name, rec);
    if (rec.state === "creating") await this.#createCopy(rec);
    else if (rec.state === "ready") {
      // A member that joined (out of sync) makes its copy first; the driver is fed anyway.
      const joined = g.master !== self && !g.inSync.includes(self);
      const grown = (joined ? this.#ensureCopy(rec) : Promise.resolve())
        .then(() => this.growCopy(rec)).then(() => undefined, (err: unknown) => err);
      const driver = this.#driverFor(rec);
      driver.recordChanged(kv);
      if (this.#o.replicates && driver.state.serving === g.epoch && g.master === self) {
        // Members left the in-sync set or came back: the data path follows the record.
        this.#o.plane.setReplication?.(rec.name, g.epoch, await this.#targets(rec));
      }
      this.#checkMembers(rec);
      const err = await grown;
      const what =
        `could not make or grow the local copy of "${rec.name}" (${rec.sizeBytes} bytes)`;
      if (err !== undefined) throw new Error(`${what}: ${errorMessage(err)}`);
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

  /**
   * A record is gone: stop its driver and remove this node's copy of it if one is left (normally
   * removed before; not when this node was left out of a forced delete or a create was undone
   * before it recorded its copy). A failure is left to the orphan cleanup at the next start.
   */
  async deleted(name: string): Promise<void> {
    const rec = this.#records.get(name);
    if (rec) this.#made.delete(rec.uuid);
    this.#placed.delete(name);
    this.#records.delete(name);
    this.#sized.delete(name);
    this.resyncs.forget(name);
    this.members.forget(name);
    if (this.#drivers.has(name)) await this.#stopDriver(name);
    if (!rec) return;
    await deleteGoneCopy(this.#o, rec);
  }

  /**
   * Peer addresses of `nodes` (an unknown one gets "", so that sending to it fails), from the
   * node records the lease watch follows: a failover storm asks this per group and record
   * change, and a node listing each time was most of its etcd reads. Listed if one is unknown.
   */
  async #addresses(nodes: string[]): Promise<{ node: string; address: string }[]> {
    const watched = nodes.map((node) => ({ node, address: this.#leases.peerAddress(node) ?? "" }));
    if (watched.every((t) => t.address !== "")) return watched;
    const known = new Map((await this.#o.listNodes()).map((n) => [n.name, n.peerAddress ?? ""]));
    return nodes.map((node) => ({ node, address: known.get(node) ?? "" }));
  }

  /** The members a master replicates to: those the record lists in sync, but itself. */
  #targets(rec: VolumeRecord | GroupRecord): Promise<{ node: string; address: string }[]> {
    const inSync = "inSync" in rec ? rec.inSync : rec.group?.inSync ?? [];
    return this.#addresses(inSync.filter((m) => m !== this.#o.nodeName));
  }

  /** Nodes whose liveness lease is gone now, as the shared lease watch last saw it. */
  leaseGone(): string[] {
    return this.#leases.gone();
  }

  /** Of those, the nodes that stopped cleanly (their stopping mark seen). */
  leaseStopped(): string[] {
    return this.#leases.stopped();
  }

  /** The newest record of each group this node is master of and exports, by name. */
  served(): VolumeRecord[] {
    return [...this.#records.values()]
      .filter((r) =>
        r.state === "ready" && r.group?.master === this.#o.nodeName &&
        this.#o.plane.volumeStatus(r.name) !== undefined
      )
      .sort((a, b) => a.name < b.name ? -1 : 1);
  }

  /** The state of `name`'s group driver here, if one runs (volume get's unrecorded failures). */
  /** Why this node could not export group `name` it masters (it tries again), if so. */
  readonly serveFailure = (name: string) => this.#drivers.get(name)?.driver.serveFailure;

  actor(name: string): ActorState | undefined {
    return this.#drivers.get(name)?.driver.state;
  }

  /** Names of the groups this node hosts (a member of, as last seen). */
  hosted(): string[] {
    return [...new Set([...this.#records.keys(), ...this.#drivers.keys()])];
  }

  #driverFor(rec: VolumeRecord): GroupDriver {
    const running = this.#drivers.get(rec.name);
    if (running) return running.driver;
    const name = rec.name;
    const plane = this.#o.plane;
    const log = this.#log.child({ volume: name, uuid: rec.uuid });
    const driver: GroupDriver = new GroupDriver({
      store: this.#o.store,
      key: VOLUME_PREFIX + name,
      self: this.#o.nodeName,
      logger: log,
      leases: this.#leases,
      host: {
        replicates: this.#o.replicates ?? false,
        serve: async (epoch, hooks) => {
          const current = this.#records.get(name);
          if (!current) return;
          let replication;
          if (this.#o.replicates) {
            const others = (current.group?.members ?? []).filter((m) => m !== this.#o.nodeName);
            // Fencing: members this node can reach refuse the old master's epoch from now.
            await plane.fence?.(current.uuid, epoch, await this.#addresses(others));
            // The record won by CAS is not back through the watch yet: `current` lists the dead
            // master in sync, and the lease would wait for it until the lane caught up.
            const won = driver.state.known?.record;
            replication = {
              epoch,
              targets: await this.#targets(won?.epoch === epoch ? won : current),
              onReplicasFailed: this.failures.hook(name, hooks.replicasFailed),
              ...(hooks.handedOver ? { handedOver: true } : {}),
            };
          }
          const options = { writeGate: hooks.writeGate, replication };
          const opened = await plane.openVolume(specOf(current), options);
          if (opened?.resumed) noteResumed(this.#o.store, current, this.#o.nodeName, epoch, log);
          const latest = this.#records.get(name);
          if (replication && latest && latest !== current) {
            plane.setReplication?.(name, epoch, await this.#targets(latest));
          }
          log.info(
            { epoch, nbd: plane.nbdAddress, replicas: replication?.targets.map((t) => t.node) },
            "volume exported (group master)",
          );
        },
        resync: resyncHost({
          volume: name,
          uuid: rec.uuid,
          self: this.#o.nodeName,
          store: this.#o.store,
          tracker: this.resyncs,
          log,
          plane,
          address: async (node) => (await this.#addresses([node]))[0].address,
          now: () => ({
            group: driver.state.known?.record,
            gone: this.#leases.gone(),
            stopping: this.#stopping,
            serving: driver.state.serving,
          }),
        }),
        stopServing: async (epoch) => {
          this.resyncs.forget(name); // failures of resyncs this node ran as master
          this.members.forget(name);
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
        groupChange(JSON.parse(value), group, this.#o.now(), {
          replicates: this.#o.replicates ?? false,
          causes: this.failures.causes(name),
          facts: { stopped: this.#leases.stopped() },
        }),
    });
    this.#drivers.set(name, { uuid: rec.uuid, driver });
    log.info({ members: rec.group?.members }, "group driver started");
    driver.start();
    return driver;
  }

  /** This node joined group `rec` out of sync: it makes its copy (_member_copies.ts). */
  async #ensureCopy(rec: VolumeRecord): Promise<void> {
    if (this.#made.has(rec.uuid) || holdsCopy(this.#o.plane, rec.uuid)) return;
    await makeJoinedCopy(this.#o.plane, this.#log, rec);
    this.#made.add(rec.uuid);
    this.#sized.set(rec.name, { uuid: rec.uuid, sizeBytes: rec.sizeBytes });
  }

  /** Group `rec` no longer lists this node: stop its driver, delete the copy if any. */
  async #leftGroup(rec: VolumeRecord): Promise<void> {
    const known = this.#records.get(rec.name)?.uuid === rec.uuid;
    if (!known && !this.#drivers.has(rec.name) && !holdsCopy(this.#o.plane, rec.uuid)) return;
    if (this.#drivers.get(rec.name)?.uuid === rec.uuid) await this.#stopDriver(rec.name);
    this.#records.delete(rec.name);
    this.#sized.delete(rec.name);
    this.#made.delete(rec.uuid);
    await deleteLeftCopy(this.#o.plane, this.#log, rec);
  }

  async #stopDriver(name: string): Promise<void> {
    const running = this.#drivers.get(name);
    if (!running) return;
    this.#drivers.delete(name);
    await running.driver.stop({ release: true });
    this.#log.info({ volume: name }, "group driver stopped");
  }

  /**
   * Member side of create: make the local copy (not exported) and say so in the record.
   * Throws (and is retried) when the record could not be updated.
   */
  async #createCopy(rec: VolumeRecord): Promise<void> {
    const self = this.#o.nodeName;
    if (rec.created?.includes(self) || rec.createFailed || this.#made.has(rec.uuid)) return;
    const log = this.#log.child({ volume: rec.name, uuid: rec.uuid });
    let failure: string | undefined;
    try {
      await this.#o.plane.createVolume(specOf(rec), { export: false });
    } catch (err) {
      failure = `node ${self} could not create its copy: ${errorMessage(err)}`;
      log.warn({ err }, "could not create the local copy of a new volume");
    }
    let outcome = "abandoned" as "recorded" | "kept" | "abandoned";
    await casRecord(this.#o.store, rec.name, rec.uuid, (cur) => {
      outcome = "abandoned";
      if (cur.state === "ready") outcome = "kept"; // recorded already (a stale event)
      if (cur.state !== "creating") return undefined;
      outcome = "recorded";
      if (failure !== undefined) {
        return cur.createFailed ? undefined : { ...cur, createFailed: failure };
      }
      if (cur.created?.includes(self)) return undefined;
      return { ...cur, created: [...new Set([...(cur.created ?? []), self])].sort() };
    });
    this.#made.add(rec.uuid);
    if (failure === undefined && outcome === "abandoned") {
      // The create was undone (or the record removed) meanwhile and this copy is not on
      // anyone's list; if it still is, the "deleting" record removes it anyway.
      await this.#o.plane.deleteVolume(rec.name, { force: true, uuid: rec.uuid });
      log.info("removed the copy of an abandoned create");
    } else if (failure === undefined && outcome === "recorded") {
      log.info("local copy of a new volume created");
    }
  }

  /** Member side of delete: the master first (it may refuse), then the others. */
  async #deleteCopy(rec: VolumeRecord): Promise<void> {
    const self = this.#o.nodeName;
    const master = rec.group!.master;
    const remaining = rec.remaining ?? rec.group!.members;
    if (await this.#dropDown(rec)) return; // the changed record comes back through the watch
    if (!remaining.includes(self)) {
      if (this.#drivers.has(rec.name)) await this.#stopDriver(rec.name);
      // Removed already, left out while down, or made by a create this node had not
      // recorded (a crash between making the copy and saying so): remove.
      await deleteLeftOutCopy(this.#o, rec);
      return;
    }
    if (self !== master && remaining.includes(master)) return; // wait for the master
    const log = this.#log.child({ volume: rec.name, uuid: rec.uuid });
    const status = this.#o.plane.volumeStatus(rec.name);
    if (status && status.connections > 0 && !rec.deleteForce) {
      const why = `volume "${rec.name}" has ${status.connections} NBD client(s) connected to ` +
        `its master node "${self}"; disconnect them or use --force`;
      log.warn({ connections: status.connections }, "refused a delete: clients connected");
      await casRecord(this.#o.store, rec.name, rec.uuid, (cur) => {
        if (cur.state !== "deleting") return undefined;
        const { remaining: _r, deleteForce: _f, ...rest } = cur;
        return { ...rest, state: "ready", deleteRefused: why };
      });
      return;
    }
    await this.#stopDriver(rec.name);
    await this.#o.plane.deleteVolume(rec.name, { force: true, uuid: rec.uuid });
    await casRecord(this.#o.store, rec.name, rec.uuid, (cur) => copyDeleted(cur, self));
    log.info("local copy deleted");
  }

  /** A forced delete waiting on members that went down meanwhile leaves them out. */
  #dropDown(rec: VolumeRecord): Promise<boolean> {
    const down = this.#leases.down().filter((n) => n !== this.#o.nodeName);
    return leaveOutDown(this.#o.store, rec, down, this.#log);
  }
}
