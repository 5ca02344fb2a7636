/**
 * A local cluster for `deno task bench --replicas ...`: one real etcd member and three TLS
 * `ballast serve --etcd` nodes on loopback (node-a makes the cluster CA, the others join with
 * tokens), each with a plaintext local-attach listener for fio and a log file in the run's
 * directory. Nodes can be killed with SIGKILL and started again on their data dirs. (The e2e
 * tests have their own harness in tests/e2e/; scripts/ do not import tests/.)
 * @module
 */

import type { BallastClient, Volume } from "../mod/mod.ts";
import { freePort, type Proc, sleep, spawn, waitForPort } from "./_bench_proc.ts";
import { adminClient, type BenchRun } from "./_bench_run.ts";
import { launchBallast } from "./_bench_servers.ts";

export interface ClusterNode {
  name: string;
  dataDir: string;
  /** Everything the node printed, across restarts. */
  logFile: string;
  proc: Proc;
  api: string;
  /** host:port of the plaintext local-attach listener. */
  nbdLocal: string;
}

export interface ClusterOptions {
  nodes?: number;
  leaseTtl?: string;
  resyncRate?: string;
  /** `serve --crash-detection` (default: the node's default, on). */
  crashDetection?: "on" | "off";
}

async function startEtcd(run: BenchRun): Promise<string> {
  const client = freePort();
  const peer = freePort();
  const url = `http://127.0.0.1:${client}`;
  const proc = spawn(
    "etcd",
    "etcd",
    [
      "--name=m0",
      `--data-dir=${run.dir}/etcd`,
      `--listen-client-urls=${url}`,
      `--advertise-client-urls=${url}`,
      `--listen-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
      `--initial-cluster=m0=http://127.0.0.1:${peer}`,
      "--initial-cluster-state=new",
      "--log-level=warn",
      "--logger=zap",
    ],
    {},
    `${run.dir}/etcd.log`,
  );
  run.defer(() => proc.stop());
  await waitForPort(proc, client);
  for (let i = 0;; i++) {
    const out = await new Deno.Command("etcdctl", {
      args: [`--endpoints=${url}`, "endpoint", "health", "--command-timeout=2s"],
      stdout: "null",
      stderr: "null",
    }).output();
    if (out.success) return url;
    if (i > 100) throw new Error("etcd did not become healthy within 10 s");
    await sleep(100);
  }
}

export class BenchCluster {
  readonly nodes = new Map<string, ClusterNode>();
  readonly #run: BenchRun;
  readonly #etcd: string;
  readonly #opts: ClusterOptions;
  readonly #clients = new Map<string, BallastClient>();

  private constructor(run: BenchRun, etcd: string, opts: ClusterOptions) {
    this.#run = run;
    this.#etcd = etcd;
    this.#opts = opts;
    run.defer(async () => {
      for (const c of this.#clients.values()) c.close();
      await Promise.all([...this.nodes.values()].map((n) => n.proc.stop()));
    });
  }

  static async start(run: BenchRun, opts: ClusterOptions = {}): Promise<BenchCluster> {
    const etcd = await startEtcd(run);
    const c = new BenchCluster(run, etcd, opts);
    const names = Array.from(
      { length: opts.nodes ?? 3 },
      (_, i) => `node-${String.fromCharCode(97 + i)}`,
    );
    await c.start(names[0]);
    for (const name of names.slice(1)) {
      const { token } = await c.client().createJoinToken();
      await c.start(name, ["--join", token]);
    }
    return c;
  }

  /** Starts node `name` (again, on its data dir, when it ran before). */
  async start(name: string, extra: string[] = []): Promise<ClusterNode> {
    const dataDir = `${this.#run.dir}/${name}`;
    const logFile = `${this.#run.dir}/${name}.log`;
    const b = await launchBallast(name, dataDir, [
      "--etcd",
      this.#etcd,
      "--node-name",
      name,
      // The default lease TTL (10 s): a short one flaps when the two cores are saturated.
      ...(this.#opts.leaseTtl ? ["--node-lease-ttl", this.#opts.leaseTtl] : []),
      "--peer-listen",
      "127.0.0.1:0",
      "--nbd-local-listen",
      "127.0.0.1:0",
      ...(this.#opts.resyncRate ? ["--resync-rate", this.#opts.resyncRate] : []),
      ...(this.#opts.crashDetection ? ["--crash-detection", this.#opts.crashDetection] : []),
      ...extra,
    ], { logFile, readyTimeoutMs: 60_000 });
    if (!b.nbdLocal) throw new Error(`${name} logged no local-attach listener`);
    const node = { name, dataDir, logFile, proc: b.proc, api: b.api, nbdLocal: b.nbdLocal };
    this.nodes.set(name, node);
    this.#clients.get(name)?.close();
    this.#clients.delete(name);
    return node;
  }

  /** SIGKILLs node `name` and waits for it to be gone. */
  async kill(name: string): Promise<void> {
    const n = this.nodes.get(name)!;
    try {
      n.proc.child.kill("SIGKILL");
    } catch { /* gone */ }
    await n.proc.stop();
  }

  /**
   * An admin API client (node-a's admin certificate, the cluster CA) of node `via`, or of
   * the first node that is running.
   */
  client(via?: string): BallastClient {
    const name = via ?? [...this.nodes.values()].find((n) => !n.proc.exitStatus())?.name;
    if (!name) throw new Error("no node is running");
    let c = this.#clients.get(name);
    if (!c) {
      const first = [...this.nodes.values()][0];
      c = adminClient(this.nodes.get(name)!.api, first.dataDir);
      this.#clients.set(name, c);
    }
    return c;
  }

  /** nbd:// URI of `volume` on its master's plaintext local listener. */
  localUri(v: Volume): string {
    return `nbd://${this.nodes.get(v.master)!.nbdLocal}/${v.name}`;
  }

  /** Process ids of the running nodes. */
  pids(): number[] {
    return [...this.nodes.values()].filter((n) => !n.proc.exitStatus()).map((n) =>
      n.proc.child.pid
    );
  }

  /**
   * Creates `name` and waits until every member is in sync and its master answers NBD on
   * the local listener; returns the volume then.
   */
  async createVolume(name: string, sizeBytes: number, replicas: number): Promise<Volume> {
    await this.client().createVolume({ name, size: sizeBytes, replicas });
    let v: Volume | undefined;
    await until(`volume ${name} in sync on ${replicas + 1} member(s)`, 60_000, async () => {
      v = await this.client().getVolume(name);
      return v.state === "ready" && (replicas === 0 || (v.inSync?.length ?? 0) === replicas + 1);
    });
    await until(`volume ${name} served by ${v!.master}`, 30_000, async () => {
      const out = await new Deno.Command("nbdinfo", {
        args: ["--size", this.localUri(v!)],
        stdout: "null",
        stderr: "null",
      }).output();
      return out.success;
    });
    return v!;
  }
}

/** Polls `probe` every 200 ms until it is true; throws naming `what` after `timeoutMs`. */
export async function until(
  what: string,
  timeoutMs: number,
  probe: () => Promise<boolean> | boolean,
): Promise<number> {
  const t0 = performance.now();
  let last = "";
  for (;;) {
    try {
      if (await probe()) return performance.now() - t0;
    } catch (err) {
      last = (err as Error).message;
    }
    if (performance.now() - t0 > timeoutMs) {
      throw new Error(`${what}: not within ${timeoutMs / 1000} s${last ? ` (last: ${last})` : ""}`);
    }
    await sleep(200);
  }
}
