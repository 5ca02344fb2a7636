/**
 * Node registry. Each node keeps two keys in the state store:
 *
 * - `/ballast/nodes/<name>`: its record (addresses, version, capacity, startedAt,
 *   lastSeen), written at start and refreshed at most every 30 s, so a node that
 *   stopped is still listed (as "down"); a clean stop writes it once more with `stoppedAt`
 *   before revoking the lease, so "stopped" and "lease expired" can be told apart;
 * - `/ballast/nodes/<name>/alive`: attached to a lease (TTL 10 s by default) kept
 *   alive by this process. While it exists the node is "ready";
 * - `/ballast/nodes/<name>/cordon`: present while an operator has cordoned the node
 *   (`ballast node cordon`): it stays up but gets no new placements ("cordoned").
 *
 * Nothing is written per I/O; list/get merge the live capacity of the local node.
 *
 * An etcd outage longer than the lease TTL expires every lease at once, this node's too;
 * each node registers again at its next keep-alive. For two TTLs after this node's own lease
 * lapsed, a node without a liveness key is probed before it is called down: one whose API
 * answers is re-registering, not down (an etcd blip must not page anyone).
 * @module
 */

import { FailedPreconditionError, NotFoundError } from "../../mod/errors.ts";
import type { NodeInfo } from "../../mod/types.ts";
import type { DataPlane } from "../../data/plane.ts";
import type { Logger } from "../common/mod.ts";
import type { Compare, KeyValue, Op, StateStore } from "../store/mod.ts";
import type { NodeProbe } from "./probe.ts";
import { checkNameHolder } from "./_name_holder.ts";

export const NODE_PREFIX = "/ballast/nodes/";
export const ALIVE_SUFFIX = "/alive";
const CORDON_SUFFIX = "/cordon";

/** The key that holds a node's cordon while it is cordoned. */
export function cordonKey(node: string): string {
  return NODE_PREFIX + node + CORDON_SUFFIX;
}

/** The liveness key of a node. */
export function aliveKey(node: string): string {
  return NODE_PREFIX + node + ALIVE_SUFFIX;
}

/**
 * The lease guard of a group change: compares that hold while every node in `down` has no
 * liveness key and every node in `up` has one, so a node that came back (or went away)
 * since the decision makes the transaction fail.
 */
export function livenessCompares(down: readonly string[], up: readonly string[] = []): Compare[] {
  return [
    ...down.map((n): Compare => ({ key: aliveKey(n), target: "version", op: "==", value: 0 })),
    ...up.map((n): Compare => ({ key: aliveKey(n), target: "version", op: ">", value: 0 })),
  ];
}

/** What the cordon key holds. */
interface Cordon {
  reason: string;
  since: string;
}
const DEFAULT_CAPACITY_REFRESH_MS = 30_000;
/** A keep-alive that failed (etcd unreachable) is tried again this soon. */
const HEARTBEAT_RETRY_MS = 1_000;

/** What is stored for a node: NodeInfo without the derived state. */
type NodeRecord = Omit<NodeInfo, "state" | "reason">;

export interface NodeRegistryOptions {
  store: StateStore;
  dataPlane: DataPlane;
  logger: Logger;
  nodeName: string;
  /**
   * The id of this node's data directory (control/serve/_node_identity.ts), put in its
   * liveness key: a live key of the same name with another id is another running node, and
   * this one refuses to register. None: not checked (an older node's key has none either).
   */
  instance?: string;
  /** "http://HOST:PORT" of this node's API (may also be given to start()). */
  apiAddress?: string;
  version: string;
  labels?: Record<string, string>;
  /** The node's peer channel address (replication), when it has one. */
  peerAddress?: string;
  /**
   * Probes other live nodes' APIs on list/get, so a node that holds its lease but
   * does not answer shows as "unreachable" (probe.ts). None: never probed.
   */
  probe?: NodeProbe;
  /** Liveness lease TTL; default 10 s. Keep-alives go out every TTL/3. */
  leaseTtlSeconds?: number;
  /** Minimum interval between record (capacity) writes; default 30 s. */
  capacityRefreshMs?: number;
  now?: () => Date;
}

/** Registers this node and answers node queries. */
export class NodeRegistry {
  readonly #o: Required<Omit<NodeRegistryOptions, "probe" | "peerAddress" | "instance">> & {
    probe?: NodeProbe;
    peerAddress?: string;
    instance?: string;
  };
  #lease = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lastRecordWrite = 0;
  #startedAt = "";
  #stopped = true;
  #beat: Promise<void> = Promise.resolve();
  #beating = false;
  /** When this node's own lease was last found gone (ms since the epoch). */
  #selfLapsedAt = -Infinity;

  constructor(options: NodeRegistryOptions) {
    this.#o = {
      leaseTtlSeconds: 10,
      capacityRefreshMs: DEFAULT_CAPACITY_REFRESH_MS,
      now: () => new Date(),
      labels: {},
      apiAddress: "",
      ...options,
    };
  }

  get nodeName(): string {
    return this.#o.nodeName;
  }

  /** Writes the node record and the leased liveness key, then keeps the lease alive. */
  async start(options: { apiAddress?: string } = {}): Promise<void> {
    if (options.apiAddress !== undefined) this.#o.apiAddress = options.apiAddress;
    this.#startedAt = this.#o.now().toISOString();
    // Before anything is written: another running node of this name keeps its record.
    const held = { kv: await this.#refuseIfHeld() };
    this.#stopped = false;
    await this.#writeRecord();
    await this.#grantAndMarkAlive(held);
    this.#schedule();
  }

  /**
   * Stops the keep-alives and revokes the lease, so the node shows as down at once. First its
   * record gets `stoppedAt` (the stopping mark): the lease's end reads "node stopped" rather
   * than "lease expired" on every node (a record that could not be written leaves the latter).
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#beat;
    if (this.#lease) {
      await this.#markStopping();
      await this.#o.store.revokeLease(this.#lease).catch(() => {});
      this.#lease = 0;
    }
  }

  /** Every known node, sorted by name. */
  async list(): Promise<NodeInfo[]> {
    const { kvs } = await this.#o.store.list(NODE_PREFIX);
    const alive = new Set<string>();
    const cordons = new Map<string, Cordon>();
    const records: NodeRecord[] = [];
    for (const kv of kvs) {
      const rest = kv.key.slice(NODE_PREFIX.length);
      if (rest.endsWith(ALIVE_SUFFIX)) alive.add(rest.slice(0, -ALIVE_SUFFIX.length));
      else if (rest.endsWith(CORDON_SUFFIX)) {
        cordons.set(rest.slice(0, -CORDON_SUFFIX.length), JSON.parse(kv.value) as Cordon);
      } else if (!rest.includes("/")) records.push(JSON.parse(kv.value) as NodeRecord);
    }
    if (!alive.has(this.#o.nodeName) && !this.#stopped) this.#ownLeaseGone();
    const blip = this.#afterOwnLapse();
    const probed = records.filter((r) => alive.has(r.name) || blip);
    const unreachable = await this.#probeAll(probed);
    return records.map((r) =>
      this.#toInfo(r, alive.has(r.name), cordons.get(r.name), unreachable.get(r.name), blip)
    );
  }

  /** This node's own lease is gone (etcd expired it): register again now, not at the next beat. */
  #ownLeaseGone(): void {
    this.#selfLapsedAt = this.#o.now().getTime();
    if (this.#beating || this.#stopped) return;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#schedule(0);
  }

  /** Within two lease TTLs of this node's own lease lapsing (an etcd outage, most likely). */
  #afterOwnLapse(): boolean {
    const ms = this.#o.now().getTime() - this.#selfLapsedAt;
    return ms < 2 * this.#o.leaseTtlSeconds * 1000;
  }

  /** Probes the other live nodes in parallel: name -> why it did not answer. */
  async #probeAll(records: NodeRecord[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const probe = this.#o.probe;
    if (!probe) return out;
    await Promise.all(
      records.filter((r) => r.name !== this.#o.nodeName).map(async (r) => {
        const why = await probe.check(r.apiAddress);
        if (why !== undefined) out.set(r.name, why);
      }),
    );
    return out;
  }

  /**
   * Cordons a node: it keeps serving what it holds but gets no new placements. One
   * write to its own cordon key, guarded by the node record existing.
   */
  async cordon(name: string, reason = ""): Promise<NodeInfo> {
    const cordon: Cordon = { reason, since: this.#o.now().toISOString() };
    await this.#guardedWrite(name, {
      type: "put",
      key: cordonKey(name),
      value: JSON.stringify(cordon),
    });
    this.#o.logger.info({ cordoned: name, reason }, "node cordoned");
    return await this.get(name);
  }

  /** Lifts a cordon (no-op if the node is not cordoned). */
  async uncordon(name: string): Promise<NodeInfo> {
    await this.#guardedWrite(name, { type: "delete", key: cordonKey(name) });
    this.#o.logger.info({ uncordoned: name }, "node uncordoned");
    return await this.get(name);
  }

  /**
   * Forgets node `name` for good (`node remove`): its record and every key under it, in one
   * transaction guarded by the record and by the absence of its liveness key, so a node that
   * runs (or started again since it was looked at) is refused. `check` may refuse too, once
   * the node is found down. Returns it as it was.
   */
  async forget(name: string, check: () => Promise<void>): Promise<NodeInfo> {
    const node = await this.get(name);
    const running = () =>
      new FailedPreconditionError(
        `node ${name} is running (it holds its liveness lease): stop it first, or ` +
          `\`ballast node drain ${name}\` to move its masters off it`,
      );
    if (node.state !== "down") throw running();
    await check();
    const res = await this.#o.store.txn(
      [
        { key: NODE_PREFIX + name, target: "version", op: ">", value: 0 },
        { key: aliveKey(name), target: "version", op: "==", value: 0 },
      ],
      [
        { type: "delete", key: NODE_PREFIX + name },
        { type: "delete", key: NODE_PREFIX + name + "/", prefix: true },
      ],
    );
    if (!res.succeeded) throw running();
    this.#o.logger.info({ removed: name }, "node removed from the cluster");
    return node;
  }

  /** Applies `op` if node `name` is registered; NotFoundError otherwise. */
  async #guardedWrite(name: string, op: Op): Promise<void> {
    if (name.includes("/")) throw new NotFoundError("node", name);
    const res = await this.#o.store.txn(
      [{ key: NODE_PREFIX + name, target: "version", op: ">", value: 0 }],
      [op],
    );
    if (!res.succeeded) throw new NotFoundError("node", name);
  }

  /** The API address node `name` published in its record, or undefined (one read, no probe). */
  async apiAddress(name: string): Promise<string | undefined> {
    if (name.includes("/")) return undefined;
    const rec = await this.#o.store.get(NODE_PREFIX + name);
    return rec ? (JSON.parse(rec.value) as NodeRecord).apiAddress || undefined : undefined;
  }

  /** One node. */
  async get(name: string): Promise<NodeInfo> {
    const [rec, alive, cordon] = await Promise.all([
      this.#o.store.get(NODE_PREFIX + name),
      this.#o.store.get(aliveKey(name)),
      this.#o.store.get(cordonKey(name)),
    ]);
    if (!rec || name.includes("/")) throw new NotFoundError("node", name);
    const record = JSON.parse(rec.value) as NodeRecord;
    const blip = this.#afterOwnLapse();
    const unreachable = alive || blip ? await this.#probeAll([record]) : new Map<string, string>();
    return this.#toInfo(
      record,
      alive !== undefined,
      cordon && JSON.parse(cordon.value) as Cordon,
      unreachable.get(record.name),
      blip,
    );
  }

  /**
   * The node's state. `unreachable`: why its API did not answer a probe (undefined: it
   * answered, or was not probed). `blip`: this node's own lease lapsed lately, so a node
   * without a liveness key whose API answered is registering again, not down.
   */
  #toInfo(
    rec: NodeRecord,
    alive: boolean,
    cordon: Cordon | undefined,
    unreachable?: string,
    blip = false,
  ): NodeInfo {
    const local = rec.name === this.#o.nodeName && !this.#stopped;
    if (!alive && !local && blip && unreachable === undefined && this.#o.probe) {
      return {
        ...rec,
        state: cordon ? "cordoned" : "ready",
        reason: "liveness lease lapsed in an etcd outage (this node's too) and is being " +
          `renewed; its API answered; last seen ${rec.lastSeen}` +
          (cordon ? `; cordoned since ${cordon.since}` : ""),
      };
    }
    if (!alive && !local) {
      return {
        ...rec,
        state: "down",
        reason: (rec.stoppedAt
          ? `node stopped: lease revoked at its clean stop at ${rec.stoppedAt}`
          : `liveness lease expired; last seen ${rec.lastSeen}`) +
          (cordon ? "; also cordoned" : ""),
      };
    }
    const info = local ? this.#localRecord() : rec;
    if (unreachable !== undefined) {
      return {
        ...info,
        state: "unreachable",
        reason: `liveness lease still held, but ${unreachable}; last seen ${rec.lastSeen}` +
          (cordon ? "; also cordoned" : ""),
      };
    }
    if (cordon) {
      return {
        ...info,
        state: "cordoned",
        reason: `cordoned since ${cordon.since}` + (cordon.reason ? `: ${cordon.reason}` : ""),
      };
    }
    return { ...info, state: "ready", reason: "" };
  }

  #localRecord(): NodeRecord {
    const { capacityBytes, freeBytes } = this.#o.dataPlane.capacity();
    const pool = this.#o.dataPlane.workerPool?.();
    let orphaned: NodeInfo["orphaned"];
    try {
      orphaned = this.#o.dataPlane.orphaned?.();
    } catch {
      orphaned = undefined; // unreadable now: left out rather than failing the record
    }
    return {
      name: this.#o.nodeName,
      apiAddress: this.#o.apiAddress,
      nbdAddress: this.#o.dataPlane.nbdAddress,
      ...(this.#o.peerAddress ? { peerAddress: this.#o.peerAddress } : {}),
      version: this.#o.version,
      labels: this.#o.labels,
      capacityBytes,
      freeBytes,
      volumes: this.#o.dataPlane.volumeStats().length,
      ...(orphaned ? { orphaned } : {}),
      ...(pool ? { dataWorkers: { size: pool.size, min: pool.min, max: pool.max } } : {}),
      startedAt: this.#startedAt,
      lastSeen: this.#o.now().toISOString(),
    };
  }

  /** The record with `stoppedAt` (best effort: without it, the stop reads as an expiry). */
  async #markStopping(): Promise<void> {
    try {
      const stopping = { ...this.#localRecord(), stoppedAt: this.#o.now().toISOString() };
      await this.#o.store.put(NODE_PREFIX + this.#o.nodeName, JSON.stringify(stopping));
    } catch {
      // the store or the data plane is gone already: nothing to mark
    }
  }

  async #writeRecord(): Promise<void> {
    await this.#o.store.put(NODE_PREFIX + this.#o.nodeName, JSON.stringify(this.#localRecord()));
    this.#lastRecordWrite = this.#o.now().getTime();
  }

  /**
   * Grants a lease and attaches the alive key to it. The lease becomes this node's only
   * once the key is written: if the put fails, the next heartbeat's keep-alive finds no
   * lease and registers again (a kept-alive lease without the key would leave the node
   * "down" for good). `read`: the liveness key as #refuseIfHeld() just read it (start()).
   */
  async #grantAndMarkAlive(read?: { kv: KeyValue | undefined }): Promise<void> {
    const { store, nodeName, instance } = this.#o;
    const lease = await store.grantLease(this.#o.leaseTtlSeconds);
    const value = JSON.stringify(instance === undefined ? { lease } : { lease, instance });
    if (instance === undefined) {
      await store.put(aliveKey(nodeName), value, { lease });
      this.#lease = lease;
      return;
    }
    // Only over no key, or a key of this node's own (an earlier run of its data directory):
    // compared with the key as read, so that a node of the same name that registered meanwhile
    // is not overwritten.
    try {
      for (let attempt = 0;; attempt++) {
        const current = attempt === 0 && read ? read.kv : await this.#refuseIfHeld();
        const put = await store.txn(
          [{
            key: aliveKey(nodeName),
            target: "modRevision",
            op: "==",
            value: current?.modRevision ?? 0,
          }],
          [{ type: "put", key: aliveKey(nodeName), value, lease }],
        );
        if (put.succeeded) break;
        if (attempt >= 5) throw new Error(`the liveness key of ${nodeName} keeps changing`);
      }
    } catch (err) {
      await store.revokeLease(lease).catch(() => {});
      throw err;
    }
    this.#lease = lease;
  }

  /**
   * Throws when this node's name is held by another running node; waits for a holder that is
   * not running (_name_holder.ts). Returns the liveness key as read (undefined: none).
   */
  #refuseIfHeld(): Promise<KeyValue | undefined> {
    const o = this.#o;
    if (o.instance === undefined) return Promise.resolve(undefined);
    return checkNameHolder({
      ...o,
      instance: o.instance,
      aliveKey: aliveKey(o.nodeName),
      recordKey: NODE_PREFIX + o.nodeName,
    });
  }

  /** Schedules the next heartbeat: after `ms`, by default a third of the TTL. */
  #schedule(ms = this.#period()): void {
    if (this.#stopped) return;
    const timer = setTimeout(() => {
      this.#timer = undefined;
      this.#beating = true;
      this.#beat = this.#heartbeat().then((ok) => {
        this.#beating = false;
        this.#schedule(ok ? undefined : Math.min(HEARTBEAT_RETRY_MS, this.#period()));
      });
    }, ms);
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  /** Keep-alives go out every third of the TTL. */
  #period(): number {
    return Math.max(200, (this.#o.leaseTtlSeconds * 1000) / 3);
  }

  /** One keep-alive (registering again if the lease is gone); false if it failed. */
  async #heartbeat(): Promise<boolean> {
    const log = this.#o.logger;
    try {
      try {
        await this.#o.store.keepAlive(this.#lease);
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
        this.#selfLapsedAt = this.#o.now().getTime();
        log.warn({ lease: this.#lease }, "node lease expired; registering again");
        await this.#grantAndMarkAlive();
      }
      if (this.#o.now().getTime() - this.#lastRecordWrite >= this.#o.capacityRefreshMs) {
        await this.#writeRecord();
      }
      return true;
    } catch (err) {
      log.error({ err }, "node heartbeat failed");
      return false;
    }
  }
}
