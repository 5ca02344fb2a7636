import {
  abandonCreate,
  copyDeleted,
  markGroupDeleting,
  staleCreateMs,
} from "../../control/_volume_group_record.ts";
import type { VolumeRecord } from "../../control/_volume_record.ts";
import { newRecord } from "../../control/group/record.ts";
import { FailedPreconditionError } from "../../mod/errors.ts";
import { assertEquals, assertThrows } from "../_assert.ts";

const CREATED_AT = "2030-01-01T00:00:00.000Z";
const at = (ms: number) => new Date(Date.parse(CREATED_AT) + ms);

function record(over: Partial<VolumeRecord> = {}): VolumeRecord {
  const group = newRecord("n1", ["n2", "n3"]);
  return {
    name: "g",
    uuid: "00000000-0000-4000-8000-000000000001",
    sizeBytes: 4 << 20,
    replicas: 2,
    labels: {},
    description: "",
    createdAt: CREATED_AT,
    updatedAt: CREATED_AT,
    master: "n1",
    epoch: 1,
    state: "ready",
    group,
    ...over,
  };
}

const STALE = staleCreateMs(10_000);

Deno.test("markGroupDeleting() of a ready group: every member must remove its copy", () => {
  const next = markGroupDeleting(record({ deleteRefused: "clients" }), {
    force: true,
    now: at(1_000),
    staleMs: STALE,
  });
  assertEquals(
    [next.state, next.remaining, next.deleteForce, next.deleteRefused, next.updatedAt],
    ["deleting", ["n1", "n2", "n3"], true, undefined, at(1_000).toISOString()],
  );
});

Deno.test("markGroupDeleting() of a delete under way keeps the members still to go", () => {
  const next = markGroupDeleting(record({ state: "deleting", remaining: ["n3"] }), {
    force: false,
    now: at(0),
    staleMs: STALE,
  });
  assertEquals([next.remaining, next.deleteForce], [["n3"], false]);
});

Deno.test("markGroupDeleting() refuses a group being created, up to the stale bound", () => {
  for (const age of [0, 10_000, STALE]) {
    assertThrows(
      () =>
        markGroupDeleting(record({ state: "creating", created: ["n1"] }), {
          force: false,
          now: at(age),
          staleMs: STALE,
        }),
      FailedPreconditionError,
      "still being created",
    );
  }
});

Deno.test("markGroupDeleting() of a stale create (creator gone): deleted like a ready group", () => {
  const next = markGroupDeleting(
    record({ state: "creating", created: ["n1"], createFailed: "node n2: boom" }),
    { force: false, now: at(STALE + 1), staleMs: STALE },
  );
  assertEquals([next.state, next.remaining], ["deleting", ["n1", "n2", "n3"]]);
  assertEquals(["created" in next, "createFailed" in next], [false, false]);
});

Deno.test("staleCreateMs() leaves the creator its wait plus a margin for cleanup and skew", () => {
  assertEquals(staleCreateMs(10_000), 70_000);
});

Deno.test("abandonCreate(): copies made are removed by their makers; none made, the record goes", () => {
  const next = abandonCreate(record({ state: "creating", created: ["n1", "n3"] }));
  assertEquals(
    next !== "delete" && next && [next.state, next.remaining, next.deleteForce, "created" in next],
    ["deleting", ["n1", "n3"], true, false],
  );
  assertEquals(abandonCreate(record({ state: "creating", created: [] })), "delete");
  assertEquals(abandonCreate(record({ state: "creating" })), "delete");
  assertEquals(abandonCreate(record()), undefined, "a ready group is left alone");
});

Deno.test("copyDeleted(): the member leaves remaining; the last one removes the record", () => {
  const next = copyDeleted(record({ state: "deleting", remaining: ["n1", "n2"] }), "n1");
  assertEquals(next !== "delete" && next?.remaining, ["n2"]);
  assertEquals(copyDeleted(record({ state: "deleting", remaining: ["n2"] }), "n2"), "delete");
  assertEquals(copyDeleted(record(), "n1"), undefined, "not deleting");
});
