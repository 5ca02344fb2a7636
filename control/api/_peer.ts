/**
 * The node-to-node routes under /v1/peer/ (roles node and admin, _auth.ts):
 * GET /v1/peer/volumes/{name}, what this node knows first-hand of a volume it serves, so
 * that any node can show it (`volume get` asked elsewhere, control/volumes/_live.ts); POST
 * /v1/peer/volumes/{name}/verify, the master's comparison of the copies (`volume verify`).
 * @module
 */

import { Hono } from "hono";
import type { VolumeLiveStatus } from "../../mod/types.ts";
import { checkVolumeName, type VolumeService } from "../volumes/mod.ts";
import type { ApiEnv } from "./_auth.ts";
import { allowQuery, queryBool } from "./_validate.ts";

/** What the peer routes need from ApiDeps. */
export interface PeerRouteDeps {
  volumes: VolumeService;
}

/** The /v1/peer sub-app. */
export function peerRoutes(deps: PeerRouteDeps): Hono<ApiEnv> {
  const app = new Hono<ApiEnv>();
  app.get("/volumes/:name", allowQuery(), async (c) => {
    const body: VolumeLiveStatus = await deps.volumes.liveStatus(
      checkVolumeName(c.req.param("name")),
    );
    return c.json(body);
  });
  app.post("/volumes/:name/verify", allowQuery("deep"), async (c) => {
    const name = checkVolumeName(c.req.param("name"));
    return c.json(await deps.volumes.verify(name, { deep: queryBool(c, "deep"), local: true }));
  });
  return app;
}
