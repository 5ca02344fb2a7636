/**
 * The cluster routes of the OpenAPI document (/v1/cluster...): paths and schemas.
 * @module
 */

import { errors, json, ref } from "./_util.ts";

/** The cluster endpoints (api/_cluster.ts). */
export const CLUSTER_PATHS = {
  "/v1/cluster/join-tokens": {
    post: {
      operationId: "createJoinToken",
      summary: "Make a single-use, expiring join token for a new node",
      tags: ["cluster"],
      description: "Admin certificates only; cluster mode with TLS. Only the SHA-256 of the " +
        "token's secret is stored (in etcd, with its expiry); the token is returned once.",
      requestBody: { required: false, content: json(ref("CreateJoinTokenRequest")) },
      responses: {
        "201": { description: "Token", content: json(ref("JoinTokenInfo")) },
        ...errors(400, 401, 403, 412),
      },
    },
  },
  "/v1/cluster/join": {
    post: {
      operationId: "joinCluster",
      summary: "A new node trades a join token and a CSR for its certificate and the KEK",
      tags: ["cluster"],
      description: "Served without a client certificate (the token authenticates). The " +
        "token is consumed atomically (single use). Refusals: 401 with details.reason " +
        "JOIN_TOKEN_INVALID (unknown id or wrong secret), JOIN_TOKEN_EXPIRED or " +
        "JOIN_TOKEN_USED; 403 JOIN_TOKEN_CA_MISMATCH; 409 when the node name is taken.",
      security: [],
      requestBody: { required: true, content: json(ref("JoinRequest")) },
      responses: {
        "201": { description: "Joined", content: json(ref("JoinResponse")) },
        ...errors(400, 401, 403, 409, 412),
      },
    },
  },
};

export const CLUSTER_SCHEMAS = {
  CreateJoinTokenRequest: {
    type: "object",
    additionalProperties: false,
    properties: {
      ttl: {
        oneOf: [{ type: "integer", minimum: 1, maximum: 604800 }, {
          type: "string",
          examples: ["15m", "1h", "2d"],
        }],
        description: "Lifetime; default 1h, at most 7d.",
      },
    },
  },
  JoinTokenInfo: {
    type: "object",
    required: ["token", "id", "expiresAt"],
    properties: {
      token: {
        type: "string",
        description: "ballast1.<id>.<secret>.<sha256 of the CA certificate>",
      },
      id: { type: "string" },
      expiresAt: { type: "string", format: "date-time" },
    },
  },
  JoinRequest: {
    type: "object",
    additionalProperties: false,
    required: ["token", "csr", "nodeName"],
    properties: {
      token: { type: "string" },
      csr: { type: "string", description: "PKCS#10 PEM, role node, CN = nodeName" },
      nodeName: { type: "string", pattern: "^[a-z0-9][a-z0-9._-]{0,62}$" },
    },
  },
  JoinResponse: {
    type: "object",
    required: ["certificate", "caBundle", "kek"],
    properties: {
      certificate: { type: "string", description: "the node certificate (PEM)" },
      caBundle: { type: "string", description: "the trust bundle (PEM)" },
      kek: { type: "string", description: "the cluster key-encryption key (base64)" },
    },
  },
};
