/** The bench's pure helpers: how connections are spread over volumes, metric parsing. */
import { assertEquals } from "../_assert.ts";
import {
  cpuSeconds,
  fioCpuSeconds,
  JOBS,
  MIB,
  spread,
  threadCpuSeconds,
} from "../../scripts/_bench_fio.ts";
import { metricValue } from "../../scripts/_bench_run.ts";

const job = (id: string) => JOBS.find((j) => j.id === id)!;
const uris = ["u0", "u1", "u2", "u3"];

Deno.test("spread() puts connection i on volume i mod n, random jobs on the whole volume", () => {
  const t = spread(job("randwrite-4k"), 8, uris, 256 * MIB);
  assertEquals(t.map((x) => x.uri), [...uris, ...uris]);
  assertEquals(t.every((x) => x.offsetBytes === 0 && x.sizeBytes === 256 * MIB), true);
});

Deno.test("spread() splits a volume between the sequential streams that share it", () => {
  const t = spread(job("seqwrite-1m"), 8, uris, 256 * MIB);
  assertEquals(t.filter((x) => x.uri === "u1").map((x) => [x.offsetBytes, x.sizeBytes]), [
    [0, 128 * MIB],
    [128 * MIB, 128 * MIB],
  ]);
});

Deno.test("spread() with fewer connections than volumes uses the first volumes whole", () => {
  const table: [number, string[]][] = [[1, ["u0"]], [3, ["u0", "u1", "u2"]]];
  for (const [conns, expected] of table) {
    const t = spread(job("seqread-1m"), conns, uris, 64 * MIB);
    assertEquals(t.map((x) => x.uri), expected);
    assertEquals(t.every((x) => x.offsetBytes === 0 && x.sizeBytes === 64 * MIB), true);
  }
});

Deno.test("spread() keeps uneven shares 1 MiB aligned and inside the volume", () => {
  const t = spread(job("seqwrite-1m"), 3, ["u0"], 100 * MIB);
  assertEquals(t.map((x) => [x.offsetBytes / MIB, x.sizeBytes / MIB]), [[0, 33], [33, 33], [
    66,
    33,
  ]]);
});

Deno.test("metricValue() reads an unlabelled series and gives NaN when it is absent", () => {
  const text =
    "# HELP ballast_data_workers x\nballast_data_workers 2\nballast_data_workers_max 2\n";
  assertEquals(metricValue(text, "ballast_data_workers"), 2);
  assertEquals(metricValue(text, "ballast_data_workers_min"), NaN);
});

Deno.test("threadCpuSeconds() reads every thread of a process, within the process's total", () => {
  // Burn some CPU on this (the main) thread, whose id is the process id.
  const until = performance.now() + 50;
  while (performance.now() < until) Math.sqrt(Math.random());
  const threads = threadCpuSeconds(Deno.pid);
  const total = cpuSeconds(Deno.pid);
  assertEquals(threads.get(Deno.pid)! > 0, true);
  assertEquals([...threads.values()].every((s) => s >= 0), true);
  // Threads that ended are in the total only; one clock tick of slack per thread, as the
  // total is read after the threads.
  const sum = [...threads.values()].reduce((a, b) => a + b, 0);
  assertEquals(sum <= total + threads.size * 0.01, true);
});

Deno.test("bench:tracking runs on a small copy and prints both figures; bad input exits 2", async () => {
  const script = new URL("../../scripts/micro/tracking.ts", import.meta.url).pathname;
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), { args: ["run", "-A", script, ...args] }).output();
  const ok = await run(["--size-mib", "8", "--writes", "5000", "--rounds", "1"]);
  const out = new TextDecoder().decode(ok.stdout);
  assertEquals(ok.code, 0, new TextDecoder().decode(ok.stderr));
  assertEquals(/tracking \(enter \+ leave\) +\d+ ns per write/.test(out), true, out);
  assertEquals(/pwrite of the same block +\d+ ns per write/.test(out), true, out);
  const bad = await run(["--writes", "0"]);
  assertEquals(bad.code, 2);
  assertEquals(new TextDecoder().decode(bad.stderr).includes("--writes must be"), true);
});

Deno.test("fioCpuSeconds(): fio's usr + sys percent of the group's summed job run time", () => {
  // Two job sections of 4 s each (job_runtime 8061 ms), 3.2% user and 57.4% system.
  const secs = fioCpuSeconds({ usr_cpu: 3.237812, sys_cpu: 57.387421, job_runtime: 8061 });
  assertEquals(Math.round(secs * 1000), 4887);
  assertEquals(Number.isNaN(fioCpuSeconds({ usr_cpu: 1 })), true);
});
