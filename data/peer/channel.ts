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

import { isIP } from "node:net";
import type { Socket } from "node:net";
import { connect as tlsConnect, createServer, type TLSSocket } from "node:tls";
import type { Logger } from "pino";
import { type PeerConnection, SocketPeerConnection } from "./_connection.ts";
import { hostPort, PeerError } from "./_errors.ts";
import { frameHeader, MAX_FRAME_BYTES } from "./_framing.ts";
import {
  decodeGreeting,
  encodeHello,
  encodeRefusal,
  encodeWelcome,
  MAX_GREETING_BYTES,
} from "./_greeting.ts";

/** PEM key, certificate chain and trust bundle, read again on every use (renewal). */
export type PeerCredentials = () => { key: string; cert: string; ca: string };

/** The verdict on a peer's certificate: the node it names, or why it is refused. */
export type PeerVerdict = { ok: true; node: string } | { ok: false; reason: string };

/**
 * Checks a peer's leaf certificate (DER). The listener's must require clientAuth, the
 * client's serverAuth; both must accept only role node (see nodeVerifier).
 */
export type PeerVerify = (certDer: Uint8Array) => Promise<PeerVerdict>;

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

export interface ConnectPeerOptions {
  host: string;
  port: number;
  /** The node the server's certificate must name. */
  expectNode: string;
  credentials: PeerCredentials;
  /** Run on the server's certificate after the handshake (serverAuth, role node). */
  verify: PeerVerify;
  /** Connect, TLS handshake, verification and greeting must finish within this (default 10 s). */
  timeoutMs?: number;
  /** Largest frame accepted from the peer (default and maximum 64 MiB). */
  maxFrameBytes?: number;
  /** Logs protocol errors on this connection (default: none). */
  logger?: Logger;
}

export const DEFAULT_PEER_TIMEOUT_MS = 10_000;

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

function checkCommon(opts: { host: string; port: number; maxFrameBytes?: number }): void {
  if (typeof opts.host !== "string" || opts.host === "") {
    throw new TypeError(`peer host must be a non-empty string, got ${JSON.stringify(opts.host)}`);
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    throw new RangeError(`peer port must be an integer in [0, 65535], got ${opts.port}`);
  }
  const max = opts.maxFrameBytes;
  if (max !== undefined && (!Number.isInteger(max) || max < 0 || max > MAX_FRAME_BYTES)) {
    throw new RangeError(`maxFrameBytes must be an integer in [0, ${MAX_FRAME_BYTES}], got ${max}`);
  }
}

function checkTimeout(name: string, ms: number | undefined): number {
  if (ms === undefined) return DEFAULT_PEER_TIMEOUT_MS;
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new RangeError(`${name} must be a positive number of milliseconds, got ${ms}`);
  }
  return ms;
}

function remoteOf(sock: Socket): string {
  return hostPort(sock.remoteAddress ?? "?", sock.remotePort ?? 0);
}

/** The peer's leaf certificate in DER, if it sent one. */
function peerCertificateDer(sock: TLSSocket): Uint8Array | undefined {
  try {
    const raw = sock.getPeerCertificate(false)?.raw;
    return raw && raw.length > 0 ? new Uint8Array(raw) : undefined;
  } catch {
    return undefined;
  }
}

async function runVerify(verify: PeerVerify, der: Uint8Array): Promise<PeerVerdict> {
  try {
    return await verify(der);
  } catch (err) {
    return { ok: false, reason: `certificate check failed: ${(err as Error).message}` };
  }
}

/** Starts the peer listener. Rejects with PeerError "unreachable" if it cannot bind. */
export async function listenPeer(opts: ListenPeerOptions): Promise<PeerListener> {
  checkCommon(opts);
  const timeoutMs = checkTimeout("handshakeTimeoutMs", opts.handshakeTimeoutMs);
  const log = opts.logger.child({ listener: "peer" });
  const context = () => {
    const c = opts.credentials();
    return { key: c.key, cert: c.cert, ca: c.ca, minVersion: "TLSv1.2" as const };
  };
  const server = createServer({
    ...context(),
    requestCert: true,
    rejectUnauthorized: true,
    handshakeTimeout: timeoutMs,
  });
  /** Every accepted TCP socket and every TLS socket past the handshake, to cut on close(). */
  const sockets = new Set<Socket>();
  const track = (s: Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  };
  let closing: Promise<void> | undefined;

  const admit = async (sock: TLSSocket): Promise<void> => {
    const remote = remoteOf(sock);
    sock.on("error", () => {}); // before the connection takes the socket over
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      log.warn({ remote, timeoutMs }, "peer refused: no greeting in time");
      sock.destroy();
    }, timeoutMs);
    try {
      const der = peerCertificateDer(sock);
      const verdict: PeerVerdict = !sock.authorized
        ? { ok: false, reason: `TLS: ${sock.authorizationError ?? "not authorized"}` }
        : der === undefined
        ? { ok: false, reason: "no client certificate" }
        : await runVerify(opts.verify, der);
      if (!verdict.ok) {
        log.warn({ remote, reason: verdict.reason }, "peer refused: certificate");
        refuse(sock, verdict.reason);
        return;
      }
      const conn = new SocketPeerConnection(sock, {
        peerNode: verdict.node,
        remote,
        maxFrameBytes: opts.maxFrameBytes,
        greetingLimit: MAX_GREETING_BYTES,
        log: log.child({ peer: verdict.node, remote }),
      });
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
        log.error(
          { remote, peer: verdict.node, err: (err as Error).message },
          "onConnection threw",
        );
        conn.close();
      }
    } finally {
      clearTimeout(timer);
    }
  };

  server.on("connection", (raw: Socket) => {
    track(raw);
    raw.on("error", () => {}); // a reset before the TLS socket exists
  });
  server.on("secureConnection", (sock: TLSSocket) => {
    track(sock);
    admit(sock).catch((err) => {
      log.warn(
        { remote: remoteOf(sock), reason: (err as Error).message },
        "peer connection failed",
      );
      sock.destroy();
    });
  });
  // Garbage instead of a ClientHello, plaintext, no or a foreign certificate, handshake
  // timeout: that socket is dropped and everyone else keeps being served.
  server.on("tlsClientError", (err: Error, sock: TLSSocket) => {
    log.warn({ remote: remoteOf(sock), reason: err.message }, "peer TLS handshake failed");
    sock.destroy();
  });
  server.on("error", (err: Error) => log.error({ err: err.message }, "peer listener error"));

  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(opts.port, opts.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    const where = hostPort(opts.host, opts.port);
    throw new PeerError(
      "unreachable",
      `cannot listen for peers on ${where}: ${(err as Error).message}`,
      { remote: where, cause: err },
    );
  }
  const address = hostPort(opts.host, (server.address() as { port: number }).port);
  log.info({ address }, "peer channel listening");

  return {
    address,
    reload() {
      server.setSecureContext(context());
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

/** TCP-level failures: nothing answered at that address. */
const UNREACHABLE = new Set([
  "ECONNREFUSED",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ETIMEDOUT",
  "EADDRNOTAVAIL",
]);

/**
 * Connects to the peer at host:port, presenting this node's certificate. Resolves once the
 * server's certificate verified (trust bundle, then `verify`), names `expectNode`, and the
 * server accepted this node. Rejects with PeerError: "unreachable", "untrusted",
 * "wrong-node", "refused", "timeout" or "protocol".
 *
 * The host name is not matched against the certificate's SANs: the node name is the
 * identity, and a node reached at an address missing from its SANs is still that node.
 */
export function connectPeer(opts: ConnectPeerOptions): Promise<PeerConnection> {
  checkCommon(opts);
  const timeoutMs = checkTimeout("timeoutMs", opts.timeoutMs);
  if (typeof opts.expectNode !== "string" || opts.expectNode === "") {
    throw new TypeError(
      `expectNode must be a non-empty node name, got ${JSON.stringify(opts.expectNode)}`,
    );
  }
  const remote = hostPort(opts.host, opts.port);
  const creds = opts.credentials();
  return new Promise<PeerConnection>((resolve, reject) => {
    let phase: "connect" | "TLS handshake" | "greeting" = "connect";
    let settled = false;
    const sock = tlsConnect({
      host: opts.host,
      port: opts.port,
      key: creds.key,
      cert: creds.cert,
      ca: creds.ca,
      minVersion: "TLSv1.2",
      rejectUnauthorized: true,
      ...(isIP(opts.host) ? {} : { servername: opts.host }),
      checkServerIdentity: () => undefined,
    });
    const fail = (err: PeerError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    };
    const timer = setTimeout(() => {
      fail(
        new PeerError("timeout", `peer ${remote}: no ${phase} within ${timeoutMs} ms`, {
          remote,
        }),
      );
    }, timeoutMs);
    sock.once("connect", () => {
      if (phase === "connect") phase = "TLS handshake";
    });
    sock.on("error", (err: Error & { code?: string }) => {
      const code = err.code ?? "";
      if (phase === "connect" || UNREACHABLE.has(code)) {
        fail(
          new PeerError("unreachable", `cannot connect to peer ${remote}: ${err.message}`, {
            remote,
            cause: err,
          }),
        );
      } else if (phase === "TLS handshake" && /CERT|SELF_SIGNED|UNABLE_TO|ALTNAME/.test(code)) {
        fail(
          new PeerError("untrusted", `peer ${remote} is untrusted: ${err.message}`, {
            remote,
            cause: err,
          }),
        );
      } else {
        fail(
          new PeerError("refused", `TLS with peer ${remote} failed: ${err.message}`, {
            remote,
            cause: err,
          }),
        );
      }
    });
    sock.once("close", () => {
      fail(
        new PeerError(
          "refused",
          `peer ${remote} closed the connection during the ${phase}` +
            (phase === "connect" ? "" : " (it may not trust this node's certificate)"),
          { remote },
        ),
      );
    });
    sock.once("secureConnect", async () => {
      phase = "greeting";
      const der = peerCertificateDer(sock);
      const verdict: PeerVerdict = !sock.authorized
        ? { ok: false, reason: sock.authorizationError?.toString() ?? "not authorized" }
        : der === undefined
        ? { ok: false, reason: "no server certificate" }
        : await runVerify(opts.verify, der);
      if (!verdict.ok) {
        return fail(
          new PeerError("untrusted", `peer ${remote} is untrusted: ${verdict.reason}`, {
            remote,
          }),
        );
      }
      if (verdict.node !== opts.expectNode) {
        return fail(
          new PeerError(
            "wrong-node",
            `peer ${remote} presented node ${JSON.stringify(verdict.node)}, expected ${
              JSON.stringify(opts.expectNode)
            }`,
            { remote, expected: opts.expectNode, presented: verdict.node },
          ),
        );
      }
      if (settled) return;
      const conn = new SocketPeerConnection(sock, {
        peerNode: verdict.node,
        remote,
        maxFrameBytes: opts.maxFrameBytes,
        greetingLimit: MAX_GREETING_BYTES,
        log: opts.logger?.child({ peer: verdict.node, remote }),
      });
      let reply: Uint8Array | null;
      try {
        await conn.send(encodeHello());
        reply = await conn.receive();
      } catch (err) {
        const e = err as PeerError;
        return fail(
          e.code === "protocol" ? e : new PeerError(
            "refused",
            `peer ${remote} closed the connection before accepting this node: ${e.message}`,
            { remote, cause: e },
          ),
        );
      }
      if (reply === null) {
        return fail(
          new PeerError(
            "refused",
            `peer ${remote} closed the connection before accepting this node ` +
              "(it may not trust this node's certificate)",
            { remote },
          ),
        );
      }
      const g = decodeGreeting(reply);
      if (g.kind === "refused") {
        return fail(
          new PeerError("refused", `peer ${remote} refused this node: ${g.reason}`, { remote }),
        );
      }
      if (g.kind !== "welcome") {
        const detail = g.kind === "invalid" ? g.detail : `a ${g.kind} greeting`;
        return fail(
          new PeerError("protocol", `peer ${remote} answered with ${detail}`, { remote }),
        );
      }
      if (settled) return conn.close();
      settled = true;
      clearTimeout(timer);
      resolve(conn);
    });
  });
}

export type { PeerConnection };
