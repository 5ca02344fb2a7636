import { assertEquals, assertThrows } from "../../_assert.ts";
import { InvalidArgumentError } from "../../../mod/errors.ts";
import {
  describePlacement,
  place,
  placeAdditional,
  type PlacementNode,
} from "../../../control/group/placement.ts";

const GiB = 1024 ** 3;

function node(
  name: string,
  freeGiB: number,
  labels: Record<string, string> = {},
  state: PlacementNode["state"] = "ready",
): PlacementNode {
  return { name, labels, state, freeBytes: freeGiB * GiB };
}

const cases: {
  name: string;
  replicas: number;
  spreadBy?: string;
  sizeGiB?: number;
  nodes: PlacementNode[];
  want: string;
}[] = [
  {
    name: "picks the most free nodes, master first",
    replicas: 2,
    nodes: [node("n1", 10), node("n2", 30), node("n3", 20), node("n4", 5)],
    want: "master n2, replicas [n3, n1]",
  },
  {
    name: "breaks ties by name",
    replicas: 1,
    nodes: [node("n3", 10), node("n1", 10), node("n2", 10)],
    want: "master n1, replicas [n2]",
  },
  {
    name: "skips cordoned, unreachable, down and too small nodes",
    replicas: 1,
    sizeGiB: 8,
    nodes: [
      node("a", 50, {}, "cordoned"),
      node("b", 50, {}, "unreachable"),
      node("c", 50, {}, "down"),
      node("d", 4),
      node("e", 9),
      node("f", 8),
    ],
    want: "master e, replicas [f]",
  },
  {
    name: "spreads across zones before free capacity",
    replicas: 2,
    spreadBy: "zone",
    nodes: [
      node("n1", 100, { zone: "a" }),
      node("n2", 90, { zone: "a" }),
      node("n3", 10, { zone: "b" }),
      node("n4", 20, { zone: "c" }),
    ],
    want: "master n1, replicas [n4, n3]",
  },
  {
    name: "zero replicas is a master alone",
    replicas: 0,
    nodes: [node("n1", 1), node("n2", 2)],
    want: "master n2, replicas []",
  },
  {
    name: "fails naming the zones it has",
    replicas: 2,
    spreadBy: "zone",
    nodes: [
      node("n1", 10, { zone: "a" }),
      node("n2", 10, { zone: "a" }),
      node("n3", 10, { zone: "b" }),
    ],
    want: "impossible: need 3 nodes in distinct zone values, have 2: zone=a (n1,n2), zone=b (n3)",
  },
  {
    name: "fails naming why nodes are not eligible (free space is none of them: thin)",
    replicas: 3,
    spreadBy: "zone",
    sizeGiB: 2,
    nodes: [
      node("n1", 10, { zone: "a" }),
      node("n2", 10, { zone: "b" }, "cordoned"),
      node("n3", 1, { zone: "c" }),
      node("n4", 10),
    ],
    want: "impossible: need 4 nodes in distinct zone values, have 2: zone=a (n1), zone=c (n3); " +
      "not eligible: n2 (cordoned), n4 (no zone label)",
  },
  {
    name: "places on nodes with less free than the volume's size: every volume is thin",
    replicas: 1,
    sizeGiB: 100,
    nodes: [node("n1", 1), node("n2", 1)],
    want: "master n1, replicas [n2]",
  },
  {
    name: "skips a node whose disk is full (thin or not, it takes no new copy)",
    replicas: 1,
    nodes: [node("n1", 1), node("n2", 0), node("n3", 2)],
    want: "master n3, replicas [n1]",
  },
  {
    name: "fails with no nodes at all",
    replicas: 1,
    nodes: [],
    want: "impossible: need 2 eligible nodes, have 0",
  },
];

for (const c of cases) {
  Deno.test(`place() ${c.name}`, () => {
    const p = place(
      { replicas: c.replicas, spreadBy: c.spreadBy, sizeBytes: (c.sizeGiB ?? 1) * GiB },
      c.nodes,
    );
    assertEquals(describePlacement(p).split("\n")[0], c.want);
  });
}

Deno.test("place() is deterministic whatever the input order", () => {
  const nodes = [node("n1", 5), node("n2", 5), node("n3", 7), node("n4", 5)];
  const want = place({ replicas: 2, sizeBytes: GiB }, nodes);
  assertEquals(place({ replicas: 2, sizeBytes: GiB }, [...nodes].reverse()), want);
});

Deno.test("describePlacement() explains the choice", () => {
  const p = place({ replicas: 1, spreadBy: "zone", sizeBytes: GiB }, [
    node("n1", 10, { zone: "a" }),
    node("n2", 20, { zone: "a" }),
    node("n3", 5, { zone: "b" }),
    node("n4", 50, { zone: "c" }, "cordoned"),
  ]);
  assertEquals(
    describePlacement(p),
    [
      "master n2, replicas [n3]",
      "  need 2 nodes in distinct zone values for 1 GiB (thin); 2 available",
      "  not eligible: n4 (cordoned)",
      "  master n2: zone=a, 20 GiB free (best of 2 in its domain)",
      "  replica n3: zone=b, 5 GiB free",
    ].join("\n"),
  );
});

Deno.test("place() rejects bad requests", () => {
  const nodes = [node("n1", 1)];
  assertThrows(() => place({ replicas: -1, sizeBytes: 1 }, nodes), InvalidArgumentError, "-1");
  assertThrows(() => place({ replicas: 1.5, sizeBytes: 1 }, nodes), InvalidArgumentError, "1.5");
  assertThrows(() => place({ replicas: 1, sizeBytes: 0 }, nodes), InvalidArgumentError, "size 0");
  assertThrows(
    () => place({ replicas: 1, sizeBytes: 1, spreadBy: " " }, nodes),
    InvalidArgumentError,
    "spreadBy",
  );
});

/** A node holding `copies` copies of groups, `masters` of them as master. */
function loaded(name: string, freeGiB: number, copies: number, masters: number): PlacementNode {
  return { ...node(name, freeGiB), copies, masters };
}

Deno.test("place() prefers the nodes holding the fewest copies over free bytes", () => {
  const p = place({ replicas: 1, sizeBytes: GiB }, [
    loaded("n1", 90, 7, 3),
    loaded("n2", 10, 2, 1),
    loaded("n3", 20, 2, 1),
    loaded("n4", 80, 5, 0),
  ]);
  assertEquals(describePlacement(p).split("\n")[0], "master n3, replicas [n2]");
});

Deno.test("place() makes the chosen node that masters the fewest groups the master", () => {
  const p = place({ replicas: 2, sizeBytes: GiB }, [
    loaded("n1", 10, 4, 3),
    loaded("n2", 10, 4, 0),
    loaded("n3", 10, 4, 1),
    loaded("n4", 10, 9, 0),
  ]);
  assertEquals(
    describePlacement(p),
    [
      "master n2, replicas [n1, n3]",
      "  need 3 nodes in distinct node values for 1 GiB (thin); 4 available",
      "  master n2: n2, 10 GiB free, 4 copies, master of 0",
      "  replica n1: n1, 10 GiB free, 4 copies, master of 3",
      "  replica n3: n3, 10 GiB free, 4 copies, master of 1",
    ].join("\n"),
  );
});

Deno.test("place() spreads a run of creates evenly when the counts follow each placement", () => {
  const nodes = Array.from({ length: 10 }, (_, i) => loaded(`n${i}`, 100 - i, 0, 0));
  for (let v = 0; v < 100; v++) {
    const p = place({ replicas: 2, sizeBytes: GiB }, nodes);
    if (!p.ok) throw new Error(p.reason);
    for (const n of nodes) {
      if (n.name === p.master) n.masters!++;
      if (n.name === p.master || p.replicas.includes(n.name)) n.copies!++;
    }
  }
  assertEquals(nodes.map((n) => n.copies), Array(10).fill(30));
  assertEquals(nodes.map((n) => n.masters), Array(10).fill(10));
});

Deno.test("placeAdditional() adds no member where a full disk or one without room for what it is sent would take it, and prefers fewer copies", () => {
  const MiB = 1024 ** 2;
  const nodes: PlacementNode[] = [
    node("n1", 50),
    { ...node("n2", 0), freeBytes: 8 * MiB },
    { ...node("n3", 0), freeBytes: 300 * MiB },
    { ...node("n4", 40), copies: 9 },
    { ...node("n5", 10), copies: 1 },
  ];
  const r = placeAdditional(
    { replicas: 3, sizeBytes: 4 * GiB, needBytes: 500 * MiB },
    nodes,
    ["n1"],
  );
  assertEquals(r.nodes, ["n5", "n4"]);
  assertEquals(
    r.short,
    "need 3 more eligible nodes, found 2 (n5, n4); not eligible: n2 (disk full: 8 MiB free), " +
      "n3 (300 MiB free, its copy would take 500 MiB)",
  );
  // Without data to send, only the full disk is left out.
  assertEquals(placeAdditional({ replicas: 1, sizeBytes: GiB }, nodes, ["n1", "n4", "n5"]).nodes, [
    "n3",
  ]);
});
