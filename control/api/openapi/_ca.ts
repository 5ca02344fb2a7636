/**
 * The CA routes of the OpenAPI document (/v1/ca...): paths and schemas.
 * @module
 */

import { errors, json, listOf, ref } from "./_util.ts";

const adminOp = (operationId: string, summary: string, extra: Record<string, unknown>) => ({
  operationId,
  summary,
  tags: ["ca"],
  description: "Admin certificates only.",
  ...extra,
});
const duration = {
  oneOf: [{ type: "integer", minimum: 1 }, { type: "string", examples: ["30d", "12h", "90m"] }],
  description: "Seconds, or a number with s, m, h or d; at most 3650 days.",
};
const pemBody = (field: string, description: string) => ({
  type: "object",
  additionalProperties: false,
  required: [field],
  properties: {
    [field]: { type: "string", description },
    which: { type: "string", enum: ["node", "admin"], default: "node" },
  },
});

/** The CA endpoints (api/_ca.ts). */
export const CA_PATHS = {
  "/v1/ca": {
    get: adminOp("getCa", "CA mode, CA certificates with fingerprints, trust bundle", {
      responses: {
        "200": { description: "CA", content: json(ref("CaInfo")) },
        ...errors(401, 403),
      },
    }),
  },
  "/v1/ca/certificates": {
    get: adminOp("listCertificates", "Every issued certificate, revoked ones included", {
      responses: {
        "200": { description: "Certificates", content: json(listOf("IssuedCertificate")) },
        ...errors(401, 403),
      },
    }),
    post: adminOp("signCertificate", "Sign a client-generated CSR (admin or nbd-client)", {
      description: "Admin certificates only. The client keeps its key: only a PKCS#10 CSR " +
        "is sent, and its role, CN and volume grants must match the request. Role node is " +
        "not issuable here (nodes join with a join token).",
      requestBody: { required: true, content: json(ref("SignCertificateRequest")) },
      responses: {
        "201": { description: "Signed", content: json(ref("SignedCertificate")) },
        ...errors(400, 401, 403, 412),
      },
    }),
  },
  "/v1/ca/certificates/{serial}/revoke": {
    post: adminOp("revokeCertificate", "Revoke a certificate (idempotent)", {
      description: "Admin certificates only. Refused at the next request or handshake on " +
        "every endpoint (of every member, in cluster mode). SERIAL is a serial this CA " +
        "issued or an unambiguous prefix of one (400 naming the candidates otherwise); an " +
        "unknown serial is 404 (external CA mode revokes a full unknown serial as given). " +
        "The response names the full serial.",
      parameters: [{
        name: "serial",
        in: "path",
        required: true,
        schema: { type: "string", pattern: "^[0-9A-Fa-f:]{1,64}$" },
      }],
      requestBody: {
        required: false,
        content: json({
          type: "object",
          additionalProperties: false,
          properties: { reason: { type: "string", maxLength: 256 } },
        }),
      },
      responses: {
        "200": { description: "Revocation", content: json(ref("Revocation")) },
        ...errors(400, 401, 403, 404),
      },
    }),
  },
  "/v1/ca/rotate": {
    post: adminOp(
      "rotateCa",
      "New root CA; the old one stays trusted for the overlap. Cluster mode: the cluster CA " +
        "in etcd, adopted by every member; 409 when another rotation won the race. A single " +
        "node on the operator's CA (intermediate or external mode) moves to the CA given in " +
        "certPem (keyPem unless external, chainPem: the certificates above it); without it " +
        "412",
      {
        requestBody: {
          required: false,
          content: json({
            type: "object",
            additionalProperties: false,
            properties: {
              overlap: { ...duration, description: "Default: the leaf lifetime" },
              certPem: { type: "string", description: "The operator's new CA certificate (PEM)" },
              keyPem: { type: "string", description: "Its private key (PKCS#8 PEM)" },
              chainPem: { type: "string", description: "Certificates above it, nearest first" },
            },
          }),
        },
        responses: {
          "200": { description: "The rotated CA", content: json(ref("CaInfo")) },
          ...errors(400, 401, 403, 409, 412, 503),
        },
      },
    ),
  },
  "/v1/ca/csr": {
    post: adminOp("createNodeCsr", "External CA mode: new key on the node, CSR to sign", {
      responses: {
        "200": {
          description: "CSR",
          content: json({ type: "object", properties: { which: {}, csrPem: { type: "string" } } }),
        },
        ...errors(401, 403, 412),
      },
    }),
  },
  "/v1/ca/import": {
    post: adminOp("importCertificate", "External CA mode: install a signed certificate", {
      requestBody: {
        required: true,
        content: json(pemBody("certificatePem", "PEM, chain may follow")),
      },
      responses: {
        "200": { description: "CA", content: json(ref("CaInfo")) },
        ...errors(400, 401, 403, 412),
      },
    }),
  },
};

const caCert = {
  type: "object",
  properties: {
    subject: { type: "string" },
    issuer: { type: "string" },
    serial: { type: "string" },
    notBefore: { type: "string", format: "date-time" },
    notAfter: { type: "string", format: "date-time" },
    sha256Fingerprint: { type: "string", examples: ["AB:CD:..."] },
  },
};

export const CA_SCHEMAS = {
  CaInfo: {
    type: "object",
    properties: {
      mode: { type: "string", enum: ["internal", "intermediate", "external"] },
      certificates: { type: "array", items: caCert, description: "Issuing CA(s)" },
      trusted: { type: "array", items: caCert, description: "Every CA trusted now" },
      bundlePem: { type: "string", description: "Trust bundle for clients (ca-bundle.crt)" },
      pending: { type: "array", items: { type: "string", enum: ["node", "admin"] } },
    },
  },
  IssuedCertificate: {
    type: "object",
    properties: {
      serial: { type: "string" },
      subject: { type: "string" },
      role: { type: "string", enum: ["node", "admin", "nbd-client"] },
      name: { type: "string" },
      volumes: { type: "array", items: { type: "string" } },
      grants: { type: "array", items: ref("Grant") },
      notBefore: { type: "string", format: "date-time" },
      notAfter: { type: "string", format: "date-time" },
      issuerSerial: { type: "string" },
      own: {
        type: "string",
        description: "A node's own certificate (node.crt, admin.crt), renewed by it: its name",
      },
      revokedAt: { type: "string", format: "date-time" },
    },
  },
  Grant: {
    type: "object",
    required: ["volume", "readOnly"],
    properties: {
      volume: { type: "string", description: 'a volume name, or "*" for all' },
      readOnly: { type: "boolean" },
      uuid: { type: "string", description: "the volume bound to; absent: by name" },
    },
  },
  SignCertificateRequest: {
    type: "object",
    additionalProperties: false,
    required: ["csr", "role", "name"],
    properties: {
      csr: { type: "string", description: "PKCS#10 PEM" },
      role: { type: "string", enum: ["admin", "nbd-client"] },
      name: { type: "string", pattern: "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$" },
      volumes: {
        type: "array",
        items: { type: "string" },
        description: 'nbd-client: required, at least one volume or "*" for all (400 without); ' +
          '"NAME:ro" (or "*:ro") may read but not write',
      },
      ttl: duration,
      anyIncarnation: {
        type: "boolean",
        description: "bind every grant by name (default false: a grant of an existing volume " +
          "is bound to it, and does not open a volume created later under the same name)",
      },
    },
  },
  SignedCertificate: {
    type: "object",
    properties: {
      certificatePem: { type: "string" },
      caBundlePem: { type: "string" },
      serial: { type: "string" },
      role: { type: "string" },
      name: { type: "string" },
      volumes: { type: "array", items: { type: "string" } },
      grants: { type: "array", items: ref("Grant") },
      notAfter: { type: "string", format: "date-time" },
    },
  },
  Revocation: {
    type: "object",
    properties: {
      serial: { type: "string" },
      revokedAt: { type: "string", format: "date-time" },
      reason: { type: "string" },
      alreadyRevoked: { type: "boolean", description: "Revoked before: the first record" },
      sharePending: {
        type: "boolean",
        description: "Cluster mode, etcd unreachable: refused on this node now, by the " +
          "other members once this node reaches etcd",
      },
    },
  },
};
