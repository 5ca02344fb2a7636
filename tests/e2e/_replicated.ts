/**
 * Shared by the replication e2e tests: a TLS cluster of real `ballast serve --etcd`
 * processes on one real etcd (node-a makes the cluster CA, the others join with tokens),
 * with short leases, that can be killed and restarted on their data dirs; client
 * certificates; and probes of every member's copy of a volume, read from its file.
 * @module
 */

import { assert, assertEquals } from "../_assert.ts";
import { type EtcdCluster, startEtcd } from "../control/_etcd_harness.ts";
import { admin, issue } from "./_cluster_tls.ts";
import { type BallastProcess, run, startBallast } from "./_harness.ts";

export const LEASE_TTL_S = 3;

export interface ReplCluster {
  etcd: EtcdCluster;
  nodes: Map<string, BallastProcess>;
  /** Starts (or restarts on its data dir) node `name`. */
  start(name: string): Promise<BallastProcess>;
  /** A client certificate directory for NBD (admin role: every volume). */
  certDir: string;
  /** nbds:// URI of `volume` at node `name`. */
  uri(name: string, volume: string): string;
  stop(): Promise<void>;
}

export interface VolumeView {
  name: string;
  uuid: string;
  master: string;
  epoch: number;
  inSync?: string[];
  members?: string[];
  phase?: string;
}

export async function startReplCluster(
  names: string[],
  options: {
    env?: Record<string, string>;
    args?: string[];
    /** The etcd endpoints node `name` is given (default: etcd's own), e.g. through a proxy. */
    etcdVia?: (name: string, endpoints: string[]) => string[];
    /** Data directories of some nodes (default: a new temp dir each), e.g. on a small tmpfs. */
    dataDirs?: Record<string, string>;
  } = {},
): Promise<ReplCluster> {
  const etcd = await startEtcd();
  const via = options.etcdVia ?? ((_name: string, endpoints: string[]) => endpoints);
  const nodes = new Map<string, BallastProcess>();
  const dirs = new Map<string, string>(Object.entries(options.dataDirs ?? {}));
  const common = (name: string) => [
    "--etcd",
    via(name, etcd.endpoints).join(","),
    "--node-name",
    name,
    "--node-lease-ttl",
    `${LEASE_TTL_S}s`,
    "--peer-listen",
    "127.0.0.1:0",
    ...(options.args ?? []),
  ];
  const launch = async (name: string, extra: string[] = []) => {
    const old = nodes.get(name);
    const dataDir = old?.dataDir ?? dirs.get(name) ??
      await Deno.makeTempDir({ prefix: `ballast-repl-${name}-` });
    dirs.set(name, dataDir);
    const p = await startBallast({
      tls: true,
      dataDir,
      args: [...common(name), ...extra],
      ...(options.env ? { env: options.env } : {}),
      readyTimeoutMs: 60_000,
    });
    nodes.set(name, p);
    return p;
  };
  const first = await launch(names[0]);
  for (const name of names.slice(1)) {
    const t = await admin(first, ["cluster", "join-token", "-o", "json"]);
    assertEquals(t.code, 0, t.stderr);
    await launch(name, ["--join", (JSON.parse(t.stdout) as { token: string }).token]);
  }
  const cert = await issue(first, "tester", ["--role", "admin"]);
  return {
    etcd,
    nodes,
    certDir: cert.dir,
    start: (name) => launch(name),
    uri(name, volume) {
      const p = nodes.get(name)!;
      return `nbds://${p.nbdHost}:${p.nbdPort}/${volume}?tls-certificates=${cert.dir}`;
    },
    async stop() {
      for (const p of nodes.values()) if (!p.exited()) await p.stop().catch(() => {});
      await etcd.stop();
      for (const d of dirs.values()) await Deno.remove(d, { recursive: true }).catch(() => {});
      await Deno.remove(cert.dir, { recursive: true }).catch(() => {});
    },
  };
}

/** The volume as a member's API shows it. */
export async function volumeOf(c: ReplCluster, via: string, name: string): Promise<VolumeView> {
  const r = await admin(c.nodes.get(via)!, ["volume", "get", name, "-o", "json"]);
  assertEquals(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as VolumeView;
}

/** SHA-256 of a member's copy of `uuid` (read from its file), hex. */
export async function copyDigest(p: BallastProcess, uuid: string): Promise<string> {
  const data = await Deno.readFile(`${p.dataDir}/volumes/${uuid}.vol`);
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return [...d].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Asserts that every listed member's copy of `uuid` holds the same bytes. */
export async function assertCopiesEqual(
  c: ReplCluster,
  uuid: string,
  members: string[],
): Promise<void> {
  const digests = await Promise.all(members.map((m) => copyDigest(c.nodes.get(m)!, uuid)));
  assert(
    digests.every((d) => d === digests[0]),
    `copies differ: ${members.map((m, i) => `${m} ${digests[i].slice(0, 12)}`).join(", ")}`,
  );
}

/**
 * Waits until `volume` answers NBD on its master (a volume is served a moment after `volume
 * create` returns) and returns the volume as node `via`'s API shows it then.
 */
export async function untilServed(
  c: ReplCluster,
  volume: string,
  via = "node-a",
): Promise<VolumeView> {
  let v: VolumeView | undefined;
  const deadline = Date.now() + 30_000;
  for (;;) {
    v = await volumeOf(c, via, volume);
    const r = await run("/usr/bin/python3", [
      "-c",
      "import sys, nbd\nh = nbd.NBD(); h.set_uri_allow_local_file(True)\n" +
      "h.connect_uri(sys.argv[1]); print(h.get_size())",
      c.uri(v.master, volume),
    ]);
    if (r.code === 0) return v;
    if (Date.now() > deadline) throw new Error(`${volume} not served: ${r.stderr}`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

/** nbd:// URI of `volume` on node `p`'s plaintext local-attach listener (from its log). */
export function localUri(p: BallastProcess, volume: string): string {
  const line = p.logs().split("\n").find((l) =>
    l.includes('"msg":"NBD listener started') && l.includes('"tls":false')
  );
  if (!line) throw new Error("the node has no local-attach listener (--nbd-local-listen)");
  return `nbd://${JSON.parse(line).nbd}/${volume}`;
}

/** Prints each node's last warnings and errors (a failed test's context). */
export function dumpWarnings(c: ReplCluster, lines = 25): void {
  for (const [name, p] of c.nodes) {
    const bad = p.logs().split("\n").filter((l) =>
      /"lvl":(40|50|60)/.test(l) || /"msg":"(group|resync|compar)/.test(l)
    ).slice(-lines);
    // deno-lint-ignore no-console
    console.log(`--- ${name}: last ${bad.length} warnings/errors ---\n${bad.join("\n")}`);
  }
}

/**
 * Runs `fn` on a fresh cluster of `names`; on failure prints the nodes' last warnings; always
 * stops it, resuming any node a test left frozen (SIGSTOP) first.
 */
export async function withReplCluster(
  names: string[],
  fn: (c: ReplCluster) => Promise<void>,
  options: { args?: string[] } = {},
): Promise<void> {
  const c = await startReplCluster(names, options);
  try {
    await fn(c);
  } catch (err) {
    dumpWarnings(c);
    throw err;
  } finally {
    for (const p of c.nodes.values()) p.signal("SIGCONT");
    await c.stop();
  }
}

/** Creates volume `name` through node-a with `replicas` replicas; waits until it is served. */
export async function createServed(
  c: ReplCluster,
  name: string,
  size: string,
  replicas: number,
): Promise<VolumeView> {
  const made = await admin(c.nodes.get("node-a")!, [
    "volume",
    "create",
    name,
    "--size",
    size,
    "--replicas",
    String(replicas),
  ]);
  assertEquals(made.code, 0, made.stderr);
  return await untilServed(c, name);
}
