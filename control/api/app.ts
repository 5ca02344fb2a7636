/**
 * The HTTP API (v1) as a Hono app, independent of the listener that serves it
 * (control/_https.ts: node:https with client certificates, or Deno.serve in plaintext
 * dev mode). With a Pki every request is authorized from the client certificate's role
 * (control/_api_auth.ts); the CA endpoints live in _api_ca.ts. Every error leaves through one
 * handler as `{error: {code, message, details?}}`; unknown routes get a JSON 404.
 * Each request gets an id (X-Request-Id in and out) and a child logger.
 * @module
 */

import { Hono } from "hono";
import type { Context } from "hono";
import { routePath } from "hono/route";
import { NotFoundError, toBallastError } from "../../mod/errors.ts";
import type { Health, List, NodeInfo, VersionInfo, Volume } from "../../mod/types.ts";
import { VERSION } from "../../mod/version.ts";
import type { Pki } from "../../ca/mod.ts";
import type { DataPlane } from "../../data/plane.ts";
import type { Logger } from "../common/log.ts";
import type { NodeRegistry } from "../nodes/registry.ts";
import type { StateStore } from "../store/state_store.ts";
import type { VolumeService } from "../volumes/service.ts";
import { OPENAPI_DOCUMENT } from "./openapi/document.ts";
import { ApiRequestCounter, PROMETHEUS_CONTENT_TYPE, renderMetrics } from "./_metrics.ts";
import {
  checkNodeName,
  checkQuery,
  parseCreateVolume,
  parseUpdateVolume,
  queryBool,
  readCordonRequest,
  readJsonObject,
} from "./_validate.ts";
import { checkVolumeName } from "../volumes/rules.ts";
import { type ApiEnv, authMiddleware } from "./_auth.ts";
import { registerCaRoutes } from "./_ca.ts";
import { STALE_HEADER } from "../../mod/client.ts";
import { type StaleMark, withStaleTracking } from "../store/read_cache.ts";
import { registerClusterRoutes } from "./_cluster.ts";
import type { ClusterCa } from "../cluster/_ca_record.ts";

export interface ApiDeps {
  volumes: VolumeService;
  nodes: NodeRegistry;
  dataPlane: DataPlane;
  logger: Logger;
  nodeName: string;
  /** When given, /v1/health checks that the store answers. */
  store?: StateStore;
  /**
   * The node's PKI. When given, the API runs with TLS: every request needs a verified client
   * certificate whose role allows the route, and the CA endpoints are served.
   */
  pki?: Pki;
  /** With a PKI: serve GET /v1/health without a client certificate. */
  allowAnonymousHealth?: boolean;
  /**
   * Called after the node's own certificates or the trust bundle changed (CA rotation,
   * import): the server reloads its TLS contexts (listener.reload()).
   */
  onCredentialsChanged?: () => void | Promise<void>;
  /** Cluster mode with TLS: the cluster CA's pin and KEK, for join tokens and joins. */
  cluster?: ClusterCa;
}

type Env = ApiEnv;

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const MUTATIONS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** Builds the API app. */
export function createApi(deps: ApiDeps): Hono<Env> {
  const app = new Hono<Env>();
  const requests = new ApiRequestCounter();

  app.use("*", async (c, next) => {
    const started = performance.now();
    const incoming = c.req.header("x-request-id");
    const id = incoming && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
    const log = deps.logger.child({ req: id, method: c.req.method, path: c.req.path });
    c.set("requestId", id);
    c.set("log", log);
    // Answers served from the read cache while etcd is unreachable say so (_read_cache.ts).
    const stale: StaleMark = {};
    await withStaleTracking(stale, next);
    c.res.headers.set("X-Request-Id", id);
    if (stale.since) c.res.headers.set(STALE_HEADER, stale.since.toISOString());
    requests.add(c.req.method, safeRoute(c), c.res.status);
    const who = c.get("identity");
    const fields = {
      status: c.res.status,
      ms: Math.round((performance.now() - started) * 10) / 10,
      ...(who ? { client: who.name, role: who.role } : {}),
    };
    if (MUTATIONS.has(c.req.method)) log.info(fields, "api request");
    else log.debug(fields, "api request");
  });

  app.use(
    "*",
    authMiddleware({ tls: !!deps.pki, allowAnonymousHealth: deps.allowAnonymousHealth }),
  );

  app.onError((err, c) => {
    const e = toBallastError(err);
    const log = c.get("log") ?? deps.logger;
    if (e.code === "INTERNAL" || e.code === "UNAVAILABLE") {
      log.error({ err: String(err), stack: (err as Error)?.stack }, "api request failed");
    }
    return c.json(e.toBody(), e.status as 400);
  });

  app.notFound((c) => {
    const e = new NotFoundError("route", `${c.req.method} ${c.req.path}`);
    return c.json(e.toBody(), 404);
  });

  app.get("/v1/health", async (c) => {
    checkQuery(c, []);
    const checks: Health["checks"] = {};
    if (deps.store) {
      try {
        // Bounded: a health check must answer quickly even while etcd does not (peers
        // probe it to tell "unreachable" from "ready", _node_probe.ts).
        const rev = await withDeadline(deps.store.currentRevision(), HEALTH_STORE_MS);
        checks.store = { ok: true, message: `${deps.store.description}, revision ${rev}` };
      } catch (err) {
        checks.store = { ok: false, message: String((err as Error).message ?? err) };
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
      checks.dataPlane = { ok: false, message: String((err as Error).message ?? err) };
    }
    const allOk = Object.values(checks).every((x) => x.ok);
    const body: Health = { status: allOk ? "ok" : "degraded", node: deps.nodeName, checks };
    return c.json(body, allOk ? 200 : 503);
  });

  app.get("/v1/version", (c) => {
    checkQuery(c, []);
    const body: VersionInfo = {
      version: VERSION,
      deno: Deno.version.deno,
      v8: Deno.version.v8,
      typescript: Deno.version.typescript,
      apiVersion: "v1",
    };
    return c.json(body);
  });

  app.get("/v1/openapi.json", (c) => c.json(OPENAPI_DOCUMENT));

  app.get("/v1/nodes", async (c) => {
    checkQuery(c, []);
    const body: List<NodeInfo> = { items: await deps.nodes.list() };
    return c.json(body);
  });

  app.get("/v1/nodes/:name", async (c) => {
    checkQuery(c, []);
    return c.json(await deps.nodes.get(checkNodeName(c.req.param("name"))));
  });

  app.post("/v1/nodes/:name/cordon", async (c) => {
    checkQuery(c, []);
    const name = checkNodeName(c.req.param("name"));
    const { reason } = await readCordonRequest(c);
    return c.json(await deps.nodes.cordon(name, reason));
  });

  app.post("/v1/nodes/:name/uncordon", async (c) => {
    checkQuery(c, []);
    return c.json(await deps.nodes.uncordon(checkNodeName(c.req.param("name"))));
  });

  app.get("/v1/volumes", async (c) => {
    checkQuery(c, []);
    const body: List<Volume> = { items: await deps.volumes.list() };
    return c.json(body);
  });

  app.post("/v1/volumes", async (c) => {
    checkQuery(c, []);
    const req = parseCreateVolume(await readJsonObject(c));
    const volume = await deps.volumes.create(req);
    c.header("Location", `/v1/volumes/${volume.name}`);
    return c.json(volume, 201);
  });

  app.get("/v1/volumes/:name", async (c) => {
    checkQuery(c, []);
    return c.json(await deps.volumes.get(checkVolumeName(c.req.param("name"))));
  });

  app.patch("/v1/volumes/:name", async (c) => {
    checkQuery(c, []);
    const name = checkVolumeName(c.req.param("name"));
    const req = parseUpdateVolume(await readJsonObject(c));
    return c.json(await deps.volumes.update(name, req));
  });

  app.delete("/v1/volumes/:name", async (c) => {
    const query = checkQuery(c, ["force"]);
    const name = checkVolumeName(c.req.param("name"));
    await deps.volumes.delete(name, { force: queryBool(query, "force") });
    return c.body(null, 204);
  });

  registerCaRoutes(app, deps);
  registerClusterRoutes(app, deps);

  app.get("/metrics", async (c) => {
    checkQuery(c, []);
    const text = renderMetrics({
      stats: deps.dataPlane.volumeStats(),
      volumes: await deps.volumes.list(),
      nbdConnections: deps.dataPlane.openConnections(),
      api: requests,
      rssBytes: Deno.memoryUsage().rss,
    });
    return c.body(text, 200, { "Content-Type": PROMETHEUS_CONTENT_TYPE });
  });

  return app;
}

/** The matched route pattern, e.g. "/v1/volumes/:name"; "unmatched" when none. */
function safeRoute(c: Context): string {
  try {
    const p = routePath(c, -1);
    return p && p !== "*" && p !== "/*" ? p : "unmatched";
  } catch {
    return "unmatched";
  }
}

/** How long /v1/health waits for the store before reporting it failing. */
const HEALTH_STORE_MS = 1_000;

/** `p`, or a rejection naming the deadline when it takes longer than `ms`. */
function withDeadline<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
