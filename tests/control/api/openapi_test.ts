/**
 * The OpenAPI document and the Hono app's routes agree: every route the app serves is
 * documented, and every documented operation is served.
 */
import { Hono } from "hono";
import { assert, assertEquals } from "../../_assert.ts";
import { OPENAPI_DOCUMENT } from "../../../control/api/openapi/mod.ts";
import { call, startTestNode } from "../_fixtures.ts";

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

type Schema = {
  $ref?: string;
  type?: string | string[];
  required?: string[];
  properties?: Record<string, Schema>;
  enum?: unknown[];
  items?: Schema;
};

/**
 * Where `value` breaks `schema` of `doc`: a required field missing, a field the schema does
 * not list (strict: an object schema with properties lists every field), an enum value outside
 * its list. Enough of JSON Schema for this document's response bodies.
 */
function breaches(doc: unknown, schema: Schema, value: unknown, at = "$"): string[] {
  if (schema.$ref) {
    const target = schema.$ref.replace(/^#\//, "").split("/")
      .reduce(
        (o: Record<string, unknown>, part) => o[part] as Record<string, unknown>,
        doc as Record<string, unknown>,
      );
    return breaches(doc, target as Schema, value, at);
  }
  const out: string[] = [];
  if (schema.enum && !schema.enum.includes(value)) {
    out.push(`${at}: ${JSON.stringify(value)} not in enum`);
  }
  if (Array.isArray(value) && schema.items) {
    value.forEach((v, i) => out.push(...breaches(doc, schema.items!, v, `${at}[${i}]`)));
  }
  if (value && typeof value === "object" && !Array.isArray(value) && schema.properties) {
    const v = value as Record<string, unknown>;
    for (const r of schema.required ?? []) if (!(r in v)) out.push(`${at}.${r}: required, missing`);
    for (const [k, x] of Object.entries(v)) {
      const p = schema.properties[k];
      if (!p) out.push(`${at}.${k}: not in the schema`);
      else out.push(...breaches(doc, p, x, `${at}.${k}`));
    }
  }
  return out;
}

Deno.test("openapi: real answers of a node match their schemas (required fields, no unlisted field, enums); the check catches a missing and an unlisted field", async () => {
  const doc = JSON.parse(JSON.stringify(OPENAPI_DOCUMENT));
  const node = await startTestNode();
  try {
    await call(node.app, "POST", "/v1/volumes", { name: "v1", size: "16MiB" });
    const schemaOf = (path: string) =>
      doc.paths[path].get.responses["200"].content["application/json"].schema;
    for (
      const path of ["/v1/health", "/v1/version", "/v1/nodes", "/v1/volumes", "/v1/volumes/{name}"]
    ) {
      const got = await call(node.app, "GET", path.replace("{name}", "v1"));
      assertEquals(got.status, 200, path);
      assertEquals(breaches(doc, schemaOf(path), got.body), [], path);
    }
    const nodes = (await call(node.app, "GET", "/v1/nodes")).body;
    const { name: _n, ...nameless } = nodes.items[0];
    assertEquals(breaches(doc, schemaOf("/v1/nodes"), { items: [{ ...nameless, shoeSize: 9 }] }), [
      "$.items[0].name: required, missing",
      "$.items[0].shoeSize: not in the schema",
    ]);
  } finally {
    await node.close();
  }
});

Deno.test("openapi: every operation lists 401 and 403; every one whose method may carry a body 413 and 415", () => {
  const doc = JSON.parse(JSON.stringify(OPENAPI_DOCUMENT));
  for (
    const [path, item] of Object.entries(
      doc.paths as Record<
        string,
        Record<
          string,
          { operationId: string; requestBody?: unknown; responses: Record<string, unknown> }
        >
      >,
    )
  ) {
    for (const [method, op] of Object.entries(item)) {
      const codes = Object.keys(op.responses);
      const body = ["post", "put", "patch", "delete"].includes(method);
      const want = ["401", "403", ...(body ? ["413", "415"] : [])];
      for (const c of want) assert(codes.includes(c), `${method} ${path} lacks ${c}: ${codes}`);
    }
  }
});
