/**
 * One NBD connection: the handshake (driven by _negotiate.ts around the pure state
 * machine in handshake.ts), then the transmission loop ("Transmission"), whose steps are
 * parse -> admit (validate, shutdown, write gate) -> execute (_execute.ts) -> reply
 * (_replies.ts).
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
import { decodeRequest, Request, type TransmissionContext, validateRequest } from "./codec.ts";
import type { HandshakePolicy } from "./handshake.ts";
import { negotiate, type Session } from "./_negotiate.ts";
import type { StartTls, Transport } from "./transport.ts";
import { ClientGoneError, ClientRefusedError, isDisconnect, ProtocolError } from "./errors.ts";
import { InputBuffer, type Parsed } from "./_input.ts";
import { errnoOf } from "./errno.ts";
import { Replies, ReplyBatcher } from "./_replies.ts";
import {
  checkLease,
  execute,
  type ExecuteContext,
  executeStreamedRead,
  executeStreamedWrite,
  isDataChanging,
  opOf,
} from "./_execute.ts";
import type { ExportTable, ForwarderFence, LiveExport, RequestForwarder } from "../exports.ts";
import { forwardRequest, forwardStreamedWrite, payloadOf } from "./_forwarded.ts";

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
/** At shutdown, the longest a connection is kept for requests still arriving. */
const SHUTDOWN_MAX_MS = 5_000;
/** At shutdown, a connection with no request for this long (and replies sent) is ended. */
const SHUTDOWN_QUIET_MS = 500;
/** After the last reply at shutdown, input is read (and dropped) this long before closing. */
const SHUTDOWN_LINGER_MS = 1_000;

const MSG_SHUTDOWN = new TextEncoder().encode("server is shutting down");
/** Parsed.payload of a WRITE whose payload is streamed rather than buffered. */
const STREAMED = -1;

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
  #replies = new Replies(this.#out);

  #req = new Request();
  /** Relays requests to the volume's master when another node serves it. */
  #forward: RequestForwarder | undefined;
  #ctx: TransmissionContext | undefined;
  #export: LiveExport | undefined;
  #fence: ForwarderFence | undefined;
  #pending = 0;
  #idle: (() => void) | undefined;
  #closed = false;
  #ended: string | undefined; // why it ended, for the line that says so (#finish)
  #shuttingDown = false;
  /** Stream offset from which requests are refused with ESHUTDOWN (set at shutdown). */
  #cutoff = Infinity;
  /** Shutdown sent the last reply and ended the sending side: input is dropped unread. */
  #lingering = false;
  /** Wakes shutdown() whenever the transmission loop has consumed input or ended. */
  #progress: (() => void) | undefined;
  /** performance.now() when the last request was parsed. */
  #lastRequestAt = 0;
  /** Settles when run() has finished. */
  #finished!: () => void;
  #done: Promise<void> = new Promise((resolve) => (this.#finished = resolve));
  /** performance.now() at accept; the handshake must finish within a deadline from here. */
  readonly openedAt: number = performance.now();
  /**
   * performance.now() since when the oldest incomplete request waits for its remaining
   * bytes, 0 when none does: the server's watchdog closes a stalled or trickling client.
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

  /** Serial of the client certificate (TLS connections), for cutting revoked ones. */
  get clientSerial(): string | undefined {
    return this.#session.clientSerial;
  }

  /** Serves the connection until the client leaves or the server shuts it. Never throws. */
  async run(): Promise<void> {
    this.#log.debug("connection opened");
    try {
      const attached = await negotiate(this.#session, this.#opts);
      if (attached) {
        this.#ctx = attached.ctx;
        this.#export = attached.exp;
        this.#fence = attached.fence;
        this.#replies.structured = attached.ctx.structuredReplies;
        this.inHandshake = false;
        await this.#transmission(attached.exp, attached.ctx);
      }
    } catch (err) {
      if (!this.#closed) {
        const msg = err instanceof Error ? err.message : String(err);
        this.#ended ??= msg;
        if (err instanceof ClientRefusedError) {
          this.#log.warn({ reason: msg }, "client refused");
        } else if (err instanceof ClientGoneError) {
          this.#log.info({ reason: msg }, "client went away during the handshake or a request");
        } else if (err instanceof ProtocolError) {
          this.#log.warn({ reason: msg }, "protocol violation, disconnecting");
          if (this.#export) this.#export.stats.countProtocolError();
        } else if (isDisconnect(err)) {
          this.#log.debug({ reason: msg }, "client went away");
        } else {
          this.#log.error({ err }, "connection failed");
        }
      }
    } finally {
      await this.#finish();
      this.#finished();
      this.#progress?.();
    }
  }

  /** Hard disconnect now (volume deleted with force, watchdog). */
  abort(reason: string): void {
    if (this.#closed) return;
    this.#ended ??= reason;
    this.#log.warn({ reason }, "disconnecting client");
    this.#close();
  }

  /**
   * Graceful shutdown ("Terminating the transmission phase"). Requests received by now run
   * and are answered; requests that arrive later get ESHUTDOWN ("SHOULD error further
   * requests") without running. The connection stays open until the client leaves (a
   * well-behaved one sends NBD_CMD_DISC once its requests are answered) or has sent nothing
   * for SHUTDOWN_QUIET_MS with every reply out, and at most SHUTDOWN_MAX_MS: requests still
   * on the wire when shutdown began thus get their ESHUTDOWN instead of a dead connection.
   * Then the sending side is ended and input is read and dropped until the client leaves or
   * SHUTDOWN_LINGER_MS pass: closing with unread input would reset the connection and
   * destroy replies the client has not read yet.
   */
  async shutdown(): Promise<void> {
    this.#shuttingDown = true;
    if (this.inHandshake || this.#closed) {
      this.#close();
      return;
    }
    const start = performance.now();
    const cutoff = this.#cutoff = this.#in.received;
    for (;;) {
      if (this.#closed) return;
      const now = performance.now();
      const idleFor = now - Math.max(this.#lastRequestAt, start);
      const answered = this.#in.position >= cutoff && this.#pending === 0 &&
        this.#out.queued + this.#out.len === 0;
      if (answered && idleFor >= SHUTDOWN_QUIET_MS) break;
      if (now - start >= SHUTDOWN_MAX_MS) {
        this.#log.warn(
          { unansweredBytes: Math.max(0, cutoff - this.#in.position), pending: this.#pending },
          "shutdown: the client did not finish in time; closing",
        );
        break;
      }
      const quietLeft = Math.max(20, SHUTDOWN_QUIET_MS - idleFor);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(SHUTDOWN_MAX_MS - (now - start), quietLeft));
        this.#progress = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#progress = undefined;
    }
    await this.#drain().catch(() => {});
    if (this.#closed) return;
    this.#lingering = true;
    await this.#t.closeWrite();
    const linger = setTimeout(() => this.#close(), SHUTDOWN_LINGER_MS);
    await this.#done;
    clearTimeout(linger);
  }

  // ---- transmission ("Transmission", "Request types") -------------------------------

  async #transmission(exp: LiveExport, ctx: TransmissionContext): Promise<void> {
    exp.attach(this);
    const run: ExecuteContext = {
      exp,
      input: this.#in,
      replies: this.#replies,
      log: this.#log,
      later: (work) => this.#later(work),
      begin: () => this.#pending++,
      end: () => this.#settled(),
      fenced: this.#fence?.fenced,
    };
    if (exp.forwarder) this.#forward = run.forward = exp.forwarder(this.#log);
    for (;;) {
      if (this.#lingering) {
        // Shutting down, replies all sent: drop what the client still sends until it leaves.
        this.#in.start = this.#in.end;
        if (!(await this.#in.fill(this.#t))) return;
        continue;
      }
      let progressed = false;
      // Parse and execute every complete request in the buffer.
      for (;;) {
        if (this.#lingering) break;
        if (this.#out.queued + this.#out.len > MAX_QUEUED_OUT) {
          // The client is not reading its replies: stop producing more until it does.
          this.#out.flush();
          await this.#out.sending;
          if (this.#out.error) throw this.#out.error;
        }
        const parsed = this.#parse(ctx);
        if (parsed.kind === "more") break;
        progressed = true;
        if (parsed.kind === "disc") {
          // "The server MUST handle all outstanding requests ... and close the TCP session."
          this.#ended ??= "client sent NBD_CMD_DISC";
          await this.#drain();
          return;
        }
        if (parsed.kind === "skip") {
          this.#out.flush();
          await this.#discard(parsed.bytes);
          continue;
        }
        const req = this.#req;
        const streamed = parsed.payload === STREAMED;
        const admitted = this.#admit(req, ctx, exp, parsed.at, run);
        if (!(admitted instanceof Promise ? await admitted : admitted)) {
          if (streamed) await this.#discard(req.length); // refused: skip its payload
          continue;
        }
        if (run.forward) {
          // Served by another node: the request goes to its master (_forwarded.ts).
          const held = streamed
            ? forwardStreamedWrite(req, run, this.#payload(req.length))
            : forwardRequest(req, run, payloadOf(req, this.#in, parsed.payload));
          if (held) {
            this.#out.flush();
            await held;
          }
        } else if (streamed) await executeStreamedWrite(req, run, this.#payload(req.length));
        else if (req.type === C.NBD_CMD_READ && req.length > C.STREAM_THRESHOLD) {
          await executeStreamedRead(req, run);
        } else {
          const waiting = execute(req, run, parsed.payload);
          if (waiting) {
            // Entering its regions needs a mark in the activity log, or another thread
            // is writing there: nothing after it runs before it is applied, and nothing is
            // read meanwhile (its payload is used in place in the input buffer, _change.ts).
            this.#out.flush();
            await waiting;
          }
        }
        // A large write took a while: acknowledge it now rather than after the batch.
        if (req.type === C.NBD_CMD_WRITE && req.length >= EARLY_REPLY_BYTES) this.#out.flush();
      }
      if (this.#in.end === this.#in.start) this.partialSince = 0;
      else if (progressed || this.partialSince === 0) this.partialSince = performance.now();
      if (progressed) this.#progress?.();
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
   * Parse step: decodes the next request header (and for a WRITE, checks that its payload
   * is buffered) into `#req`, consuming it from the input. Throws ProtocolError on a bad
   * magic: the stream is then out of step and the connection must close.
   */
  #parse(ctx: TransmissionContext): Parsed {
    const input = this.#in;
    const s = input.start;
    if (input.end - s < C.REQUEST_HEADER_SIZE) return { kind: "more" };
    const req = this.#req;
    if (!decodeRequest(input.view, s, req)) {
      throw new ProtocolError(`bad request magic 0x${input.view.getUint32(s).toString(16)}`);
    }
    const at = input.position;
    this.#lastRequestAt = performance.now();
    if (req.type === C.NBD_CMD_DISC) {
      input.start = s + C.REQUEST_HEADER_SIZE;
      return { kind: "disc" };
    }
    let next = s + C.REQUEST_HEADER_SIZE;
    if (req.type === C.NBD_CMD_WRITE) {
      if (req.length > ctx.maxPayload) {
        // Too large to accept: answer now and skip the payload to stay in sync.
        input.start = next;
        this.#replies.error(
          req,
          "EOVERFLOW",
          `write of ${req.length} bytes exceeds the maximum of ${ctx.maxPayload}`,
        );
        return { kind: "skip", bytes: req.length };
      }
      if (req.length > C.STREAM_THRESHOLD) {
        // Streamed from the socket to the store in pieces (#payload), never buffered whole.
        input.start = next;
        return { kind: "request", payload: STREAMED, at };
      }
      next += req.length;
      if (input.end < next) {
        input.reserve(next - s);
        return { kind: "more" };
      }
    }
    // The WRITE payload stays in place in the input buffer until the next fill.
    input.start = next;
    return { kind: "request", payload: s + C.REQUEST_HEADER_SIZE, at };
  }

  /**
   * Admit step: validate -> shutdown -> write gate -> lease (a group master's, lease.ts). A
   * request the spec refuses is answered at once, never held behind the control plane.
   * Returns whether to execute it: at once in the common case (no await per request, so the
   * requests of one read run in one turn and their sends to replicas leave together).
   */
  #admit(
    req: Request,
    ctx: TransmissionContext,
    exp: LiveExport,
    at: number,
    run: ExecuteContext,
  ): boolean | Promise<boolean> {
    const bad = validateRequest(req, ctx);
    if (bad) {
      this.#log.warn(
        { type: req.type, flags: req.flags, length: req.length, errno: bad.errno },
        bad.message,
      );
      exp.stats.countProtocolError();
      this.#replies.error(req, bad.errno, bad.message);
      return false;
    }
    if (at >= this.#cutoff) {
      // Sent after shutdown began: "SHOULD error further requests with ESHUTDOWN".
      this.#replies.error(req, "ESHUTDOWN", "server is shutting down", MSG_SHUTDOWN);
      return false;
    }
    if (exp.writeGate !== undefined && isDataChanging(req.type)) {
      return this.#passWriteGate(exp, req).then((passed) => passed && this.#leased(req, run));
    }
    return this.#leased(req, run);
  }

  /** The lease check: a group master whose lease lapsed runs nothing until it is renewed. */
  #leased(req: Request, run: ExecuteContext): boolean | Promise<boolean> {
    const leased = checkLease(req, run);
    if (leased !== true) this.#out.flush();
    return leased;
  }

  /**
   * Waits for the export's write gate (the control plane must record something before
   * the first write is acknowledged). On failure answers `req` with the failure's errno (EIO,
   * or ESHUTDOWN when this node is no longer master: errno.ts notMaster): the data is
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
      this.#replies.error(req, errnoOf(err), message);
      exp.stats.record(opOf(req.type), 0, 0, true);
      return false;
    }
  }

  /** A streamed WRITE's payload; counts as a partial request for the watchdog meanwhile. */
  #payload(length: number): AsyncGenerator<Uint8Array> {
    return this.#in.pieces(this.#t, length, (waiting) => {
      this.partialSince = waiting ? this.partialSince || performance.now() : 0;
    });
  }

  /** Tracks work whose reply is sent later (flushes): shutdown and DISC wait for it. */
  #later(work: Promise<void>): void {
    this.#pending++;
    work.finally(() => this.#settled());
  }

  #settled(): void {
    this.#pending--;
    if (this.#pending === 0) this.#idle?.();
  }

  // ---- I/O ------------------------------------------------------------------------

  /** Waits for in-flight flushes and queued replies. */
  async #drain(): Promise<void> {
    this.#out.flush();
    if (this.#pending > 0) {
      await new Promise<void>((resolve) => (this.#idle = resolve));
    }
    this.#out.flush();
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
    this.#forward?.close();
    this.#fence?.release();
    this.#close();
    const reason = this.#ended ?? (this.#shuttingDown ? "server shutdown" : "client closed it");
    const seconds = Math.round(performance.now() - this.openedAt) / 1000;
    if (this.#export) this.#log.info({ reason, seconds }, "client disconnected");
    else this.#log.debug({ reason, seconds }, "connection closed");
  }
}
