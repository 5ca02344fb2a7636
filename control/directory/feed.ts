/**
 * Cluster mode: the data plane's directory of where each volume is served (attach anywhere,
 * data/proxy/). Follows the volume records (master, epoch, and whether the master is down)
 * and the node records (each node's NBD address, and its liveness key: DOWN_GRACE_MS), and
 * hands the data plane the whole
 * directory after a change that moves an entry. One watch of each prefix per node; the
 * records it reads are the ones failover already writes, so it adds no etcd writes.
 *
 * A record event costs only its own volume's entry: the entry is recomputed and compared
 * with the one held (most record changes, members going in and out of sync, history, do not
 * move it). Rebuilding and comparing the whole directory on every event, as this did, was
 * the largest CPU cost of a failover storm on every node, the observer's too (2,000 volumes,
 * tens of thousands of events, docs/BENCHMARKS.md). Changes are handed over at once, and
 * then at most every PUBLISH_EVERY_MS (the last change of a burst always goes out).
 * @module
 */

import type { Logger } from "../common/mod.ts";
import type { DirectoryEntry } from "../../data/mod.ts";
import { type GroupRecord, phaseOf } from "../group/mod.ts";
import { ALIVE_SUFFIX, NODE_PREFIX } from "../nodes/mod.ts";
import { followPrefix, type KeyValue, type StateStore, type WatchEvent } from "../store/mod.ts";
import { VOLUME_PREFIX, type VolumeRecord } from "../volumes/mod.ts";

/** Least time between two directories handed to the data plane (the first goes at once). */
export const PUBLISH_EVERY_MS = 50;
/**
 * A node whose liveness key is gone this long counts as down here: a group none of whose
 * in-sync members is up then takes no new client (its record may still say healthy: when
 * they all die at once nobody is left to write it). Shorter gaps (a node registering again
 * after an etcd blip) change nothing.
 */
export const DOWN_GRACE_MS = 3_000;

/** What the directory needs of a volume record: its entry without the master's address. */
export type Placed = Omit<DirectoryEntry, "address">;

/**
 * The part of a volume record the directory uses; undefined when it is not served. A
 * volume being deleted without --force is still served: its master refuses the delete while
 * clients are attached, forwarded ones included, and those must not be cut meanwhile.
 */
export function placedOf(name: string, r: VolumeRecord): Placed | undefined {
  if (r.state === "creating" || (r.state === "deleting" && r.deleteForce !== false)) {
    return undefined;
  }
  const master = r.group?.master ?? r.master;
  if (!master) return undefined;
  return {
    name,
    uuid: r.uuid,
    sizeBytes: r.sizeBytes,
    master,
    epoch: r.group?.epoch ?? r.epoch,
    masterDown: r.group?.down.includes(master) ?? false,
    ...(r.group?.phase === "unavailable" ? { unavailable: true } : {}),
    ...(r.state === "failed" ? { unavailable: true, why: r.stateReason ?? "its copy failed" } : {}),
  };
}

/** Whether two entries are the same in every field. */
export function sameEntry(a: DirectoryEntry | undefined, b: DirectoryEntry | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.name === b.name && a.uuid === b.uuid && a.sizeBytes === b.sizeBytes &&
    a.master === b.master && a.address === b.address && a.epoch === b.epoch &&
    a.masterDown === b.masterDown && a.unavailable === b.unavailable && a.why === b.why;
}

/** Starts following; stop() ends it. */
export function feedDirectory(o: {
  store: StateStore;
  log: Logger;
  publish: (entries: DirectoryEntry[]) => void;
  /**
   * Keeps only the entries this accepts. A single node forwards nothing, but its NBD
   * clients are told why a volume whose copy failed cannot be attached (only unavailable).
   */
  only?: (p: Placed) => boolean;
}): { stop(): Promise<void> } {
  const stop = new AbortController();
  /** Each served volume's entry without its address, by name. */
  const placed = new Map<string, Placed>();
  /** Each node's NBD address, by node name. */
  const addresses = new Map<string, string>();
  /** Each group's record, by volume name (groups only), for its phase as the leases say. */
  const groups = new Map<string, GroupRecord>();
  /** Nodes holding their liveness key, and since when the others have not (ms, monotonic). */
  const alive = new Set<string>();
  const goneSince = new Map<string, number>();
  let downTimer: ReturnType<typeof setTimeout> | undefined;
  /** The directory as last computed, by volume name. */
  const entries = new Map<string, DirectoryEntry>();
  /** Whether entries changed since the last publish (the first listing is always handed over). */
  let changed = true;
  /** While a listing is taken in: refreshAll() follows it once. */
  let listing = false;
  let lastAt = -Infinity;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const publishNow = () => {
    timer = undefined;
    if (!changed) return;
    changed = false;
    lastAt = performance.now();
    o.publish([...entries.values()].sort((a, b) => a.name < b.name ? -1 : 1));
  };
  const schedule = () => {
    if (!changed || timer !== undefined || stop.signal.aborted) return;
    timer = setTimeout(publishNow, Math.max(0, lastAt + PUBLISH_EVERY_MS - performance.now()));
  };
  const down = (node: string) =>
    !alive.has(node) && performance.now() - (goneSince.get(node) ?? -Infinity) >= DOWN_GRACE_MS;
  /** Recomputes `name`'s entry from what is known; notes whether it changed. */
  const refresh = (name: string) => {
    let p = placed.get(name);
    const g = groups.get(name);
    // The record's phase with the members whose lease is gone counted down (as `volume get`).
    const gone = g?.members.filter((m) => !g.down.includes(m) && down(m)) ?? [];
    if (
      p && !p.unavailable && g && phaseOf({ ...g, down: [...g.down, ...gone] }) === "unavailable"
    ) {
      const why = `no in-sync member is up (${g.inSync.join(", ")}: liveness lease gone)`;
      p = { ...p, unavailable: true, why };
    }
    const address = p && addresses.get(p.master);
    const next = p && address ? { ...p, address } : undefined;
    if (sameEntry(entries.get(name), next)) return;
    if (next) entries.set(name, next);
    else entries.delete(name);
    changed = true;
  };
  const refreshAll = () => {
    for (const name of entries.keys()) if (!placed.has(name)) refresh(name);
    for (const name of placed.keys()) refresh(name);
  };

  const putVolume = (kv: KeyValue) => {
    const name = kv.key.slice(VOLUME_PREFIX.length);
    let p: Placed | undefined;
    let group: VolumeRecord["group"];
    try {
      const r = JSON.parse(kv.value) as VolumeRecord;
      p = placedOf(name, r);
      group = r.group;
    } catch (err) {
      o.log.warn({ key: kv.key, err }, "directory: unreadable volume record");
      return;
    }
    if (p && (o.only?.(p) ?? true)) placed.set(name, p);
    else placed.delete(name);
    if (p && group) groups.set(name, group);
    else groups.delete(name);
    refresh(name);
  };
  const deleteVolume = (kv: KeyValue) => {
    const name = kv.key.slice(VOLUME_PREFIX.length);
    placed.delete(name);
    groups.delete(name);
    refresh(name);
  };
  /** Liveness keys: the entries are recomputed at once, and when a gone key's grace ends. */
  const aliveChanged = (node: string, up: boolean) => {
    if (up === alive.has(node)) return;
    if (up) alive.add(node);
    else {
      alive.delete(node);
      goneSince.set(node, performance.now());
      clearTimeout(downTimer);
      downTimer = setTimeout(() => {
        refreshAll();
        schedule();
      }, DOWN_GRACE_MS);
    }
    if (!listing) refreshAll();
  };
  /** Node records only: `/ballast/nodes/<name>`, not its alive or cordon keys. */
  const nodeName = (kv: KeyValue) => {
    const rest = kv.key.slice(NODE_PREFIX.length);
    return rest.includes("/") ? undefined : rest;
  };
  /** The node whose liveness key `kv` is, if it is one. */
  const aliveOf = (kv: KeyValue) => {
    const rest = kv.key.slice(NODE_PREFIX.length);
    return rest.endsWith(ALIVE_SUFFIX) ? rest.slice(0, -ALIVE_SUFFIX.length) : undefined;
  };
  const putNode = (kv: KeyValue) => {
    const up = aliveOf(kv);
    if (up !== undefined) return aliveChanged(up, true);
    const name = nodeName(kv);
    if (name === undefined) return;
    try {
      const address = (JSON.parse(kv.value) as { nbdAddress?: string }).nbdAddress;
      if (address && address !== addresses.get(name)) {
        addresses.set(name, address);
        if (!listing) refreshAll();
      }
    } catch (err) {
      o.log.warn({ key: kv.key, err }, "directory: unreadable node record");
    }
  };
  const deleteNode = (kv: KeyValue) => {
    const gone = aliveOf(kv);
    if (gone !== undefined) return aliveChanged(gone, false);
    const name = nodeName(kv);
    if (name !== undefined && addresses.delete(name)) refreshAll();
  };
  const follow = (
    prefix: string,
    clear: () => void,
    put: (kv: KeyValue) => void,
    del: (kv: KeyValue) => void,
  ) =>
    followPrefix(o.store, prefix, {
      onList(kvs: readonly KeyValue[]) {
        clear();
        listing = true;
        for (const kv of kvs) put(kv);
        listing = false;
        refreshAll();
        schedule();
      },
      onEvents(events: readonly WatchEvent[]) {
        for (const ev of events) {
          if (ev.type === "put") put(ev.kv);
          else del(ev.kv);
        }
        schedule();
      },
    }, { signal: stop.signal, logger: o.log, what: "directory" });
  const loops = [
    follow(VOLUME_PREFIX, () => (placed.clear(), groups.clear()), putVolume, deleteVolume),
    follow(
      NODE_PREFIX,
      () => {
        addresses.clear();
        // A listing shows who is up now: the others count as gone since long ago.
        for (const n of alive) goneSince.delete(n);
        alive.clear();
      },
      putNode,
      deleteNode,
    ),
  ];
  return {
    async stop() {
      stop.abort();
      clearTimeout(timer);
      clearTimeout(downTimer);
      await Promise.all(loops);
    },
  };
}
