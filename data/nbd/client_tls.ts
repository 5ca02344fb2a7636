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
import type { ExportAccess } from "./handshake.ts";

/** A volume grant of a client certificate (ca/ Grant: the same shape, read from it). */
export interface VolumeGrant {
  /** A volume name, or "*" for all. */
  volume: string;
  readOnly: boolean;
  /** Bound to this incarnation of the volume (its uuid); absent: any volume of that name. */
  uuid?: string;
}

/** Who a verified client certificate names. */
export interface NbdClientIdentity {
  role: string;
  name: string;
  /** What it may open (nbd-client; admins and nodes open everything). */
  grants: readonly VolumeGrant[];
  /** The certificate's serial (normalized hex). */
  serial?: string;
}

/** Verifies a client certificate (DER) for NBD: role admin or nbd-client, EKU clientAuth. */
export type NbdClientCheck = (
  der: Uint8Array,
) => Promise<{ ok: true; identity: NbdClientIdentity } | { ok: false; reason: string }>;

/**
 * What `grants` let a client do with volume `exp` (its name and uuid): read and write when a
 * usable grant says so, read only when every usable grant is read-only. A grant bound to
 * another incarnation of the name (the volume was deleted and created again) is not usable,
 * and the refusal says why; a volume no grant names stays invisible.
 */
export function grantAccess(
  grants: readonly VolumeGrant[],
  exp: { name: string; uuid?: string },
): ExportAccess {
  const named = grants.filter((g) => g.volume === exp.name || g.volume === "*");
  if (named.length === 0) return { ok: false };
  const usable = named.filter((g) => g.uuid === undefined || g.uuid === exp.uuid);
  if (usable.length === 0) {
    return {
      ok: false,
      reason: `this certificate's grant for volume "${exp.name}" is bound to the volume of ` +
        `that name that existed when it was issued (uuid ${named[0].uuid}), which was ` +
        `deleted; "${exp.name}" is now another volume (uuid ${exp.uuid}): ask for a new ` +
        "certificate (ballast ca issue)",
    };
  }
  return { ok: true, readOnly: usable.every((g) => g.readOnly) };
}

/** What a verified client may do with an export (admins and nodes: everything). */
export function clientAccess(
  id: NbdClientIdentity,
): ((exp: { name: string; uuid?: string }) => ExportAccess) | undefined {
  // A node forwards its own clients (attach anywhere): it may open every volume.
  if (id.role === "admin" || id.role === "node") return undefined;
  return (exp) => grantAccess(id.grants, exp);
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
      access: clientAccess(id),
      ...(id.role === "node" ? { fromNode: id.name } : {}),
      ...(id.serial ? { serial: id.serial } : {}),
    };
  };
}
