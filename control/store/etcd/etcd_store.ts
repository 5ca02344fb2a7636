/**
 * The StateStore on etcd v3 (cluster mode), through the `etcd3` package's raw RPC
 * clients. It passes the same contract suite as the embedded store.
 *
 * What it adds to plain etcd3 usage (see PLATFORM.md, etcd3 pitfalls):
 * - reads, lease calls and watches fail over to another member within the request
 *   timeout (_conn.ts); when every member is unreachable calls reject with
 *   UnavailableError "control plane unavailable: cannot reach etcd at ...", within
 *   the request timeout, and within one attempt's deadline once etcd has been down
 *   for that long;
 * - writes are never retried blindly (applied at most once): a write whose answer
 *   was lost is settled by reading the history back (_write.ts), so a leader
 *   change does not reach callers as an error;
 * - watches resume by revision after reconnects and report compaction (_watch.ts);
 * - "watch from now" starts right after the highest revision this client has seen, so
 *   a write issued after watch() returns is always delivered;
 * - lease ids are chosen by the client below 2^53 so they survive as JS numbers, and
 *   keepAlive records a local deadline (leaseValidUntil) from the last acknowledgement.
 * @module
 */

import { InvalidArgumentError, NotFoundError, UnavailableError } from "../../../mod/errors.ts";
import {
  checkCount,
  checkKey,
  checkPrefix,
  checkValue,
  type Compare,
  type KeyValue,
  type ListResult,
  type Op,
  type StateStore,
  type TxnResult,
  type Watch,
  type WatchOptions,
} from "../mod.ts";
import { writes } from "./_settle.ts";
import { Namespace, type PbHeader, type PbKeyValue } from "./_codec.ts";
import { EndpointPool, type EtcdTls, isTransient, messageOf } from "./_conn.ts";
import { EtcdWatch } from "./_watch.ts";
import { readRevision, sendTxn, type TxnModel, type WriteContext, writeTxn } from "./_write.ts";

export type { EtcdTls };

export interface EtcdConnectOptions {
  /** Client URLs of the members, all http:// or all https://. */
  endpoints: string[];
  /** CA and client certificate for https endpoints. */
  tls?: EtcdTls;
  /** Key namespace: every key is stored under this prefix (default ""). */
  prefix?: string;
  /** How long connect() waits for a first answer (default 5000). */
  dialTimeoutMs?: number;
  /** Budget of one call, failover to other members and settling included (default 5000). */
  requestTimeoutMs?: number;
  /** Deadline of one request attempt (default 2000, at most requestTimeoutMs). */
  attemptTimeoutMs?: number;
}

const MAX_TTL_SECONDS = 9_000_000_000;

export class EtcdStateStore implements StateStore {
  readonly description: string;
  readonly #pool: EndpointPool;
  readonly #ns: Namespace;
  readonly #watches = new Set<EtcdWatch>();
  /** Highest revision seen in any response header. */
  #seen = 0;
  /** Local lease deadlines (ms since epoch): send time of the last acknowledged keepalive + TTL. */
  readonly #leaseDeadlines = new Map<number, number>();
  readonly #writes: WriteContext;

  private constructor(pool: EndpointPool, prefix: string) {
    this.#pool = pool;
    this.#ns = new Namespace(prefix);
    this.description = `etcd (${pool.endpoints.join(",")})`;
    this.#writes = {
      pool,
      ns: this.#ns,
      observe: (header) => this.#observe(header),
      seen: () => this.#seen,
    };
  }

  /** Connects and checks that etcd answers; rejects with UnavailableError if it does not. */
  static async connect(opts: EtcdConnectOptions): Promise<EtcdStateStore> {
    const prefix = opts.prefix ?? "";
    checkPrefix(prefix, "prefix");
    for (
      const [field, v] of [
        ["dialTimeoutMs", opts.dialTimeoutMs],
        ["requestTimeoutMs", opts.requestTimeoutMs],
        ["attemptTimeoutMs", opts.attemptTimeoutMs],
      ] as const
    ) {
      if (v !== undefined) checkCount(v, field, 1);
    }
    const requestTimeoutMs = opts.requestTimeoutMs ?? 5000;
    const pool = new EndpointPool(opts.endpoints, opts.tls, {
      requestTimeoutMs,
      attemptTimeoutMs: Math.min(opts.attemptTimeoutMs ?? 2000, requestTimeoutMs),
    });
    const store = new EtcdStateStore(pool, prefix);
    try {
      await store.#revisionWithin(opts.dialTimeoutMs ?? 5000);
    } catch (err) {
      await store.close();
      throw err instanceof UnavailableError ? err : pool.unavailable("connect", err);
    }
    return store;
  }

  #observe(header: PbHeader | undefined): number {
    const revision = Number(header?.revision ?? 0);
    if (revision > this.#seen) this.#seen = revision;
    return revision;
  }

  #revisionWithin(timeoutMs?: number): Promise<number> {
    return readRevision(this.#writes, "currentRevision", timeoutMs);
  }

  /** Maps etcd's own errors; transport errors are already UnavailableError. */
  #mapError(err: unknown, lease?: number): unknown {
    if (err instanceof UnavailableError || err instanceof InvalidArgumentError) return err;
    const m = messageOf(err);
    if (/duplicate key given in txn request/.test(m)) {
      return new InvalidArgumentError(
        "a transaction branch writes one key more than once (etcd: duplicate key given in txn request)",
        { cause: err },
      );
    }
    if (/requested lease not found/.test(m)) return new NotFoundError("lease", String(lease));
    if (/required revision is a future revision/.test(m)) {
      return new InvalidArgumentError(`revision is in the future: ${m}`, {
        cause: err,
        field: "revision",
      });
    }
    if (isTransient(err)) return this.#pool.unavailable("call", err);
    return err;
  }

  async #run<T>(fn: () => Promise<T>, lease?: number): Promise<T> {
    if (this.#pool.closed) throw this.#pool.closedError("call");
    try {
      return await fn();
    } catch (err) {
      throw this.#mapError(err, lease);
    }
  }

  #encode(model: TxnModel) {
    return {
      compare: model.compares.map((c, i) => this.#ns.compare(c, i)),
      success: model.success.map((op, i) => this.#ns.op(op, `success[${i}]`)),
      failure: model.failure.map((op, i) => this.#ns.op(op, `failure[${i}]`)),
    };
  }

  /** A write, applied at most once and settled after a lost answer (_write.ts). */
  #write(what: string, model: TxnModel): Promise<TxnResult> {
    return writeTxn(this.#writes, what, model, this.#encode(model));
  }

  get(key: string): Promise<KeyValue | undefined> {
    return this.#run(() => {
      checkKey(key);
      return this.#pool.call("get", async ({ client, options }) => {
        const r = await client.kv.range({ key: this.#ns.key(key) }, options);
        this.#observe(r.header as PbHeader);
        const kv = r.kvs[0] as PbKeyValue | undefined;
        return kv ? this.#ns.kv(kv) : undefined;
      });
    });
  }

  list(prefix: string): Promise<ListResult> {
    return this.#run(() => {
      checkPrefix(prefix);
      return this.#pool.call("list", async ({ client, options }) => {
        const r = await client.kv.range(this.#ns.range(prefix), options);
        const revision = this.#observe(r.header as PbHeader);
        return { kvs: (r.kvs as PbKeyValue[]).map((kv) => this.#ns.kv(kv)), revision };
      });
    });
  }

  put(key: string, value: string, options?: { lease?: number }): Promise<{ revision: number }> {
    const lease = options?.lease;
    return this.#run(() => {
      checkKey(key);
      checkValue(value);
      if (lease !== undefined) checkCount(lease, "lease");
      const op = { type: "put" as const, key, value, lease };
      return this.#write("put", { compares: [], success: [op], failure: [] })
        .then((r) => ({ revision: r.revision }));
    }, lease);
  }

  delete(
    key: string,
    options?: { prefix?: boolean },
  ): Promise<{ revision: number; deleted: number }> {
    return this.#run(() => {
      if (options?.prefix) checkPrefix(key, "key");
      else checkKey(key);
      const op = { type: "delete" as const, key, prefix: options?.prefix === true };
      return this.#write("delete", { compares: [], success: [op], failure: [] }).then((r) => {
        const res = r.responses[0];
        return { revision: r.revision, deleted: res?.type === "delete" ? res.deleted : 0 };
      });
    });
  }

  txn(compares: Compare[], success: Op[], failure: Op[] = []): Promise<TxnResult> {
    let lease: number | undefined;
    return this.#run(() => {
      for (
        const [branch, ops] of [["compares", compares], ["success", success], [
          "failure",
          failure,
        ]] as const
      ) {
        if (!Array.isArray(ops)) {
          throw new InvalidArgumentError(`${branch} must be an array`, { field: branch });
        }
      }
      for (const op of [...success, ...failure]) {
        if (op?.type === "put" && op.lease) lease = op.lease;
      }
      const model = { compares, success, failure };
      const req = this.#encode(model); // checks every compare and op
      if (writes(success) || writes(failure)) return writeTxn(this.#writes, "txn", model, req);
      return this.#pool.call("txn", (a) => sendTxn(this.#writes, req, a));
    }, lease);
  }

  watch(prefix: string, options: WatchOptions = {}): Watch {
    try {
      if (this.#pool.closed) throw this.#pool.closedError("watch");
      checkPrefix(prefix);
      if (options.startRevision !== undefined) checkCount(options.startRevision, "startRevision");
      // From now: right after the newest revision this client has seen. Every write
      // issued after this call gets a higher revision, so none is missed.
      const startRevision = options.startRevision || this.#seen + 1;
      const w = new EtcdWatch(
        {
          pool: this.#pool,
          ns: this.#ns,
          observe: (r) => void this.#observe({ revision: String(r) }),
        },
        { ...this.#ns.range(prefix), startRevision, prevKv: options.prevKv === true },
        (done) => this.#watches.delete(done),
      );
      this.#watches.add(w);
      w.start();
      return w;
    } catch (err) {
      return EtcdWatch.failed(err);
    }
  }

  grantLease(ttlSeconds: number): Promise<number> {
    return this.#run(async () => {
      checkCount(ttlSeconds, "ttlSeconds", 1);
      if (ttlSeconds > MAX_TTL_SECONDS) {
        throw new InvalidArgumentError(`ttlSeconds must be <= ${MAX_TTL_SECONDS}`, {
          field: "ttlSeconds",
        });
      }
      for (let collisions = 0;; collisions++) {
        // A client-chosen id below 2^53 (etcd's own ids need 64 bits); the same id on
        // every retry makes the grant idempotent: "already exists" after a failed
        // attempt means that attempt was applied.
        const id = 1 + Math.floor(Math.random() * (Number.MAX_SAFE_INTEGER - 1));
        const sentAt = Date.now();
        try {
          const ttl = await this.#pool.call("grantLease", async (a) => {
            try {
              const r = await a.client.leaseClient.leaseGrant(
                { TTL: String(ttlSeconds), ID: String(id) },
                a.options,
              );
              if (r.error) throw new Error(r.error);
              return Number(r.TTL);
            } catch (err) {
              if (a.attempt > 1 && /lease already exists/.test(messageOf(err))) return ttlSeconds;
              throw err;
            }
          });
          this.#leaseDeadlines.set(id, sentAt + ttl * 1000);
          return id;
        } catch (err) {
          if (!/lease already exists/.test(messageOf(err)) || collisions > 3) throw err;
        }
      }
    });
  }

  keepAlive(lease: number): Promise<number> {
    return this.#run(() => {
      checkCount(lease, "lease", 1);
      return this.#pool.call("keepAlive", async ({ client, options }) => {
        const sentAt = Date.now();
        const stream = await client.leaseClient.leaseKeepAlive(options);
        const ttl = await new Promise<number>((resolve, reject) => {
          stream.on("data", (r) => {
            this.#observe(r.header as PbHeader);
            resolve(Number(r.TTL));
          });
          stream.on("error", reject);
          stream.on("end", () => reject(new Error("keepalive stream ended")));
          stream.write({ ID: String(lease) });
        }).finally(() => {
          // Half-close, never cancel: etcd3 takes a cancelled call for a failed host and
          // drops every connection to it, so each keep-alive would reconnect the watches.
          try {
            stream.end();
          } catch { /* closed */ }
        });
        if (ttl <= 0) {
          this.#leaseDeadlines.delete(lease);
          throw new NotFoundError("lease", String(lease));
        }
        this.#leaseDeadlines.set(lease, sentAt + ttl * 1000);
        return ttl;
      });
    }, lease);
  }

  /**
   * Until when (ms since epoch) the lease is known to live: the send time of the last
   * acknowledged grant or keepAlive plus its TTL. undefined when unknown to this client.
   * etcd itself reports a lost lease late (PLATFORM.md); holders should stop acting
   * on the lease at this deadline.
   */
  leaseValidUntil(lease: number): number | undefined {
    return this.#leaseDeadlines.get(lease);
  }

  revokeLease(lease: number): Promise<void> {
    return this.#run(() => {
      checkCount(lease, "lease", 1);
      return this.#pool.call("revokeLease", async (a) => {
        try {
          const r = await a.client.leaseClient.leaseRevoke({ ID: String(lease) }, a.options);
          this.#observe(r.header as PbHeader);
        } catch (err) {
          // Not found after a failed attempt: that attempt revoked it.
          if (!(a.attempt > 1 && /requested lease not found/.test(messageOf(err)))) throw err;
        }
        this.#leaseDeadlines.delete(lease);
      });
    }, lease);
  }

  compact(revision: number): Promise<void> {
    return this.#run(() => {
      checkCount(revision, "revision", 1);
      return this.#pool.call("compact", async ({ client, options }) => {
        try {
          const r = await client.kv.compact({ revision: String(revision) }, options);
          this.#observe(r.header as PbHeader);
        } catch (err) {
          // Already compacted at or past `revision`: nothing to do.
          if (!/required revision has been compacted/.test(messageOf(err))) throw err;
        }
      });
    });
  }

  currentRevision(): Promise<number> {
    return this.#run(() => this.#revisionWithin());
  }

  /** Closes the connections; running watches end, later calls reject with UnavailableError. */
  close(): Promise<void> {
    for (const w of [...this.#watches]) w.cancel();
    this.#pool.close();
    return Promise.resolve();
  }
}
