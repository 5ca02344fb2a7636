import { assert, assertEquals, assertThrows } from "../../_assert.ts";
import { FailedPreconditionError } from "../../../mod/errors.ts";
import type { NodeInfo } from "../../../mod/types.ts";
import { newRecord, phaseOf } from "../../../control/group/record.ts";
import type { VolumeRecord } from "../../../control/volumes/_record.ts";
import { withReplicas } from "../../../control/volumes/_replica_count.ts";

const GiB = 1024 ** 3;

function rec(members?: string[]): VolumeRecord {
  const base: VolumeRecord = {
    name: "v",
    uuid: "00000000-0000-4000-8000-000000000000",
    sizeBytes: GiB,
    replicas: members ? members.length - 1 : 0,
    labels: {},
    description: "",
    createdAt: "2026-12-05T00:00:00.000Z",
    updatedAt: "2026-12-05T00:00:00.000Z",
    master: members?.[0] ?? "n1",
    epoch: 1,
    state: "ready",
  };
  return members ? { ...base, group: newRecord(members[0], members.slice(1)) } : base;
}

function node(name: string, state: NodeInfo["state"] = "ready"): NodeInfo {
  return { name, state, labels: {}, freeBytes: 10 * GiB } as NodeInfo;
}

Deno.test("withReplicas(): a raise the nodes can take sets the wanted count; the master adds the members", () => {
  const next = withReplicas(rec(["n1", "n2"]), 2, [node("n1"), node("n2"), node("n3")]);
  assertEquals(next.replicas, 2);
  assertEquals(next.group?.desired.replicas, 2);
  assertEquals(next.group?.members, ["n1", "n2"], "members change by the master's CAS");
  assertEquals(next.group?.phase, phaseOf(next.group!));
});

Deno.test("withReplicas(): a raise the nodes cannot take is refused with what is missing", () => {
  const err = assertThrows(
    () => withReplicas(rec(["n1", "n2"]), 3, [node("n1"), node("n2"), node("n3", "cordoned")]),
    FailedPreconditionError,
  );
  assert(
    err.message.startsWith(
      'cannot raise volume "v" to 3 replicas: need 2 more eligible nodes, found 0; ' +
        "not eligible: n3 (cordoned)",
    ),
    err.message,
  );
});

Deno.test("withReplicas(): a raise onto nodes without room for the master's data is refused", () => {
  const small = { ...node("n3"), freeBytes: 50 * 2 ** 20 } as NodeInfo;
  const nodes = [node("n1"), node("n2"), small];
  const err = assertThrows(
    () => withReplicas(rec(["n1", "n2"]), 2, nodes, 64 * 2 ** 20),
    FailedPreconditionError,
  );
  assert(err.message.includes("n3 (50 MiB free, its copy would take 64 MiB)"), err.message);
  assertEquals(withReplicas(rec(["n1", "n2"]), 2, nodes, 8 * 2 ** 20).replicas, 2);
});

Deno.test("withReplicas(): lowering needs no node; a volume without a group cannot get replicas", () => {
  assertEquals(withReplicas(rec(["n1", "n2", "n3"]), 0, undefined).group?.desired.replicas, 0);
  assertEquals(withReplicas(rec(), 0, undefined), rec());
  const err = assertThrows(() => withReplicas(rec(), 1, []), FailedPreconditionError);
  assert(err.message.includes("created without replicas (not a volume group)"), err.message);
});
