/** The main thread / data worker messages and the thread CPU readings: checks at the edges. */
import {
  countCpuList,
  currentThreadId,
  parseCpuSeconds,
  parseSchedstat,
  threadCpuSeconds,
  threadTimes,
} from "../../../data/pool/_cpu.ts";
import {
  checkFromWorker,
  checkToWorker,
  POOL_PROTOCOL_VERSION,
} from "../../../data/pool/protocol.ts";
import { assert, assertEquals, assertThrows } from "../../_assert.ts";

Deno.test("checkToWorker() refuses another protocol version, unknown types and a serve without fd", () => {
  assertThrows(
    () => checkToWorker({ type: "init", version: POOL_PROTOCOL_VERSION + 1 }),
    Error,
    "protocol",
  );
  assertThrows(() => checkToWorker({ type: "nope" }), Error, "unknown message");
  assertThrows(() => checkToWorker(null), Error, "unknown message");
  assertThrows(() => checkToWorker({ type: "serve", fd: "3" }), Error, "fd");
  assertEquals(checkToWorker({ type: "shutdown" }), { type: "shutdown" });
  assertThrows(() => checkFromWorker({ type: "hello" }), Error, "unknown message");
  assertEquals(checkFromWorker({ type: "stopped" }), { type: "stopped" });
});

Deno.test("parseCpuSeconds() reads utime + stime even when the thread name has spaces and parens", () => {
  const line = "4242 (ballast data (1)) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 1 0 100 0 0";
  assertEquals(parseCpuSeconds(line), 2);
  assertEquals(parseCpuSeconds("garbage"), undefined);
});

Deno.test("parseSchedstat() reads run and run-queue nanoseconds as seconds", () => {
  assertEquals(parseSchedstat("1500000000 250000000 42\n"), { run: 1.5, wait: 0.25 });
  assertEquals(parseSchedstat(""), undefined);
  assertEquals(parseSchedstat("x y z"), undefined);
});

Deno.test("this thread's id and CPU time can be read; countCpuList() counts ranges", () => {
  const tid = currentThreadId();
  assert(tid > 0, "gettid through FFI");
  const cpu = threadCpuSeconds(tid);
  assert(cpu !== undefined && cpu >= 0, `cpu ${cpu}`);
  const times = threadTimes(tid);
  assert(times !== undefined && times.run > 0 && times.wait >= 0, JSON.stringify(times));
  assertEquals(countCpuList("0-3,8,10-11"), 7);
  assertEquals(countCpuList("0"), 1);
});
