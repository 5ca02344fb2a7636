/**
 * The HTTP API: the Hono app (one sub-app per resource, authorization from the client
 * certificate's role, one error mapping), the listener that serves it over HTTPS with
 * client certificates, and the OpenAPI document (openapi/).
 * @module
 */

export { type ApiDeps, createApi } from "./app.ts";
export { type ApiBindings, type ApiEnv } from "./_auth.ts";
export { type ApiListener, type FetchApp, listenApi, type ListenApiOptions } from "./listener.ts";
export { OPENAPI_DOCUMENT } from "./openapi/mod.ts";
