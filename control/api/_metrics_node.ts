/**
 * The node-level families of GET /metrics (_metrics.ts renders them): the build, the data
 * disk's capacity and free space, and when the node's certificates expire, which is what
 * the alerting rules in packaging/monitoring/ need beyond the per-volume families.
 * @module
 */

import type { Pki } from "../../ca/mod.ts";
import type { VersionInfo } from "../../mod/types.ts";
import type { CrashCounts } from "../nodes/mod.ts";

/** One certificate's expiry: certificate = ca | node | admin | client. */
export interface CertificateExpiry {
  certificate: "ca" | "node" | "admin" | "client";
  /** Client name or CA serial; empty (no label) for node and admin. */
  name: string;
  /** Role of a client certificate; empty (no label) otherwise. */
  role: string;
  /** Seconds since the epoch. */
  notAfter: number;
}

/** What the node-level families read. */
export interface NodeMetricsInput {
  build?: VersionInfo;
  disk?: { capacityBytes: number; freeBytes: number };
  certificates?: CertificateExpiry[];
  /** Crash checks this node made (cluster mode with crash detection), by outcome. */
  crashChecks?: CrashCounts;
}

/**
 * The certificates whose expiry matters: every trusted CA, this node's own node and admin
 * certificates, and per client (role, name) the newest unrevoked certificate issued here (an
 * older one replaced by a newer is not worth an alert).
 */
export async function certificateExpiries(pki: Pki): Promise<CertificateExpiry[]> {
  const out: CertificateExpiry[] = [];
  const secs = (d: Date) => Math.floor(d.getTime() / 1000);
  for (const ca of pki.caCertificates) {
    out.push({ certificate: "ca", name: ca.serialNumber, role: "", notAfter: secs(ca.notAfter) });
  }
  for (const which of ["node", "admin"] as const) {
    const local = pki.local(which);
    if (local) {
      out.push({ certificate: which, name: "", role: "", notAfter: secs(local.cert.notAfter) });
    }
  }
  const newest = new Map<string, CertificateExpiry>();
  for (const rec of await pki.list()) {
    if (rec.revokedAt || rec.role === "node") continue;
    const notAfter = secs(new Date(rec.notAfter));
    const key = `${rec.role}\u0000${rec.name}`;
    if ((newest.get(key)?.notAfter ?? -Infinity) < notAfter) {
      newest.set(key, { certificate: "client", name: rec.name, role: rec.role, notAfter });
    }
  }
  return [...out, ...[...newest.values()].sort((a, b) => a.name.localeCompare(b.name))];
}

/** Appends the node-level families to `out`. */
export function renderNodeMetrics(
  input: NodeMetricsInput,
  family: (name: string, type: string, help: string) => void,
  labels: (pairs: Record<string, string>) => string,
  out: string[],
): void {
  if (input.build) {
    const b = input.build;
    family(
      "ballast_build_info",
      "gauge",
      "Always 1; the labels say which build runs: version, git commit, kind of build, Deno.",
    );
    out.push(
      `ballast_build_info${
        labels({ version: b.version, commit: b.commit ?? "", build: b.build, deno: b.deno })
      } 1`,
    );
  }
  if (input.disk) {
    family(
      "ballast_data_capacity_bytes",
      "gauge",
      "Size of the filesystem holding the data directory.",
    );
    out.push(`ballast_data_capacity_bytes ${input.disk.capacityBytes}`);
    family(
      "ballast_data_free_bytes",
      "gauge",
      "Bytes of the data directory's filesystem still free for volumes.",
    );
    out.push(`ballast_data_free_bytes ${input.disk.freeBytes}`);
  }
  if (input.crashChecks) {
    family(
      "ballast_crash_checks_total",
      "counter",
      "Checks of nodes whose replication connection to this node ended (--crash-detection): " +
        "outcome=revoked (its listeners refused connections: its lease was revoked), alive " +
        "(a listener accepted or did not answer), skipped (no lease, changed, or etcd failed).",
    );
    for (const [outcome, n] of Object.entries(input.crashChecks)) {
      out.push(`ballast_crash_checks_total${labels({ outcome })} ${n}`);
    }
  }
  if (input.certificates) {
    family(
      "ballast_certificate_expiry_timestamp_seconds",
      "gauge",
      "When a certificate stops being valid, in seconds since the epoch: certificate=ca " +
        "(each trusted CA), node and admin (this node's own; it renews them at 2/3 of their " +
        "life), client (per role and name, the newest unrevoked one issued here).",
    );
    for (const c of input.certificates) {
      out.push(
        `ballast_certificate_expiry_timestamp_seconds${
          labels({
            certificate: c.certificate,
            ...(c.name ? { name: c.name } : {}),
            ...(c.role ? { role: c.role } : {}),
          })
        } ${c.notAfter}`,
      );
    }
  }
}
