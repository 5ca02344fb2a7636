/**
 * The node routes: GET /v1/nodes, GET /v1/nodes/{name}, POST /v1/nodes/{name}/cordon and
 * /uncordon (NodeRegistry does the work).
 * @module
 */

import { type Context, Hono } from "hono";
import type { List, NodeInfo } from "../../mod/types.ts";
import type { NodeRegistry } from "../nodes/mod.ts";
import { checkDescription } from "../volumes/mod.ts";
import type { ApiEnv } from "./_auth.ts";
import { allowQuery, checkNodeName, readJsonObject, rejectUnknownFields } from "./_validate.ts";

/** What the node routes need from ApiDeps. */
export interface NodeRouteDeps {
  nodes: NodeRegistry;
}

/** The /v1/nodes sub-app. */
export function nodeRoutes(deps: NodeRouteDeps): Hono<ApiEnv> {
  const app = new Hono<ApiEnv>();

  app.get("/", allowQuery(), async (c) => {
    const body: List<NodeInfo> = { items: await deps.nodes.list() };
    return c.json(body);
  });

  app.get("/:name", allowQuery(), async (c) => {
    return c.json(await deps.nodes.get(checkNodeName(c.req.param("name"))));
  });

  app.post("/:name/cordon", allowQuery(), async (c) => {
    const name = checkNodeName(c.req.param("name"));
    const { reason } = await readCordonRequest(c);
    return c.json(await deps.nodes.cordon(name, reason));
  });

  app.post("/:name/uncordon", allowQuery(), async (c) => {
    return c.json(await deps.nodes.uncordon(checkNodeName(c.req.param("name"))));
  });

  return app;
}

/** Validates a POST /v1/nodes/{name}/cordon body: empty, or `{reason?: string}`. */
async function readCordonRequest(c: Context): Promise<{ reason: string }> {
  const body = await readJsonObject(c, { optional: true });
  rejectUnknownFields(body, ["reason"]);
  if (body.reason === undefined) return { reason: "" };
  return { reason: checkDescription(body.reason, "reason") };
}
