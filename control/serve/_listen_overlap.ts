/**
 * Two listeners of one node on the same port and overlapping addresses: refused as a
 * setting mistake (exit 2) naming both settings, rather than failing at start as "address
 * already in use (another process listens there)" when the other is this node's own.
 * @module
 */

import { InvalidArgumentError } from "../../mod/errors.ts";
import { formatHostPort, type ListenAddress } from "../common/mod.ts";

const WILDCARD = new Set(["0.0.0.0", "::", "[::]", ""]);

/** `listeners`: each address with the setting that gave it (e.g. "--api-listen"). */
export function refuseOverlappingListeners(
  listeners: readonly { at: ListenAddress | undefined; source: string }[],
): void {
  const given = listeners.filter((l) => l.at !== undefined && l.at.port !== 0);
  for (let i = 0; i < given.length; i++) {
    for (let j = i + 1; j < given.length; j++) {
      const [a, b] = [given[i].at!, given[j].at!];
      const sameHost = a.host === b.host || WILDCARD.has(a.host) || WILDCARD.has(b.host);
      if (a.port !== b.port || !sameHost) continue;
      throw new InvalidArgumentError(
        `${given[i].source} (${formatHostPort(a)}) and ${given[j].source} ` +
          `(${formatHostPort(b)}) name the same port: give each listener its own`,
        { field: given[j].source.replace(/^--/, "") },
      );
    }
  }
}
