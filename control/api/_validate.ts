/**
 * Request validation for the API: JSON bodies with a fixed set of fields (unknown
 * fields rejected, wrong types named), query parameters (a middleware per route) and
 * node names. Semantic checks of volume fields live in volumes/ (rules.ts) and are shared
 * with VolumeService; each route file parses its own bodies.
 * @module
 */

import type { Context, MiddlewareHandler } from "hono";
import { BallastError, errorMessage, InvalidArgumentError, typeName } from "../../mod/errors.ts";
import { duplicateKey } from "./_json_keys.ts";

/** Largest request body accepted, on every listener: larger ones get 413. */
export const MAX_BODY_BYTES = 64 * 1024;

/** The 413 answer to a body past MAX_BODY_BYTES (or the listener's own limit). */
export function bodyTooLarge(limit: number = MAX_BODY_BYTES): BallastError {
  return new BallastError("INVALID_ARGUMENT", `request body is larger than ${limit} bytes`, {
    status: 413,
  });
}

/** A body must say it is JSON; anything else is 415 (curl -d sends form encoding). */
function checkContentType(c: Context): void {
  const type = c.req.header("content-type");
  const media = type?.split(";")[0].trim().toLowerCase();
  if (media !== "application/json") {
    throw new BallastError(
      "INVALID_ARGUMENT",
      `request body has Content-Type ${
        type === undefined ? "(none)" : JSON.stringify(type)
      }: send application/json`,
      { status: 415, details: { field: "content-type" } },
    );
  }
}

/**
 * Reads the body as a JSON object (Content-Type application/json, at most MAX_BODY_BYTES);
 * malformed JSON, a key given twice or a non-object is INVALID_ARGUMENT. With `optional`,
 * an empty (or blank) body reads as `{}`.
 */
export async function readJsonObject(
  c: Context,
  options: { optional?: boolean } = {},
): Promise<Record<string, unknown>> {
  const declared = Number(c.req.header("content-length") ?? 0);
  if (declared > MAX_BODY_BYTES) throw bodyTooLarge();
  const bytes = new Uint8Array(await c.req.arrayBuffer());
  if (bytes.length > MAX_BODY_BYTES) throw bodyTooLarge();
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    // Decoded leniently, bad bytes would become U+FFFD in a description or label, silently.
    throw new InvalidArgumentError("request body is not valid UTF-8");
  }
  if (text.trim() === "") {
    if (options.optional) return {};
    throw new InvalidArgumentError("request body is empty: expected a JSON object");
  }
  checkContentType(c);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError(`request body is not valid JSON: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new InvalidArgumentError(`request body must be a JSON object, got ${typeName(value)}`);
  }
  const broken = illFormed(value);
  if (broken !== undefined) {
    throw new InvalidArgumentError(
      `request body has a string that is not valid Unicode (a lone surrogate escape such as ` +
        `"\\ud800")${broken ? ` in ${broken}` : ""}`,
      ...(broken ? [{ field: broken }] : []),
    );
  }
  const dup = duplicateKey(text);
  if (dup) {
    throw new InvalidArgumentError(
      `request body has the key ${JSON.stringify(dup.key)} twice${
        dup.path ? ` in ${dup.path}` : ""
      }: give each field once`,
      { field: dup.path ? `${dup.path}.${dup.key}` : dup.key },
    );
  }
  return value as Record<string, unknown>;
}

/** The path of the first string (key or value) in `v` that is not well-formed Unicode. */
function illFormed(v: unknown, path = ""): string | undefined {
  if (typeof v === "string") return v.isWellFormed() ? undefined : path;
  if (typeof v !== "object" || v === null) return undefined;
  for (const [k, x] of Object.entries(v)) {
    const at = path ? `${path}.${k}` : k;
    if (!k.isWellFormed()) return at;
    const found = illFormed(x, at);
    if (found !== undefined) return found;
  }
  return undefined;
}

/** Reads an optional JSON object body (none, or an empty one, = {}). */
export async function optionalBody(c: Context): Promise<Record<string, unknown>> {
  if (c.req.raw.body === null) return {};
  return await readJsonObject(c, { optional: true });
}

/**
 * Refuses a body on a route that takes none (DELETE of a volume, uncordon, verify) beyond an
 * empty one or `{}`: what a client sent there would be ignored, which it did not mean.
 */
export async function refuseBody(c: Context): Promise<void> {
  rejectUnknownFields(await optionalBody(c), []);
}

/** Rejects fields outside `allowed`, naming the first unknown one. */
export function rejectUnknownFields(body: Record<string, unknown>, allowed: readonly string[]) {
  for (const key of Object.keys(body)) {
    if (!allowed.includes(key)) {
      const allowedText = allowed.length > 0
        ? `allowed fields: ${allowed.join(", ")}`
        : "this request takes no body";
      throw new InvalidArgumentError(`unknown field "${key}" in request body; ${allowedText}`, {
        field: key,
      });
    }
  }
}

/**
 * Middleware refusing query parameters outside `allowed` (none by default), naming the first
 * unknown one; every route but GET /v1/openapi.json runs one.
 */
export function allowQuery(...allowed: string[]): MiddlewareHandler {
  return async (c, next) => {
    for (const [key, values] of Object.entries(c.req.queries())) {
      // `?force=true&force=false` would mean whichever the code read: refused.
      if (values.length > 1) {
        throw new InvalidArgumentError(`query parameter "${key}" given ${values.length} times`, {
          field: key,
        });
      }
      if (!allowed.includes(key)) {
        throw new InvalidArgumentError(
          `unknown query parameter "${key}"` +
            (allowed.length ? `; allowed: ${allowed.join(", ")}` : "; this route takes none"),
          { field: key },
        );
      }
    }
    await next();
  };
}

/**
 * Parses a boolean query parameter: true/false/1/0, absent = false. An empty value (`?force`,
 * `?force=`) is refused: a script whose variable came out empty must not force anything.
 */
export function queryBool(c: Context, name: string): boolean {
  const v = c.req.query()[name];
  if (v === undefined) return false;
  if (v === "true" || v === "1") return true;
  if (v === "false" || v === "0") return false;
  throw new InvalidArgumentError(
    `invalid query parameter ${name}=${JSON.stringify(v)}: expected true or false (or 1 or 0)`,
    { field: name },
  );
}

const NODE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** Validates a node name path parameter. */
export function checkNodeName(name: string): string {
  if (!NODE_NAME.test(name)) {
    throw new InvalidArgumentError(
      `invalid node name ${JSON.stringify(name)}: use 1-63 characters of a-z, 0-9, ".", "_", "-"`,
      { field: "name" },
    );
  }
  return name;
}
