/**
 * A real node serving the API over HTTPS with client certificates (listenApi + a temp
 * Pki), and clients that make real handshakes: Deno.createHttpClient and node:https.
 * @module
 */

import * as https from "node:https";
import { openPki, type Pki } from "../../ca/mod.ts";
import { type ApiListener, createApi, listenApi } from "../../control/api/mod.ts";
import { NODE, startTestNode, type TestNode } from "./_fixtures.ts";

export interface TlsNode {
  node: TestNode;
  pki: Pki;
  listener: ApiListener;
  url: string;
  /** The admin credentials for requests: the trust bundle, admin.crt and admin.key. */
  admin: { ca: string; cert: string; key: string };
  close(): Promise<void>;
}

/**
 * Starts a node with a Pki in `<dir>/pki` and the API on https://127.0.0.1:<free port>.
 * `clock` is the Pki's time source (certificate validity, issuing); default real time.
 */
export async function startTlsNode(
  options: {
    allowAnonymousHealth?: boolean;
    clock?: () => Date;
    /** Runs on the empty `<dir>/pki` before the Pki opens (e.g. installCa: your own CA). */
    beforeOpen?: (pkiDir: string) => Promise<void>;
  } = {},
): Promise<TlsNode> {
  const node = await startTestNode();
  await options.beforeOpen?.(`${node.dir}/pki`);
  const pki = await openPki(`${node.dir}/pki`, {
    nodeName: NODE,
    ipAddresses: ["127.0.0.1"],
    clock: options.clock,
  });
  const ref: { listener?: ApiListener } = {};
  const app = createApi({
    volumes: node.volumes,
    nodes: node.nodes,
    dataPlane: node.dataPlane,
    logger: node.logger,
    nodeName: NODE,
    store: node.store,
    pki,
    allowAnonymousHealth: options.allowAnonymousHealth,
    onCredentialsChanged: () => ref.listener?.reload(),
  });
  const l = ref.listener = await listenApi(app, {
    host: "127.0.0.1",
    port: 0,
    pki,
    allowAnonymousHealth: options.allowAnonymousHealth,
    logger: node.logger,
  });
  return {
    node,
    pki,
    listener: l,
    url: l.url,
    admin: { ...pki.credentials("admin"), ca: pki.trustBundlePem() },
    async close() {
      await l.close();
      await node.close();
    },
  };
}

// deno-lint-ignore no-explicit-any
type Json = any;

/** One request on a NEW TLS connection (a fresh Deno HTTP client) with the given credentials. */
export async function tlsFetch(
  url: string,
  creds: { ca: string; cert?: string; key?: string },
  method = "GET",
  body?: unknown,
): Promise<{ status: number; body: Json }> {
  const client = Deno.createHttpClient({
    caCerts: [creds.ca],
    ...(creds.cert ? { cert: creds.cert, key: creds.key } : {}),
  });
  try {
    const res = await fetch(url, {
      method,
      client,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch { /* not JSON */ }
    return { status: res.status, body: parsed };
  } finally {
    client.close();
  }
}

/** The same through node:https (another TLS client stack), on a new connection. */
export function nodeHttpsGet(
  url: string,
  creds: { ca: string; cert?: string; key?: string },
): Promise<{ status: number; body: Json }> {
  return new Promise((resolve, reject) => {
    const req = https.request(url, {
      method: "GET",
      ca: creds.ca,
      cert: creds.cert,
      key: creds.key,
      agent: false,
    }, (res) => {
      let text = "";
      res.on("data", (d) => (text += d.toString()));
      res.on("end", () => {
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, body: parsed });
      });
    });
    req.on("error", reject);
    req.end();
  });
}
