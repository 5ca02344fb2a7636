/**
 * Why a group is not healthy (control/volumes/_members.ts phaseReason()), as `volume get`
 * shows next to its phase: pure, from a group record and the member states.
 */

import { type GroupRecord, newRecord, phaseOf } from "../../../control/group/mod.ts";
import { memberStatus, phaseReason } from "../../../control/volumes/_members.ts";
import { assert, assertEquals } from "../../_assert.ts";

const SIZE = 2 ** 30;
const T0 = Date.parse("2030-01-01T00:00:00.000Z");

/** n1 (master), n2, n3 changed by `over`, its phase derived again. */
function group(over: Partial<GroupRecord> = {}): GroupRecord {
  const { phase: _p, ...r } = { ...newRecord("n1", ["n2", "n3"]), ...over };
  return { ...r, phase: phaseOf(r) };
}

function reason(g: GroupRecord, gone: string[] = [], notes = {}): string | undefined {
  const members = memberStatus({ group: g, sizeBytes: SIZE, gone, notes, now: T0 });
  return phaseReason(g, members);
}

Deno.test("phaseReason(): a healthy group has none", () => {
  assertEquals(reason(group()), undefined);
});

Deno.test("phaseReason(): degraded names each member out of sync or down, and why", () => {
  const g = group({ inSync: ["n1", "n3"] });
  assertEquals(g.phase, "degraded");
  const notes = {
    n2: { since: new Date(T0 - 5_000).toISOString(), reason: "a replicated write to it failed" },
  };
  const out = reason(g, [], notes)!;
  assert(out.startsWith("replica n2 out of sync: a replicated write to it failed"), out);
  assert(!out.includes("n3"), `only the member out of sync is named: ${out}`);
  const down = reason(group({ inSync: ["n1", "n3"], down: ["n2"] }), ["n2"], notes)!;
  assert(down.startsWith("replica n2 down: the node's liveness lease is gone"), down);
  assert(down.includes("out of sync before: a replicated write to it failed"), down);
});

Deno.test("phaseReason(): failing-over names the in-sync member that takes over", () => {
  const g = group({ down: ["n1"], inSync: ["n1", "n3"] });
  assertEquals(g.phase, "failing-over");
  const got = reason(g, ["n1"])!;
  assert(got.startsWith("master n1 is down (the node's liveness lease is gone"), got);
  assert(got.endsWith("; in-sync n3 takes over"), got);
});

Deno.test("phaseReason(): unavailable says no in-sync member is up, and who lags", () => {
  const g = group({ down: ["n1"], inSync: ["n1"] });
  assertEquals(g.phase, "unavailable");
  const got = reason(g, ["n1"])!;
  assert(got.startsWith("no in-sync member is up: master n1 is down"), got);
  assert(got.includes("not in sync: n2 (out-of-sync), n3 (out-of-sync)"), got);
  assert(got.endsWith("nobody serves the volume until n1 is back"), got);
});
