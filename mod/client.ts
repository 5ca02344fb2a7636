/**
 * Typed client of the Ballast API (v1), used by the `ballast` CLI and by scripts.
 *
 * ```ts
 * const client = new BallastClient("http://127.0.0.1:5705");
 * await client.createVolume({ name: "db", size: "10GiB" });
 * ```
 * Every failure is a BallastError: API errors keep their code; a node that cannot
 * be reached gives UnavailableError.
 * @module
 */

import { BallastError, fromErrorBody, UnavailableError } from "./errors.ts";
import type { ApiErrorBody } from "./errors.ts";
import type {
  CreateVolumeRequest,
  Health,
  List,
  NodeInfo,
  UpdateVolumeRequest,
  VersionInfo,
  Volume,
} from "./types.ts";

/** Default API address of a local node. */
export const DEFAULT_API_URL = "http://127.0.0.1:5705";

export interface BallastClientOptions {
  /** Per-request timeout in milliseconds (default 30 s). */
  timeoutMs?: number;
  /** Extra headers sent with every request. */
  headers?: Record<string, string>;
  /** fetch implementation (default globalThis.fetch). */
  fetch?: typeof fetch;
}

/** A typed client of one Ballast node's API. */
export class BallastClient {
  readonly baseUrl: string;
  readonly #timeoutMs: number;
  readonly #headers: Record<string, string>;
  readonly #fetch: typeof fetch;

  constructor(baseUrl: string = DEFAULT_API_URL, options: BallastClientOptions = {}) {
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new BallastError(
        "INVALID_ARGUMENT",
        `invalid API URL "${baseUrl}": expected e.g. http://127.0.0.1:5705`,
      );
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new BallastError(
        "INVALID_ARGUMENT",
        `invalid API URL "${baseUrl}": use http:// or https://`,
      );
    }
    this.baseUrl = url.href.replace(/\/+$/, "");
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#headers = options.headers ?? {};
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  health(): Promise<Health> {
    return this.#json("GET", "/v1/health", undefined, [503]);
  }

  version(): Promise<VersionInfo> {
    return this.#json("GET", "/v1/version");
  }

  async listNodes(): Promise<NodeInfo[]> {
    return (await this.#json<List<NodeInfo>>("GET", "/v1/nodes")).items;
  }

  getNode(name: string): Promise<NodeInfo> {
    return this.#json("GET", `/v1/nodes/${encodeURIComponent(name)}`);
  }

  async listVolumes(): Promise<Volume[]> {
    return (await this.#json<List<Volume>>("GET", "/v1/volumes")).items;
  }

  getVolume(name: string): Promise<Volume> {
    return this.#json("GET", `/v1/volumes/${encodeURIComponent(name)}`);
  }

  createVolume(request: CreateVolumeRequest): Promise<Volume> {
    return this.#json("POST", "/v1/volumes", request);
  }

  updateVolume(name: string, request: UpdateVolumeRequest): Promise<Volume> {
    return this.#json("PATCH", `/v1/volumes/${encodeURIComponent(name)}`, request);
  }

  /** Grows a volume to `size` (bytes or e.g. "20GiB"). */
  resizeVolume(name: string, size: number | string): Promise<Volume> {
    return this.updateVolume(name, { size });
  }

  /** Deletes a volume; `force` disconnects its NBD clients first. */
  async deleteVolume(name: string, options: { force?: boolean } = {}): Promise<void> {
    const q = options.force ? "?force=true" : "";
    const res = await this.#request("DELETE", `/v1/volumes/${encodeURIComponent(name)}${q}`);
    await this.#check(res);
    await res.body?.cancel();
  }

  /** The Prometheus metrics text. */
  async metrics(): Promise<string> {
    const res = await this.#request("GET", "/metrics");
    await this.#check(res);
    return await res.text();
  }

  async #json<T>(method: string, path: string, body?: unknown, okStatuses: number[] = []) {
    const res = await this.#request(method, path, body);
    if (!okStatuses.includes(res.status)) await this.#check(res);
    try {
      return await res.json() as T;
    } catch (err) {
      throw new BallastError(
        "INTERNAL",
        `${method} ${this.baseUrl}${path}: the server's response is not valid JSON`,
        { cause: err },
      );
    }
  }

  async #request(method: string, path: string, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = { accept: "application/json", ...this.#headers };
    if (body !== undefined) headers["content-type"] = "application/json";
    const url = this.baseUrl + path;
    try {
      return await this.#fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (err) {
      throw unreachable(this.baseUrl, err, this.#timeoutMs);
    }
  }

  /** Throws the typed error of a non-2xx response. */
  async #check(res: Response): Promise<void> {
    if (res.ok) return;
    const text = await res.text();
    let body: ApiErrorBody | undefined;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    if (body?.error?.code) throw fromErrorBody(body, res.status);
    throw new BallastError(
      res.status >= 500 ? "INTERNAL" : "INVALID_ARGUMENT",
      `HTTP ${res.status} from ${this.baseUrl}: ${text.slice(0, 200) || res.statusText}`,
    );
  }
}

/** A clear UnavailableError for a failed connection. */
function unreachable(baseUrl: string, err: unknown, timeoutMs: number): UnavailableError {
  const e = err as { name?: string; message?: string; cause?: { message?: string } };
  const text = `${e?.message ?? ""} ${e?.cause?.message ?? ""}`;
  let why = "connection failed";
  if (e?.name === "TimeoutError") why = `no answer within ${timeoutMs / 1000} s`;
  else if (/refused/i.test(text)) why = "connection refused";
  else if (/dns error|not known|lookup/i.test(text)) why = "host name not found";
  else if (/reset/i.test(text)) why = "connection reset";
  else if (e?.cause?.message) why = e.cause.message;
  else if (e?.message) why = e.message;
  return new UnavailableError(
    `cannot reach the Ballast API at ${baseUrl}: ${why}; is \`ballast serve\` running?`,
    { cause: err },
  );
}
