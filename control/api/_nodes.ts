/**
 * The node routes: GET /v1/nodes, GET and DELETE /v1/nodes/{name} (VolumeService.removeNode:
 * a node gone for good), POST /v1/nodes/{name}/cordon and /uncordon (NodeRegistry does the
 * work), POST /v1/nodes/{name}/drain (VolumeService.drain, streamed as application/x-ndjson:
 * the plan, each volume as it is done, the summary).
 * @module
 */

import { type Context, Hono } from "hono";
import type { List, NodeInfo, Volume } from "../../mod/types.ts";
import { InvalidArgumentError } from "../../mod/errors.ts";
import type { NodeRegistry } from "../nodes/mod.ts";
import {
  checkDescription,
  type DrainOptions,
  nodeLoad,
  type VolumeService,
} from "../volumes/mod.ts";
import type { ApiEnv } from "./_auth.ts";
import {
  allowQuery,
  checkNodeName,
  readJsonObject,
  refuseBody,
  rejectUnknownFields,
} from "./_validate.ts";

/** What the node routes need from ApiDeps. */
export interface NodeRouteDeps {
  nodes: NodeRegistry;
  volumes: VolumeService;
}

/** The /v1/nodes sub-app. */
export function nodeRoutes(deps: NodeRouteDeps): Hono<ApiEnv> {
  const app = new Hono<ApiEnv>();

  app.get("/", allowQuery(), async (c) => {
    const [nodes, volumes] = await Promise.all([deps.nodes.list(), deps.volumes.list()]);
    const body: List<NodeInfo> = { items: withHoldings(nodes, volumes) };
    return c.json(body);
  });

  app.get("/:name", allowQuery(), async (c) => {
    const [node, volumes] = await Promise.all([
      deps.nodes.get(checkNodeName(c.req.param("name"))),
      deps.volumes.list(),
    ]);
    return c.json(withHoldings([node], volumes)[0]);
  });

  app.delete("/:name", allowQuery(), async (c) => {
    await refuseBody(c);
    return c.json(await deps.volumes.removeNode(checkNodeName(c.req.param("name")), deps.nodes));
  });

  app.post("/:name/cordon", allowQuery(), async (c) => {
    const name = checkNodeName(c.req.param("name"));
    const { reason } = await readCordonRequest(c);
    return c.json(await deps.nodes.cordon(name, reason));
  });

  app.post("/:name/uncordon", allowQuery(), async (c) => {
    await refuseBody(c);
    return c.json(await deps.nodes.uncordon(checkNodeName(c.req.param("name"))));
  });

  app.post("/:name/drain", allowQuery(), async (c) => {
    const name = checkNodeName(c.req.param("name"));
    const options = await readDrainRequest(c);
    const progress = deps.volumes.drain(name, deps.nodes, options);
    // The first line (the plan) before the response starts: an unknown node is a 404.
    const first = await progress.next();
    const encoder = new TextEncoder();
    const line = (v: unknown) => encoder.encode(JSON.stringify(v) + "\n");
    const log = c.get("log");
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        if (!first.done) controller.enqueue(line(first.value));
      },
      async pull(controller) {
        try {
          const r = await progress.next();
          if (r.done) controller.close();
          else controller.enqueue(line(r.value));
        } catch (err) {
          // The status line is sent: the error goes as the last line.
          log.error({ err }, "drain failed");
          controller.enqueue(line({ type: "error", message: (err as Error).message }));
          controller.close();
        }
      },
      async cancel() {
        await progress.return(undefined);
      },
    });
    return new Response(body, {
      headers: { "content-type": "application/x-ndjson", "cache-control": "no-store" },
    });
  });

  return app;
}

/**
 * The nodes with the volumes each masters and the copies each holds, counted from the volume
 * records (a volume without replicas is one copy, on its master).
 */
function withHoldings(nodes: NodeInfo[], volumes: Volume[]): NodeInfo[] {
  const load = nodeLoad(
    volumes.map((v) => ({ members: v.members ?? [v.master], master: v.master })),
  );
  return nodes.map((n) => ({
    ...n,
    masters: load.get(n.name)?.masters ?? 0,
    copies: load.get(n.name)?.copies ?? 0,
  }));
}

/** Validates a POST /v1/nodes/{name}/drain body: empty, or `{force?, dryRun?}` booleans. */
async function readDrainRequest(c: Context): Promise<DrainOptions> {
  const body = await readJsonObject(c, { optional: true });
  rejectUnknownFields(body, ["force", "dryRun"]);
  const out: DrainOptions = {};
  for (const key of ["force", "dryRun"] as const) {
    const v = body[key];
    if (v === undefined) continue;
    if (typeof v !== "boolean") {
      throw new InvalidArgumentError(
        `invalid ${key} ${JSON.stringify(v)}: expected true or false`,
        {
          field: key,
        },
      );
    }
    out[key] = v;
  }
  return out;
}

/** Validates a POST /v1/nodes/{name}/cordon body: empty, or `{reason?: string}`. */
async function readCordonRequest(c: Context): Promise<{ reason: string }> {
  const body = await readJsonObject(c, { optional: true });
  rejectUnknownFields(body, ["reason"]);
  if (body.reason === undefined) return { reason: "" };
  return { reason: checkDescription(body.reason, "reason") };
}
