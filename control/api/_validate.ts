/**
 * Request validation for the API: JSON bodies with a fixed set of fields (unknown
 * fields rejected, wrong types named) and query parameters. Semantic checks of the
 * values live in _volume_rules.ts and are shared with VolumeService.
 * @module
 */

import type { Context } from "hono";
import { InvalidArgumentError, typeName } from "../../mod/errors.ts";
import type { CreateVolumeRequest, UpdateVolumeRequest } from "../../mod/types.ts";
import {
  checkDescription,
  checkLabels,
  checkReplicas,
  checkSpreadBy,
  checkVolumeName,
  checkVolumeSize,
} from "../volumes/rules.ts";

/** Largest request body accepted. */
export const MAX_BODY_BYTES = 64 * 1024;

/**
 * Reads the body as a JSON object; malformed JSON or a non-object is INVALID_ARGUMENT.
 * With `optional`, an empty (or blank) body reads as `{}`.
 */
export async function readJsonObject(
  c: Context,
  options: { optional?: boolean } = {},
): Promise<Record<string, unknown>> {
  const text = await c.req.text();
  if (new TextEncoder().encode(text).length > MAX_BODY_BYTES) {
    throw new InvalidArgumentError(`request body is larger than ${MAX_BODY_BYTES} bytes`);
  }
  if (text.trim() === "") {
    if (options.optional) return {};
    throw new InvalidArgumentError("request body is empty: expected a JSON object");
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new InvalidArgumentError(`request body is not valid JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new InvalidArgumentError(`request body must be a JSON object, got ${typeName(value)}`);
  }
  return value as Record<string, unknown>;
}

/** Rejects fields outside `allowed`, naming the first unknown one. */
export function rejectUnknownFields(body: Record<string, unknown>, allowed: readonly string[]) {
  for (const key of Object.keys(body)) {
    if (!allowed.includes(key)) {
      throw new InvalidArgumentError(
        `unknown field "${key}" in request body; allowed fields: ${allowed.join(", ")}`,
        { field: key },
      );
    }
  }
}

const CREATE_FIELDS = ["name", "size", "replicas", "spreadBy", "labels", "description"] as const;
const UPDATE_FIELDS = ["size", "labels", "description"] as const;

/** Validates a POST /v1/volumes body. */
export function parseCreateVolume(body: Record<string, unknown>): CreateVolumeRequest {
  rejectUnknownFields(body, CREATE_FIELDS);
  if (body.name === undefined) {
    throw new InvalidArgumentError('missing field "name"', { field: "name" });
  }
  if (body.size === undefined) {
    throw new InvalidArgumentError('missing field "size" (bytes or a string such as "10GiB")', {
      field: "size",
    });
  }
  const req: CreateVolumeRequest = {
    name: checkVolumeName(body.name),
    size: checkVolumeSize(body.size),
  };
  if (body.replicas !== undefined) req.replicas = checkReplicas(body.replicas);
  if (body.spreadBy !== undefined) req.spreadBy = checkSpreadBy(body.spreadBy);
  if (body.labels !== undefined) req.labels = checkLabels(body.labels);
  if (body.description !== undefined) req.description = checkDescription(body.description);
  return req;
}

/** Validates a PATCH /v1/volumes/{name} body: at least one field. */
export function parseUpdateVolume(body: Record<string, unknown>): UpdateVolumeRequest {
  rejectUnknownFields(body, UPDATE_FIELDS);
  const req: UpdateVolumeRequest = {};
  if (body.size !== undefined) req.size = checkVolumeSize(body.size);
  if (body.labels !== undefined) req.labels = checkLabels(body.labels);
  if (body.description !== undefined) req.description = checkDescription(body.description);
  if (Object.keys(req).length === 0) {
    throw new InvalidArgumentError(
      `request body changes nothing: give at least one of ${UPDATE_FIELDS.join(", ")}`,
    );
  }
  return req;
}

/** Rejects query parameters outside `allowed`. */
export function checkQuery(c: Context, allowed: readonly string[]): Record<string, string> {
  const query = c.req.query();
  for (const key of Object.keys(query)) {
    if (!allowed.includes(key)) {
      throw new InvalidArgumentError(
        `unknown query parameter "${key}"` +
          (allowed.length ? `; allowed: ${allowed.join(", ")}` : "; this route takes none"),
        { field: key },
      );
    }
  }
  return query;
}

/** Parses a boolean query parameter: true/false/1/0, absent = false. */
export function queryBool(query: Record<string, string>, name: string): boolean {
  const v = query[name];
  if (v === undefined) return false;
  if (v === "true" || v === "1" || v === "") return true;
  if (v === "false" || v === "0") return false;
  throw new InvalidArgumentError(
    `invalid query parameter ${name}=${JSON.stringify(v)}: expected true or false`,
    { field: name },
  );
}

/** Validates a POST /v1/nodes/{name}/cordon body: empty, or `{reason?: string}`. */
export async function readCordonRequest(c: Context): Promise<{ reason: string }> {
  const body = await readJsonObject(c, { optional: true });
  rejectUnknownFields(body, ["reason"]);
  if (body.reason === undefined) return { reason: "" };
  return { reason: checkDescription(body.reason, "reason") };
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
