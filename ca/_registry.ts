/**
 * The issued-certificate index (issued.jsonl) and revocations (revoked.jsonl) of a PKI
 * directory. Both are append-only JSON lines; list() joins them.
 * @module
 */
import { join } from "node:path";
import { BallastError, InvalidArgumentError } from "../mod/errors.ts";
import { appendLine, parseJsonLines, readOptional } from "./_fs.ts";
import { normalizeSerial } from "./_keys.ts";
import { FILES, type IssuedRecord, type RevocationRecord } from "./_layout.ts";
import { readIdentity } from "./_profile.ts";
import type { x509 } from "./_x509.ts";

/** A serial as stored (normalized lower-case hex), or InvalidArgumentError naming it. */
export function checkSerial(serial: string): string {
  const s = normalizeSerial(serial);
  if (!/^[0-9a-f]{2,40}$/.test(s)) {
    throw new InvalidArgumentError(`invalid serial ${JSON.stringify(serial)}`, {
      field: "serial",
    });
  }
  return s;
}

/** Fewest hex digits a serial prefix must have (ca list shows 8 or more). */
const MIN_PREFIX = 8;

/**
 * The one known serial that `input` names: the serial itself, or an unambiguous prefix of
 * one (hex, case and colons ignored). An unknown serial is NOT_FOUND, an ambiguous prefix
 * INVALID_ARGUMENT naming the candidates. With `allowUnknown` (a CA this node does not
 * run signed the certificate) a full serial that matches nothing is returned as written.
 */
export function resolveSerial(
  input: string,
  known: Iterable<string>,
  options: { allowUnknown?: boolean } = {},
): string {
  const exact = checkSerial(input);
  const serials = new Set([...known].map(normalizeSerial));
  if (serials.has(exact)) return exact;
  const hex = input.toLowerCase().replace(/[^0-9a-f]/g, "");
  // A revocation cannot be undone: a prefix short enough to be a typo names nothing.
  if (hex.replace(/^(00)+/, "").length < MIN_PREFIX) {
    throw new InvalidArgumentError(
      `serial prefix ${JSON.stringify(input)} is too short: give at least ${MIN_PREFIX} ` +
        "digits of the serial, leading zeros not counted (see ballast ca list)",
      { field: "serial" },
    );
  }
  const prefixes = new Set([hex, hex.replace(/^(00)+/, "")].filter(Boolean));
  const candidates = [...serials].filter((s) => [...prefixes].some((p) => s.startsWith(p)))
    .sort();
  if (candidates.length === 1) return candidates[0];
  if (candidates.length > 1) {
    const shown = candidates.slice(0, 10).join(", ") + (candidates.length > 10 ? ", ..." : "");
    throw new InvalidArgumentError(
      `serial prefix ${JSON.stringify(input)} is ambiguous: it matches ${candidates.length} ` +
        `certificates (${shown}); give more digits`,
      { field: "serial" },
    );
  }
  if (options.allowUnknown) return exact;
  throw new BallastError(
    "NOT_FOUND",
    `no certificate with serial ${JSON.stringify(input)} (or a serial starting with it) ` +
      "was issued by this CA; see ballast ca list",
    { details: { kind: "certificate", name: input } },
  );
}

export class Registry {
  #revoked = new Map<string, RevocationRecord>();

  constructor(readonly dir: string) {}

  /** Re-reads revoked.jsonl. */
  async load(): Promise<void> {
    const lines = parseJsonLines<RevocationRecord>(
      await readOptional(join(this.dir, FILES.revoked)),
    );
    this.#revoked.clear();
    for (const r of lines) this.#revoked.set(normalizeSerial(r.serial), r);
  }

  /** Appends an issued certificate to the index; returns the line written. */
  async record(
    cert: x509.X509Certificate,
    issuer: x509.X509Certificate,
    own?: string,
  ): Promise<IssuedRecord> {
    const id = readIdentity(cert);
    if (typeof id === "string") throw new BallastError("INTERNAL", id);
    const rec: IssuedRecord = {
      serial: normalizeSerial(cert.serialNumber),
      subject: cert.subject,
      role: id.role,
      name: id.name,
      volumes: id.volumes,
      ...(id.grants.some((g) => g.uuid) ? { grants: id.grants } : {}),
      notBefore: cert.notBefore.toISOString(),
      notAfter: cert.notAfter.toISOString(),
      issuerSerial: normalizeSerial(issuer.serialNumber),
      ...(own ? { own } : {}),
    };
    await appendLine(join(this.dir, FILES.issued), JSON.stringify(rec));
    return rec;
  }

  /** Every certificate issued here, with revokedAt filled in. */
  async list(): Promise<IssuedRecord[]> {
    const recs = parseJsonLines<IssuedRecord>(await readOptional(join(this.dir, FILES.issued)));
    return recs.map((r) => {
      const rev = this.#revoked.get(r.serial);
      return rev ? { ...r, revokedAt: rev.revokedAt } : r;
    });
  }

  /** Revokes a serial (idempotent: a second call returns the first record). */
  async revoke(serial: string, now: Date, reason?: string): Promise<RevocationRecord> {
    const s = checkSerial(serial);
    const existing = this.#revoked.get(s);
    if (existing) return existing;
    const rec: RevocationRecord = {
      serial: s,
      revokedAt: now.toISOString(),
      ...(reason ? { reason } : {}),
    };
    await appendLine(join(this.dir, FILES.revoked), JSON.stringify(rec));
    this.#revoked.set(s, rec);
    return rec;
  }

  /**
   * Adds revocations made elsewhere (another cluster member) to revoked.jsonl, in one
   * append. Serials already revoked here keep their record. Returns the ones added.
   */
  async merge(records: readonly RevocationRecord[]): Promise<RevocationRecord[]> {
    const added: RevocationRecord[] = [];
    for (const r of records) {
      const s = normalizeSerial(r.serial);
      if (this.#revoked.has(s) || added.some((a) => a.serial === s)) continue;
      added.push({
        serial: s,
        revokedAt: r.revokedAt,
        ...(r.reason ? { reason: r.reason } : {}),
      });
    }
    if (added.length === 0) return added;
    // In memory first: verify() refuses them even if the append fails (etcd re-lists them).
    for (const r of added) this.#revoked.set(r.serial, r);
    await appendLine(
      join(this.dir, FILES.revoked),
      added.map((r) => JSON.stringify(r)).join("\n"),
    );
    return added;
  }

  /** The revocation of a serial, if it is revoked. */
  revocation(serial: string): RevocationRecord | undefined {
    return this.#revoked.get(normalizeSerial(serial));
  }

  /** Revoked serials (normalized hex). */
  serials(): Set<string> {
    return new Set(this.#revoked.keys());
  }
}
