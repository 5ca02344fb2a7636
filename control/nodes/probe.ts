/**
 * Whether another node answers, as seen from this one: the difference between a node
 * that is "ready" (it holds its etcd lease and its API answers) and one that is
 * "unreachable" (it still holds its lease, so etcd thinks it alive, but this node
 * cannot get an answer from it: stopped, overloaded, or cut off from here).
 *
 * Probes run on demand (a node list or get), in parallel, with a short timeout, and
 * their results are kept for a few seconds, so listing nodes costs etcd nothing extra
 * and costs the other nodes at most one GET /v1/health per cache period. With TLS the
 * probe authenticates with this node's own certificate (the "node" role may read
 * /v1/health).
 * @module
 */

import { errorMessage } from "../../mod/errors.ts";
import { BallastClient, type BallastClientOptions } from "../../mod/client.ts";

/** Above /v1/health's own 1 s bound on its store check, so an etcd outage is not a dead peer. */
const DEFAULT_TIMEOUT_MS = 2_500;
const DEFAULT_CACHE_MS = 3_000;

/** PEM material for the probe's https requests; undefined for plaintext (--tls off). */
export type ProbeCredentials = Required<
  Pick<BallastClientOptions, "caCertPem" | "certPem" | "keyPem">
>;

export interface NodeProbeOptions {
  credentials: () => ProbeCredentials | undefined;
  timeoutMs?: number;
  cacheMs?: number;
  now?: () => number;
}

/** Probes nodes' APIs; `check()` resolves to undefined (answered) or the reason it did not. */
export class NodeProbe {
  readonly #o: Required<NodeProbeOptions>;
  readonly #results = new Map<string, { at: number; reason: string | undefined }>();
  readonly #inFlight = new Map<string, Promise<string | undefined>>();

  constructor(options: NodeProbeOptions) {
    this.#o = {
      timeoutMs: DEFAULT_TIMEOUT_MS,
      cacheMs: DEFAULT_CACHE_MS,
      now: () => Date.now(),
      ...options,
    };
  }

  /** Why `apiAddress` did not answer a health request, or undefined if it did. */
  check(apiAddress: string): Promise<string | undefined> {
    const cached = this.#results.get(apiAddress);
    if (cached && this.#o.now() - cached.at < this.#o.cacheMs) {
      return Promise.resolve(cached.reason);
    }
    let running = this.#inFlight.get(apiAddress);
    if (!running) {
      running = this.#probe(apiAddress).then((reason) => {
        this.#results.set(apiAddress, { at: this.#o.now(), reason });
        this.#inFlight.delete(apiAddress);
        return reason;
      });
      this.#inFlight.set(apiAddress, running);
    }
    return running;
  }

  async #probe(apiAddress: string): Promise<string | undefined> {
    if (!apiAddress) return "it has not published an API address";
    let client: BallastClient | undefined;
    try {
      const creds = this.#o.credentials();
      client = new BallastClient(apiAddress, { timeoutMs: this.#o.timeoutMs, ...(creds ?? {}) });
      // Any answer counts, a 503 "degraded" too: the node is there to say it.
      await client.health();
      return undefined;
    } catch (err) {
      const why = errorMessage(err);
      return `its API at ${apiAddress} did not answer a health check within ` +
        `${this.#o.timeoutMs} ms (${why.split("\n")[0]})`;
    } finally {
      client?.close();
    }
  }
}
