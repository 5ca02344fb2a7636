/**
 * Small builders shared by the OpenAPI document's parts.
 * @module
 */

/** Labels of a volume or node. */
export const LABELS = {
  type: "object",
  description: "Up to 64 labels; keys like `team` or `example.com/tier`, values up to 256 chars.",
  additionalProperties: { type: "string", maxLength: 256 },
  maxProperties: 64,
};

export const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
export const json = (schema: unknown) => ({ "application/json": { schema } });
export const errors = (...codes: number[]) =>
  Object.fromEntries(
    codes.map((c) => [String(c), { $ref: `#/components/responses/Error${c}` }]),
  );
export const nameParam = (what: string) => ({
  name: "name",
  in: "path",
  required: true,
  description: `${what} name`,
  schema: { type: "string", pattern: "^[a-z0-9][a-z0-9._-]{0,62}$" },
});
export const errorResponse = (description: string) => ({
  description,
  content: json(ref("Error")),
});

/** A list response `{ items: [...] }` of the named schema. */
export function listOf(item: string) {
  return {
    type: "object",
    required: ["items"],
    properties: { items: { type: "array", items: ref(item) } },
  };
}

/** Methods whose requests may carry a body (the API answers 413 and 415 to a bad one). */
const WITH_BODY = new Set(["post", "put", "patch", "delete"]);

/**
 * `paths` with the errors every route can give listed on each operation: 401 and 403 (mutual
 * TLS, by role), and 413 and 415 (a body too large or not JSON) on every method that may
 * carry a body, whether the route reads one or not. Listed once here, not on each route.
 */
export function withCommonErrors<T extends Record<string, Record<string, unknown>>>(paths: T): T {
  const out: Record<string, Record<string, unknown>> = {};
  for (const [path, ops] of Object.entries(paths)) {
    out[path] = Object.fromEntries(
      Object.entries(ops).map(([method, op]) => {
        const o = op as { responses?: object };
        const extra = errors(401, 403, ...(WITH_BODY.has(method) ? [413, 415] : []));
        return [method, { ...o, responses: { ...o.responses, ...extra } }];
      }),
    );
  }
  return out as T;
}
