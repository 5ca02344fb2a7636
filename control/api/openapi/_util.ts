/**
 * Small builders shared by the OpenAPI document's parts.
 * @module
 */

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
