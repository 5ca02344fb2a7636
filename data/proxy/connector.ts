/**
 * How a node connects to the masters it forwards to (data/proxy/upstream.ts).
 * @module
 */

import { splitHostPort } from "../net/mod.ts";
import type { PeerVerify } from "../peer/mod.ts";
import type { ForwarderName } from "./_negotiation.ts";
import { Upstream, type UpstreamTls } from "./upstream.ts";

/**
 * How a node reaches the masters it forwards to: STARTTLS with its own certificate (`tls()`
 * undefined: plaintext), the master's certificate checked by `verify` and required to name
 * the master the directory entry names.
 */
export function upstreamConnector(o: {
  tls: () => UpstreamTls | undefined;
  verify?: PeerVerify;
  timeoutMs?: number;
}): (
  entry: { name: string; master: string; address: string },
  signal?: AbortSignal,
  forwarder?: ForwarderName,
) => Promise<Upstream> {
  return (entry, signal, forwarder) => {
    const { host, port } = splitHostPort(entry.address);
    const tls = o.tls();
    return Upstream.connect({
      host,
      port,
      exportName: entry.name,
      ...(tls ? { tls, verify: o.verify, expectNode: entry.master } : {}),
      timeoutMs: o.timeoutMs,
      signal,
      ...(forwarder ? { forwarder } : {}),
    });
  };
}
