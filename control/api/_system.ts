/**
 * The node's own routes: GET /v1/health (with a bounded store check), GET /v1/version and
 * GET /v1/openapi.json.
 * @module
 */

import { Hono } from "hono";
import { errorMessage } from "../../mod/errors.ts";
import type { Health, VersionInfo } from "../../mod/types.ts";
import { versionInfo } from "../common/mod.ts";
import type { DataPlane } from "../../data/plane.ts";
import type { StateStore } from "../store/mod.ts";
import type { VolumeService } from "../volumes/mod.ts";
import type { ApiEnv } from "./_auth.ts";
import { allowQuery } from "./_validate.ts";
import { OPENAPI_DOCUMENT } from "./openapi/mod.ts";

/** What the system routes need from ApiDeps. */
export interface SystemRouteDeps {
  dataPlane: DataPlane;
  nodeName: string;
  /** When given, /v1/health checks that the store answers. */
  store?: StateStore;
  /** When given, /v1/health reports the volumes whose copy on this node failed. */
  volumes?: Pick<VolumeService, "list">;
  /** With TLS, a request without a certificate (--api-anonymous-health) gets no details. */
  pki?: unknown;
}

/** How long /v1/health waits for the store before reporting it failing. */
const HEALTH_STORE_MS = 1_000;

/** The /v1 sub-app of health, version and the OpenAPI document. */
export function systemRoutes(deps: SystemRouteDeps): Hono<ApiEnv> {
  const app = new Hono<ApiEnv>();

  app.get("/health", allowQuery(), async (c) => {
    const checks: Health["checks"] = {};
    if (deps.store) {
      try {
        // Bounded: a health check must answer quickly even while etcd does not (peers
        // probe it to tell "unreachable" from "ready", nodes/probe.ts).
        const rev = await withDeadline(deps.store.currentRevision(), HEALTH_STORE_MS);
        checks.store = { ok: true, message: `${deps.store.description}, revision ${rev}` };
      } catch (err) {
        checks.store = { ok: false, message: errorMessage(err) };
      }
    }
    try {
      const { capacityBytes, freeBytes } = deps.dataPlane.capacity();
      const ok = freeBytes > 0;
      checks.dataPlane = {
        ok,
        message: ok
          ? `nbd on ${deps.dataPlane.nbdAddress}; ${freeBytes} of ${capacityBytes} bytes free`
          : "data disk is full",
      };
    } catch (err) {
      checks.dataPlane = { ok: false, message: errorMessage(err) };
    }
    if (deps.volumes && checks.store?.ok !== false) {
      checks.volumes = await failedVolumesCheck(deps.volumes, deps.nodeName);
    }
    const allOk = Object.values(checks).every((x) => x.ok);
    if (deps.pki && !c.get("identity")) {
      // Anonymous (a load balancer's probe): whether each check passes, not the data
      // directory, free bytes, volume names or errors behind it.
      for (const x of Object.values(checks)) x.message = x.ok ? "ok" : "failing";
    }
    const body: Health = { status: allOk ? "ok" : "degraded", node: deps.nodeName, checks };
    return c.json(body, allOk ? 200 : 503);
  });

  app.get("/version", allowQuery(), (c) => {
    const body: VersionInfo = versionInfo();
    return c.json(body);
  });

  app.get("/openapi.json", (c) => c.json(OPENAPI_DOCUMENT));

  return app;
}

/**
 * The volumes whose copy on this node could not be opened (state "failed", volume get says
 * why): the node serves the others, but an operator must look, as `ballast_volume_state` and
 * the BallastVolumeFailed alert also say. Bounded like the store check.
 */
async function failedVolumesCheck(
  volumes: Pick<VolumeService, "list">,
  node: string,
): Promise<{ ok: boolean; message: string }> {
  try {
    const all = await withDeadline(volumes.list(), HEALTH_STORE_MS);
    const failed = all.filter((v) => v.state === "failed" && v.master === node);
    if (failed.length === 0) return { ok: true, message: `${all.length} volumes, none failed` };
    const named = failed.slice(0, 3).map((v) => `${v.name} (${v.stateReason ?? "failed"})`);
    const more = failed.length > 3 ? ` and ${failed.length - 3} more` : "";
    return { ok: false, message: `${failed.length} failed here: ${named.join(", ")}${more}` };
  } catch (err) {
    return { ok: false, message: `could not list volumes: ${errorMessage(err)}` };
  }
}

/** `p`, or a rejection naming the deadline when it takes longer than `ms`. */
function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
