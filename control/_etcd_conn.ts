/**
 * Connections to the etcd members and the retry rules (private to etcd_store.ts).
 *
 * One `etcd3` client per endpoint, each with fault handling switched off (the
 * package's default retries every unary call, Put and Txn included, which can apply
 * a write twice). Calls go to one pinned endpoint; when it fails the next one is
 * pinned. Retries happen here, by these rules:
 * - reads and idempotent calls are retried on any transient failure until the
 *   request timeout;
 * - writes are retried only when the request provably never reached etcd's raft log
 *   (no connection could be made, etcd reported no leader or dropped the proposal);
 *   any other failure of a write is reported as UnavailableError saying the outcome
 *   is unknown, and the caller settles it by re-reading (guarded Txns).
 * @module
 */

import { Buffer } from "node:buffer";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { Etcd3, type IOptions } from "etcd3";
import { InvalidArgumentError, UnavailableError } from "../mod/errors.ts";

export interface EtcdTls {
  caPem: string;
  /** Client certificate and key; needed when etcd runs with --client-cert-auth. */
  certPem?: string;
  keyPem?: string;
}

/** Whether a failed call may be repeated. */
export type CallKind = "read" | "write";

/** The `etcd3` client of one endpoint, plus a deadline for this attempt. */
export interface Attempt {
  client: Etcd3;
  endpoint: string;
  options: { deadline: number };
  /** 1 for the first attempt. */
  attempt: number;
}

/** A failure that may go away: the member is down, busy or between leaders. */
export function isTransient(err: unknown): boolean {
  const name = (err as Error)?.constructor?.name ?? "";
  const message = String((err as Error)?.message ?? err);
  return /GRPCUnavailable|GRPCDeadlineExceeded|GRPCCancelled|GRPCInternal|GRPCUnknown|GRPCResourceExhast|GRPCAborted/
    .test(name) ||
    /etcdserver: (leader changed|no leader|request timed out|too many requests|server stopped|not capable|raft proposal dropped)|raft proposal dropped|No connection established|ECONNREFUSED|ECONNRESET|Connection dropped|Deadline exceeded|closed/i
      .test(message);
}

/** A failure that proves the request was not applied (so a write may be repeated). */
export function notApplied(err: unknown): boolean {
  const message = String((err as Error)?.message ?? err);
  return /No connection established|ECONNREFUSED|etcdserver: (no leader|too many requests)|raft proposal dropped/i
    .test(message);
}

/** No-op fault-handling policy: every call runs exactly once. */
const NOOP_POLICY = {
  execute: async <T>(fn: (context: { signal: AbortSignal }) => T | Promise<T>) =>
    await fn({ signal: new AbortController().signal }),
} as unknown as NonNullable<NonNullable<IOptions["faultHandling"]>["global"]>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class EndpointPool {
  readonly endpoints: readonly string[];
  readonly #clients: Etcd3[];
  readonly #requestTimeoutMs: number;
  #pinned = 0;
  #closed = false;

  constructor(endpoints: string[], tls: EtcdTls | undefined, requestTimeoutMs: number) {
    if (!Array.isArray(endpoints) || endpoints.length === 0) {
      throw new InvalidArgumentError("endpoints must list at least one etcd URL", {
        field: "endpoints",
      });
    }
    for (const e of endpoints) {
      if (typeof e !== "string" || !/^https?:\/\/[^/]+\/?$/.test(e)) {
        throw new InvalidArgumentError(
          `endpoint ${JSON.stringify(e)} is not an http:// or https:// URL with host and port`,
          { field: "endpoints" },
        );
      }
    }
    const secure = endpoints.filter((e) => e.startsWith("https://")).length;
    if (secure !== 0 && secure !== endpoints.length) {
      throw new InvalidArgumentError("endpoints mix http:// and https://", {
        field: "endpoints",
      });
    }
    if (secure && !tls) {
      throw new InvalidArgumentError("https endpoints need the tls option (caPem)", {
        field: "tls",
      });
    }
    if (tls && !secure) {
      throw new InvalidArgumentError("the tls option needs https:// endpoints", {
        field: "endpoints",
      });
    }
    if (tls && (tls.certPem === undefined) !== (tls.keyPem === undefined)) {
      throw new InvalidArgumentError("tls.certPem and tls.keyPem go together", { field: "tls" });
    }
    this.endpoints = endpoints.map((e) => e.replace(/\/$/, ""));
    this.#requestTimeoutMs = requestTimeoutMs;
    this.#pinned = Math.floor(Math.random() * endpoints.length);
    this.#clients = this.endpoints.map((hosts) => this.#client(hosts, tls));
  }

  #client(hosts: string, tls: EtcdTls | undefined): Etcd3 {
    const host = new URL(hosts).hostname.replace(/^\[|\]$/g, "");
    // grpc-js sends the endpoint's host as TLS server name, which Deno's node:tls refuses
    // for an IP address. For IP endpoints, send a fixed name instead and check the
    // certificate against the IP ourselves (its subjectAltName must list the IP).
    const ipHost = tls !== undefined && /^[\d.]+$|:/.test(host);
    const client = new Etcd3({
      hosts,
      credentials: tls
        ? {
          rootCertificate: Buffer.from(tls.caPem),
          privateKey: tls.keyPem === undefined ? undefined : Buffer.from(tls.keyPem),
          certChain: tls.certPem === undefined ? undefined : Buffer.from(tls.certPem),
        }
        : undefined,
      faultHandling: { global: NOOP_POLICY, host: () => NOOP_POLICY },
      grpcOptions: {
        "grpc.keepalive_time_ms": 10_000,
        "grpc.keepalive_timeout_ms": 5_000,
        "grpc.keepalive_permit_without_calls": 1,
        "grpc.initial_reconnect_backoff_ms": 100,
        "grpc.max_reconnect_backoff_ms": 1_000,
        ...(ipHost ? { "grpc.ssl_target_name_override": "etcd" } : {}),
      },
    });
    if (ipHost) {
      const creds = (client as unknown as {
        pool: { hosts: { channelCredentials: { verifyOptions?: Record<string, unknown> } }[] };
      }).pool.hosts[0].channelCredentials;
      if (!creds.verifyOptions) {
        throw new Error("etcd3/grpc-js internals changed: no verifyOptions");
      }
      creds.verifyOptions.checkServerIdentity = (_name: string, cert: PeerCertificate) =>
        checkServerIdentity(host, cert);
    }
    return client;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The pinned endpoint's client (for streams). */
  pinned(): { client: Etcd3; endpoint: string } {
    this.#checkOpen();
    return { client: this.#clients[this.#pinned], endpoint: this.endpoints[this.#pinned] };
  }

  /** Moves to the next endpoint if `endpoint` is still the pinned one. */
  failed(endpoint: string): void {
    if (this.endpoints[this.#pinned] === endpoint) {
      this.#pinned = (this.#pinned + 1) % this.endpoints.length;
    }
  }

  /**
   * Runs `fn` on the pinned endpoint, retrying by the rules in the module doc within
   * `timeoutMs` (default: the request timeout). `settle` may turn a failure into a
   * result (e.g. "lease already exists" on a repeated grant).
   */
  async call<T>(
    what: string,
    kind: CallKind,
    fn: (a: Attempt) => Promise<T>,
    timeoutMs = this.#requestTimeoutMs,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    let backoff = 25;
    for (let attempt = 1;; attempt++) {
      const { client, endpoint } = this.pinned();
      const attemptDeadline = Math.min(deadline, Date.now() + this.#requestTimeoutMs);
      try {
        return await fn({ client, endpoint, options: { deadline: attemptDeadline }, attempt });
      } catch (err) {
        if (this.#closed) throw this.closedError(what);
        if (!isTransient(err)) throw err;
        this.failed(endpoint);
        const retry = kind === "read" || notApplied(err);
        if (!retry || Date.now() + backoff >= deadline) {
          throw this.unavailable(what, err, kind === "write" && !notApplied(err));
        }
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 500);
      }
    }
  }

  unavailable(what: string, err: unknown, outcomeUnknown = false): UnavailableError {
    const detail = String((err as Error)?.message ?? err).replace(/\s+/g, " ");
    return new UnavailableError(
      `etcd unavailable at ${this.endpoints.join(",")} (${what}): ${detail}` +
        (outcomeUnknown ? "; the write may or may not have been applied" : ""),
      { cause: err },
    );
  }

  closedError(what: string): UnavailableError {
    return new UnavailableError(
      `etcd store (${this.endpoints.join(",")}) is closed (${what})`,
    );
  }

  #checkOpen(): void {
    if (this.#closed) throw this.closedError("call");
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const c of this.#clients) c.close();
  }
}
