/**
 * A cluster-mode node for control-plane tests: VolumeService over a real etcd (its own
 * key prefix) and the real data plane on a temp dir, with the record watch running.
 * Several of them on one etcd make a small cluster without processes.
 * @module
 */

import { EtcdStateStore } from "../../control/store/etcd/mod.ts";
import { silentLogger } from "../../control/common/mod.ts";
import { VolumeService } from "../../control/volumes/mod.ts";
import { startDataPlane } from "../../data/mod.ts";
import type { NodeInfo } from "../../mod/types.ts";
import type { DataPlane } from "../../data/plane.ts";
import type { StateStore } from "../../control/store/mod.ts";
import { aliveKey, NODE_PREFIX } from "../../control/nodes/mod.ts";
import type { EtcdCluster } from "./_etcd_harness.ts";

export interface ClusterNode {
  name: string;
  dir: string;
  store: EtcdStateStore;
  plane: Awaited<ReturnType<typeof startDataPlane>>;
  volumes: VolumeService;
  /** Writes or removes the node's liveness key (a real node's lease), for "down". */
  setAlive(up: boolean): Promise<void>;
  close(): Promise<void>;
}

export async function startClusterNode(
  etcd: EtcdCluster,
  prefix: string,
  name: string,
  options: {
    listNodes?: () => Promise<NodeInfo[]>;
    groupCreateWaitMs?: number;
    /** Wraps the data plane VolumeService sees (to make a step hang or fail). */
    wrapPlane?: (p: DataPlane) => DataPlane;
    /** Wraps the store VolumeService sees. */
    wrapStore?: (s: StateStore) => StateStore;
    retryBackoffMs?: readonly [number, number];
    orphanMinAgeMs?: number;
  } = {},
): Promise<ClusterNode> {
  const dir = await Deno.makeTempDir({ prefix: `ballast-${name}-` });
  const logger = silentLogger();
  const store = await EtcdStateStore.connect({ endpoints: etcd.endpoints, prefix });
  const plane = await startDataPlane({
    dataDir: dir,
    nbdListen: { host: "127.0.0.1", port: 0 },
    logger,
    nodeName: name,
  });
  const { wrapPlane, wrapStore, ...rest } = options;
  const volumes = new VolumeService({
    store: wrapStore ? wrapStore(store) : store,
    dataPlane: wrapPlane ? wrapPlane(plane) : plane,
    logger,
    nodeName: name,
    clusterMode: true,
    ...rest,
  });
  // What a registered node has: its record and its liveness key (no lease here).
  await store.put(NODE_PREFIX + name, JSON.stringify({ name }));
  await store.put(aliveKey(name), "{}");
  await volumes.reconcile();
  volumes.startWatching();
  return {
    name,
    dir,
    store,
    plane,
    volumes,
    async setAlive(up) {
      if (up) await store.put(aliveKey(name), "{}");
      else await store.delete(aliveKey(name));
    },
    async close() {
      await volumes.stopWatching();
      await plane.close();
      await store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A ready node for placement (listNodes), with plenty of free space. */
export function readyNode(name: string): NodeInfo {
  const now = new Date().toISOString();
  return {
    name,
    state: "ready",
    reason: "",
    apiAddress: "",
    nbdAddress: "",
    version: "test",
    labels: {},
    capacityBytes: 2 ** 40,
    freeBytes: 2 ** 40,
    volumes: 0,
    startedAt: now,
    lastSeen: now,
  };
}

export const fileSize = (path: string): Promise<number> =>
  Deno.stat(path).then((s) => s.size, () => -1);
