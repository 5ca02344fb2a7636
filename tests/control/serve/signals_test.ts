import { assertEquals } from "../../_assert.ts";
import { SAME_SIGNAL_MS, signalAction } from "../../../control/serve/mod.ts";

Deno.test("signalAction(): the first signal starts the shutdown", () => {
  assertEquals(signalAction(undefined, "SIGINT", 1_000), "shutdown");
  assertEquals(signalAction(undefined, "SIGTERM", 1_000), "shutdown");
});

Deno.test("signalAction(): the same signal again at once is the copy `deno task` passes on", () => {
  const first = { signal: "SIGINT" as const, atMs: 1_000 };
  assertEquals(signalAction(first, "SIGINT", 1_004), "ignore-copy");
  assertEquals(signalAction(first, "SIGINT", 1_000 + SAME_SIGNAL_MS - 1), "ignore-copy");
});

Deno.test("signalAction(): a later or a different second signal exits at once", () => {
  const first = { signal: "SIGINT" as const, atMs: 1_000 };
  assertEquals(signalAction(first, "SIGINT", 1_000 + SAME_SIGNAL_MS), "exit-now");
  assertEquals(signalAction(first, "SIGINT", 5_000), "exit-now");
  assertEquals(signalAction(first, "SIGTERM", 1_001), "exit-now");
});
