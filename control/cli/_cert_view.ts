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
 * Serials of node and admin certificates that the node renewed since (a later certificate of
 * the same role and name, not revoked): still valid until they expire, but no longer in use.
 */
export function renewedSerials(items: readonly IssuedCertificate[]): Set<string> {
  const latest = new Map<string, IssuedCertificate>();
  const key = (c: IssuedCertificate) => `${c.role}\0${c.name}`;
  const renewable = items.filter((c) => (c.role === "node" || c.role === "admin") && !c.revokedAt);
  for (const c of renewable) {
    const l = latest.get(key(c));
    if (!l || Date.parse(c.notBefore) > Date.parse(l.notBefore)) latest.set(key(c), c);
  }
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
      c.name,
      grantsText(c, ctx.volumeUuids),
      c.notAfter,
      status(c),
    ]),
  );
}
