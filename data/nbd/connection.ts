/**
 * One NBD connection: the handshake (driven by _negotiate.ts around the pure state
 * machine in handshake.ts), then the transmission loop ("Transmission").
 *
 * Hot path rules (measured, see docs/BENCHMARKS.md): one reusable input buffer;
 * every pipelined request in a read is parsed and executed before the next read;
 * WRITE payloads are written to the store straight from the input buffer; READ data
 * is read from the store straight into the outgoing batch buffer; the replies of a
 * batch leave in one write, and the next read does not wait for that write.
 * Requests execute synchronously in arrival order, so a later request always sees
 * the effect of an earlier one; only flushes (FLUSH, FUA) complete asynchronously.
 * @module
 */

import type { Logger } from "pino";
import * as C from "./constants.ts";
import {
  blockStatusSize,
  decodeRequest,
  encodeBlockStatus,
  encodeErrorReply,
  encodeOffsetDataHeader,
  encodeOkReply,
  encodeSimpleReply,
  errorReplySize,
  nbdErrno,
  Request,
  type StatusDescriptor,
  type TransmissionContext,
  validateRequest,
} from "./codec.ts";
import type { HandshakePolicy } from "./handshake.ts";
import { negotiate, type Session } from "./_negotiate.ts";
import type { Transport } from "./transport.ts";
import { ClientRefusedError, ProtocolError } from "./errors.ts";
import { InputBuffer } from "./_input.ts";
import { ReplyBatcher } from "./_replies.ts";
import type { ExportTable, LiveExport } from "../exports.ts";
import {
  OP_BLOCK_STATUS,
  OP_CACHE,
  OP_FLUSH,
  OP_READ,
  OP_TRIM,
  OP_WRITE,
  OP_WRITE_ZEROES,
} from "../stats.ts";

/** The outcome of a successful TLS upgrade: the new transport and who the client is. */
export interface TlsUpgrade {
  transport: Transport;
  /** Authenticated client identity, for logs. */
  identity: string;
  /** Exports this client may list and open (from its certificate); all when absent. */
  allowExport?: (name: string) => boolean;
}

/**
 * Upgrades a transport to TLS after NBD_OPT_STARTTLS was acknowledged (the TLS seam).
 * Rejects (and the connection closes) when the handshake fails or the client is refused.
 */
export type StartTls = (t: Transport) => Promise<TlsUpgrade>;

export interface ConnectionOptions {
  id: number;
  exports: ExportTable;
  policy: HandshakePolicy;
  logger: Logger;
  startTls?: StartTls;
}

/** WRITEs at least this large are acknowledged without waiting for the rest of the batch. */
const EARLY_REPLY_BYTES = 128 * 1024;
/** Stop reading new requests while this many reply bytes wait to be sent. */
const MAX_QUEUED_OUT = 64 * 1024 * 1024;
/** Most descriptors one BLOCK_STATUS reply carries ("MAY return less descriptors"). */
const MAX_DESCRIPTORS = 1024;
const STATUS_HOLE = C.NBD_STATE_HOLE | C.NBD_STATE_ZERO;

const enc = new TextEncoder();
const MSG_SHUTDOWN = enc.encode("server is shutting down");

export class Connection {
  readonly id: number;
  #t: Transport;
  #log: Logger;
  #opts: ConnectionOptions;
  /** What the handshake driver (_negotiate.ts) reads and replaces (STARTTLS): #t, #log. */
  #session: Session;

  // Receive buffer and reply batches (see _input.ts, _replies.ts).
  #in = new InputBuffer();
  #out = new ReplyBatcher(() => this.#t, () => this.#closed);

  #req = new Request();
  #ctx: TransmissionContext | undefined;
  #export: LiveExport | undefined;
  #pending = 0;
  #idle: (() => void) | undefined;
  #closed = false;
  #shuttingDown = false;
  /** performance.now() at accept; the handshake must finish within a deadline from here. */
  readonly openedAt: number = performance.now();
  /**
   * performance.now() since when the oldest incomplete request has been waiting for its
   * remaining bytes, 0 when none is. The server's watchdog closes connections whose
   * request stays incomplete too long (a stalled or trickling client).
   */
  partialSince = 0;
  inHandshake = true;

  constructor(transport: Transport, opts: ConnectionOptions) {
    this.id = opts.id;
    this.#t = transport;
    this.#opts = opts;
    this.#log = opts.logger.child({ conn: opts.id, remote: transport.remote });
    // The handshake's transport and logger are this connection's own (STARTTLS swaps both).
    const t = { get: () => this.#t, set: (v: Transport) => void (this.#t = v) };
    const log = { get: () => this.#log, set: (v: Logger) => void (this.#log = v) };
    this.#session = {
      get transport() {
        return t.get();
      },
      set transport(v: Transport) {
        t.set(v);
      },
      get log() {
        return log.get();
      },
      set log(v: Logger) {
        log.set(v);
      },
      policy: opts.policy,
      input: this.#in,
      shuttingDown: () => this.#shuttingDown,
      discard: (n) => this.#discard(n),
    };
  }

  get exportName(): string | undefined {
    return this.#export?.name;
  }

  /** Serves the connection until the client leaves or the server shuts it. Never throws. */
  async run(): Promise<void> {
    this.#log.debug("connection opened");
    try {
      const attached = await negotiate(this.#session, this.#opts);
      if (attached) {
        this.#ctx = attached.ctx;
        this.#export = attached.exp;
        this.inHandshake = false;
        await this.#transmission(attached.exp);
      }
    } catch (err) {
      if (!this.#closed) {
        const msg = err instanceof Error ? err.message : String(err);
        if (err instanceof ClientRefusedError) {
          this.#log.warn({ reason: msg }, "client refused");
        } else if (err instanceof ProtocolError) {
          this.#log.warn({ err: msg }, "protocol violation, disconnecting");
          if (this.#export) this.#export.stats.protocolErrors++;
        } else if (isDisconnect(err)) {
          this.#log.debug({ err: msg }, "client went away");
        } else {
          this.#log.error({ err: msg }, "connection failed");
        }
      }
    } finally {
      await this.#finish();
    }
  }

  /** Hard disconnect now (volume deleted with force, watchdog). */
  abort(reason: string): void {
    if (this.#closed) return;
    this.#log.warn({ reason }, "disconnecting client");
    this.#close();
  }

  /**
   * Graceful shutdown: requests not yet started get ESHUTDOWN, in-flight ones finish,
   * queued replies are sent, then the connection closes ("Terminating the transmission phase").
   */
  async shutdown(): Promise<void> {
    this.#shuttingDown = true;
    if (this.inHandshake) {
      this.#close();
      return;
    }
    await this.#drain();
    this.#close();
  }

  // ---- transmission ("Transmission", "Request types") -------------------------------

  async #transmission(exp: LiveExport): Promise<void> {
    exp.attach(this);
    const ctx = this.#ctx!;
    const req = this.#req;
    for (;;) {
      let progressed = false;
      // Parse and execute every complete request in the buffer.
      while (this.#in.end - this.#in.start >= C.REQUEST_HEADER_SIZE) {
        if (this.#out.queued + this.#out.len > MAX_QUEUED_OUT) {
          // The client is not reading its replies: stop producing more until it does.
          this.#out.flush();
          await this.#out.sending;
          if (this.#out.error) throw this.#out.error;
        }
        const s = this.#in.start;
        if (!decodeRequest(this.#in.view, s, req)) {
          throw new ProtocolError(`bad request magic 0x${this.#in.view.getUint32(s).toString(16)}`);
        }
        if (req.type === C.NBD_CMD_DISC) {
          // "The server MUST handle all outstanding requests ... and close the TCP session."
          this.#log.debug("client sent NBD_CMD_DISC");
          this.#out.flush();
          await this.#drain();
          return;
        }
        const isWrite = req.type === C.NBD_CMD_WRITE;
        let next = s + C.REQUEST_HEADER_SIZE;
        if (isWrite) {
          next += req.length;
          if (this.#in.end < next) {
            if (req.length > ctx.maxPayload) {
              // Too large to buffer: answer now and skip the payload to stay in sync.
              this.#in.start += C.REQUEST_HEADER_SIZE;
              this.#reject(req, C.NBD_EOVERFLOW, `write of ${req.length} bytes exceeds maximum`);
              this.#out.flush();
              await this.#discard(req.length);
              progressed = true;
              continue;
            }
            this.#in.reserve(next - s);
            break; // read more
          }
        }
        // The WRITE payload stays in place in #in until the next fill.
        this.#in.start = next;
        progressed = true;
        // Validate -> (write gate) -> execute -> reply: a request the spec refuses is
        // answered at once, never held behind the control plane.
        if (this.#refused(req, ctx, exp)) continue;
        if (
          exp.writeGate !== undefined &&
          (isWrite || req.type === C.NBD_CMD_TRIM || req.type === C.NBD_CMD_WRITE_ZEROES) &&
          !(await this.#passWriteGate(exp, req))
        ) continue;
        this.#execute(req, ctx, exp, s + C.REQUEST_HEADER_SIZE);
        // A large write took a while: acknowledge it now rather than after the batch.
        if (isWrite && req.length >= EARLY_REPLY_BYTES) this.#out.flush();
      }
      if (this.#in.end === this.#in.start) this.partialSince = 0;
      else if (progressed || this.partialSince === 0) this.partialSince = performance.now();
      this.#out.flush();
      if (this.#out.error) throw this.#out.error;
      if (this.#out.queued > MAX_QUEUED_OUT) await this.#out.sending;
      if (!(await this.#in.fill(this.#t))) {
        if (this.#in.end > this.#in.start) {
          this.#log.warn(
            { partialBytes: this.#in.end - this.#in.start },
            "client left mid-request",
          );
        }
        return;
      }
    }
  }

  /**
   * Waits for the export's write gate (the control plane must record something before
   * the first write is acknowledged). On failure answers `req` with EIO: the data is
   * untouched, so the client may retry. Returns whether to execute the request.
   */
  async #passWriteGate(exp: LiveExport, req: Request): Promise<boolean> {
    this.#out.flush();
    this.partialSince = 0; // waiting on the control plane, not on a slow client
    try {
      await exp.passWriteGate();
      return true;
    } catch (err) {
      const message = `write refused: ${err instanceof Error ? err.message : String(err)}`;
      this.#log.warn({ type: req.type, offset: req.offset, length: req.length }, message);
      this.#reject(req, C.NBD_EIO, message);
      const kind = req.type === C.NBD_CMD_TRIM
        ? OP_TRIM
        : req.type === C.NBD_CMD_WRITE_ZEROES
        ? OP_WRITE_ZEROES
        : OP_WRITE;
      exp.stats.record(kind, 0, 0, true);
      return false;
    }
  }

  /** Answers `req` with an error if it is invalid or the server is stopping; says whether. */
  #refused(req: Request, ctx: TransmissionContext, exp: LiveExport): boolean {
    const bad = validateRequest(req, ctx);
    if (bad) {
      this.#log.warn(
        { type: req.type, flags: req.flags, length: req.length, error: bad.error },
        bad.message,
      );
      exp.stats.protocolErrors++;
      this.#reject(req, bad.error, bad.message);
      return true;
    }
    if (this.#shuttingDown) {
      this.#reject(req, C.NBD_ESHUTDOWN, "server is shutting down", MSG_SHUTDOWN);
      return true;
    }
    return false;
  }

  /** Executes a valid request and queues its reply. `payload` is where a WRITE's data starts. */
  #execute(req: Request, ctx: TransmissionContext, exp: LiveExport, payload: number): void {
    const t0 = performance.now();
    const store = exp.store;
    const stats = exp.stats;
    const fua = (req.flags & C.NBD_CMD_FLAG_FUA) !== 0;
    let kind = OP_READ;
    try {
      switch (req.type) {
        case C.NBD_CMD_READ: {
          const len = req.length;
          if (ctx.structuredReplies) {
            const at = this.#out.reserve(C.STRUCTURED_REPLY_HEADER_SIZE + 8 + len);
            const dataAt = encodeOffsetDataHeader(this.#out.view, at, req);
            store.read(this.#out.buf.subarray(dataAt, dataAt + len), req.offset);
            this.#out.len = dataAt + len;
          } else {
            const at = this.#out.reserve(C.SIMPLE_REPLY_HEADER_SIZE + len);
            const dataAt = encodeSimpleReply(this.#out.view, at, req, 0);
            store.read(this.#out.buf.subarray(dataAt, dataAt + len), req.offset);
            this.#out.len = dataAt + len;
          }
          stats.record(OP_READ, len, (performance.now() - t0) / 1000, false);
          return;
        }
        case C.NBD_CMD_WRITE:
          kind = OP_WRITE;
          store.write(this.#in.buf.subarray(payload, payload + req.length), req.offset);
          break;
        case C.NBD_CMD_TRIM:
          kind = OP_TRIM;
          store.trim(req.offset, req.length);
          break;
        case C.NBD_CMD_WRITE_ZEROES:
          kind = OP_WRITE_ZEROES;
          if ((req.flags & C.NBD_CMD_FLAG_FAST_ZERO) && !store.canFastZero) {
            // FAST_ZERO: "fail quickly with ENOTSUP" rather than write zeroes slowly.
            this.#reject(req, C.NBD_ENOTSUP, "fast zero not possible on this store");
            stats.record(kind, 0, 0, true);
            return;
          }
          store.writeZeroes(req.offset, req.length, (req.flags & C.NBD_CMD_FLAG_NO_HOLE) === 0);
          break;
        case C.NBD_CMD_FLUSH:
          this.#flushThenReply(req, exp, OP_FLUSH, 0, t0);
          return;
        case C.NBD_CMD_CACHE:
          kind = OP_CACHE;
          break; // data is served from the page cache already
        case C.NBD_CMD_BLOCK_STATUS:
          kind = OP_BLOCK_STATUS;
          this.#blockStatus(req, exp);
          stats.record(kind, req.length, (performance.now() - t0) / 1000, false);
          return;
      }
    } catch (err) {
      const errno = (err as { errno?: string }).errno;
      const message = err instanceof Error ? err.message : String(err);
      this.#log.error({ type: req.type, offset: req.offset, length: req.length, errno }, message);
      stats.record(kind, 0, (performance.now() - t0) / 1000, true);
      this.#reject(req, nbdErrno(errno), message);
      return;
    }
    const bytes = req.length;
    if (fua && (kind === OP_WRITE || kind === OP_TRIM || kind === OP_WRITE_ZEROES)) {
      // FUA: "MUST NOT send its reply ... until the data is persisted".
      this.#flushThenReply(req, exp, kind, bytes, t0);
      return;
    }
    const at = this.#out.reserve(C.STRUCTURED_REPLY_HEADER_SIZE);
    this.#out.len = encodeOkReply(this.#out.view, at, req, ctx.structuredReplies);
    stats.record(kind, bytes, (performance.now() - t0) / 1000, false);
  }

  /** Replies after fdatasync completes; other requests keep flowing meanwhile. */
  #flushThenReply(req: Request, exp: LiveExport, kind: number, bytes: number, t0: number): void {
    const structured = this.#ctx!.structuredReplies;
    // The reply is encoded now (the Request object is reused) and sent when durable.
    const ok = new Uint8Array(C.STRUCTURED_REPLY_HEADER_SIZE);
    const okLen = encodeOkReply(new DataView(ok.buffer), 0, req, structured);
    const handleHi = req.handleHi;
    const handleLo = req.handleLo;
    this.#pending++;
    exp.store.flush().then(
      () => {
        exp.stats.record(kind, bytes, (performance.now() - t0) / 1000, false);
        this.#out.enqueue(ok, okLen, false);
      },
      (err) => {
        const message = err instanceof Error ? err.message : String(err);
        this.#log.error({ errno: (err as { errno?: string }).errno }, message);
        exp.stats.record(kind, 0, (performance.now() - t0) / 1000, true);
        const r = new Request();
        r.handleHi = handleHi;
        r.handleLo = handleLo;
        const m = enc.encode(message.slice(0, 200));
        const b = new Uint8Array(errorReplySize(structured, m));
        const n = encodeErrorReply(b, new DataView(b.buffer), 0, r, structured, C.NBD_EIO, m);
        this.#out.enqueue(b, n, false);
      },
    ).finally(() => {
      this.#pending--;
      if (this.#pending === 0) this.#idle?.();
    });
  }

  /** base:allocation extents for the range ("Metadata querying"). */
  #blockStatus(req: Request, exp: LiveExport): void {
    const extents = exp.store.extents(req.offset, req.length);
    const one = (req.flags & C.NBD_CMD_FLAG_REQ_ONE) !== 0;
    const max = one ? 1 : MAX_DESCRIPTORS;
    const ds: StatusDescriptor[] = [];
    for (const e of extents) {
      if (ds.length === max) break;
      ds.push({ length: e.length, flags: e.hole ? STATUS_HOLE : 0 });
    }
    if (ds.length === 0) ds.push({ length: req.length, flags: 0 });
    const at = this.#out.reserve(blockStatusSize(ds.length));
    this.#out.len = encodeBlockStatus(this.#out.view, at, req, C.BASE_ALLOCATION_ID, ds);
  }

  /** Error reply for a request that will not run. */
  #reject(req: Request, error: number, message: string, encoded?: Uint8Array): void {
    const structured = this.#ctx?.structuredReplies ?? false;
    const m = encoded ?? enc.encode(message.slice(0, 200));
    const at = this.#out.reserve(errorReplySize(structured, m));
    this.#out.len = encodeErrorReply(this.#out.buf, this.#out.view, at, req, structured, error, m);
  }

  // ---- I/O ------------------------------------------------------------------------

  /** Waits for in-flight flushes and queued replies. */
  async #drain(): Promise<void> {
    this.#out.flush();
    if (this.#pending > 0) {
      await new Promise<void>((resolve) => (this.#idle = resolve));
    }
    await this.#out.sending;
  }

  /** Reads and drops `n` bytes (payload of a request we refused); counts as a partial request. */
  async #discard(n: number): Promise<void> {
    if (this.partialSince === 0) this.partialSince = performance.now();
    await this.#in.discard(this.#t, n);
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#t.close();
  }

  async #finish(): Promise<void> {
    if (this.#export) {
      if (!this.#closed) await this.#drain().catch(() => {});
      this.#export.detach(this);
    }
    this.#close();
    this.#log.debug("connection closed");
  }
}

function isDisconnect(err: unknown): boolean {
  const name = (err as { name?: string })?.name;
  return name === "ConnectionReset" || name === "BrokenPipe" || name === "BadResource" ||
    name === "Interrupted" || name === "NotConnected";
}
