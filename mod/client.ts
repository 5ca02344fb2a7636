/**
 * Typed client of the Ballast API (v1), used by the `ballast` CLI and by scripts.
 *
 * ```ts
 * const client = new BallastClient("http://127.0.0.1:5705");
 * await client.createVolume({ name: "db", size: "10GiB" });
 * ```
 * Every failure is a BallastError: API errors keep their code; a node that cannot
 * be reached gives UnavailableError.
 *
 * Over HTTPS the client authenticates with a certificate (mutual TLS):
 * ```ts
 * const client = new BallastClient("https://127.0.0.1:5705", {
 *   caCertPem: await Deno.readTextFile("data/pki/ca-bundle.crt"),
 *   certPem: await Deno.readTextFile("data/pki/admin.crt"),
 *   keyPem: await Deno.readTextFile("data/pki/admin.key"),
 * });
 * ```
 * @module
 */

import { tlsClient, unreachable } from "./_http.ts";
import { BallastError, fromErrorBody } from "./errors.ts";
import type { ApiErrorBody } from "./errors.ts";
import type {
  CaInfo,
  CreateVolumeRequest,
  DrainProgress,
  DrainReport,
  Health,
  IssuedCertificate,
  JoinTokenInfo,
  List,
  NodeInfo,
  NodeRemoval,
  Revocation,
  SignCertificateRequest,
  SignedCertificate,
  UpdateVolumeRequest,
  VersionInfo,
  Volume,
  VolumeEvent,
  VolumeLiveStatus,
  VolumeVerifyReport,
} from "./types.ts";

/** Default API address of a local node. */
export const DEFAULT_API_URL = "http://127.0.0.1:5705";

/**
 * Response header of an answer served from a node's cache because the control plane
 * (etcd) is unreachable; its value is the ISO time the data was read from etcd.
 */
export const STALE_HEADER = "Ballast-Stale";

/** Sent with STALE_HEADER: how many whole seconds ago that was, by the node's clock. */
export const AGE_HEADER = "Age";

/** Whole seconds from `since` to `now`, never negative. */
export function ageSeconds(since: Date, now: Date): number {
  return Math.max(0, Math.floor((now.getTime() - since.getTime()) / 1000));
}

export interface BallastClientOptions {
  /** Per-request timeout in milliseconds (default 30 s). */
  timeoutMs?: number;
  /** Extra headers sent with every request. */
  headers?: Record<string, string>;
  /** fetch implementation (default globalThis.fetch). */
  fetch?: typeof fetch;
  /** https: PEM CA certificate(s) to trust for the server (default: the system roots). */
  caCertPem?: string;
  /** https: PEM client certificate (chain) to authenticate with; needs `keyPem`. */
  certPem?: string;
  /** https: PEM private key of `certPem`. */
  keyPem?: string;
  /**
   * Called when an answer came from the node's cache because the control plane is
   * unavailable (STALE_HEADER); `since` is the ISO time as of which the data is known
   * current, `ageSeconds` how long ago that was by the node's clock (AGE_HEADER).
   */
  onStale?: (since: string, request: string, ageSeconds?: number) => void;
  /**
   * Appended to "cannot reach the Ballast API" errors, e.g. where the caller looked for
   * credentials it did not find.
   */
  unreachableHint?: string;
}

/** A typed client of one Ballast node's API. */
export class BallastClient {
  readonly baseUrl: string;
  readonly #timeoutMs: number;
  readonly #headers: Record<string, string>;
  readonly #fetch: typeof fetch;
  readonly #httpClient?: Deno.HttpClient;
  readonly #onStale?: (since: string, request: string, ageSeconds?: number) => void;
  readonly #unreachableHint?: string;

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
    this.#onStale = options.onStale;
    this.#unreachableHint = options.unreachableHint;
    if (url.protocol === "https:") this.#httpClient = tlsClient(options);
  }

  /** Releases the TLS connection pool (https). The client is unusable afterwards. */
  close(): void {
    this.#httpClient?.close();
  }

  [Symbol.dispose](): void {
    this.close();
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

  /** Forgets a node that is gone for good (admin); refused while it runs or holds copies. */
  removeNode(name: string): Promise<NodeRemoval> {
    return this.#json("DELETE", `/v1/nodes/${encodeURIComponent(name)}`);
  }

  /** Stops new placements on a node (admin). */
  cordonNode(name: string, reason?: string): Promise<NodeInfo> {
    const path = `/v1/nodes/${encodeURIComponent(name)}/cordon`;
    return this.#json("POST", path, reason === undefined ? {} : { reason });
  }

  /** Lets a cordoned node take new placements again (admin). */
  uncordonNode(name: string): Promise<NodeInfo> {
    return this.#json("POST", `/v1/nodes/${encodeURIComponent(name)}/uncordon`, {});
  }

  /**
   * POST /v1/nodes/{name}/drain: cordons the node and moves every master off it (or, with
   * `dryRun`, plans only). `onProgress` gets each line of the stream as it comes (the plan,
   * each volume); resolves with the summary. Default timeout 1 hour.
   */
  async drainNode(
    name: string,
    options: {
      force?: boolean;
      dryRun?: boolean;
      onProgress?: (p: DrainProgress) => void;
      timeoutMs?: number;
    } = {},
  ): Promise<DrainReport> {
    const path = `/v1/nodes/${encodeURIComponent(name)}/drain`;
    const body = {
      ...(options.force ? { force: true } : {}),
      ...(options.dryRun ? { dryRun: true } : {}),
    };
    const res = await this.#request("POST", path, body, options.timeoutMs ?? 3_600_000);
    await this.#check(res);
    let report: DrainReport | undefined;
    const lines = res.body!.pipeThrough(new TextDecoderStream());
    let rest = "";
    for await (const chunk of lines) {
      rest += chunk;
      let nl;
      while ((nl = rest.indexOf("\n")) >= 0) {
        const text = rest.slice(0, nl).trim();
        rest = rest.slice(nl + 1);
        if (text === "") continue;
        const line = JSON.parse(text) as DrainProgress | { type: "error"; message: string };
        if (line.type === "error") {
          throw new BallastError("INTERNAL", `drain of node "${name}" stopped: ${line.message}`);
        }
        if (line.type === "summary") report = line.report;
        else options.onProgress?.(line);
      }
    }
    if (!report) {
      throw new BallastError(
        "UNAVAILABLE",
        `drain of node "${name}": the stream ended before its summary (the node serving the ` +
          "request stopped?); see `ballast node get` and `ballast volume list`",
      );
    }
    return report;
  }

  async listVolumes(): Promise<Volume[]> {
    return (await this.#json<List<Volume>>("GET", "/v1/volumes")).items;
  }

  getVolume(name: string): Promise<Volume> {
    return this.#json("GET", `/v1/volumes/${encodeURIComponent(name)}`);
  }

  /** GET /v1/volumes/{name}/events: the group's recent history, oldest first. */
  async volumeEvents(name: string): Promise<VolumeEvent[]> {
    const path = `/v1/volumes/${encodeURIComponent(name)}/events`;
    return (await this.#json<List<VolumeEvent>>("GET", path)).items;
  }

  /**
   * What this node knows first-hand of volume `name` it serves (node-to-node; roles node and
   * admin): NOT_FOUND when it does not export it.
   */
  peerVolumeStatus(name: string): Promise<VolumeLiveStatus> {
    return this.#json("GET", `/v1/peer/volumes/${encodeURIComponent(name)}`);
  }

  /**
   * Compares every member's copy of a replicated volume with its master's (POST
   * /v1/volumes/{name}/verify); `deep` rehashes all the data and may take a while
   * (`timeoutMs`, default 1 h deep, 2 min otherwise).
   */
  verifyVolume(
    name: string,
    options: { deep?: boolean; timeoutMs?: number } = {},
  ): Promise<VolumeVerifyReport> {
    const q = options.deep ? "?deep=true" : "";
    return this.#json(
      "POST",
      `/v1/volumes/${encodeURIComponent(name)}/verify${q}`,
      undefined,
      [],
      options.timeoutMs ?? (options.deep ? 3_600_000 : 120_000),
    );
  }

  /** The node-to-node form of verifyVolume(): answered only by the volume's master. */
  peerVerifyVolume(name: string, deep: boolean, timeoutMs: number): Promise<VolumeVerifyReport> {
    const q = deep ? "?deep=true" : "";
    return this.#json(
      "POST",
      `/v1/peer/volumes/${encodeURIComponent(name)}/verify${q}`,
      undefined,
      [],
      timeoutMs,
    );
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

  /**
   * Deletes a volume; `force` disconnects its NBD clients first. Resolves to undefined once
   * it is gone, or to what it still waits for when the delete was accepted but a member
   * has not removed its copy yet (HTTP 202; it finishes on its own).
   */
  async deleteVolume(
    name: string,
    options: { force?: boolean } = {},
  ): Promise<{ pending: string } | undefined> {
    const q = options.force ? "?force=true" : "";
    const res = await this.#request("DELETE", `/v1/volumes/${encodeURIComponent(name)}${q}`);
    await this.#check(res);
    if (res.status === 202) return { pending: String((await res.json()).pending) };
    await res.body?.cancel();
    return undefined;
  }

  /** The CA: mode, CA certificates with fingerprints, trust bundle. */
  caInfo(): Promise<CaInfo> {
    return this.#json("GET", "/v1/ca");
  }

  /** Every certificate the CA issued, revoked ones included (`revokedAt`). */
  async listCertificates(): Promise<IssuedCertificate[]> {
    return (await this.#json<List<IssuedCertificate>>("GET", "/v1/ca/certificates")).items;
  }

  /** Has the CA sign a CSR (the key stays with the caller). */
  signCertificate(request: SignCertificateRequest): Promise<SignedCertificate> {
    return this.#json("POST", "/v1/ca/certificates", request);
  }

  /** Revokes a certificate; refused at the next request or handshake on every endpoint. */
  revokeCertificate(serial: string, reason?: string): Promise<Revocation> {
    const path = `/v1/ca/certificates/${encodeURIComponent(serial)}/revoke`;
    return this.#json("POST", path, reason === undefined ? {} : { reason });
  }

  /**
   * Rotates the CA; the old one stays trusted for `overlap` ("7d" or seconds). Without `ca` the
   * node makes a new root; with it (bring your own) the node moves to the operator's new CA:
   * its certificate, its key (not in external mode) and the certificates above it.
   */
  rotateCa(
    overlap?: string | number,
    ca?: { certPem: string; keyPem?: string; chainPem?: string },
  ): Promise<CaInfo> {
    return this.#json("POST", "/v1/ca/rotate", {
      ...(overlap === undefined ? {} : { overlap }),
      ...ca,
    });
  }

  /** External CA mode: a new key on the node and the CSR to have signed. */
  async createNodeCsr(which: "node" | "admin" = "node"): Promise<string> {
    return (await this.#json<{ csrPem: string }>("POST", "/v1/ca/csr", { which })).csrPem;
  }

  /** External CA mode: installs a signed certificate for the pending key. */
  importCertificate(certificatePem: string, which: "node" | "admin" = "node"): Promise<CaInfo> {
    return this.#json("POST", "/v1/ca/import", { certificatePem, which });
  }

  /** Cluster mode: a single-use join token for a new node, expiring after `ttl` (e.g. "1h"). */
  createJoinToken(ttl?: string | number): Promise<JoinTokenInfo> {
    return this.#json("POST", "/v1/cluster/join-tokens", ttl === undefined ? {} : { ttl });
  }

  /** The Prometheus metrics text. */
  async metrics(): Promise<string> {
    const res = await this.#request("GET", "/metrics");
    await this.#check(res);
    return await res.text();
  }

  async #json<T>(
    method: string,
    path: string,
    body?: unknown,
    okStatuses: number[] = [],
    timeoutMs = this.#timeoutMs,
  ) {
    const res = await this.#request(method, path, body, timeoutMs);
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

  async #request(
    method: string,
    path: string,
    body?: unknown,
    timeoutMs = this.#timeoutMs,
  ): Promise<Response> {
    const headers: Record<string, string> = { accept: "application/json", ...this.#headers };
    if (body !== undefined) headers["content-type"] = "application/json";
    const url = this.baseUrl + path;
    let res: Response;
    try {
      res = await this.#fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
        ...(this.#httpClient ? { client: this.#httpClient } : {}),
      } as RequestInit);
    } catch (err) {
      throw unreachable(this.baseUrl, err, timeoutMs, this.#unreachableHint);
    }
    const stale = res.headers.get(STALE_HEADER);
    const age = res.headers.get(AGE_HEADER);
    // Only an answer shows state; a refusal may carry the mark of a cached read it made.
    if (stale && res.ok) {
      const seconds = age !== null && /^\d+$/.test(age) ? Number(age) : undefined;
      this.#onStale?.(stale, `${method} ${path}`, seconds);
    }
    return res;
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
