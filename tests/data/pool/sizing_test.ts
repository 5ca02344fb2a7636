/**
 * The pool's sizing rules (data/pool/sizing.ts), pure: when it grows, when it shrinks and
 * which worker goes, the cooldown, and where a new connection lands.
 */
import {
  busyRatio,
  COOLDOWN_MS,
  decide,
  describePool,
  GROW_AFTER_MS,
  initialSizing,
  place,
  SHRINK_AFTER_MS,
  type SizingState,
  type WorkerSample,
} from "../../../data/pool/sizing.ts";
import { assertEquals, assertThrows } from "../../_assert.ts";

const w = (id: number, busy: number, connections: number): WorkerSample => ({
  id,
  busy,
  connections,
});

/** Feeds the same sample every second from `from` to `to` (ms); returns the actions seen. */
function run(s: SizingState, workers: WorkerSample[], from: number, to: number) {
  const actions: { at: number; kind: string; worker?: number }[] = [];
  for (let t = from; t <= to; t += 1000) {
    const r = decide(s, workers, t);
    s = r.state;
    if (r.action.kind !== "none") {
      actions.push({
        at: t,
        kind: r.action.kind,
        ...(r.action.kind === "shrink" ? { worker: r.action.worker } : {}),
      });
    }
  }
  return { state: s, actions };
}

Deno.test("decide() grows one worker once the mean busy ratio stayed high for GROW_AFTER_MS", () => {
  const s = initialSizing(1, 4, -COOLDOWN_MS);
  const busy = [w(1, 0.95, 3)];
  const r = run(s, busy, 0, GROW_AFTER_MS);
  assertEquals(r.actions, [{ at: GROW_AFTER_MS, kind: "grow" }]);
  // Below the threshold nothing happens, however long.
  assertEquals(run(s, [w(1, 0.5, 3)], 0, 60_000).actions, []);
  // A dip resets the clock.
  let st = decide(s, busy, 0).state;
  st = decide(st, [w(1, 0.1, 3)], 1000).state;
  assertEquals(decide(st, busy, 2000).action.kind, "none");
  assertEquals(decide(decide(st, busy, 2000).state, busy, 4000).action.kind, "grow");
});

Deno.test("decide() never grows past max, and waits COOLDOWN_MS between resizes", () => {
  const full = initialSizing(1, 2, -COOLDOWN_MS);
  assertEquals(run(full, [w(1, 1, 1), w(2, 1, 1)], 0, 60_000).actions, []);
  // Just resized: growing again must wait for the cooldown.
  const s = initialSizing(1, 8, 0);
  const r = run(s, [w(1, 1, 1), w(2, 1, 1)], 0, 10_000);
  assertEquals(r.actions.map((a) => a.at), [COOLDOWN_MS, 2 * COOLDOWN_MS]);
});

Deno.test("decide() counts workers starting or leaving: no grow past max with them, none while one starts", () => {
  const s = initialSizing(1, 2, -COOLDOWN_MS);
  const busy = [w(1, 1, 4)];
  const feed = (others: { starting: number; leaving: number }) => {
    let st = s;
    const kinds: string[] = [];
    for (let t = 0; t <= 60_000; t += 1000) {
      const r = decide(st, busy, t, others);
      st = r.state;
      kinds.push(r.action.kind);
    }
    return kinds.filter((k) => k !== "none");
  };
  // A replacement starting (a worker died): its place is taken, and max is 2.
  assertEquals(feed({ starting: 1, leaving: 0 }), []);
  // One retiring still holds its place until it stops.
  assertEquals(feed({ starting: 0, leaving: 1 }), []);
  // Room below max with one starting: wait for it rather than add another.
  let st = initialSizing(1, 4, -COOLDOWN_MS);
  for (let t = 0; t <= 60_000; t += 1000) {
    const r = decide(st, busy, t, { starting: 1, leaving: 0 });
    st = r.state;
    assertEquals(r.action.kind, "none");
  }
  // Without them the same load grows the pool.
  assertEquals(feed({ starting: 0, leaving: 0 })[0], "grow");
});

Deno.test("decide() shrinks only an idle worker, only when the rest can carry the load, and not below min", () => {
  const s = initialSizing(1, 4, -COOLDOWN_MS);
  // Total 0.4 fits in one worker at under 30%? No (0.4 > 0.3): no shrink.
  assertEquals(run(s, [w(1, 0.4, 2), w(2, 0, 0)], 0, 60_000).actions, []);
  // Total 0.2 fits: worker 2 (no connections) goes after SHRINK_AFTER_MS.
  const r = run(s, [w(1, 0.2, 2), w(2, 0, 0)], 0, SHRINK_AFTER_MS);
  assertEquals(r.actions, [{ at: SHRINK_AFTER_MS, kind: "shrink", worker: 2 }]);
  // Every worker holds a connection: none can go, however idle.
  assertEquals(run(s, [w(1, 0, 1), w(2, 0, 1)], 0, 120_000).actions, []);
  // At min: never.
  assertEquals(run(initialSizing(2, 4, 0), [w(1, 0, 0), w(2, 0, 0)], 0, 120_000).actions, []);
});

Deno.test("place() picks the fewest connections, then the least busy, then the lowest id", () => {
  assertEquals(place([]), undefined);
  assertEquals(place([w(1, 0.1, 3), w(2, 0.9, 1)]), 2);
  assertEquals(place([w(1, 0.5, 1), w(2, 0.2, 1)]), 2);
  assertEquals(place([w(3, 0.2, 1), w(2, 0.2, 1)]), 2);
});

Deno.test("initialSizing() refuses bounds that make no pool; describePool() is one line", () => {
  for (const [min, max] of [[0, 1], [2, 1], [1.5, 2]]) {
    assertThrows(() => initialSizing(min, max, 0), RangeError);
  }
  assertEquals(describePool([w(1, 0.8, 4), w(2, 0, 0)]), "2 workers [1: 80% 4c, 2: 0% 0c]");
});

Deno.test("busyRatio() is the share of the time a thread had a core in which it worked", () => {
  const table: [string, number, number, number, number][] = [
    // [case, run s, run-queue wait s, wall s, busy]
    ["idle machine, one core's worth of work", 1, 0, 1, 1],
    ["idle machine, 40% busy", 0.4, 0, 1, 0.4],
    ["starved: always had work, ran 25% of the time", 0.25, 0.75, 1, 1],
    ["starved: light load whose wake-ups wait long", 0.05, 0.45, 1, 0.091],
    ["waited on a run queue the whole interval", 0, 1, 1, 1],
    ["did nothing", 0, 0, 1, 0],
    ["accounting a little past the wall clock", 1.02, 0, 1, 1],
    ["no interval", 0.5, 0, 0, 0],
    ["negative differences (a replaced thread) count as none", -1, -1, 1, 0],
  ];
  for (const [what, run, wait, wall, busy] of table) {
    assertEquals(Math.round(busyRatio(run, wait, wall) * 1000) / 1000, busy, what);
  }
});
