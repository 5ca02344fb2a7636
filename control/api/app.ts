/**
 * The HTTP API (v1) as a Hono app, independent of the listener that serves it
 * (listener.ts: node:https with client certificates, or Deno.serve in plaintext dev mode).
 * With a Pki every request is authorized from the client certificate's role (_auth.ts).
 * One sub-app per resource: _system.ts (health, version, OpenAPI), _nodes.ts, _volumes.ts,
 * _ca.ts, _cluster.ts, _peer.ts (node-to-node), _metrics.ts; every route checks its query
 * string with a middleware (_validate.ts). Every error leaves through one handler as
 * `{error: {code, message, details?}}`; unknown routes get a JSON 404, a known route with
 * another method 405 with Allow (_methods.ts). JSON bodies must be application/json, at most
 * 64 KiB (413), each key once (_validate.ts). Each request gets an
 * id (X-Request-Id in and out) and a child logger.
 * @module
 */

import { type Context, Hono } from "hono";
import { routePath } from "hono/route";
import type { Pki } from "../../ca/mod.ts";
import type { DataPlane } from "../../data/plane.ts";
import { AGE_HEADER, ageSeconds, STALE_HEADER } from "../../mod/client.ts";
import { NotFoundError, toBallastError } from "../../mod/errors.ts";
import type { ClusterMember } from "../cluster/mod.ts";
import type { Logger } from "../common/mod.ts";
import type { CrashCounts, NodeRegistry } from "../nodes/mod.ts";
import { type StaleMark, type StateStore, withStaleTracking } from "../store/mod.ts";
import type { VolumeService } from "../volumes/mod.ts";
import { type ApiEnv, authMiddleware } from "./_auth.ts";
import { caRoutes } from "./_ca.ts";
import { clusterRoutes } from "./_cluster.ts";
import { allowedMethods, methodNotAllowed } from "./_methods.ts";
import { ApiRequestCounter, metricsRoutes } from "./_metrics.ts";
import { nodeRoutes } from "./_nodes.ts";
import { peerRoutes } from "./_peer.ts";
import { systemRoutes } from "./_system.ts";
import { volumeRoutes } from "./_volumes.ts";

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
  /** Cluster mode with TLS: the member's share of the cluster CA, for joins and rotation. */
  cluster?: ClusterMember;
  /** Crash detection's checks by outcome, for /metrics (cluster mode with replication). */
  crashChecks?: () => CrashCounts;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const MUTATIONS = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** Builds the API app. */
export function createApi(deps: ApiDeps): Hono<ApiEnv> {
  const app = new Hono<ApiEnv>();
  const requests = new ApiRequestCounter();

  app.use("*", async (c, next) => {
    const started = performance.now();
    const incoming = c.req.header("x-request-id");
    const id = incoming && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
    const log = deps.logger.child({ req: id, method: c.req.method, path: c.req.path });
    c.set("requestId", id);
    c.set("log", log);
    // Answers served from the read cache while etcd is unreachable say so (store/read_cache.ts).
    const stale: StaleMark = {};
    await withStaleTracking(stale, next);
    c.res.headers.set("X-Request-Id", id);
    if (stale.since) {
      // As of when the answer is known current, and how many seconds ago that was (RFC 9111).
      c.res.headers.set(STALE_HEADER, stale.since.toISOString());
      c.res.headers.set(AGE_HEADER, String(ageSeconds(stale.since, new Date())));
    }
    requests.add(c.req.method, safeRoute(c), c.res.status);
    const who = c.get("identity");
    const fields = {
      status: c.res.status,
      ms: Math.round((performance.now() - started) * 10) / 10,
      ...(who ? { client: who.name, role: who.role } : {}),
    };
    // Changes and every refused or failed request at info; reads that succeed (monitoring
    // polls them) at debug.
    if (MUTATIONS.has(c.req.method) || c.res.status >= 400) log.info(fields, "api request");
    else log.debug(fields, "api request");
  });

  app.use(
    "*",
    authMiddleware({ tls: !!deps.pki, allowAnonymousHealth: deps.allowAnonymousHealth }),
  );

  app.onError((err, c) => {
    const e = toBallastError(err);
    const log = c.get("log") ?? deps.logger;
    if (e.code === "INTERNAL" || e.code === "UNAVAILABLE") log.error({ err }, "api request failed");
    return c.json(e.toBody(), e.status as 400);
  });

  const methodsFor = allowedMethods(app);
  app.notFound((c) => {
    const allowed = methodsFor(c.req.path);
    if (allowed.length > 0) return methodNotAllowed(c, allowed);
    const e = new NotFoundError("route", `${c.req.method} ${c.req.path}`);
    return c.json(e.toBody(), 404);
  });

  app.route("/v1", systemRoutes(deps));
  app.route("/v1/nodes", nodeRoutes(deps));
  app.route("/v1/volumes", volumeRoutes(deps));
  app.route("/v1/ca", caRoutes(deps));
  app.route("/v1/cluster", clusterRoutes(deps));
  app.route("/v1/peer", peerRoutes(deps));
  app.route("/metrics", metricsRoutes(deps, requests));
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
