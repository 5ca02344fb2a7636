/**
 * The NBD listener: accepts TCP connections, runs a Connection for each, enforces
 * handshake and mid-request timeouts, and shuts down gracefully.
 * @module
 */

import type { Logger } from "pino";
import type { ExportTable } from "../exports.ts";
import { Connection } from "./connection.ts";
import type { HandshakePolicy } from "./handshake.ts";
import { type StartTls, tcpTransport, type Transport } from "./transport.ts";
import { createServer, type Server as NodeServer } from "node:net";
import { NodeSocketTransport } from "./node_transport.ts";
import { descriptorsShort, listenServer, type Shed } from "../net/mod.ts";

/**
 * Connection ids: one sequence per thread, shared by every listener of the thread, so an id
 * names one connection in the log however many listeners there are. With data workers the
 * main thread numbers the connections it hands over (data/pool/pool.ts) and passes the id.
 */
let lastConnectionId = 0;

/** The next connection id of this thread. */
export function nextConnectionId(): number {
  return ++lastConnectionId;
}

export interface NbdServerOptions {
  exports: ExportTable;
  logger: Logger;
  /** The listener's name in every line of its connections (`listener`: nbd, local). */
  listener?: string;
  /** Policy per connection (TLS issue: depends on the listener and the client). */
  policy?: (remote: string) => HandshakePolicy;
  startTls?: StartTls;
  /** A client must finish negotiating within this time (default 30 s). */
  handshakeTimeoutMs?: number;
  /** Accepting starts once this settles (DataPlaneOptions.acceptAfter). */
  acceptAfter?: Promise<unknown>;
  /** Told of each connection closed at once because descriptors run short (net/). */
  onShed?: Shed;
  /** A partly received request must complete within this time (default 60 s). */
  requestTimeoutMs?: number;
}

const PLAINTEXT: HandshakePolicy = { tlsAvailable: false, tlsRequired: false };
/** A plaintext listener whose clients may read every export but change none. */
export const READ_ONLY_PLAINTEXT: HandshakePolicy = {
  ...PLAINTEXT,
  access: () => ({ ok: true, readOnly: true }),
};

export class NbdServer {
  #opts: NbdServerOptions;
  #listener: Deno.TcpListener | undefined;
  #nodeServer: NodeServer | undefined;
  #conns = new Set<Connection>();
  #watchdog: ReturnType<typeof setInterval> | undefined;
  #accepting: Promise<void> | undefined;
  #log: Logger;

  constructor(opts: NbdServerOptions) {
    this.#opts = opts;
    this.#log = opts.listener ? opts.logger.child({ listener: opts.listener }) : opts.logger;
  }

  /**
   * Starts listening; returns the bound address. Plaintext listeners use Deno.listen
   * (the fast path); listeners that offer STARTTLS use node:net, because the TLS upgrade
   * with client certificates needs a node:tls socket (PLATFORM.md, "TLS").
   */
  async listen(hostname: string, port: number, options?: { tls?: boolean }): Promise<Deno.NetAddr> {
    let addr: Deno.NetAddr;
    if (options?.tls) {
      const server = createServer({ noDelay: true }, (sock) => {
        const remote = `${sock.remoteAddress}:${sock.remotePort}`;
        if (this.#shed(remote)) return void sock.destroy();
        sock.setKeepAlive(true, 60_000); // a vanished client is found out (fd_listener.ts)
        const serve = () => this.serve(new NodeSocketTransport(sock));
        if (this.#opts.acceptAfter) this.#opts.acceptAfter.then(serve, serve);
        else serve();
      });
      const bound = await listenServer(server, hostname, port);
      server.on("error", (err) => this.#log.error({ err: err.message }, "NBD listener error"));
      this.#nodeServer = server;
      addr = { transport: "tcp", hostname, port: bound };
    } else {
      this.#listener = Deno.listen({ hostname, port, transport: "tcp" });
      addr = this.#listener.addr;
      this.#accepting = this.#acceptLoop(this.#listener);
    }
    this.#startWatchdog();
    return addr;
  }

  /** The handshake and request deadlines are checked once a second. */
  #startWatchdog(): void {
    if (this.#watchdog !== undefined) return;
    const timer = setInterval(() => this.#checkTimeouts(), 1000);
    Deno.unrefTimer(timer);
    this.#watchdog = timer;
  }

  /** Open connections, including ones still negotiating. */
  get connections(): number {
    return this.#conns.size;
  }

  /**
   * Serves one already-accepted transport (the listener's, a data worker's, tests'); `id` is
   * the connection's id when its acceptor numbered it (default: this thread's next).
   */
  serve(transport: Transport, id = nextConnectionId()): Promise<void> {
    this.#startWatchdog();
    const conn = new Connection(transport, {
      id,
      exports: this.#opts.exports,
      policy: this.#opts.policy?.(transport.remote) ?? PLAINTEXT,
      logger: this.#log,
      startTls: this.#opts.startTls,
    });
    this.#conns.add(conn);
    return conn.run().finally(() => this.#conns.delete(conn));
  }

  async #acceptLoop(listener: Deno.TcpListener): Promise<void> {
    await this.#opts.acceptAfter?.catch(() => {});
    for (;;) {
      let c: Deno.TcpConn;
      try {
        c = await listener.accept();
      } catch (err) {
        if (err instanceof Deno.errors.BadResource) return; // listener closed
        this.#log.error({ err: (err as Error).message }, "accept failed");
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (this.#shed(`${c.remoteAddr.hostname}:${c.remoteAddr.port}`)) c.close();
      else this.serve(tcpTransport(c));
    }
  }

  /**
   * Whether a connection just accepted must be closed at once because the process's
   * descriptors run short (net/fd_listener.ts sheddingAt): out of them, Deno panics.
   */
  #shed(remote: string): boolean {
    const short = descriptorsShort();
    if (short) this.#opts.onShed?.(remote, short.fd, short.at);
    return short !== undefined;
  }

  #checkTimeouts(): void {
    const now = performance.now();
    const hs = this.#opts.handshakeTimeoutMs ?? 30_000;
    const rq = this.#opts.requestTimeoutMs ?? 60_000;
    for (const c of this.#conns) {
      if (c.inHandshake) {
        const age = now - c.openedAt;
        if (age > hs) c.abort(`handshake not finished after ${Math.round(age)} ms`);
      } else if (c.partialSince > 0 && now - c.partialSince > rq) {
        c.abort(`request incomplete for ${Math.round(now - c.partialSince)} ms`);
      }
    }
  }

  /**
   * Stops accepting, lets in-flight requests finish (new ones get ESHUTDOWN), sends
   * queued replies and closes every connection.
   */
  async close(): Promise<void> {
    if (this.#watchdog !== undefined) clearInterval(this.#watchdog);
    try {
      this.#listener?.close();
    } catch {
      // already closed
    }
    // node's server.close() calls back only once every connection has ended: start it now,
    // shut the connections down, then wait for it (waiting first would wait for clients to
    // leave by themselves, while they kept being served).
    const ns = this.#nodeServer;
    const nodeClosed = ns && new Promise<void>((resolve) => ns.close(() => resolve()));
    await this.#accepting;
    await Promise.all([...this.#conns].map((c) => c.shutdown()));
    await nodeClosed;
  }
}
