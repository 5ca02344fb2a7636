/**
 * Authorization of API requests from the client certificate's role (ca/README.md, "Roles").
 *
 * The listener (listener.ts) verifies the peer certificate of every request with the
 * node's Pki and passes the outcome in the Hono env: `identity` when it verified,
 * `authFailure` (the verify reason) when it did not. This middleware only decides:
 *
 *   no PKI (plaintext, loopback dev mode)  everything allowed
 *   GET /v1/health with allowAnonymousHealth  allowed without a certificate
 *   POST /v1/cluster/join                  allowed without a certificate (the join token
 *                                          authenticates; _cluster.ts)
 *   no or invalid certificate              401 UNAUTHENTICATED, with the reason
 *   admin                                  everything
 *   node                                   /v1/peer/*, /v1/health, /v1/version
 *   nbd-client                             /v1/health only
 *
 * Every refusal is logged at warn with the reason and the client's name and serial.
 * @module
 */

import type { MiddlewareHandler } from "hono";
import type { PeerIdentity, Role } from "../../ca/mod.ts";
import { BallastError } from "../../mod/errors.ts";
import { JOIN_PATH } from "../cluster/mod.ts";
import type { Logger } from "../common/mod.ts";

/** What the listener passes to `app.fetch(request, env)` for each request. */
export interface ApiBindings {
  /** Deno.serve's connection info (plaintext mode). */
  info?: unknown;
  /** The verified client certificate's identity. */
  identity?: PeerIdentity;
  /** Why the client certificate was refused, or that none was sent. */
  authFailure?: string;
}

/** The Hono env of the API app. */
export type ApiEnv = {
  Bindings: ApiBindings;
  Variables: { log: Logger; requestId: string; identity?: PeerIdentity };
};

/** The message when a client sent no certificate at all. */
export const NO_CLIENT_CERTIFICATE = "no client certificate: this API requires mutual TLS " +
  "(ballast CLI: --cert/--key, BALLAST_CERT/BALLAST_KEY, or --data-dir)";

/** Path prefix of the node-to-node routes (_peer.ts). */
export const PEER_PREFIX = "/v1/peer/";

/** Routes each non-admin role may call. */
function roleAllows(role: Role, method: string, path: string): boolean {
  if (role === "admin") return true;
  const read = method === "GET" || method === "HEAD";
  if (read && path === "/v1/health") return true;
  if (role === "node") return path.startsWith(PEER_PREFIX) || (read && path === "/v1/version");
  return false;
}

/** The decision for one request: allowed (with the identity, if any) or an error. */
export function authorize(
  options: { tls: boolean; allowAnonymousHealth?: boolean },
  env: ApiBindings | undefined,
  method: string,
  path: string,
): { ok: true; identity?: PeerIdentity } | { ok: false; error: BallastError } {
  if (!options.tls) return { ok: true };
  const identity = env?.identity;
  const anonymousOk = (options.allowAnonymousHealth === true && path === "/v1/health" &&
    (method === "GET" || method === "HEAD")) || (method === "POST" && path === JOIN_PATH);
  if (!identity) {
    if (anonymousOk) return { ok: true };
    const reason = env?.authFailure ?? NO_CLIENT_CERTIFICATE;
    return {
      ok: false,
      error: new BallastError("UNAUTHENTICATED", `client certificate refused: ${reason}`),
    };
  }
  if (anonymousOk || roleAllows(identity.role, method, path)) return { ok: true, identity };
  return {
    ok: false,
    error: new BallastError(
      "PERMISSION_DENIED",
      `${identity.role} certificate "${identity.name}" may not call ${method} ${path}` +
        (identity.role === "nbd-client"
          ? ": NBD client certificates are for the NBD endpoint only"
          : identity.role === "node"
          ? ": node certificates may only call node-to-node routes"
          : ""),
      { details: { role: identity.role } },
    ),
  };
}

/**
 * Middleware enforcing `authorize()`. Runs after the request-id middleware (it logs through
 * the request's child logger) and before every route, so unknown routes are refused too.
 */
export function authMiddleware(
  options: { tls: boolean; allowAnonymousHealth?: boolean },
): MiddlewareHandler<ApiEnv> {
  return async (c, next) => {
    const decision = authorize(options, c.env, c.req.method, c.req.path);
    if (!decision.ok) {
      const id = c.env?.identity;
      c.get("log").warn(
        {
          code: decision.error.code,
          reason: decision.error.message,
          ...(id ? { client: id.name, role: id.role, serial: id.serial } : {}),
        },
        "api request refused",
      );
      throw decision.error;
    }
    if (decision.identity) c.set("identity", decision.identity);
    await next();
  };
}
