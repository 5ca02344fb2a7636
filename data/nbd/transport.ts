/**
 * The byte stream under an NBD connection. The protocol code only sees this
 * interface, so TLS (NBD_OPT_STARTTLS) can slide in underneath.
 * @module
 */

import type { ExportAccess } from "./handshake.ts";

export interface Transport {
  /** Reads into `p`; resolves to the byte count, or null at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some of `p`; resolves to the byte count written. */
  write(p: Uint8Array): Promise<number>;
  /**
   * Ends the sending side once what was written has gone (TCP FIN, TLS close_notify),
   * while reads go on: closing with unread input would reset the connection and destroy
   * replies the peer has not read yet.
   */
  closeWrite(): Promise<void>;
  close(): void;
  /** "host:port" of the peer, for logs. */
  readonly remote: string;
  /** How reads are done, for logs (node_transport.ts: "direct" or "data-events"). */
  readonly readPath?: string;
}

/** The outcome of a successful TLS upgrade: the new transport and who the client is. */
export interface TlsUpgrade {
  transport: Transport;
  /** Authenticated client identity, for logs. */
  identity: string;
  /** What this client may do with an export (its certificate's grants); all when absent. */
  access?: (exp: { name: string; uuid?: string }) => ExportAccess;
  /** Serial of the client certificate (normalized hex): revoking it cuts the connection. */
  serial?: string;
  /**
   * The client is another node forwarding its clients (data/proxy/): it is only given
   * volumes served here, never forwarded once more.
   */
  fromNode?: string;
}

/**
 * Upgrades a transport to TLS after NBD_OPT_STARTTLS was acknowledged (the TLS seam).
 * Rejects (and the connection closes) when the handshake fails or the client is refused.
 */
export type StartTls = (t: Transport) => Promise<TlsUpgrade>;

/** A plain TCP connection as a Transport. */
export function tcpTransport(conn: Deno.TcpConn): Transport {
  conn.setNoDelay(true);
  // A vanished client is found out (the system's timings: Deno sets no others; the data
  // workers' listeners probe after a minute, net/fd_listener.ts).
  conn.setKeepAlive(true);
  const addr = conn.remoteAddr;
  return {
    read: (p) => conn.read(p),
    write: (p) => conn.write(p),
    closeWrite: async () => {
      try {
        await conn.closeWrite();
      } catch {
        // already closed or reset
      }
    },
    close: () => {
      try {
        conn.close();
      } catch {
        // already closed
      }
    },
    remote: addr.hostname.includes(":")
      ? `[${addr.hostname}]:${addr.port}`
      : `${addr.hostname}:${addr.port}`,
  };
}

/** Writes all of `p[0, len)`. */
export async function writeAll(t: Transport, p: Uint8Array, len = p.length): Promise<void> {
  let off = 0;
  while (off < len) {
    off += await t.write(off === 0 && len === p.length ? p : p.subarray(off, len));
  }
}
