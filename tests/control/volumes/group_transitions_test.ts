import {
  abandonCreate,
  copyDeleted,
  dropDownMembers,
  markGroupDeleting,
  staleCreateMs,
} from "../../../control/volumes/_group_transitions.ts";
import type { VolumeRecord } from "../../../control/volumes/_record.ts";
import { leftOutOf } from "../../../control/volumes/_tombstones.ts";
import { newRecord } from "../../../control/group/mod.ts";
import { FailedPreconditionError } from "../../../mod/errors.ts";
import { assertEquals, assertThrows } from "../../_assert.ts";

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

/** markGroupDeleting() where the record is expected to stay (not "delete"). */
function mark(
  rec: VolumeRecord,
  opts: Parameters<typeof markGroupDeleting>[1],
): VolumeRecord {
  const next = markGroupDeleting(rec, opts);
  if (next === "delete") throw new Error("expected a record, got delete");
  return next;
}

Deno.test("markGroupDeleting() of a ready group: every member must remove its copy", () => {
  const next = mark(record({ deleteRefused: "clients" }), {
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
  const next = mark(record({ state: "deleting", remaining: ["n3"] }), {
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
  const next = mark(
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

Deno.test("markGroupDeleting() with members down: refused without force, naming them and --force", () => {
  assertThrows(
    () => markGroupDeleting(record(), { force: false, now: at(0), staleMs: STALE, down: ["n3"] }),
    FailedPreconditionError,
    'volume "g" has member down: n3; a down member cannot remove its copy',
  );
  assertThrows(
    () =>
      markGroupDeleting(record(), { force: false, now: at(0), staleMs: STALE, down: ["n3", "n2"] }),
    FailedPreconditionError,
    "Use --force",
  );
  // Down nodes that are not (or no longer) to remove a copy do not matter.
  const next = mark(record({ state: "deleting", remaining: ["n2"] }), {
    force: false,
    now: at(0),
    staleMs: STALE,
    down: ["n3", "n9"],
  });
  assertEquals(next.remaining, ["n2"]);
});

Deno.test("markGroupDeleting() forced with members down: only the live ones must remove a copy", () => {
  const next = mark(record(), { force: true, now: at(0), staleMs: STALE, down: ["n1", "n3"] });
  assertEquals([next.state, next.remaining, next.deleteForce], ["deleting", ["n2"], true]);
  assertEquals(
    markGroupDeleting(record(), {
      force: true,
      now: at(0),
      staleMs: STALE,
      down: ["n1", "n2", "n3"],
    }),
    "delete",
    "no live member: the record goes at once",
  );
});

Deno.test("dropDownMembers(): a forced delete drops members gone down; only forced deletes", () => {
  const forced = record({ state: "deleting", remaining: ["n1", "n3"], deleteForce: true });
  const next = dropDownMembers(forced, ["n3"]);
  assertEquals(next !== "delete" && next?.remaining, ["n1"]);
  assertEquals(dropDownMembers(forced, ["n1", "n3"]), "delete");
  assertEquals(dropDownMembers(forced, ["n2"]), undefined, "n2 is not on the list");
  assertEquals(
    dropDownMembers({ ...forced, deleteForce: false }, ["n3"]),
    undefined,
    "not forced: waits for n3",
  );
  assertEquals(dropDownMembers(record(), ["n3"]), undefined, "not deleting");
});

Deno.test("leftOutOf(): members a forced delete leaves out while down, carried until the record goes", () => {
  const group = { members: ["n1", "n2", "n3"] };
  const ready = { state: "ready", group };
  const deleting = { state: "deleting", group, remaining: ["n1", "n2"] };
  // markGroupDeleting with n3 down: n3 left out.
  assertEquals(leftOutOf(ready, deleting, ["n3"]), ["n3"]);
  // Every member down: the record goes at once, all left out (the tombstone names them).
  assertEquals(leftOutOf(ready, "delete", ["n1", "n2", "n3"]), ["n1", "n2", "n3"]);
  // The live members remove their copies (no liveness guard): n3 stays left out.
  const noted = { ...deleting, leftOut: ["n3"] };
  assertEquals(leftOutOf(noted, { ...noted, remaining: ["n1"] }, []), ["n3"]);
  assertEquals(leftOutOf({ ...noted, remaining: ["n1"] }, "delete", []), ["n3"]);
  // A member going down during the delete joins them (dropDownMembers).
  assertEquals(leftOutOf(noted, { ...noted, remaining: ["n1"] }, ["n2"]), ["n2", "n3"]);
  // n3 back before the record went took itself off: nobody left out.
  assertEquals(leftOutOf(noted, { ...noted, leftOut: [] }, []), []);
  // An ordinary delete (nobody down) leaves nobody out.
  assertEquals(leftOutOf(ready, { ...deleting, remaining: group.members }, []), []);
  assertEquals(leftOutOf({ ...deleting, remaining: ["n1"] }, "delete", []), []);
});
