/**
 * The node-to-node peer channel: a mutual-TLS listener and a client helper. Both ends
 * present their node certificate, and each learns the other's node name from that
 * certificate, never from anything the peer says.
 *
 * TLS is node:tls (Deno.listenTls cannot verify client certificates, PLATFORM.md "TLS").
 * The handshake already requires a certificate under the trust bundle; the caller's
 * `verify` then decides (revocation, expiry, role node, EKU), since the handshake alone is
 * not enough on every node:tls path. After that comes the greeting (_greeting.ts) and then
 * length-prefixed frames (_framing.ts).
 * @module
 */

import { createServer, type Socket } from "node:net";
import { createSecureContext, type TLSSocket } from "node:tls";
import type { Logger } from "pino";
import {
  checkCommon,
  checkTimeout,
  type PeerCredentials,
  type PeerVerify,
  remoteOf,
  verifyPeer,
} from "./_common.ts";
import { type PeerConnection, SocketPeerConnection } from "./_connection.ts";
import { hostPort, PeerError } from "./_errors.ts";
import { listenServer, tlsVerifyError } from "../net/mod.ts";
import { frameHeader } from "./_framing.ts";
import { decodeGreeting, encodeRefusal, encodeWelcome, MAX_GREETING_BYTES } from "./_greeting.ts";

export interface ListenPeerOptions {
  host: string;
  /** 0 picks a free port (see PeerListener.address). */
  port: number;
  credentials: PeerCredentials;
  /** Run on every client certificate after the handshake (clientAuth, role node). */
  verify: PeerVerify;
  /** Gets each accepted connection; it owns it from then on. */
  onConnection: (conn: PeerConnection) => void;
  logger: Logger;
  /** TLS handshake, verification and greeting must finish within this (default 10 s). */
  handshakeTimeoutMs?: number;
  /** Largest frame accepted from a peer (default and maximum 64 MiB). */
  maxFrameBytes?: number;
}

export interface PeerListener {
  /** "HOST:PORT" with the real bound port. */
  readonly address: string;
  /** Stops accepting and closes every connection this listener accepted. */
  close(): Promise<void>;
  /**
   * Reads `credentials()` again for new handshakes (renewal, CA rotation); connections
   * already established keep running. Throws if the credentials cannot be loaded.
   */
  reload(): void;
}

/** The part of ca/'s Pki that nodeVerifier uses (kept structural: data/ does not import ca/). */
export interface PeerCertificateChecker {
  verify(
    cert: Uint8Array,
    options: { requiredEku: "clientAuth" | "serverAuth"; allowedRoles: readonly "node"[] },
  ): Promise<{ ok: true; identity: { name: string } } | { ok: false; reason: string }>;
}

/**
 * A PeerVerify from a Pki: trusted CA, validity, revocation (read at each call, so a
 * revocation applies at the next handshake), EKU `requiredEku` and role node.
 * Listeners use "clientAuth", connectPeer "serverAuth".
 */
export function nodeVerifier(
  pki: PeerCertificateChecker,
  requiredEku: "clientAuth" | "serverAuth",
): PeerVerify {
  return async (der) => {
    const r = await pki.verify(der, { requiredEku, allowedRoles: ["node"] });
    return r.ok ? { ok: true, node: r.identity.name } : { ok: false, reason: r.reason };
  };
}

/** Starts the peer listener. Rejects with PeerError "unreachable" if it cannot bind. */
export async function listenPeer(opts: ListenPeerOptions): Promise<PeerListener> {
  checkCommon(opts);
  const timeoutMs = checkTimeout("handshakeTimeoutMs", opts.handshakeTimeoutMs);
  const log = opts.logger.child({ listener: "peer" });
  const build = () => {
    const c = opts.credentials();
    return createSecureContext({ key: c.key, cert: c.cert, ca: c.ca, minVersion: "TLSv1.2" });
  };
  let context = build();
  // Plain TCP, with TLS wrapped over each accepted socket: a TLS server socket made by
  // tls.createServer keeps reading while paused (net/tls_socket.ts).
  const server = createServer();
  /** Every accepted TCP socket and every TLS socket over one, to cut on close(). */
  const sockets = new Set<Socket>();
  const track = (s: Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  };
  let closing: Promise<void> | undefined;

  /** `bytesRead`: how many bytes the peer sent (none: it left before its ClientHello). */
  const admit = async (
    conn: SocketPeerConnection,
    remote: string,
    bytesRead: () => number,
  ): Promise<void> => {
    const sock = conn.tls;
    let timedOut = false;
    let secure = false;
    const timer = setTimeout(() => {
      timedOut = true;
      log.warn(
        { remote, timeoutMs },
        secure
          ? "peer refused: no greeting in time"
          : "peer TLS handshake failed: no handshake in time",
      );
      sock.destroy();
    }, timeoutMs);
    try {
      // Garbage instead of a ClientHello, plaintext, no or a foreign certificate: that socket
      // is dropped and everyone else keeps being served.
      const handshake = await new Promise<string | undefined>((resolve) => {
        sock.once("secure", () => resolve(undefined));
        sock.once("error", (err: Error) => resolve(err.message));
        sock.once("close", () => resolve("connection closed during the handshake"));
      });
      if (timedOut) return;
      secure = true;
      const chain = handshake ?? chainError(sock);
      if (chain !== undefined && bytesRead() === 0) {
        // Connected and left without a byte: another node's crash check (control/nodes/
        // crash_watch.ts) or a port probe, not a failed handshake.
        log.debug({ remote }, "peer connection closed before its TLS handshake began");
        conn.close();
        return;
      }
      if (chain !== undefined) {
        log.warn({ remote, reason: chain }, "peer TLS handshake failed");
        conn.close();
        return;
      }
      const verdict = await verifyPeer(sock, opts.verify, "client");
      if (!verdict.ok) {
        log.warn({ remote, reason: verdict.reason }, "peer refused: certificate");
        refuse(sock, verdict.reason);
        return;
      }
      conn.authenticated(verdict.node, log.child({ peer: verdict.node, remote }));
      let hello;
      try {
        hello = await conn.receive();
      } catch (err) {
        if (!timedOut) log.warn({ remote, reason: (err as Error).message }, "peer refused");
        conn.close();
        return;
      }
      if (hello === null) {
        if (!timedOut) log.warn({ remote, peer: verdict.node }, "peer left before its greeting");
        return;
      }
      const g = decodeGreeting(hello);
      if (g.kind !== "hello") {
        const reason = g.kind === "invalid" ? g.detail : `unexpected ${g.kind} greeting`;
        log.warn({ remote, peer: verdict.node, reason }, "peer refused: greeting");
        refuse(sock, reason);
        return;
      }
      clearTimeout(timer);
      if (closing) {
        conn.close();
        return;
      }
      await conn.send(encodeWelcome());
      log.info({ remote, peer: verdict.node }, "peer connected");
      try {
        opts.onConnection(conn);
      } catch (err) {
        log.error({ remote, peer: verdict.node, err }, "onConnection threw");
        conn.close();
      }
    } finally {
      clearTimeout(timer);
    }
  };

  server.on("connection", (raw: Socket) => {
    track(raw);
    raw.on("error", () => {}); // a reset before the TLS socket takes it over
    const remote = remoteOf(raw);
    let conn: SocketPeerConnection;
    try {
      conn = new SocketPeerConnection(raw, {
        side: "server",
        context,
        remote,
        maxFrameBytes: opts.maxFrameBytes,
        greetingLimit: MAX_GREETING_BYTES,
      });
    } catch (err) {
      log.warn({ remote, reason: (err as Error).message }, "peer TLS handshake failed");
      raw.destroy();
      return;
    }
    track(conn.tls);
    admit(conn, remote, () => raw.bytesRead).catch((err) => {
      log.warn({ remote, reason: (err as Error).message }, "peer connection failed");
      conn.close();
    });
  });
  server.on("error", (err: Error) => log.error({ err }, "peer listener error"));

  let port: number;
  try {
    port = await listenServer(server, opts.host, opts.port);
  } catch (err) {
    const where = hostPort(opts.host, opts.port);
    throw new PeerError(
      "unreachable",
      `cannot listen for peers on ${where}: ${(err as Error).message}`,
      { remote: where, cause: err },
    );
  }
  const address = hostPort(opts.host, port);
  log.info({ address }, "peer channel listening");

  return {
    address,
    reload() {
      context = build();
      log.info("peer TLS credentials reloaded");
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
      return closing;
    },
  };
}

/** node:tls's chain verdict on a finished server handshake, as a refusal reason. */
function chainError(sock: TLSSocket): string | undefined {
  const err = tlsVerifyError(sock);
  return err === undefined ? undefined : `client certificate: ${err}`;
}

/** Tells a refused peer why (a greeting frame), then closes. */
function refuse(sock: TLSSocket, reason: string): void {
  const body = encodeRefusal(reason);
  sock.write(frameHeader(body.length));
  sock.end(body);
  // A peer that never reads its refusal does not keep the socket.
  const t = setTimeout(() => sock.destroy(), 1000);
  Deno.unrefTimer(t);
  sock.once("close", () => clearTimeout(t));
}
