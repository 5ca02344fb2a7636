/**
 * The volume routes: GET/POST /v1/volumes, GET/PATCH/DELETE /v1/volumes/{name}, POST
 * /v1/volumes/{name}/verify, GET /v1/volumes/{name}/events
 * (VolumeService does the work; this checks the request).
 * @module
 */

import { Hono } from "hono";
import { InvalidArgumentError } from "../../mod/errors.ts";
import type {
  CreateVolumeRequest,
  List,
  UpdateVolumeRequest,
  Volume,
  VolumeEvent,
} from "../../mod/types.ts";
import {
  checkDescription,
  checkLabels,
  checkReplicas,
  checkSpreadBy,
  checkVolumeName,
  checkVolumeSize,
  labelChange,
  type VolumeService,
} from "../volumes/mod.ts";
import type { ApiEnv } from "./_auth.ts";
import {
  allowQuery,
  queryBool,
  readJsonObject,
  refuseBody,
  rejectUnknownFields,
} from "./_validate.ts";

/** What the volume routes need from ApiDeps. */
export interface VolumeRouteDeps {
  volumes: VolumeService;
}

/** The /v1/volumes sub-app. */
export function volumeRoutes(deps: VolumeRouteDeps): Hono<ApiEnv> {
  const app = new Hono<ApiEnv>();

  app.get("/", allowQuery(), async (c) => {
    const body: List<Volume> = { items: await deps.volumes.list() };
    return c.json(body);
  });

  app.post("/", allowQuery(), async (c) => {
    const req = parseCreateVolume(await readJsonObject(c));
    const volume = await deps.volumes.create(req);
    c.header("Location", `/v1/volumes/${volume.name}`);
    return c.json(volume, 201);
  });

  app.get("/:name", allowQuery(), async (c) => {
    return c.json(await deps.volumes.get(checkVolumeName(c.req.param("name"))));
  });

  app.patch("/:name", allowQuery(), async (c) => {
    const name = checkVolumeName(c.req.param("name"));
    const req = parseUpdateVolume(await readJsonObject(c));
    return c.json(await deps.volumes.update(name, req));
  });

  app.get("/:name/events", allowQuery(), async (c) => {
    const name = checkVolumeName(c.req.param("name"));
    const body: List<VolumeEvent> = { items: await deps.volumes.events(name) };
    return c.json(body);
  });

  app.post("/:name/verify", allowQuery("deep"), async (c) => {
    await refuseBody(c);
    const name = checkVolumeName(c.req.param("name"));
    return c.json(await deps.volumes.verify(name, { deep: queryBool(c, "deep") }));
  });

  app.delete("/:name", allowQuery("force"), async (c) => {
    await refuseBody(c);
    const name = checkVolumeName(c.req.param("name"));
    const outcome = await deps.volumes.delete(name, { force: queryBool(c, "force") });
    // Accepted, not finished: a member must still remove its copy (a down one when back).
    if (outcome) return c.json({ name, state: "deleting", pending: outcome.pending }, 202);
    return c.body(null, 204);
  });

  return app;
}

const CREATE_FIELDS = ["name", "size", "replicas", "spreadBy", "labels", "description"] as const;
const UPDATE_FIELDS = [
  "size",
  "replicas",
  "labels",
  "setLabels",
  "removeLabels",
  "description",
] as const;

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
  if (body.replicas !== undefined) req.replicas = checkReplicas(body.replicas);
  if (labelChange(body)) {
    if (body.labels !== undefined) req.labels = body.labels as Record<string, string>;
    if (body.setLabels !== undefined) req.setLabels = body.setLabels as Record<string, string>;
    if (body.removeLabels !== undefined) req.removeLabels = body.removeLabels as string[];
  }
  if (body.description !== undefined) req.description = checkDescription(body.description);
  if (Object.keys(req).length === 0) {
    throw new InvalidArgumentError(
      `request body changes nothing: give at least one of ${UPDATE_FIELDS.join(", ")}`,
    );
  }
  return req;
}
