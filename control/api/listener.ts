/**
 * The API listener. With a Pki: HTTPS over node:https with client certificates requested
 * (Deno.serve cannot verify client certificates, PLATFORM.md "TLS"), each request's peer
 * certificate checked with `pki.verify()` and the outcome handed to the Hono app in its env
 * (_auth.ts decides). Without a Pki: plain HTTP over Deno.serve, for loopback
 * development only.
 *
 * The handshake itself does not refuse clients (rejectUnauthorized: false): that lets
 * GET /v1/health be served without a certificate when the operator allows it, and gives
 * refused clients a JSON 401 naming the reason instead of a bare TLS alert. Every other
 * request is decided by verifyPeer through the same Pki as every endpoint, so a revocation
 * applies at the next request.
 * @module
 */

import { listenFailure, listenServer, sheddingAt } from "../../data/mod.ts";
import { createServer, type Server as HttpsServer } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import type { Pki } from "../../ca/mod.ts";
import { BallastError, UnavailableError } from "../../mod/errors.ts";
import type { ApiBindings } from "./_auth.ts";
import { bodyTooLarge, MAX_BODY_BYTES } from "./_validate.ts";
import { formatHostPort, type Logger } from "../common/mod.ts";

/** What listenApi serves: anything with a fetch handler taking our env (a Hono app). */
export interface FetchApp {
  fetch(request: Request, env?: ApiBindings): Response | Promise<Response>;
}

export interface ListenApiOptions {
  host: string;
  /** 0 picks a free port (see `url`). */
  port: number;
  /** Serve HTTPS with client certificates from this PKI; plain HTTP without it. */
  pki?: Pki;
  /** Informational here (the app enforces it); logged at start. */
  allowAnonymousHealth?: boolean;
  logger: Logger;
  /** Largest request body accepted (default MAX_BODY_BYTES, 64 KiB); larger ones get 413. */
  maxBodyBytes?: number;
}

/** A running API listener. */
export interface ApiListener {
  /** "https://HOST:PORT" (or "http://...") with the real bound port. */
  readonly url: string;
  /** Stops accepting, closes idle keep-alive connections, waits for requests in flight. */
  close(): Promise<void>;
  /** Installs the PKI's current node certificate and trust bundle for new handshakes. */
  reload(): void;
}

/** Methods the Fetch standard forbids in a Request (RFC 9110 §15.6.2: 501 for them). */
const FETCH_FORBIDDEN = new Set(["CONNECT", "TRACE", "TRACK"]);

/** In-flight requests get this long after close() before their connections are cut. */
const CLOSE_GRACE_MS = 5_000;

/** Starts the API listener. */
export async function listenApi(app: FetchApp, opts: ListenApiOptions): Promise<ApiListener> {
  if (!opts.pki) return listenPlain(app, opts);
  const pki = opts.pki;
  const log = opts.logger.child({ listener: "api" });
  const maxBody = opts.maxBodyBytes ?? MAX_BODY_BYTES;
  const context = () => pki.credentials("node");
  const server: HttpsServer = createServer({
    ...context(),
    requestCert: true,
    rejectUnauthorized: false,
    minVersion: "TLSv1.2",
    // A client that opens connections and says nothing holds a descriptor each: they are
    // dropped after 10 s without a finished handshake or 20 s without a request's headers,
    // and past apiMaxConnections() new ones are closed at once, so that silent or slow
    // clients cannot use up the process's descriptors (Deno's server stops accepting for
    // good once it runs out).
    handshakeTimeout: 10_000,
  });
  server.headersTimeout = 20_000;
  server.requestTimeout = 60_000;
  server.maxConnections = apiMaxConnections();
  let base = "";
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    handle(app, pki, base, maxBody, req, res, log).catch((err) => {
      log.error({ err }, "api adapter failed");
      res.destroy();
    });
  });
  // Plaintext HTTP, garbage instead of a ClientHello, a client that refuses our
  // certificate: the connection is dropped and everyone else keeps being served.
  server.on("tlsClientError", (err: Error, socket: TLSSocket) => {
    log.warn(
      { remote: remoteOf(socket), reason: err.message },
      "api TLS handshake failed",
    );
    socket.destroy();
  });
  server.on("clientError", (_err: Error, socket: Socket) => {
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
    socket.destroy();
  });
  let port: number;
  try {
    port = await listenServer(server, opts.host, opts.port);
  } catch (err) {
    throw new UnavailableError(listenFailure("the API", opts, err).message, { cause: err });
  }
  // Only once listening: a failure to listen is the error above, said once, not logged too.
  server.on("error", (err: Error) => log.error({ err }, "api listener error"));
  base = `https://${formatHostPort({ host: opts.host, port })}`;
  log.info({ url: base, anonymousHealth: opts.allowAnonymousHealth === true }, "api listening");

  let closing: Promise<void> | undefined;
  return {
    url: base,
    reload() {
      server.setSecureContext(context());
      log.info("api TLS credentials reloaded");
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}

function listenPlain(app: FetchApp, opts: ListenApiOptions): ApiListener {
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve(
      { hostname: opts.host, port: opts.port, onListen: () => {} },
      (req, info) => app.fetch(req, { info }),
    );
  } catch (err) {
    throw new UnavailableError(listenFailure("the API", opts, err).message, { cause: err });
  }
  const url = `http://${formatHostPort({ host: opts.host, port: server.addr.port })}`;
  opts.logger.child({ listener: "api" }).warn(
    { url },
    "api listening WITHOUT TLS (no PKI): for loopback development only",
  );
  let closing: Promise<void> | undefined;
  return {
    url,
    reload() {},
    close() {
      closing ??= server.shutdown();
      return closing;
    },
  };
}

function remoteOf(socket: Socket | undefined): string | undefined {
  if (!socket?.remoteAddress) return undefined;
  return formatHostPort({ host: socket.remoteAddress, port: socket.remotePort ?? 0 });
}

/** The verify outcome of this request's client certificate, for the app's env. */
async function peerEnv(pki: Pki, socket: TLSSocket): Promise<ApiBindings> {
  let raw: Uint8Array | undefined;
  try {
    raw = socket.getPeerCertificate(false)?.raw;
  } catch {
    raw = undefined;
  }
  if (!raw || raw.length === 0) return {};
  const r = await pki.verify(new Uint8Array(raw), { requiredEku: "clientAuth" });
  return r.ok ? { identity: r.identity } : { authFailure: r.reason };
}

/** One request: IncomingMessage -> Request -> app.fetch -> ServerResponse. */
async function handle(
  app: FetchApp,
  pki: Pki,
  base: string,
  maxBody: number,
  req: IncomingMessage,
  res: ServerResponse,
  log: Logger,
): Promise<void> {
  res.on("error", () => {}); // a client that left; the socket is torn down by node
  let response: Response;
  let body: ReturnType<typeof bodyStream> | undefined;
  try {
    const url = req.url ?? "";
    if (!url.startsWith("/")) throw new BallastError("INVALID_ARGUMENT", "bad request target");
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > maxBody) {
      req.resume();
      return sendJson(res, 413, bodyTooLarge(maxBody).toBody(), true);
    }
    const headers = new Headers();
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      headers.append(req.rawHeaders[i], req.rawHeaders[i + 1]);
    }
    const method = req.method ?? "GET";
    if (FETCH_FORBIDDEN.has(method.toUpperCase())) {
      // A Request cannot carry these (Fetch), so they never reach the app's 405.
      req.resume();
      const e = new BallastError("INVALID_ARGUMENT", `method ${method} is not implemented`, {
        status: 501,
      });
      return sendJson(res, 501, e.toBody(), false);
    }
    const hasBody = method !== "GET" && method !== "HEAD";
    body = hasBody ? bodyStream(req, maxBody) : undefined;
    const request = new Request(base + url, {
      method,
      headers,
      body: body?.stream,
      ...(hasBody ? { duplex: "half" } : {}),
    } as RequestInit);
    const env = await peerEnv(pki, req.socket as TLSSocket);
    response = await app.fetch(request, env);
  } catch (err) {
    req.resume();
    if (!(err instanceof BallastError)) log.error({ err }, "api adapter failed on a request");
    const e = err instanceof BallastError
      ? err
      : new BallastError("INTERNAL", "internal error in the API adapter");
    return sendJson(res, e.status, e.toBody(), false);
  }
  const out: Record<string, string | string[]> = {};
  response.headers.forEach((v, k) => {
    if (k !== "set-cookie") out[k] = v;
  });
  const cookies = response.headers.getSetCookie();
  if (cookies.length) out["set-cookie"] = cookies;
  res.writeHead(response.status, out);
  if (!response.body || req.method === "HEAD") {
    await response.body?.cancel();
    res.end();
    return;
  }
  const reader = response.body.getReader();
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      if (!res.write(value)) {
        await new Promise<void>((resolve) => {
          res.once("drain", resolve);
          res.once("close", resolve);
        });
      }
      if (res.destroyed) break;
    }
    res.end();
  } finally {
    reader.releaseLock();
  }
}

/** Bytes of an oversized body drained (so the client reads our 413) before we cut it off. */
const MAX_DRAIN = 16 * 1024 * 1024;

/**
 * The request body as a stream that fails (413) once it passes `maxBody` bytes. The rest is
 * drained and dropped, up to MAX_DRAIN, so the client can read the error (closing early
 * makes HTTP clients still sending report a reset instead) and the connection stays usable.
 */
function bodyStream(
  req: IncomingMessage,
  maxBody: number,
): { stream: ReadableStream<Uint8Array> } {
  let total = 0;
  let over = false;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      req.on("data", (chunk: Uint8Array) => {
        total += chunk.length;
        if (over) {
          if (total > maxBody + MAX_DRAIN) req.destroy();
          return;
        }
        if (total > maxBody) {
          over = true;
          controller.error(bodyTooLarge(maxBody));
          req.resume();
          return;
        }
        controller.enqueue(new Uint8Array(chunk));
        if ((controller.desiredSize ?? 1) <= 0) req.pause();
      });
      req.on("end", () => {
        try {
          controller.close();
        } catch { /* already errored */ }
      });
      req.on("error", (err) => {
        try {
          controller.error(err);
        } catch { /* already closed */ }
      });
    },
    pull() {
      req.resume();
    },
    cancel() {
      req.resume(); // drop the rest
    },
  });
  return { stream };
}

function sendJson(res: ServerResponse, status: number, body: unknown, close: boolean): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": String(new TextEncoder().encode(text).length),
    ...(close ? { connection: "close" } : {}),
  });
  res.end(text);
}

/**
 * Connections the API serves at once: an eighth of what the process may keep open below
 * its NBD shedding mark, between 16 and 1024 (an operator's CLI and scrapes need a few).
 */
export function apiMaxConnections(at = sheddingAt()): number {
  return Number.isFinite(at) ? Math.max(16, Math.min(1024, Math.floor(at / 8))) : 1024;
}
