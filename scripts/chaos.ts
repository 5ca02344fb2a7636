// deno-lint-ignore-file no-console
/**
 * `deno task chaos`: faults injected at random into a running cluster while a checking client
 * writes and reads through a node that holds no copy (attach anywhere), then every copy is
 * compared. A soak for what the tests check one scenario at a time: no acknowledged write is
 * lost or overtaken, no read is stale, the client never sees an error while an in-sync member
 * is left, and every member ends with the same data.
 *
 *   deno task chaos [--rounds 10] [--seed N] [--lease-ttl 5] [--crash-detection on|off]
 *                   [--faults kill-master,stop-master,kill-replica,stop-replica,bounce-master]
 *                   [--json FILE] [--dir DIR] [--keep]
 *
 * The cluster is scripts/_bench_cluster.ts (one etcd, four TLS nodes on loopback); the volume
 * has 2 replicas, so three nodes hold a copy and the fourth forwards. Each round waits until
 * all three members are in sync, lets the client run for 2 s, and then applies one fault to
 * the member it picks: `kill-master` (SIGKILL, then started again), `stop-master` (SIGSTOP
 * until another member is master, then SIGCONT), `kill-replica` (SIGKILL, 2 s of writes
 * without it, started again), `stop-replica` (SIGSTOP for the lease TTL plus 2 s),
 * `bounce-master` (SIGKILL and started again at once: with crash detection off and a lease
 * longer than a start, it comes back as master at the same epoch, the path of docs/CLUSTER.md
 * "A master process restarted at the same epoch"; otherwise a member may take over first,
 * and either must hold; it is not in the default list). The client
 * is CHECKER_PY below. Exit status: 0 when every check held, 1 when one did not
 * (the run's directory, with every node's log, is then kept), 2 for bad arguments.
 * @module
 */

import { parseArgs } from "node:util";
import { haveTool, sleep } from "./_bench_proc.ts";
import { median } from "./_bench_report.ts";
import { BenchCluster, until } from "./_bench_cluster.ts";
import { BenchRun } from "./_bench_run.ts";
import { wholeNumber } from "./flags.ts";
import { unendedResyncs } from "../control/events/mod.ts";

/**
 * The checking client: a python3-libnbd program that writes and reads 4 KiB blocks through one
 * NBD connection and checks every answer against what was acknowledged, the way a
 * linearizability checker would for a register per block.
 *
 * Block b at generation g holds the 8 bytes (b, g) repeated 512 times, so a torn, misplaced
 * or stale block is recognised. At most one request per block is in flight, so after every
 * acknowledged write of b, a read of b must return exactly that generation: an older one is a
 * lost or overtaken write, anything else is corruption. Any error reply, any wrong read, a
 * closed connection: the program prints `{"violation": ...}` or `{"error": ...}` and exits 2
 * or 3. At the stop file it drains its requests, sends FLUSH, reads every block it wrote
 * back, and prints `{"done": ...}` with its counts. Gaps of more than 0.3 s between two
 * completions are printed as `{"start": t0, "end": t1}` (Unix seconds): the pauses.
 *
 *   python3 -c CHECKER_PY URI STOP_FILE BLOCKS QUEUE_DEPTH SEED
 */

export const CHECKER_PY = `
import sys, os, time, json, random, struct
import nbd

uri, stop = sys.argv[1], sys.argv[2]
blocks, qd, seed = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
BS = 4096
rnd = random.Random(seed)
acked = [0] * blocks      # last acknowledged generation of each block (0: zeroes)
busy = {}                 # block -> (cookie, kind, generation, buffer)
writes = reads = 0
last = time.time()

def say(**kv):
    print(json.dumps(kv), flush=True)

def pattern(b, g):
    return struct.pack(">II", b, g) * (BS // 8)

def generation(b, data):
    if data == bytes(BS):
        return 0
    bb, g = struct.unpack(">II", data[:8])
    if bb != b or data != pattern(bb, g):
        raise ValueError("block %d holds neither zeroes nor a whole block of its own (%r)" % (b, data[:16]))
    return g

def check(b, data, when):
    try:
        g = generation(b, data)
    except ValueError as e:
        say(violation="%s: %s" % (when, e))
        sys.exit(2)
    if g != acked[b]:
        say(violation="%s: block %d read generation %d, last acknowledged %d" % (when, b, g, acked[b]))
        sys.exit(2)

h = nbd.NBD()
h.connect_uri(uri)
say(connected=h.get_size())
try:
    while not os.path.exists(stop) or busy:
        while len(busy) < qd and not os.path.exists(stop):
            b = rnd.randrange(blocks)
            if b in busy:
                continue
            if rnd.random() < 0.75:
                g = acked[b] + 1
                buf = nbd.Buffer.from_bytearray(bytearray(pattern(b, g)))
                busy[b] = (h.aio_pwrite(buf, b * BS), "w", g, buf)
            else:
                buf = nbd.Buffer(BS)
                busy[b] = (h.aio_pread(buf, b * BS), "r", 0, buf)
        h.poll(1000)
        for b, (cookie, kind, g, buf) in list(busy.items()):
            if not h.aio_command_completed(cookie):
                continue
            del busy[b]
            now = time.time()
            if now - last > 0.3:
                say(start=last, end=now)
            last = now
            if kind == "w":
                acked[b] = g
                writes += 1
            else:
                check(b, buf.to_bytearray(), "read")
                reads += 1
    h.flush()
    for b in range(blocks):
        check(b, h.pread(BS, b * BS), "final read")
except nbd.Error as e:
    say(error="%s (%s)" % (e.string, e.errno))
    sys.exit(3)
say(done=True, writes=writes, reads=reads, verified=blocks)
`;

const USAGE = `usage: deno task chaos [options]
  --rounds N       faults to inject, one per round (default 10)
  --seed N         seed of the fault and block choices (default: random, printed)
  --lease-ttl S    the nodes' --node-lease-ttl in seconds (default 5)
  --crash-detection on|off
                   the nodes' --crash-detection (default on)
  --faults LIST    comma-separated, chosen from at random each round (default: the first four):
                   kill-master, stop-master, kill-replica, stop-replica, bounce-master
                   (SIGKILL and started again at once: with --crash-detection off it comes
                   back at the same epoch)
  --json FILE      also write the results as JSON
  --dir DIR        parent of the run's directory (default: system temp dir)
  --keep           keep the run's directory (kept anyway when a check fails)`;

const FAULTS = [
  "kill-master",
  "stop-master",
  "kill-replica",
  "stop-replica",
  "bounce-master",
] as const;
type Fault = typeof FAULTS[number];
const DEFAULT_FAULTS: Fault[] = ["kill-master", "stop-master", "kill-replica", "stop-replica"];
const VOLUME = "chaos";
/** Blocks of 4 KiB the client uses (16 MiB of the 64 MiB volume: blocks are rewritten often). */
const BLOCKS = 4096;
/** Each member must be back in sync within this; a fault must be absorbed within RECOVER_MS. */
const SYNC_MS = 180_000;
const RECOVER_MS = 90_000;

interface Options {
  rounds: number;
  seed: number;
  leaseTtlS: number;
  crashDetection: "on" | "off";
  faults: Fault[];
  json?: string;
  dir?: string;
  keep: boolean;
}

interface Round {
  fault: Fault;
  node: string;
  /** When the fault began (Unix ms). */
  at: number;
  /** From the fault to the client's next completed request, when it paused (ms). */
  pauseMs: number;
  /** From the fault to all three members in sync again (ms). */
  healedMs: number;
  /** The same master at the same epoch after the fault. */
  sameEpoch: boolean;
}

function parse(): Options | undefined {
  try {
    const { values } = parseArgs({
      args: Deno.args,
      options: {
        rounds: { type: "string", default: "10" },
        seed: { type: "string" },
        "lease-ttl": { type: "string", default: "5" },
        "crash-detection": { type: "string", default: "on" },
        faults: { type: "string", default: DEFAULT_FAULTS.join(",") },
        json: { type: "string" },
        dir: { type: "string" },
        keep: { type: "boolean", default: false },
        help: { type: "boolean", short: "h", default: false },
      },
    });
    if (values.help) {
      console.log(USAGE);
      Deno.exit(0);
    }
    const faults = values.faults.split(",").map((f) => f.trim()).filter((f) => f !== "");
    const unknown = faults.filter((f) => !(FAULTS as readonly string[]).includes(f));
    const crash = values["crash-detection"];
    if (crash !== "on" && crash !== "off") {
      throw new Error(`--crash-detection: "on" or "off", not "${crash}"`);
    }
    if (unknown.length > 0 || faults.length === 0) {
      throw new Error(`--faults: unknown ${unknown.join(", ") || "(none given)"}`);
    }
    return {
      rounds: wholeNumber("rounds", values.rounds, 1),
      seed: values.seed === undefined
        ? Math.floor(Math.random() * 2 ** 31)
        : wholeNumber("seed", values.seed, 0),
      leaseTtlS: wholeNumber("lease-ttl", values["lease-ttl"], 2),
      crashDetection: crash,
      faults: faults as Fault[],
      json: values.json,
      dir: values.dir,
      keep: values.keep,
    };
  } catch (err) {
    console.error(`chaos: ${(err as Error).message}\n${USAGE}`);
    return undefined;
  }
}

/** A small seeded generator (mulberry32), so that a seed replays the same faults. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The checking client and what it has reported so far. */
class Checker {
  readonly gaps: { start: number; end: number }[] = [];
  failure: string | undefined;
  done: { writes: number; reads: number; verified: number } | undefined;
  readonly #proc: Deno.ChildProcess;
  readonly #stop: string;
  readonly #reading: Promise<void>;

  constructor(uri: string, stop: string, seed: number) {
    this.#stop = stop;
    this.#proc = new Deno.Command("/usr/bin/python3", {
      args: ["-c", CHECKER_PY, uri, stop, String(BLOCKS), "8", String(seed)],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#reading = this.#read();
  }

  async #read(): Promise<void> {
    let text = "";
    for await (const chunk of this.#proc.stdout.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n")) {
        const line = JSON.parse(text.slice(0, nl));
        text = text.slice(nl + 1);
        if (line.violation || line.error) this.failure ??= line.violation ?? line.error;
        else if (line.done) this.done = line;
        else if (line.start !== undefined) this.gaps.push(line);
      }
    }
  }

  /** Throws when the client has failed (a violation, an error, or it exited). */
  alive(): void {
    if (this.failure) throw new Error(`the client: ${this.failure}`);
  }

  /** The client's pause that spans Unix time `at` (ms), or 0. */
  pauseAt(at: number): number {
    const t = at / 1000;
    const g = this.gaps.find((g) => g.start <= t + 0.3 && g.end >= t);
    return g ? Math.round((g.end - t) * 1000) : 0;
  }

  /** Stops it: it drains, flushes and reads back every block. */
  async finish(): Promise<void> {
    await Deno.writeTextFile(this.#stop, "");
    const status = await this.#proc.status;
    await this.#reading;
    const err = new TextDecoder().decode(await new Response(this.#proc.stderr).arrayBuffer());
    this.alive();
    if (!status.success || !this.done) {
      throw new Error(`the client exited ${status.code} without its summary: ${err.trim()}`);
    }
  }
}

async function inject(c: BenchCluster, ck: Checker, fault: Fault, node: string, o: Options) {
  const proc = () => c.nodes.get(node)!.proc.child;
  const watchingVia = [...c.nodes.keys()].find((n) => n !== node)!;
  const master = async () => (await c.client(watchingVia).getVolume(VOLUME)).master;
  const check = async (what: string, probe: () => Promise<boolean>) => {
    await until(what, RECOVER_MS, async () => (ck.alive(), await probe()));
  };
  switch (fault) {
    case "kill-master":
      await c.kill(node);
      await check(`a new master after ${node} was killed`, async () => (await master()) !== node);
      await c.start(node);
      break;
    case "stop-master":
      proc().kill("SIGSTOP");
      try {
        await check(`a new master while ${node} is stopped`, async () => (await master()) !== node);
      } finally {
        proc().kill("SIGCONT");
      }
      break;
    case "bounce-master":
      await c.kill(node);
      await c.start(node);
      break;
    case "kill-replica":
      await c.kill(node);
      await sleep(2_000);
      ck.alive();
      await c.start(node);
      break;
    case "stop-replica":
      proc().kill("SIGSTOP");
      try {
        await sleep((o.leaseTtlS + 2) * 1000);
      } finally {
        proc().kill("SIGCONT");
      }
      ck.alive();
      break;
  }
}

async function inSync(c: BenchCluster, ck: Checker, front: string, what: string): Promise<void> {
  await until(what, SYNC_MS, async () => {
    ck.alive();
    const v = await c.client(front).getVolume(VOLUME);
    return v.inSync?.length === 3 && v.master !== undefined;
  });
}

async function chaos(run: BenchRun, o: Options): Promise<Round[]> {
  const random = seeded(o.seed);
  const c = await BenchCluster.start(run, {
    nodes: 4,
    leaseTtl: `${o.leaseTtlS}s`,
    crashDetection: o.crashDetection,
  });
  const v = await c.createVolume(VOLUME, 64 * 2 ** 20, 2);
  const front = [...c.nodes.keys()].find((n) => !v.members?.includes(n))!;
  const uri = `nbd://${c.nodes.get(front)!.nbdLocal}/${VOLUME}`;
  console.error(`chaos: seed ${o.seed}; members ${v.members?.join(", ")}; client through ${front}`);
  const ck = new Checker(uri, `${run.dir}/chaos-stop`, o.seed);
  const rounds: Round[] = [];
  try {
    for (let i = 1; i <= o.rounds && !run.interrupted; i++) {
      await inSync(c, ck, front, `all three members in sync before round ${i}`);
      await sleep(2_000);
      const now = await c.client(front).getVolume(VOLUME);
      const fault = o.faults[Math.floor(random() * o.faults.length)];
      const replicas = (now.members ?? []).filter((m) => m !== now.master);
      const node = fault.endsWith("master")
        ? now.master!
        : replicas[Math.floor(random() * replicas.length)];
      const at = Date.now();
      console.error(`chaos: round ${i}/${o.rounds}: ${fault} ${node}`);
      await inject(c, ck, fault, node, o);
      await inSync(c, ck, front, `all three members in sync after round ${i} (${fault} ${node})`);
      const after = await c.client(front).getVolume(VOLUME);
      const sameEpoch = after.master === now.master && after.epoch === now.epoch;
      const r = { fault, node, at, pauseMs: 0, healedMs: Date.now() - at, sameEpoch };
      rounds.push(r);
      console.error(
        `chaos: round ${i}: healed in ${r.healedMs} ms` +
          (fault.endsWith("master") ? `; ${sameEpoch ? "same" : "new"} epoch ${after.epoch}` : ""),
      );
    }
  } finally {
    await ck.finish();
  }
  // The client reports a pause when it ends, which may be after its round healed (a master
  // back in sync before the forwarding node's connection to it is): measured now.
  for (const r of rounds) r.pauseMs = ck.pauseAt(r.at);
  rounds.forEach((r, i) => console.error(`chaos: round ${i + 1}: client paused ${r.pauseMs} ms`));
  const report = await c.client(front).verifyVolume(VOLUME, { deep: true });
  const bad = report.members.filter((m) => !m.equal || m.corrupt.length > 0);
  if (!report.ok) {
    throw new Error(
      `the copies differ: ${bad.map((m) => `${m.node} (${m.differingCount} regions)`).join(", ")}`,
    );
  }
  // Every resync the history says started, it also says ended (docs/CLUSTER.md, "Volume events").
  const unended = unendedResyncs(await c.client(front).volumeEvents(VOLUME));
  if (unended.length > 0) {
    throw new Error(
      `the history leaves resyncs without an end: ${
        unended.map((e) => `#${e.seq} ${e.message}`).join("; ")
      }`,
    );
  }
  const d = ck.done!;
  console.log(
    `\nchaos: ${rounds.length} faults (seed ${o.seed}); the client wrote ${d.writes} blocks and ` +
      `read ${d.reads}, every read as acknowledged; ${d.verified} blocks read back at the end; ` +
      `no client error; deep verify: the ${report.members.length} copies are equal; every resync ` +
      `started in the history ended`,
  );
  for (const f of o.faults) {
    const of = rounds.filter((r) => r.fault === f);
    if (of.length === 0) continue;
    const p = of.map((r) => r.pauseMs).sort((a, b) => a - b);
    console.log(
      `  ${f.padEnd(13)} x${of.length}: client pause p50 ${median(p)} ms, max ${p.at(-1)} ms; ` +
        `healed p50 ${median(of.map((r) => r.healedMs))} ms` +
        (f.endsWith("master")
          ? `; at the same epoch after ${of.filter((r) => r.sameEpoch).length}`
          : ""),
    );
  }
  return rounds;
}

async function main(): Promise<number> {
  const o = parse();
  if (!o) return 2;
  for (const t of ["etcd", "etcdctl", "nbdinfo"]) {
    if (!await haveTool(t)) {
      console.error(`chaos: missing ${t}; run scripts/setup.sh`);
      return 1;
    }
  }
  if (!(await Deno.stat("/usr/bin/python3").catch(() => null))) {
    console.error("chaos: the client needs /usr/bin/python3 with python3-libnbd");
    return 1;
  }
  const run = await BenchRun.start({ dir: o.dir, keep: true });
  let ok = false;
  try {
    const rounds = await chaos(run, o);
    ok = true;
    if (o.json) {
      const out = { date: new Date().toISOString(), options: o, rounds };
      await Deno.writeTextFile(o.json, JSON.stringify(out, null, 2) + "\n");
    }
  } catch (err) {
    console.error(`chaos: FAILED: ${(err as Error).message}\nchaos: logs kept in ${run.dir}`);
  } finally {
    await run.close();
    if (ok && !o.keep) await Deno.remove(run.dir, { recursive: true }).catch(() => {});
  }
  return ok ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main());
