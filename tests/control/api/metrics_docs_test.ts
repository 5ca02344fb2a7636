import { assertEquals } from "../../_assert.ts";

const SOURCES = ["_metrics.ts", "_metrics_node.ts", "_metrics_cluster.ts"].map((f) =>
  new URL(`../../../control/api/${f}`, import.meta.url)
);
const DOC = new URL("../../../docs/API.md", import.meta.url);

Deno.test("docs/API.md names every metric /metrics can serve", async () => {
  const names = new Set<string>();
  for (const src of SOURCES) {
    for (const m of (await Deno.readTextFile(src)).matchAll(/"((?:ballast|process)_[a-z_]+)"/g)) {
      names.add(m[1]);
    }
  }
  const doc = await Deno.readTextFile(DOC);
  const missing = [...names].filter((n) => !new RegExp(`\\b${n}\\b`).test(doc)).sort();
  assertEquals(missing, [], "metrics missing from docs/API.md's Metrics section");
  assertEquals(names.size > 20, true, `only ${names.size} metric names found in the sources`);
});
