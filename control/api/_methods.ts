/**
 * 405 Method Not Allowed: which methods the app routes for a path (RFC 9110 §15.5.6 asks
 * for an Allow header listing them), found from the app's own route table so it cannot
 * drift from the routes. Middleware (method ALL) does not count.
 * @module
 */

import type { Context, Env, Hono } from "hono";
import { PatternRouter } from "hono/router/pattern-router";
import { BallastError } from "../../mod/errors.ts";

const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] as const;

/**
 * A lookup of the methods routed for a path, built on first use (after every route is
 * registered). HEAD is allowed wherever GET is (Hono answers it with the GET handler).
 */
export function allowedMethods<E extends Env>(app: Hono<E>): (path: string) => string[] {
  let router: PatternRouter<string> | undefined;
  return (path) => {
    if (!router) {
      router = new PatternRouter<string>();
      for (const r of app.routes) if (r.method !== "ALL") router.add(r.method, r.path, r.method);
    }
    // The pattern router takes a trailing slash as optional and the app's router does not:
    // `/v1/volumes/` is routed nowhere, a 404 (not a 405 that lists the method used).
    if (path.length > 1 && path.endsWith("/")) return [];
    const allowed = new Set<string>();
    for (const m of METHODS) if (router.match(m, path)[0].length > 0) allowed.add(m);
    if (allowed.has("GET")) allowed.add("HEAD");
    return METHODS.filter((m) => allowed.has(m));
  };
}

/** The 405 answer (code INVALID_ARGUMENT) with its Allow header. */
export function methodNotAllowed(c: Context, allowed: readonly string[]): Response {
  const e = new BallastError(
    "INVALID_ARGUMENT",
    `method ${c.req.method} is not allowed on ${c.req.path}; allowed: ${allowed.join(", ")}`,
    { status: 405, details: { method: c.req.method, allowed } },
  );
  c.header("Allow", allowed.join(", "));
  return c.json(e.toBody(), 405);
}
