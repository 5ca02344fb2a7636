/**
 * Connections to the etcd members and the retry rules (private to etcd_store.ts).
 *
 * One `etcd3` client per endpoint, each with fault handling switched off (the
 * package's default retries every unary call, Put and Txn included, which can apply
 * a write twice). Calls go to one pinned endpoint; when it fails the next one is
 * pinned. Every request carries etcd's require-leader metadata, so a member cut off
 * from its cluster answers "no leader" (and ends its watch streams) instead of hanging.
 *
 * - reads and idempotent calls (call()) are retried on any transient failure, on the
 *   next member, until the call's budget is spent; each attempt has its own, shorter
 *   deadline, so one stopped member cannot eat the whole budget;
 * - writes make single attempts (attempt()); the store's write path (_write.ts)
 *   repeats them only when they provably did not apply, and settles the others.
 *
 * The pool tracks outages: once every call has failed for a whole request timeout,
 * calls get the budget of one attempt, so that a stopped etcd is reported quickly
 * with a message naming the endpoints and how long they have been failing.
 * @module
 */

import { Buffer } from "node:buffer";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { Etcd3, GRPCDeadlineExceededError, type IOptions, RecoverableError } from "etcd3";
import { errorMessage, InvalidArgumentError, UnavailableError } from "../../../mod/errors.ts";
import { etcdCause, telling } from "./_cause.ts";

export interface EtcdTls {
  caPem: string;
  /** Client certificate and key; needed when etcd runs with --client-cert-auth. */
  certPem?: string;
  keyPem?: string;
}

/** The `etcd3` client of one endpoint, plus a deadline for this attempt. */
export interface Attempt {
  client: Etcd3;
  endpoint: string;
  options: { deadline: number };
  /** 1 for the first attempt. */
  attempt: number;
}

/** The message of an error, or the thrown value as text. */
export function messageOf(err: unknown): string {
  return errorMessage(err);
}

/** A failure that may go away: the member is down, busy or between leaders. */
export function isTransient(err: unknown): boolean {
  const name = (err as Error)?.constructor?.name ?? "";
  const message = messageOf(err);
  return /GRPCUnavailable|GRPCDeadlineExceeded|GRPCCancelled|GRPCInternal|GRPCUnknown|GRPCResourceExhast|GRPCAborted/
    .test(name) ||
    /etcdserver: (leader changed|no leader|request timed out|too many requests|server stopped|not capable|raft proposal dropped)|raft proposal dropped|No connection established|ECONNREFUSED|ECONNRESET|Connection dropped|Deadline exceeded|closed/i
      .test(message);
}

/** A failure that proves the request was not applied (so a write may be repeated). */
export function notApplied(err: unknown): boolean {
  const message = messageOf(err);
  return /No connection established|ECONNREFUSED|etcdserver: (no leader|too many requests)|raft proposal dropped/i
    .test(message);
}

/** Start of every "etcd is unreachable" message; tests and operators match on it. */
export const UNAVAILABLE_PREFIX = "control plane unavailable";

export interface PoolTimeouts {
  /** Budget of one call, retries included. */
  requestTimeoutMs: number;
  /** Deadline of one attempt. */
  attemptTimeoutMs: number;
}

/** No-op fault-handling policy: every call runs exactly once. */
const NOOP_POLICY = {
  execute: async <T>(fn: (context: { signal: AbortSignal }) => T | Promise<T>) =>
    await fn({ signal: new AbortController().signal }),
} as unknown as NonNullable<NonNullable<IOptions["faultHandling"]>["global"]>;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class EndpointPool {
  readonly endpoints: readonly string[];
  readonly timeouts: PoolTimeouts;
  readonly #clients: Etcd3[];
  #pinned = 0;
  #closed = false;
  /** Start of the current run of failures (no answer from any member since); 0 when none. */
  #failingSince = 0;
  /** The cause of each member's last failure since the calls began failing. */
  readonly #causes = new Map<string, string>();

  constructor(endpoints: string[], tls: EtcdTls | undefined, timeouts: PoolTimeouts) {
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
    this.timeouts = timeouts;
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
        // Pings only while a call is open (a watch, a lease keepalive): etcd's server refuses
        // pings on a connection without one (its enforcement policy, PermitWithoutStream
        // false) and after two such pings sends GOAWAY "too_many_pings". A node's connections
        // to the endpoints it is not pinned to sit idle after an outage moved its calls around;
        // every node that crashed in a test run (Deno, SIGSEGV) had just logged that GOAWAY.
        // An idle connection to a dead member is found out by the next call's deadline.
        "grpc.keepalive_time_ms": 10_000,
        "grpc.keepalive_timeout_ms": 5_000,
        "grpc.keepalive_permit_without_calls": 0,
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
    requireLeader(client);
    keepChannelsOnSlowCalls(client);
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

  /** Whether every call has failed for at least a whole request timeout. */
  get down(): boolean {
    return this.#failingSince !== 0 &&
      Date.now() - this.#failingSince >= this.timeouts.requestTimeoutMs;
  }

  /** The budget of a call starting now: one attempt while etcd is down. */
  budget(timeoutMs = this.timeouts.requestTimeoutMs): number {
    return this.down ? Math.min(timeoutMs, this.timeouts.attemptTimeoutMs) : timeoutMs;
  }

  /**
   * One attempt on the pinned endpoint, ending by `deadline` at the latest. A
   * transient failure moves the pin to the next endpoint and is rethrown as is.
   */
  async attempt<T>(fn: (a: Attempt) => Promise<T>, deadline: number, n = 1): Promise<T> {
    const { client, endpoint } = this.pinned();
    const attemptDeadline = Math.min(deadline, Date.now() + this.timeouts.attemptTimeoutMs);
    try {
      const r = await fn({ client, endpoint, options: { deadline: attemptDeadline }, attempt: n });
      this.#failingSince = 0;
      return r;
    } catch (err) {
      if (this.#closed) throw this.closedError("call");
      if (!isTransient(err)) {
        this.#failingSince = 0; // etcd answered
        throw err;
      }
      if (!this.#failingSince) this.#causes.clear();
      this.#failingSince ||= Date.now();
      this.#causes.set(endpoint, etcdCause(messageOf(err)));
      this.failed(endpoint);
      throw err;
    }
  }

  /**
   * Runs `fn` on the pinned endpoint; a transient failure is retried on the next
   * endpoint until the budget (default: the request timeout; one attempt while etcd
   * is down) is spent, then reported as UnavailableError. Only for reads and calls
   * that are safe to repeat.
   */
  async call<T>(what: string, fn: (a: Attempt) => Promise<T>, timeoutMs?: number): Promise<T> {
    const deadline = Date.now() + this.budget(timeoutMs);
    let backoff = 25;
    for (let attempt = 1;; attempt++) {
      try {
        return await this.attempt(fn, deadline, attempt);
      } catch (err) {
        if (!isTransient(err) || this.#closed) throw err;
        if (Date.now() + backoff >= deadline) throw this.unavailable(what, err);
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 500);
      }
    }
  }

  /**
   * "control plane unavailable: cannot reach etcd at URLS (what, failing for 12 s):
   * last error" plus what happened to a write: not applied, or unknown.
   */
  unavailable(
    what: string,
    err: unknown,
    write?: "not applied" | "outcome unknown",
  ): UnavailableError {
    // Already said by a call underneath (a write's probe): said once, not inside itself.
    if (err instanceof UnavailableError && err.message.startsWith(UNAVAILABLE_PREFIX)) {
      const note = write === "not applied" ? "; the change was not applied" : "";
      return note && !err.message.endsWith(note)
        ? new UnavailableError(err.message + note, { cause: err })
        : err;
    }
    const detail = telling([...this.#causes.values()], etcdCause(messageOf(err)));
    const secs = this.#failingSince ? Math.round((Date.now() - this.#failingSince) / 1000) : 0;
    const note = write === "not applied"
      ? "; the change was not applied"
      : write === "outcome unknown"
      ? "; the change may or may not have been applied"
      : "";
    return new UnavailableError(
      `${UNAVAILABLE_PREFIX}: cannot reach etcd at ${this.endpoints.join(",")} (${what}` +
        `${secs >= 1 ? `, failing for ${secs} s` : ""}): ${detail}${note}`,
      { cause: err },
    );
  }

  closedError(what: string): UnavailableError {
    return new UnavailableError(
      `${UNAVAILABLE_PREFIX}: the etcd store (${this.endpoints.join(",")}) is closed (${what})`,
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

/**
 * Adds etcd's require-leader metadata ("hasleader") to every request of `client`:
 * a member without a leader then fails calls at once and cancels watch streams.
 */
function requireLeader(client: Etcd3): void {
  type Meta = { clone(): Meta; set(k: string, v: string): void };
  const auth = (client as unknown as {
    pool?: { authenticator?: { getMetadata?: () => Promise<Meta> } };
  }).pool?.authenticator;
  if (!auth?.getMetadata) throw new Error("etcd3 internals changed: no authenticator");
  const get = auth.getMetadata.bind(auth);
  auth.getMetadata = async () => {
    const meta = (await get()).clone();
    meta.set("hasleader", "true");
    return meta;
  };
}

/**
 * While etcd answers, a call that missed its deadline was slow, not lost: the client keeps its
 * channels. etcd3 takes any DEADLINE_EXCEEDED for a failed host and closes every channel to it,
 * which ends this node's watches (re-listed from scratch) and fails its other calls, the lease
 * keep-alive included ("Channel closed before call started"). In a failover storm one slow
 * transaction among hundreds did that again and again on every node, until their leases lapsed
 * (docs/BENCHMARKS.md). So a deadline within SLOW_NOT_DEAD_MS of an answer does not reset
 * the channels; with no answer for that long (a stopped member), it does, as before. Other
 * failures (UNAVAILABLE: the connection broke) reset them as before.
 */
const SLOW_NOT_DEAD_MS = 5_000;

function keepChannelsOnSlowCalls(client: Etcd3): void {
  type Fn = (a: unknown) => Promise<unknown>;
  const pool = (client as unknown as { pool?: Record<string, unknown> }).pool;
  const withConnection = pool?.withConnection as
    | ((service: string, fn: Fn, ...rest: unknown[]) => Promise<unknown>)
    | undefined;
  const markFailed = pool?.markFailed as ((resource: unknown, err: unknown) => void) | undefined;
  if (!pool || !withConnection || !markFailed) {
    throw new Error("etcd3 internals changed: no pool.withConnection/markFailed");
  }
  let answeredAt = 0;
  const slow = (err: unknown) =>
    Date.now() - answeredAt < SLOW_NOT_DEAD_MS &&
    (err instanceof GRPCDeadlineExceededError || (err as { code?: number })?.code === 4);
  pool.withConnection = (service: string, fn: Fn, ...rest: unknown[]) =>
    withConnection.call(pool, service, async (a: unknown) => {
      try {
        const r = await fn(a);
        // A unary answer; a stream (watch, keep-alive) opened is no answer yet.
        if (typeof (r as { on?: unknown } | undefined)?.on !== "function") answeredAt = Date.now();
        return r;
      } catch (err) {
        // Not "recoverable" for etcd3's pool (no channel reset); still transient here.
        if (slow(err) && err instanceof Error) {
          delete (err as { [RecoverableError]?: true })[RecoverableError];
        }
        throw err;
      }
    }, ...rest);
  // Streams (watches, keep-alives) report their errors here.
  pool.markFailed = (resource: unknown, err: unknown) => {
    if (!slow(err)) markFailed.call(pool, resource, err);
  };
}
