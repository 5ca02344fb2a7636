import { MAX_DURATION_SECONDS, parseDuration } from "../../mod/duration.ts";
import { InvalidArgumentError } from "../../mod/errors.ts";
import { assertEquals, assertThrows } from "../_assert.ts";

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
    const bad of ["0", 0, "0s", "soon", "1.5h", "1w", "-5m", "", 1.5, -1, "3651d", "5000d", null]
  ) {
    const e = assertThrows(() => parseDuration(bad, "--cert-ttl"), InvalidArgumentError);
    assertEquals(e.message.startsWith("invalid --cert-ttl"), true, e.message);
    assertEquals(e.details, { field: "cert-ttl" });
  }
});

Deno.test("parseDuration() names the field it was given", () => {
  const e = assertThrows(() => parseDuration("soon", "ttl"), InvalidArgumentError);
  assertEquals(
    e.message,
    'invalid ttl "soon": expected seconds or a duration such as 30d, 12h, 15m or 90s',
  );
  assertEquals(e.details, { field: "ttl" });
  const f = assertThrows(() => parseDuration(true, "overlap"), InvalidArgumentError);
  assertEquals(f.message, "invalid overlap: expected seconds or a duration string, got boolean");
});
