/**
 * Shared by the volume-group e2e tests: three real `ballast serve --etcd` processes on
 * one real etcd (loopback, --tls off, 3 s node leases) that can be killed and
 * restarted on their data dirs, plus small probes over the API, the files and NBD.
 * @module
 */

import { assertEquals } from "../_assert.ts";
import { type EtcdCluster, startEtcd } from "../control/_etcd_harness.ts";
import { type BallastProcess, cli, run, startBallast } from "./_harness.ts";

export const LEASE_TTL_S = 3;
/** Generous liveness bound for anything that follows a lease expiry. */
export const LIVENESS_MS = 30_000;

export interface VolumeJson {
  name: string;
  uuid: string;
  master: string;
  epoch: number;
  state: string;
  sizeBytes: number;
  members?: string[];
  inSync?: string[];
  down?: string[];
  phase?: string;
  spreadBy?: string;
}

export interface TestCluster {
  etcd: EtcdCluster;
  nodes: Map<string, BallastProcess>;
  labels: Record<string, string>;
  start(name: string): Promise<BallastProcess>;
  stop(): Promise<void>;
}

export async function startGroupCluster(
  labels: Record<string, string>,
  options: { env?: Record<string, string> } = {},
): Promise<TestCluster> {
  const etcd = await startEtcd();
  const nodes = new Map<string, BallastProcess>();
  const dirs = new Map<string, string>();
  const c: TestCluster = {
    etcd,
    nodes,
    labels,
    async start(name: string) {
      const old = nodes.get(name);
      const p = await startBallast({
        ...(old ? { dataDir: old.dataDir } : {}),
        ...(options.env ? { env: options.env } : {}),
        args: [
          "--etcd",
          etcd.endpoints.join(","),
          "--node-name",
          name,
          "--node-lease-ttl",
          `${LEASE_TTL_S}s`,
          ...(labels[name] ? ["--label", labels[name]] : []),
        ],
      });
      nodes.set(name, p);
      if (!dirs.has(name)) dirs.set(name, p.dataDir);
      return p;
    },
    async stop() {
      for (const p of nodes.values()) await p.stop().catch(() => {});
      for (const d of dirs.values()) await Deno.remove(d, { recursive: true }).catch(() => {});
      await etcd.stop();
    },
  };
  try {
    // Sequential starts: the first run compiles main.ts once for the others.
    for (const name of Object.keys(labels)) await c.start(name);
  } catch (err) {
    await c.stop();
    throw err;
  }
  return c;
}

export async function getVolume(api: string, name: string): Promise<VolumeJson | undefined> {
  const res = await fetch(`${api}/v1/volumes/${name}`);
  if (res.status === 404) {
    await res.body?.cancel();
    return undefined;
  }
  assertEquals(res.status, 200, `GET volume ${name} via ${api}`);
  return await res.json() as VolumeJson;
}

/**
 * The volume copies (`<uuid>.vol`) in a node's data dir. Their sidecars (hash list, activity
 * log, epoch) are left out, but one without its copy is a leak and fails here.
 */
export async function volumeFiles(p: BallastProcess): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(`${p.dataDir}/volumes`)) names.push(e.name);
  const copies = names.filter((n) => n.endsWith(".vol"));
  for (const n of names) {
    const base = n.replace(/\.(hashes|al|epoch)$/, "");
    if (!copies.includes(base)) throw new Error(`${n} is left without its copy in ${p.dataDir}`);
  }
  return copies.sort();
}

export async function eventually<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  ms = LIVENESS_MS,
): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`not within ${ms} ms: ${what}${last ? ` (last error: ${last})` : ""}`);
}

/** nbdinfo of an export: its size, or undefined if the node does not export it. */
export async function nbdSize(p: BallastProcess, name: string): Promise<number | undefined> {
  const res = await run("nbdinfo", ["--size", p.nbdUri(name)], { timeoutMs: 20_000 });
  return res.code === 0 ? Number(res.stdout.trim()) : undefined;
}

/**
 * How node `p` serves volume `name` to an NBD client: "local" from its own copy, "forwarded"
 * to the volume's master (attach anywhere), or undefined when nbdinfo cannot attach. Read off
 * the "client attached" log line of nbdinfo's connection.
 */
export async function servedAs(
  p: BallastProcess,
  name: string,
): Promise<"local" | "forwarded" | undefined> {
  const attached = () =>
    p.logs().split("\n").filter((l) =>
      l.includes('"client attached"') && l.includes(`"volume":"${name}"`)
    );
  const before = attached().length;
  if ((await nbdSize(p, name)) === undefined) return undefined;
  const deadline = Date.now() + 10_000;
  for (;;) {
    const lines = attached();
    if (lines.length > before) {
      return lines.at(-1)!.includes('"forwarded":true') ? "forwarded" : "local";
    }
    if (Date.now() > deadline) throw new Error(`no "client attached" log line for ${name}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function createVolume(api: string, args: string[]) {
  return await cli(["volume", "create", ...args, "-o", "json"], { api });
}

export const tools = ["etcd", "etcdctl", "nbdinfo"];
