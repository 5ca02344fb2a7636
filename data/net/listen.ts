/**
 * Starting a node:net / node:tls / node:https server as a promise, for the listeners
 * that need node's TLS (client certificates): the NBD STARTTLS listener, the peer
 * channel and the HTTPS API.
 * @module
 */

/** The part of a node server that listening needs. */
export interface ListeningServer {
  listen(port: number, host: string, cb: () => void): unknown;
  once(event: "error", cb: (err: Error) => void): unknown;
  off(event: "error", cb: (err: Error) => void): unknown;
  address(): unknown;
}

/**
 * Listens on host:port and resolves with the bound port (port 0 picks a free one);
 * rejects with the listen error (EADDRINUSE, EACCES, ...).
 */
export function listenServer(server: ListeningServer, host: string, port: number): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve((server.address() as { port: number }).port);
    });
  });
}

/** "host:port" or "[v6]:port" split; throws on anything else. */
export function splitHostPort(address: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:]+):(\d+)$/.exec(address);
  if (!m || Number(m[2]) > 65535) throw new RangeError(`not a host:port address: ${address}`);
  return { host: m[1], port: Number(m[2]) };
}
