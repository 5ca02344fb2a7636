/**
 * The OpenAPI 3.1 document of the API (document.ts, built from one part per resource),
 * served at GET /v1/openapi.json.
 * @module
 */

export { OPENAPI_DOCUMENT } from "./document.ts";
