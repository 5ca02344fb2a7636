/**
 * The OpenAPI document and the Hono app's routes agree: every route the app serves is
 * documented, and every documented operation is served.
 */
import { Hono } from "hono";
import { assertEquals } from "../../_assert.ts";
import { OPENAPI_DOCUMENT } from "../../../control/api/openapi/mod.ts";
import { startTestNode } from "../_fixtures.ts";

const METHODS = ["get", "put", "post", "patch", "delete", "head", "options", "trace"];

/** "GET /v1/volumes/{name}" for each route of `app` (the middlewares of "*" left out). */
function served(app: { routes: ReadonlyArray<{ method: string; path: string }> }): Set<string> {
  return new Set(
    app.routes
      .filter((r) => r.method !== "ALL")
      .map((r) => `${r.method} ${r.path.replace(/:([A-Za-z0-9_]+)/g, "{$1}")}`),
  );
}

/** "GET /v1/volumes/{name}" for each operation of an OpenAPI document. */
function documented(doc: { paths: Record<string, Record<string, unknown>> }): Set<string> {
  const out = new Set<string>();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of Object.keys(item)) {
      if (METHODS.includes(method)) out.add(`${method.toUpperCase()} ${path}`);
    }
  }
  return out;
}

/** Routes served but not documented, and documented but not served. */
function disagreements(
  routes: Set<string>,
  operations: Set<string>,
): { undocumented: string[]; unserved: string[] } {
  return {
    undocumented: [...routes].filter((r) => !operations.has(r)).sort(),
    unserved: [...operations].filter((o) => !routes.has(o)).sort(),
  };
}

const plain = (): { paths: Record<string, Record<string, unknown>> } =>
  JSON.parse(JSON.stringify(OPENAPI_DOCUMENT));

Deno.test("openapi: every route the app serves is documented, every documented one served", async () => {
  const node = await startTestNode();
  try {
    const routes = served(node.app);
    assertEquals(routes.has("DELETE /v1/volumes/{name}"), true, [...routes].join(", "));
    assertEquals(routes.has("POST /v1/cluster/join"), true, [...routes].join(", "));
    assertEquals(disagreements(routes, documented(plain())), { undocumented: [], unserved: [] });
  } finally {
    await node.close();
  }
});

Deno.test("openapi: the agreement check finds an undocumented route and an unserved operation", async () => {
  const node = await startTestNode();
  try {
    const routes = served(node.app);
    const doc = plain();
    delete doc.paths["/v1/nodes/{name}/cordon"].post;
    doc.paths["/v1/volumes/{name}/snapshots"] = { get: {} };
    assertEquals(disagreements(routes, documented(doc)), {
      undocumented: ["POST /v1/nodes/{name}/cordon"],
      unserved: ["GET /v1/volumes/{name}/snapshots"],
    });

    const extra = new Hono();
    extra.use("*", async (_c, next) => await next());
    extra.get("/v1/volumes/:name", (c) => c.text(""));
    extra.post("/v1/volumes/:name/clone", (c) => c.text(""));
    assertEquals(disagreements(served(extra), documented(plain())).undocumented, [
      "POST /v1/volumes/{name}/clone",
    ]);
  } finally {
    await node.close();
  }
});
