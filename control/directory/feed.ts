/**
 * Cluster mode: the data plane's directory of where each volume is served (attach anywhere,
 * data/proxy/). Follows the volume records (master, epoch, and whether the master is down)
 * and the node records (each node's NBD address), and hands the data plane the whole
 * directory after every change that moves an entry. One watch of each prefix per node; the
 * records it reads are the ones failover already writes, so it adds no etcd writes.
 * @module
 */

import type { Logger } from "../common/mod.ts";
import type { DirectoryEntry } from "../../data/mod.ts";
import { NODE_PREFIX } from "../nodes/mod.ts";
import { followPrefix, type KeyValue, type StateStore, type WatchEvent } from "../store/mod.ts";
import { VOLUME_PREFIX, type VolumeRecord } from "../volumes/mod.ts";

/** Starts following; stop() ends it. */
export function feedDirectory(o: {
  store: StateStore;
  log: Logger;
  publish: (entries: DirectoryEntry[]) => void;
}): { stop(): Promise<void> } {
  const stop = new AbortController();
  const volumes = new Map<string, VolumeRecord>();
  const addresses = new Map<string, string>();
  let last = "";
  const publish = () => {
    const entries: DirectoryEntry[] = [];
    for (const [name, r] of volumes) {
      if (r.state === "creating" || r.state === "deleting") continue;
      const master = r.group?.master ?? r.master;
      const address = addresses.get(master);
      if (!master || !address) continue;
      entries.push({
        name,
        uuid: r.uuid,
        sizeBytes: r.sizeBytes,
        master,
        address,
        epoch: r.group?.epoch ?? r.epoch,
        masterDown: r.group?.down.includes(master) ?? false,
        ...(r.group?.phase === "unavailable" ? { unavailable: true } : {}),
      });
    }
    entries.sort((a, b) => a.name.localeCompare(b.name));
    const text = JSON.stringify(entries);
    if (text === last) return;
    last = text;
    o.publish(entries);
  };
  const putVolume = (kv: KeyValue) => {
    try {
      volumes.set(kv.key.slice(VOLUME_PREFIX.length), JSON.parse(kv.value) as VolumeRecord);
    } catch (err) {
      o.log.warn({ key: kv.key, err }, "directory: unreadable volume record");
    }
  };
  /** Node records only: `/ballast/nodes/<name>`, not its alive or cordon keys. */
  const nodeName = (kv: KeyValue) => {
    const rest = kv.key.slice(NODE_PREFIX.length);
    return rest.includes("/") ? undefined : rest;
  };
  const putNode = (kv: KeyValue) => {
    const name = nodeName(kv);
    if (name === undefined) return;
    try {
      const address = (JSON.parse(kv.value) as { nbdAddress?: string }).nbdAddress;
      if (address) addresses.set(name, address);
    } catch (err) {
      o.log.warn({ key: kv.key, err }, "directory: unreadable node record");
    }
  };
  const follow = (
    prefix: string,
    map: Map<string, unknown>,
    put: (kv: KeyValue) => void,
    keyOf: (kv: KeyValue) => string | undefined,
  ) =>
    followPrefix(o.store, prefix, {
      onList(kvs: readonly KeyValue[]) {
        map.clear();
        for (const kv of kvs) put(kv);
        publish();
      },
      onEvents(events: readonly WatchEvent[]) {
        for (const ev of events) {
          if (ev.type === "put") put(ev.kv);
          else {
            const k = keyOf(ev.kv);
            if (k !== undefined) map.delete(k);
          }
        }
        publish();
      },
    }, { signal: stop.signal, logger: o.log, what: "directory" });
  const loops = [
    follow(VOLUME_PREFIX, volumes, putVolume, (kv) => kv.key.slice(VOLUME_PREFIX.length)),
    follow(NODE_PREFIX, addresses, putNode, nodeName),
  ];
  return {
    async stop() {
      stop.abort();
      await Promise.all(loops);
    },
  };
}
