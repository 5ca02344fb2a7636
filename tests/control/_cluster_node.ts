/**
 * A cluster-mode node for control-plane tests: VolumeService over a real etcd (its own
 * key prefix) and the real data plane on a temp dir, with the record watch running.
 * Several of them on one etcd make a small cluster without processes.
 * @module
 */

import { EtcdStateStore } from "../../control/etcd_store.ts";
import { silentLogger } from "../../control/log.ts";
import { VolumeService } from "../../control/volumes.ts";
import { startDataPlane } from "../../data/mod.ts";
import type { NodeInfo } from "../../mod/types.ts";
import type { EtcdCluster } from "./_etcd_harness.ts";

export interface ClusterNode {
  name: string;
  dir: string;
  store: EtcdStateStore;
  plane: Awaited<ReturnType<typeof startDataPlane>>;
  volumes: VolumeService;
  close(): Promise<void>;
}

export async function startClusterNode(
  etcd: EtcdCluster,
  prefix: string,
  name: string,
  options: { listNodes?: () => Promise<NodeInfo[]>; groupCreateWaitMs?: number } = {},
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
  const volumes = new VolumeService({
    store,
    dataPlane: plane,
    logger,
    nodeName: name,
    clusterMode: true,
    ...options,
  });
  await volumes.reconcile();
  volumes.startWatching();
  return {
    name,
    dir,
    store,
    plane,
    volumes,
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

export async function eventually(what: string, check: () => Promise<boolean>, ms = 5_000) {
  const deadline = Date.now() + ms;
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const fileSize = (path: string): Promise<number> =>
  Deno.stat(path).then((s) => s.size, () => -1);
