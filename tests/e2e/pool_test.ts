/**
 * The data worker pool end to end (data/pool/): connections spread over workers, a worker
 * that dies takes only its own connections and is replaced with no acknowledged write lost,
 * writes are visible across workers at once (one file, one page cache: CAN_MULTI_CONN), and
 * the pool grows under load and shrinks when the load is gone, logging why.
 */

import { assert, assertEquals } from "../_assert.ts";
import { PYTHON, waitFor } from "./_cluster.ts";
import { type BallastProcess, cli, e2eTest, run, startBallast } from "./_harness.ts";

/**
 * Writes 4 KiB blocks with FUA to its own region (argv 3) until told to stop (a file),
 * recording each acknowledged write in a manifest; prints "stopped" if the connection
 * broke, "done" if it stopped when asked.
 */
const WRITER_PY = `
import os, sys, nbd
uri, manifest, region, stop = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
h = nbd.NBD()
h.connect_uri(uri)
out = open(manifest, "w", buffering=1)
base = region * 16 * 1024 * 1024
i = 0
try:
    while not os.path.exists(stop):
        off = base + (i % 4096) * 4096
        data = (("%08d" % i) * 512).encode()
        h.pwrite(data, off, nbd.CMD_FLAG_FUA)
        out.write("%d %d\\n" % (off, i))
        i += 1
    print("done", i)
except nbd.Error as e:
    print("stopped", i, e)
`;

/** Checks that the last acknowledged write to each offset in each manifest is on the volume. */
const VERIFY_PY = `
import sys, nbd
h = nbd.NBD()
h.connect_uri(sys.argv[1])
bad = 0
n = 0
for path in sys.argv[2:]:
    last = {}
    for line in open(path):
        off, i = map(int, line.split())
        last[off] = i
    for off, i in last.items():
        n += 1
        if h.pread(4096, off) != (("%08d" % i) * 512).encode():
            bad += 1
print("bad", bad, "of", n)
`;

async function metric(b: BallastProcess, name: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${b.api}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = /^([^\s{]+)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (m && m[1] === name) out.set(m[2] ?? "", Number(m[3]));
  }
  return out;
}

async function lines(path: string): Promise<number> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter((l) => l.trim()).length;
  } catch {
    return 0;
  }
}

/**
 * Four writers on two workers, one worker killed: its two clients see their connection end
 * (libnbd's error), the others go on, and every acknowledged write is there after a restart.
 * `unix`: the clients attach through the local Unix socket (a descriptor the dead worker held
 * stayed open there, and its clients waited for ever).
 */
async function workerCrash(unix: boolean): Promise<void> {
  const tmp = await Deno.makeTempDir({ prefix: "ballast-pool-crash-" });
  const b = await startBallast({
    dataDir: `${tmp}/data`,
    args: ["--data-workers", "2"],
    env: { BALLAST_DEBUG_HOOKS: "1" },
  });
  let b2: BallastProcess | undefined;
  try {
    const made = await cli(["volume", "create", "v", "--size", "128MiB"], { api: b.api });
    assertEquals(made.code, 0, made.stderr);
    const stop = `${tmp}/stop`;
    const uri = unix ? `nbd+unix:///v?socket=${b.dataDir}/nbd.sock` : b.nbdUri("v");
    const writers = [0, 1, 2, 3].map((i) =>
      run(PYTHON, ["-c", WRITER_PY, uri, `${tmp}/m${i}`, String(i), stop], {
        timeoutMs: 120_000,
      })
    );
    for (let i = 0; i < 4; i++) {
      await waitFor(`writer ${i} under way`, async () => await lines(`${tmp}/m${i}`) >= 50, {
        timeoutMs: 60_000,
        everyMs: 50,
      });
    }
    const perWorker = await metric(b, "ballast_data_worker_connections");
    assertEquals([...perWorker.values()].sort(), [2, 2], "4 clients on 2 workers, 2 each");

    Deno.kill(b.pid, "SIGUSR2"); // the debug hook: the busiest worker throws
    await waitFor("the dead worker replaced", async () => {
      return (await metric(b, "ballast_data_workers_replaced_total")).get("") === 1;
    }, { timeoutMs: 30_000, everyMs: 100 });
    // Survivors keep writing: each moves on by 100 more acknowledged writes.
    const before = await Promise.all([0, 1, 2, 3].map((i) => lines(`${tmp}/m${i}`)));
    await waitFor("two writers keep going", async () => {
      const now = await Promise.all([0, 1, 2, 3].map((i) => lines(`${tmp}/m${i}`)));
      return now.filter((n, i) => n >= before[i] + 100).length >= 2;
    }, { timeoutMs: 60_000, everyMs: 100 });
    // A new connection is served (by either worker).
    assertEquals((await run("nbdinfo", ["--size", b.nbdUri("v")])).stdout.trim(), "134217728");
    await Deno.writeTextFile(stop, "");
    const outcomes = (await Promise.all(writers)).map((r) => r.stdout.trim().split(" ")[0]);
    assertEquals(
      outcomes.slice().sort(),
      ["done", "done", "stopped", "stopped"],
      `only the dead worker's two clients lose their connection: ${outcomes}`,
    );
    assert(await b.logged(/data worker \d died/), "the death is logged with its reason");
    assertEquals((await metric(b, "ballast_data_workers")).get(""), 2, "back to 2 workers");

    // Every write acknowledged with FUA, on either worker, is there after a restart.
    const dataDir = b.dataDir;
    assertEquals((await b.stop()).code, 0);
    b2 = await startBallast({ dataDir, args: ["--data-workers", "2"] });
    const v = await run(PYTHON, [
      "-c",
      VERIFY_PY,
      b2.nbdUri("v"),
      ...[0, 1, 2, 3].map((i) => `${tmp}/m${i}`),
    ]);
    assertEquals(v.code, 0, v.stderr);
    assert(v.stdout.startsWith("bad 0 of "), v.stdout);
  } finally {
    if (!b.exited()) await b.stop();
    await b2?.stop();
    await Deno.remove(tmp, { recursive: true });
  }
}

e2eTest(
  "a data worker that dies takes only its own connections: the pool replaces it, the other clients carry on, no acknowledged write is lost",
  { tools: [PYTHON] },
  () => workerCrash(false),
);

e2eTest(
  "a data worker that dies: its clients on the Unix socket see their connection end too (not a hang)",
  { tools: [PYTHON] },
  () => workerCrash(true),
);

e2eTest(
  "writes acknowledged on one worker are read at once through a connection on another; a FLUSH on either covers them; stats add up across workers",
  { tools: [PYTHON] },
  async () => {
    const b = await startBallast({ args: ["--data-workers", "2"] });
    try {
      const made = await cli(["volume", "create", "v", "--size", "64MiB"], { api: b.api });
      assertEquals(made.code, 0, made.stderr);
      // Two handles in one script: placement puts them on different workers.
      const script = `
import sys, nbd
a = nbd.NBD(); a.connect_uri(sys.argv[1])
b = nbd.NBD(); b.connect_uri(sys.argv[1])
for i in range(256):
    a.pwrite(bytes([i % 251]) * 4096, i * 4096)
b.flush()
ok = all(b.pread(4096, i * 4096) == bytes([i % 251]) * 4096 for i in range(256))
for i in range(256):
    b.pwrite(bytes([7]) * 4096, (256 + i) * 4096)
a.flush()
ok = ok and all(a.pread(4096, (256 + i) * 4096) == bytes([7]) * 4096 for i in range(256))
print("ok" if ok else "mismatch")
`;
      const out = await run(PYTHON, ["-c", script, b.nbdUri("v")], { timeoutMs: 60_000 });
      assertEquals(out.stdout.trim(), "ok", out.stderr);
      // Both connections counted, whichever worker served them.
      const ops = await metric(b, "ballast_volume_ops_total");
      assertEquals(ops.get('{volume="v",op="write"}'), 512);
      assert((ops.get('{volume="v",op="read"}') ?? 0) >= 512, "reads counted on both workers");
      assertEquals(ops.get('{volume="v",op="flush"}'), 2);
      const perWorker = await metric(b, "ballast_data_worker_connections");
      assertEquals(perWorker.size, 2, "two workers");
    } finally {
      await b.stop();
    }
  },
);

e2eTest(
  "the pool grows when its workers are busy and shrinks when the load is gone, logging each resize with its reason",
  { tools: ["fio"] },
  async () => {
    const b = await startBallast({
      args: ["--data-workers", "1..2"],
      env: {
        BALLAST_DEBUG_HOOKS: "1",
        BALLAST_DEBUG_POOL_TIMINGS: "grow=1000,shrink=2000,cooldown=1000",
      },
    });
    try {
      const made = await cli(["volume", "create", "v", "--size", "256MiB"], { api: b.api });
      assertEquals(made.code, 0, made.stderr);
      assertEquals((await metric(b, "ballast_data_workers")).get(""), 1, "starts with 1");
      // Load one worker until the pool grows (or 60 s pass: then the test fails).
      const fio = new Deno.Command("fio", {
        stdout: "null",
        stderr: "null",
        args: [
          "--name=load",
          "--ioengine=nbd",
          `--uri=${b.nbdUri("v")}`,
          // 1 MiB writes keep a worker's thread busy (copies, pwrite); 4k I/O on two cores
          // leaves most of the CPU to fio itself. Four client processes against the one
          // worker: whatever share of the cores each gets on a loaded machine, the worker
          // always has requests waiting, which is what "busy" means (sizing.ts busyRatio()).
          "--rw=write",
          "--bs=1m",
          "--iodepth=8",
          "--numjobs=4",
          "--time_based",
          "--runtime=60",
          "--size=256m",
          "--group_reporting",
        ],
      }).spawn();
      await waitFor("the pool grows", () => b.logs().includes("data worker pool grows"), {
        timeoutMs: 60_000,
        everyMs: 200,
      });
      assertEquals((await metric(b, "ballast_data_workers")).get(""), 2);
      fio.kill("SIGTERM");
      await fio.status;
      await waitFor("the pool shrinks", () => b.logs().includes("data worker pool shrinks"), {
        timeoutMs: 60_000,
        everyMs: 200,
      });
      await waitFor(
        "back to 1 worker",
        async () => (await metric(b, "ballast_data_workers")).get("") === 1,
        { timeoutMs: 30_000, everyMs: 200 },
      );
      const resizes = await metric(b, "ballast_data_pool_resizes_total");
      assertEquals(resizes.get('{direction="grow"}'), 1);
      assertEquals(resizes.get('{direction="shrink"}'), 1);
      const grow = b.logs().split("\n").find((l) => l.includes("data worker pool grows"))!;
      assert(/busy on average/.test(grow), `the reason is given: ${grow}`);
    } finally {
      await b.stop();
    }
  },
);
