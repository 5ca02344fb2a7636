/**
 * What `ca list` prints: one line per issued certificate with a status that says whether it
 * still opens anything (revoked, expired, signed by a CA no longer trusted), and grants bound to
 * a volume that was deleted marked as such. Pure: text from the API's answers.
 * @module
 */

import type { IssuedCertificate } from "../../mod/types.ts";
import { table } from "./_output.ts";

/** What the table checks each certificate against. */
export interface CertContext {
  /** Serials of the CA certificates trusted now (GET /v1/ca `trusted`). */
  trustedCaSerials: readonly string[];
  /** Each volume's uuid by name (GET /v1/volumes); undefined when it could not be listed. */
  volumeUuids?: ReadonlyMap<string, string>;
  now: Date;
}

/** "valid", "expired", "revoked AT" or "CA no longer trusted". */
export function certStatus(c: IssuedCertificate, ctx: CertContext): string {
  if (c.revokedAt) return `revoked ${c.revokedAt}`;
  if (Date.parse(c.notAfter) < ctx.now.getTime()) return "expired";
  const issuer = c.issuerSerial?.toLowerCase();
  if (issuer && !ctx.trustedCaSerials.some((s) => s.toLowerCase() === issuer)) {
    return "CA no longer trusted";
  }
  return "valid";
}

/** The grants as texts, a grant bound to a volume that no longer exists marked "(deleted)". */
export function grantsText(c: IssuedCertificate, volumeUuids?: ReadonlyMap<string, string>) {
  if (!c.grants || !volumeUuids) return c.volumes.join(",") || "-";
  return c.grants.map((g) => {
    const text = g.volume + (g.readOnly ? ":ro" : "");
    return g.uuid && volumeUuids.get(g.volume) !== g.uuid ? `${text} (deleted)` : text;
  }).join(",") || "-";
}

/**
 * Serials of a node's own certificates (node.crt, admin.crt: `own`) that it renewed since (a
 * later one of the same node and role, not revoked): still valid until they expire, but no
 * longer in use. Certificates issued on request (`ca issue`) are never renewed by a node, so
 * never marked; nor, for want of `own`, an admin certificate recorded by an older version
 * (a node certificate of one then is known by its name, the node's).
 */
export function renewedSerials(items: readonly IssuedCertificate[]): Set<string> {
  const latest = new Map<string, IssuedCertificate>();
  const key = (c: IssuedCertificate) =>
    c.own !== undefined ? `${c.own}\0${c.role}` : c.role === "node" ? `${c.name}\0node` : "";
  const renewable = items.filter((c) => !c.revokedAt && key(c) !== "");
  // Later first by notBefore, then by the order the CA recorded them (same second).
  renewable.forEach((c) => {
    const l = latest.get(key(c));
    if (!l || Date.parse(c.notBefore) >= Date.parse(l.notBefore)) latest.set(key(c), c);
  });
  return new Set(renewable.filter((c) => latest.get(key(c)) !== c).map((c) => c.serial));
}

/** The `ca list` table. */
export function certTable(items: readonly IssuedCertificate[], ctx: CertContext): string {
  if (items.length === 0) return "No certificates.\n";
  const renewed = renewedSerials(items);
  const status = (c: IssuedCertificate) => {
    const s = certStatus(c, ctx);
    return s === "valid" && renewed.has(c.serial) ? "valid (renewed since)" : s;
  };
  return table(
    ["SERIAL", "ROLE", "NAME", "VOLUMES", "NOT AFTER", "STATUS"],
    items.map((c) => [
      c.serial,
      c.role,
      // A node's own admin.crt is named "admin" like any other: say whose it is.
      c.own !== undefined && c.role === "admin" ? `${c.name} (node ${c.own}'s own)` : c.name,
      grantsText(c, ctx.volumeUuids),
      c.notAfter,
      status(c),
    ]),
  );
}
