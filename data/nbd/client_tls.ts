/**
 * NBD_OPT_STARTTLS on the server side with a client certificate check: the one
 * implementation the main thread and the data workers use. node:tls completes server-side
 * STARTTLS even for a foreign CA's certificate (PLATFORM.md), so `check` (ca/ verifyPeer:
 * trust, validity, revocation, role, EKU) decides; a refused client keeps its TLS session so
 * that it is told why (_negotiate.ts answers its options with NBD_REP_ERR_POLICY).
 * @module
 */

import type { SecureContext } from "node:tls";
import { ClientRefusedError } from "./errors.ts";
import { type NodeSocketTransport, startTlsServer } from "./node_transport.ts";
import type { StartTls } from "./transport.ts";

/** Who a verified client certificate names. */
export interface NbdClientIdentity {
  role: string;
  name: string;
  /** The volumes it grants ("*" for all), for roles other than admin. */
  volumes: readonly string[];
  /** The certificate's serial (normalized hex). */
  serial?: string;
}

/** Verifies a client certificate (DER) for NBD: role admin or nbd-client, EKU clientAuth. */
export type NbdClientCheck = (
  der: Uint8Array,
) => Promise<{ ok: true; identity: NbdClientIdentity } | { ok: false; reason: string }>;

/** Whether `identity` may list and open volume `name`. */
export function mayOpen(identity: NbdClientIdentity, name: string): boolean {
  // A node forwards its own clients (attach anywhere): it may open every volume.
  return identity.role === "admin" || identity.role === "node" || identity.volumes.includes("*") ||
    identity.volumes.includes(name);
}

/** The StartTls hook: handshake with `context()`, then `check` on the client certificate. */
export function nbdStartTls(context: () => SecureContext, check: NbdClientCheck): StartTls {
  return async (t) => {
    const { transport, peer } = await startTlsServer(t as NodeSocketTransport, context);
    if (!peer.certificate) throw new ClientRefusedError("no client certificate", { transport });
    const v = await check(peer.certificate);
    if (!v.ok) {
      throw new ClientRefusedError(`client certificate refused: ${v.reason}`, { transport });
    }
    const id = v.identity;
    return {
      transport,
      identity: `${id.role}:${id.name}`,
      allowExport: id.role === "admin" || id.role === "node"
        ? undefined
        : (name) => mayOpen(id, name),
      ...(id.role === "node" ? { fromNode: id.name } : {}),
      ...(id.serial ? { serial: id.serial } : {}),
    };
  };
}
