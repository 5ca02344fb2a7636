/**
 * The cluster routes (docs/TLS.md, "Joining a cluster"); cluster/admission.ts does the work:
 *
 *   POST /v1/cluster/join-tokens  admin only: a single-use token expiring after `ttl`
 *   POST /v1/cluster/join         no client certificate (_auth.ts): a joining node trades a
 *                                 valid token and a CSR for its certificate, the trust
 *                                 bundle and the cluster KEK
 * @module
 */

import { Hono } from "hono";
import { parseDuration } from "../../mod/duration.ts";
import { FailedPreconditionError, InvalidArgumentError } from "../../mod/errors.ts";
import {
  admitNode,
  type ClusterMember,
  DEFAULT_TOKEN_TTL_SECONDS,
  issueJoinToken,
  MAX_TOKEN_TTL,
  parseJoinToken,
} from "../cluster/mod.ts";
import type { ApiEnv } from "./_auth.ts";
import {
  allowQuery,
  checkNodeName,
  optionalBody,
  readJsonObject,
  rejectUnknownFields,
} from "./_validate.ts";

/** What the cluster routes need from ApiDeps. */
export interface ClusterRouteDeps {
  /** Present in cluster mode with TLS (the CA is in etcd). */
  cluster?: ClusterMember;
}

const MAX_CSR = 16 * 1024;

/** The /v1/cluster sub-app. */
export function clusterRoutes(deps: ClusterRouteDeps): Hono<ApiEnv> {
  const app = new Hono<ApiEnv>();
  const need = (): ClusterMember => {
    if (!deps.cluster) {
      throw new FailedPreconditionError(
        "joining needs cluster mode with TLS (--etcd, TLS on) and the cluster CA in etcd",
      );
    }
    return deps.cluster;
  };

  app.post("/join-tokens", allowQuery(), async (c) => {
    const cluster = need();
    const body = await optionalBody(c);
    rejectUnknownFields(body, ["ttl"]);
    const ttlSeconds = body.ttl === undefined
      ? DEFAULT_TOKEN_TTL_SECONDS
      : parseDuration(body.ttl, "ttl", "ttl", MAX_TOKEN_TTL);
    const info = await issueJoinToken(cluster, {
      ttlSeconds,
      createdBy: c.get("identity")?.name,
      log: c.get("log"),
    });
    return c.json(info, 201);
  });

  app.post("/join", allowQuery(), async (c) => { // JOIN_PATH
    const cluster = need();
    const body = await readJsonObject(c);
    rejectUnknownFields(body, ["token", "csr", "nodeName"]);
    if (typeof body.token !== "string") {
      throw new InvalidArgumentError('missing or non-string field "token"', { field: "token" });
    }
    const token = parseJoinToken(body.token, "token");
    if (typeof body.nodeName !== "string") {
      throw new InvalidArgumentError('missing or non-string field "nodeName"', {
        field: "nodeName",
      });
    }
    const nodeName = checkNodeName(body.nodeName);
    const csrPem = typeof body.csr === "string" && body.csr.length <= MAX_CSR
      ? body.csr
      : undefined;
    if (!csrPem) {
      throw new InvalidArgumentError(`field "csr" must be a PEM CSR of up to ${MAX_CSR} chars`, {
        field: "csr",
      });
    }
    return c.json(await admitNode(cluster, { token, nodeName, csrPem, log: c.get("log") }), 201);
  });

  return app;
}
