/**
 * The resync rate limit (data/replication/resync.ts RateLimit) on a fake clock: one limit
 * shared by several resyncs caps their sum (`serve --resync-rate` is per node), time spent
 * idle is not saved up for a burst.
 */

import { assertEquals } from "../../_assert.ts";
import { RateLimit } from "../../../data/replication/resync.ts";

const MiB = 2 ** 20;

function fakeClock() {
  const c = {
    t: 0,
    slept: [] as number[],
    now: () => c.t,
    sleep: (ms: number) => {
      c.slept.push(Math.round(ms));
      return Promise.resolve();
    },
  };
  return c;
}

Deno.test("RateLimit: resyncs sharing one limit wait in turn, so together they send at its rate", async () => {
  const clock = fakeClock();
  const shared = new RateLimit(MiB, clock);
  // Two resyncs each take 1 MiB at the same moment: the second waits for the first's second.
  await Promise.all([shared.take(MiB), shared.take(MiB)]);
  assertEquals(clock.slept, [1000, 2000]);
  // Each with a limit of its own (as before): both go after one second, twice the rate.
  const apart = fakeClock();
  await Promise.all([new RateLimit(MiB, apart).take(MiB), new RateLimit(MiB, apart).take(MiB)]);
  assertEquals(apart.slept, [1000, 1000]);
});

Deno.test("RateLimit: idle time is not saved up, and no limit (0) never waits", async () => {
  const clock = fakeClock();
  const limit = new RateLimit(MiB, clock);
  await limit.take(MiB);
  clock.t = 10_000; // idle for 9 s after the first second
  await limit.take(2 * MiB);
  assertEquals(clock.slept, [1000, 2000], "2 MiB after idling still take 2 s");
  const none = fakeClock();
  await new RateLimit(0, none).take(100 * MiB);
  assertEquals(none.slept, []);
});
