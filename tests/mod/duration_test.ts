import { MAX_DURATION_SECONDS, parseDuration, parseDurationMs } from "../../mod/duration.ts";
import { InvalidArgumentError } from "../../mod/errors.ts";
import { assert, assertEquals, assertThrows } from "../_assert.ts";

Deno.test("parseDuration() reads seconds and s, m, h, d units", () => {
  const cases: Array<[unknown, number]> = [
    [90, 90],
    ["90", 90],
    ["90s", 90],
    ["15m", 900],
    ["12h", 43_200],
    ["30d", 2_592_000],
    [" 30 d ", 2_592_000],
    ["3650d", MAX_DURATION_SECONDS],
    [MAX_DURATION_SECONDS, MAX_DURATION_SECONDS],
  ];
  for (const [value, seconds] of cases) {
    assertEquals(parseDuration(value, "--ttl"), seconds, JSON.stringify(value));
  }
});

Deno.test("parseDuration() refuses zero, fractions, other units and more than 3650 days", () => {
  for (
    const bad of [
      "0",
      0,
      "0s",
      "soon",
      "1.5s",
      "0.01m",
      "1w",
      "-5m",
      "",
      1.5,
      -1,
      "3651d",
      "5000d",
      null,
    ]
  ) {
    const e = assertThrows(() => parseDuration(bad, "--cert-ttl"), InvalidArgumentError);
    assertEquals(e.message.startsWith("invalid --cert-ttl"), true, e.message);
    assertEquals(e.details, { field: "cert-ttl" });
  }
});

Deno.test("parseDuration() takes a fraction that comes to whole seconds (1.5h, .5m, 2.5d)", () => {
  assertEquals(parseDuration("1.5h", "--ttl"), 5400);
  assertEquals(parseDuration(".5m", "--ttl"), 30);
  assertEquals(parseDuration("2.5d", "--ttl"), 216_000);
  assertEquals(parseDuration("1.1h", "--ttl"), 3960);
});

Deno.test("parseDuration() with a lower bound than 3650 days names that bound (join tokens: 7d)", () => {
  const max = { seconds: 7 * 86_400, said: "7d" };
  assertEquals(parseDuration("7d", "ttl", "ttl", max), 7 * 86_400);
  for (const bad of ["0", "8d"]) {
    const e = assertThrows(() => parseDuration(bad, "ttl", "ttl", max), InvalidArgumentError);
    assertEquals(e.message, `invalid ttl "${bad}": expected 1 second to 7d`);
  }
});

Deno.test("parseDuration() names the field it was given", () => {
  const e = assertThrows(() => parseDuration("soon", "ttl"), InvalidArgumentError);
  assertEquals(
    e.message,
    'invalid ttl "soon": expected seconds or a duration such as 30d, 1.5h, 15m or 90s',
  );
  assertEquals(e.details, { field: "ttl" });
  const f = assertThrows(() => parseDuration(true, "overlap"), InvalidArgumentError);
  assertEquals(f.message, "invalid overlap: expected seconds or a duration string, got boolean");
});

Deno.test("parseDurationMs() reads fractions and ms, s, m, h, d units; a bare number is seconds", () => {
  const cases: Array<[unknown, number]> = [
    ["500ms", 500],
    ["1.5s", 1500],
    ["2s", 2000],
    ["2", 2000],
    [" 0.25 s ", 250],
    [".5s", 500],
    ["1m", 60_000],
    ["1.5m", 90_000],
    ["2h", 7_200_000],
    ["1d", 86_400_000],
    [1.5, 1500],
    ["3650d", MAX_DURATION_SECONDS * 1000],
  ];
  for (const [value, ms] of cases) {
    assertEquals(parseDurationMs(value, "--interval"), ms, JSON.stringify(value));
  }
});

Deno.test("parseDurationMs() refuses zero, negatives, garbage, too little and too much, saying which", () => {
  const cases: Array<[unknown, string]> = [
    ["0", 'invalid --interval "0": expected 100 ms to 3650 days (got zero)'],
    ["0ms", 'invalid --interval "0ms": expected 100 ms to 3650 days (got zero)'],
    [0, "invalid --interval 0: expected 100 ms to 3650 days (got zero)"],
    [-1, "invalid --interval -1: expected 100 ms to 3650 days (got a negative duration)"],
    ["-1s", 'invalid --interval "-1s": a duration cannot be negative'],
    [
      "soon",
      'invalid --interval "soon": expected a duration such as 500ms, 1.5s, 2s or 1m ' +
      "(a bare number is seconds)",
    ],
    [
      "1w",
      'invalid --interval "1w": expected a duration such as 500ms, 1.5s, 2s or 1m ' +
      "(a bare number is seconds)",
    ],
    [
      "",
      'invalid --interval "": expected a duration such as 500ms, 1.5s, 2s or 1m ' +
      "(a bare number is seconds)",
    ],
    [
      "1.5.2s",
      'invalid --interval "1.5.2s": expected a duration such as 500ms, 1.5s, 2s or 1m ' +
      "(a bare number is seconds)",
    ],
    ["50ms", 'invalid --interval "50ms": expected 100 ms to 3650 days'],
    ["3651d", 'invalid --interval "3651d": expected 100 ms to 3650 days'],
    [true, "invalid --interval: expected seconds or a duration string, got boolean"],
  ];
  for (const [value, message] of cases) {
    const e = assertThrows(
      () => parseDurationMs(value, "--interval", { minMs: 100 }),
      InvalidArgumentError,
    );
    assertEquals(e.message, message);
    assertEquals(e.details, { field: "interval" });
  }
  // Without a minimum, 1 ms is the least; a fraction of it rounds to zero and is refused.
  assertEquals(parseDurationMs("1ms", "--timeout"), 1);
  assertThrows(() => parseDurationMs("0.4ms", "--timeout"), InvalidArgumentError);
});

Deno.test("parseDuration(): a fraction of a second is said to be one, not out of range", () => {
  for (const bad of ["1.5s", "2.5s", "0.01m"]) {
    const e = assertThrows(() => parseDuration(bad, "--ttl"), InvalidArgumentError);
    assert(e.message.includes("is not a whole number of seconds"), e.message);
  }
});
