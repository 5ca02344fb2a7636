/**
 * The public library surface of Ballast: the typed API client, the resource
 * types, the error types, and size and duration helpers.
 * @module
 */

export { AGE_HEADER, ageSeconds, BallastClient, DEFAULT_API_URL, STALE_HEADER } from "./client.ts";
export type { BallastClientOptions } from "./client.ts";
export * from "./duration.ts";
export * from "./errors.ts";
export * from "./size.ts";
export type * from "./types.ts";
export { VERSION } from "./version.ts";
export { BUILD, type BuildInfo, type BuildKind } from "./build.ts";
