/**
 * A whole cluster on loopback for fault tests: a real 3-member etcd
 * (tests/control/_etcd_harness.ts) and N `ballast serve --etcd <all endpoints>
 * --tls off` processes (tests/e2e/_harness.ts), plus the small probes the fault
 * tests share: node states over the API, a Python libnbd client, timing and a
 * printed report of measured times.
 * @module
 */

import { assertEquals } from "../_assert.ts";
import { type EtcdCluster, startEtcd } from "../control/_etcd_harness.ts";
import { type BallastProcess, cli, run, startBallast } from "./_harness.ts";

/** Debian's python3, which has the libnbd bindings (python3-libnbd). */
export const PYTHON = "/usr/bin/python3";

export interface Cluster {
  etcd: EtcdCluster;
  /** Node names, "node-a", "node-b", ... */
  names: string[];
  /** The running process of node i (replaced by restartNode). */
  node(i: number): BallastProcess;
  /** Starts node i again on its data dir and ports after it was killed or stopped. */
  restartNode(i: number): Promise<BallastProcess>;
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Starts a 3-member etcd and `nodes` Ballast nodes (in parallel) on it. */
export async function startCluster(
  opts: { nodes?: number; leaseTtlSeconds?: number } = {},
): Promise<Cluster> {
  const count = opts.nodes ?? 3;
  const etcd = await startEtcd({ members: 3 });
  const names = Array.from({ length: count }, (_, i) => `node-${String.fromCharCode(97 + i)}`);
  const args = (name: string) => [
    "--etcd",
    etcd.endpoints.join(","),
    "--node-name",
    name,
    ...(opts.leaseTtlSeconds ? ["--node-lease-ttl", `${opts.leaseTtlSeconds}s`] : []),
  ];
  const started = await Promise.allSettled(
    names.map((name) => startBallast({ args: args(name), readyTimeoutMs: 60_000 })),
  );
  const procs = started.map((s) => s.status === "fulfilled" ? s.value : undefined);
  const failed = started.find((s): s is PromiseRejectedResult => s.status === "rejected");
  const stop = async () => {
    await Promise.all(procs.map((p) => p?.stop().catch(() => {})));
    await etcd.stop();
  };
  if (failed) {
    await stop();
    throw failed.reason;
  }
  return {
    etcd,
    names,
    node: (i) => procs[i]!,
    async restartNode(i) {
      procs[i] = await procs[i]!.restart();
      return procs[i]!;
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

export interface NodeRow {
  name: string;
  state: string;
  reason: string;
}

/** GET /v1/nodes as name -> row (throws on a non-200 answer). */
export async function nodeRows(api: string): Promise<Record<string, NodeRow>> {
  const res = await fetch(`${api}/v1/nodes`, { signal: AbortSignal.timeout(15_000) });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`GET ${api}/v1/nodes: ${res.status} ${body}`);
  return Object.fromEntries((body.items as NodeRow[]).map((n) => [n.name, n]));
}

/** `ballast node list -o json` through the CLI. */
export async function cliNodeList(api: string): Promise<NodeRow[]> {
  const res = await cli(["node", "list", "-o", "json"], { api });
  if (res.code !== 0) throw new Error(`node list via ${api}: exit ${res.code}: ${res.stderr}`);
  return (JSON.parse(res.stdout) as { items: NodeRow[] }).items;
}

/**
 * Polls `probe` every `everyMs` until it returns true; resolves with the elapsed ms,
 * or rejects after `timeoutMs` naming `what` and the last probe error.
 */
export async function waitFor(
  what: string,
  probe: () => Promise<boolean> | boolean,
  opts: { timeoutMs: number; everyMs?: number; since?: number },
): Promise<number> {
  const since = opts.since ?? Date.now();
  let last = "";
  while (true) {
    try {
      if (await probe()) return Date.now() - since;
    } catch (err) {
      last = String((err as Error)?.message ?? err);
    }
    if (Date.now() - since > opts.timeoutMs) {
      throw new Error(`${what}: not within ${opts.timeoutMs} ms${last ? ` (last: ${last})` : ""}`);
    }
    await sleep(opts.everyMs ?? 100);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Whether node `from` sees every node of the cluster as ready. */
export async function allReady(c: Cluster, from: number): Promise<boolean> {
  const rows = await nodeRows(c.node(from).api);
  return c.names.every((n) => rows[n]?.state === "ready");
}

export type Expectations = ReturnType<typeof expectations>;

/**
 * Collects failed expectations, printing each as it happens, so that one run of a
 * fault test shows everything that went wrong; `done()` fails the test with all of them.
 */
export function expectations(test: string): {
  check(ok: boolean, what: string): boolean;
  done(): void;
} {
  const failed: string[] = [];
  return {
    check(ok, what) {
      if (!ok) {
        failed.push(what);
        report(test, `FAILED: ${what}`);
      }
      return ok;
    },
    done() {
      assertEquals(failed, [], `${failed.length} expectation(s) failed`);
    },
  };
}

/** Prints a measured figure so that it shows in the test output. */
export function report(test: string, line: string): void {
  // deno-lint-ignore no-console
  console.log(`[${test}] ${line}`);
}

/**
 * A libnbd client in Python. Modes:
 * - fill URI SEED MIB: writes MIB MiB of seeded pseudo-random data from offset 0, flushes;
 * - check URI SEED MIB: reads them back, exit 1 on a difference;
 * - loop URI STOPFILE MIB: until STOPFILE exists, writes random 4-64 KiB blocks in the
 *   first MIB MiB and reads random ranges back against a shadow copy; at the end reads
 *   the whole range back. Prints a JSON summary; exit 1 on any mismatch.
 */
const NBD_PY = String.raw`
import json, os, random, sys, time
import nbd

mode, uri = sys.argv[1], sys.argv[2]
h = nbd.NBD()
h.connect_uri(uri)
if mode in ("fill", "check"):
    seed, mib = int(sys.argv[3]), int(sys.argv[4])
    data = random.Random(seed).randbytes(mib << 20)
    if mode == "fill":
        for off in range(0, len(data), 1 << 20):
            h.pwrite(data[off:off + (1 << 20)], off)
        h.flush()
        print("filled", mib)
    else:
        for off in range(0, len(data), 1 << 20):
            if h.pread(1 << 20, off) != data[off:off + (1 << 20)]:
                print("mismatch at", off)
                sys.exit(1)
        print("checked", mib)
    sys.exit(0)

stop, mib = sys.argv[3], int(sys.argv[4])
size = mib << 20
shadow = bytearray(size)
rng = random.Random(7)
writes = reads = bad = 0
max_op = max_gap = 0.0
last = time.monotonic()
start = last
while not os.path.exists(stop):
    n = rng.randrange(1, 17) * 4096
    off = rng.randrange(0, (size - n) // 4096 + 1) * 4096
    buf = rng.randbytes(n)
    t = time.monotonic()
    h.pwrite(buf, off)
    shadow[off:off + n] = buf
    writes += 1
    roff = rng.randrange(0, (size - 65536) // 4096 + 1) * 4096
    got = h.pread(65536, roff)
    reads += 1
    if got != bytes(shadow[roff:roff + 65536]):
        bad += 1
    now = time.monotonic()
    max_op = max(max_op, now - t)
    max_gap = max(max_gap, now - last)
    last = now
    time.sleep(0.005)
for off in range(0, size, 1 << 20):
    if h.pread(1 << 20, off) != bytes(shadow[off:off + (1 << 20)]):
        bad += 1
h.flush()
print(json.dumps({"writes": writes, "reads": reads, "mismatches": bad,
                  "seconds": round(time.monotonic() - start, 1),
                  "maxOpMs": round(max_op * 1000), "maxGapMs": round(max_gap * 1000)}))
sys.exit(1 if bad else 0)
`;

let scriptPath: string | undefined;

/** Runs the Python libnbd client (see NBD_PY) with `args`. */
export async function nbdPy(args: string[], timeoutMs = 120_000) {
  if (!scriptPath) {
    scriptPath = await Deno.makeTempFile({ prefix: "ballast-nbd-", suffix: ".py" });
    await Deno.writeTextFile(scriptPath, NBD_PY);
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(scriptPath!);
      } catch { /* gone */ }
    });
  }
  return await run(PYTHON, [scriptPath, ...args], { timeoutMs });
}

/** The size nbdinfo reports for an export (a new NBD connection). */
export async function nbdSize(uri: string): Promise<number> {
  const res = await run("nbdinfo", ["--size", uri], { timeoutMs: 15_000 });
  if (res.code !== 0) throw new Error(`nbdinfo --size ${uri}: ${res.stderr}`);
  return Number(res.stdout.trim());
}
