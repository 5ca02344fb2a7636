import { assert, assertEquals } from "../../_assert.ts";
import {
  describeMembership,
  type MembershipInput,
  planMembership,
} from "../../../control/group/membership.ts";
import { placeAdditional, type PlacementNode } from "../../../control/group/placement.ts";
import { type GroupRecord, newRecord, phaseOf } from "../../../control/group/record.ts";

const GiB = 1024 ** 3;
const MIN = 60_000;

function node(
  name: string,
  freeGiB: number,
  labels: Record<string, string> = {},
  state: PlacementNode["state"] = "ready",
): PlacementNode {
  return { name, labels, state, freeBytes: freeGiB * GiB };
}

function group(
  members: string[],
  o: { inSync?: string[]; down?: string[]; replicas?: number; spreadBy?: string } = {},
): GroupRecord {
  const r = newRecord(members[0], members.slice(1), {
    replicas: o.replicas ?? members.length - 1,
    ...(o.spreadBy ? { spreadBy: o.spreadBy } : {}),
  });
  const inSync = o.inSync ?? r.inSync;
  const down = o.down ?? [];
  const base = { ...r, inSync, down };
  return { ...base, phase: phaseOf(base) };
}

const NODES = [node("n1", 50), node("n2", 40), node("n3", 30), node("n4", 20), node("n5", 10)];

function input(record: GroupRecord, more: Partial<MembershipInput> = {}): MembershipInput {
  return {
    record,
    self: record.master,
    sizeBytes: GiB,
    nodes: NODES,
    absentSince: {},
    now: 10 * MIN,
    replaceAfterMs: 5 * MIN,
    ...more,
  };
}

const cases: { name: string; input: MembershipInput; want: string }[] = [
  {
    name: "a healthy group at its replica count changes nothing",
    input: input(group(["n1", "n2", "n3"])),
    want: "no change",
  },
  {
    name: "a replica absent for less than replace-after stays",
    input: input(group(["n1", "n2", "n3"], { down: ["n3"] }), { absentSince: { n3: 6 * MIN } }),
    want: "no change",
  },
  {
    name: "a replica absent for replace-after is replaced by the best eligible node, out of sync",
    input: input(group(["n1", "n2", "n3"], { down: ["n3"] }), { absentSince: { n3: 5 * MIN } }),
    want: "+n4 -n3 [n1,n2,n4] in-sync [n1,n2]",
  },
  {
    name: "no eligible node: nothing changes and the reason names every node left out",
    input: input(group(["n1", "n2", "n3"], { down: ["n3"] }), {
      absentSince: { n3: 0 },
      nodes: [
        node("n1", 50),
        node("n2", 40),
        node("n3", 30, {}, "down"),
        node("n4", 20, {}, "cordoned"),
        node("n5", 0.5, {}, "unreachable"),
      ],
    }),
    want: "blocked: cannot replace n3 (absent for 600 s, more than 300 s): need 1 more " +
      "eligible node, found 0; not eligible: n4 (cordoned), n5 (unreachable)",
  },
  {
    name: "the master never replaces itself (failover does), and only the master decides",
    input: input(group(["n1", "n2", "n3"], { down: ["n1"] }), {
      absentSince: { n1: 0 },
    }),
    want: "no change",
  },
  {
    name: "raising the count adds members placed like a create",
    input: input(group(["n1", "n2"], { replicas: 2 })),
    want: "+n3 [n1,n2,n3] in-sync [n1,n2]",
  },
  {
    name: "raising by two adds two",
    input: input(group(["n1"], { replicas: 2 })),
    want: "+n2 +n3 [n1,n2,n3] in-sync [n1]",
  },
  {
    name: "raising with too few nodes adds what it can and says what is missing",
    input: input(group(["n1", "n2"], { replicas: 3 }), {
      nodes: [node("n1", 50), node("n2", 40), node("n3", 30), node("n4", 20, {}, "down")],
    }),
    want: "+n3 [n1,n2,n3] in-sync [n1,n2]; blocked: cannot add 2 replicas (3 wanted): need 2 " +
      "more eligible nodes, found 1 (n3); not eligible: n4 (down)",
  },
  {
    name: "lowering removes an out-of-sync replica before an in-sync one, never the master",
    input: input(group(["n1", "n2", "n3"], { inSync: ["n1", "n3"], replicas: 1 })),
    want: "-n2 [n1,n3] in-sync [n1,n3]",
  },
  {
    name: "lowering removes a replica on a cordoned node before another as much in sync",
    input: input(group(["n1", "n2", "n3"], { replicas: 1 }), {
      nodes: [node("n1", 50), node("n2", 40), node("n3", 30, {}, "cordoned")],
    }),
    want: "-n3 [n1,n2] in-sync [n1,n2]",
  },
  {
    name: "lowering keeps an in-sync replica on a cordoned node rather than an out-of-sync one",
    input: input(group(["n1", "n2", "n3"], { inSync: ["n1", "n3"], replicas: 1 }), {
      nodes: [node("n1", 50), node("n2", 40), node("n3", 30, {}, "cordoned")],
    }),
    want: "-n2 [n1,n3] in-sync [n1,n3]",
  },
  {
    name: "lowering removes a down replica first",
    input: input(
      group(["n1", "n2", "n3"], { inSync: ["n1", "n2"], down: ["n2"], replicas: 1 }),
      { absentSince: { n2: 9 * MIN } },
    ),
    want: "-n2 [n1,n3] in-sync [n1]",
  },
  {
    name: "lowering to 0 keeps the master alone",
    input: input(group(["n1", "n2", "n3"], { replicas: 0 })),
    want: "-n2 -n3 [n1] in-sync [n1]",
  },
  {
    name: "lowering and replacing at once: the surplus goes, the stale one is replaced",
    input: input(group(["n1", "n2", "n3", "n4"], { down: ["n4"], replicas: 2 }), {
      absentSince: { n4: 0, n3: 0 },
    }),
    // n3 and n4 are absent; one leaves as surplus (n3: longest absent ties, then name), the
    // other is replaced by n5.
    want: "+n5 -n3 -n4 [n1,n2,n5] in-sync [n1,n2]",
  },
];

for (const c of cases) {
  Deno.test(`planMembership(): ${c.name}`, () => {
    const got = planMembership(c.input);
    assertEquals(describeMembership(got), c.want);
    if (got.change) {
      const r = got.change.record;
      assert(r.inSync.includes(r.master), "the master stays in sync");
      assert(r.members.includes(r.master), "the master stays");
      assertEquals(r.phase, phaseOf(r));
      for (const m of got.change.added) assert(!r.inSync.includes(m), `${m} joins out of sync`);
      assertEquals(r.epoch, c.input.record.epoch);
    }
  });
}

Deno.test("planMembership(): a replacement keeps the failure domains distinct (--spread-by)", () => {
  const nodes = [
    node("a1", 50, { zone: "a" }),
    node("a2", 90, { zone: "a" }),
    node("b1", 40, { zone: "b" }),
    node("c1", 30, { zone: "c" }, "down"),
    node("c2", 10, { zone: "c" }),
  ];
  const r = group(["a1", "b1", "c1"], { down: ["c1"], spreadBy: "zone" });
  const got = planMembership(input(r, { nodes, absentSince: { c1: 0 } }));
  // a2 has the most space, but zone a holds the master already.
  assertEquals(describeMembership(got), "+c2 -c1 [a1,b1,c2] in-sync [a1,b1]");
  assert(
    got.change!.reasoning.some((l) => l.includes("a2 (zone=a holds a member already)")),
    got.change!.reasoning.join("\n"),
  );
});

Deno.test("planMembership(): another node than the master plans nothing", () => {
  const r = group(["n1", "n2", "n3"], { replicas: 1 });
  assertEquals(describeMembership(planMembership(input(r, { self: "n2" }))), "no change");
});

Deno.test("placeAdditional(): never picks a kept or excluded node, one per domain", () => {
  const nodes = [
    node("a1", 50, { zone: "a" }),
    node("b1", 40, { zone: "b" }),
    node("b2", 45, { zone: "b" }),
    node("c1", 30, { zone: "c" }),
  ];
  const got = placeAdditional({ replicas: 3, sizeBytes: GiB, spreadBy: "zone" }, nodes, ["a1"], [
    "c1",
  ]);
  assertEquals(got.nodes, ["b2"]);
  assert(got.short?.startsWith("need 3 more nodes in a new zone value, found 1 (b2)"), got.short);
  assert(got.short?.includes("b1 (zone=b chosen already)"), got.short);
});
