/**
 * Listen addresses: "HOST:PORT", "[IPv6]:PORT" or ":PORT", parsed and formatted the same
 * way for every listener (API, NBD, local attach) and in every message.
 * @module
 */

import { InvalidArgumentError } from "../../mod/errors.ts";

/** A TCP listen address. */
export interface ListenAddress {
  host: string;
  port: number;
}

/**
 * Parses "HOST:PORT", "[IPv6]:PORT" or ":PORT" (all interfaces). Port 0 picks a free port.
 * @throws InvalidArgumentError naming `what` (the flag) and the value.
 */
export function parseListen(
  text: string,
  what = "address",
  field = what.replace(/^--/, ""),
): ListenAddress {
  const bad = (why: string) =>
    new InvalidArgumentError(`invalid ${what} "${text}": ${why}`, { field });
  let host: string;
  let portText: string;
  const v6 = /^\[([0-9a-fA-F:.%a-zA-Z]+)\]:(.*)$/.exec(text);
  if (v6) {
    host = v6[1];
    portText = v6[2];
  } else {
    const i = text.lastIndexOf(":");
    if (i < 0) throw bad("expected HOST:PORT, e.g. 127.0.0.1:5705 or [::1]:5705");
    host = text.slice(0, i);
    portText = text.slice(i + 1);
    if (host.includes(":")) throw bad("put IPv6 addresses in brackets, e.g. [::1]:5705");
    if (host === "") host = "0.0.0.0";
    if (!/^[A-Za-z0-9.-]+$/.test(host)) throw bad(`bad host "${host}"`);
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
    throw bad(`bad port "${portText}": expected 0-65535`);
  }
  return { host, port: Number(portText) };
}

/** Formats an address for URLs and logs: "127.0.0.1:5705", "[::1]:5705". */
export function formatHostPort(addr: ListenAddress): string {
  return addr.host.includes(":") ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
}

/** Whether a listen host is a loopback address. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}
