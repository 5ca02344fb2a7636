/**
 * The peer channel's client side: connectPeer. The server's certificate must verify and
 * name the node the caller expects; only then does the greeting run.
 * @module
 */

import { connect as netConnect, isIP } from "node:net";
import { createSecureContext } from "node:tls";
import type { Logger } from "pino";
import {
  checkCommon,
  checkTimeout,
  type PeerCredentials,
  type PeerVerify,
  verifyPeer,
} from "./_common.ts";
import { type PeerConnection, SocketPeerConnection } from "./_connection.ts";
import { hostPort, PeerError } from "./_errors.ts";
import { decodeGreeting, encodeHello, MAX_GREETING_BYTES } from "./_greeting.ts";

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
export async function connectPeer(opts: ConnectPeerOptions): Promise<PeerConnection> {
  checkCommon(opts);
  const timeoutMs = checkTimeout("timeoutMs", opts.timeoutMs);
  if (typeof opts.expectNode !== "string" || opts.expectNode === "") {
    throw new TypeError(
      `expectNode must be a non-empty node name, got ${JSON.stringify(opts.expectNode)}`,
    );
  }
  const remote = hostPort(opts.host, opts.port);
  const creds = opts.credentials();
  const context = createSecureContext({
    key: creds.key,
    cert: creds.cert,
    ca: creds.ca,
    minVersion: "TLSv1.2",
  });
  return await new Promise<PeerConnection>((resolve, reject) => {
    let phase: "connect" | "TLS handshake" | "greeting" = "connect";
    let settled = false;
    let conn: SocketPeerConnection | undefined;
    const raw = netConnect({ host: opts.host, port: opts.port });
    const fail = (err: PeerError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      conn?.close();
      raw.destroy();
      reject(err);
    };
    const timer = setTimeout(() => {
      fail(
        new PeerError("timeout", `peer ${remote}: no ${phase} within ${timeoutMs} ms`, {
          remote,
        }),
      );
    }, timeoutMs);
    const onError = (err: Error & { code?: string }) => {
      const code = err.code ?? "";
      if (phase === "connect" || UNREACHABLE.has(code)) {
        fail(
          new PeerError("unreachable", `cannot connect to peer ${remote}: ${err.message}`, {
            remote,
            cause: err,
          }),
        );
      } else if (
        phase === "TLS handshake" &&
        /CERT|SELF_SIGNED|UNABLE_TO|ALTNAME|issuer|certificate/i.test(`${code} ${err.message}`)
      ) {
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
    };
    const onClose = () => {
      fail(
        new PeerError(
          "refused",
          `peer ${remote} closed the connection during the ${phase}` +
            (phase === "connect" ? "" : " (it may not trust this node's certificate)"),
          { remote },
        ),
      );
    };
    raw.on("error", onError);
    raw.once("close", onClose);
    raw.once("connect", () => {
      if (settled) return;
      phase = "TLS handshake";
      try {
        conn = new SocketPeerConnection(raw, {
          side: "client",
          context,
          servername: isIP(opts.host) ? undefined : opts.host,
          remote,
          maxFrameBytes: opts.maxFrameBytes,
          greetingLimit: MAX_GREETING_BYTES,
        });
      } catch (err) {
        return fail(
          new PeerError("refused", `TLS with peer ${remote} failed: ${(err as Error).message}`, {
            remote,
            cause: err,
          }),
        );
      }
      const sock = conn.tls;
      sock.on("error", onError);
      sock.once("close", onClose);
      sock.once("secure", () => greet(conn!));
    });

    const greet = async (conn: SocketPeerConnection) => {
      phase = "greeting";
      const verdict = await verifyPeer(conn.tls, opts.verify, "server");
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
      conn.authenticated(verdict.node, opts.logger?.child({ peer: verdict.node, remote }));
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
      raw.off("error", onError);
      raw.off("close", onClose);
      conn.tls.off("error", onError);
      conn.tls.off("close", onClose);
      resolve(conn);
    };
  });
}
