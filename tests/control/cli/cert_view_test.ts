import { certStatus, certTable, grantsText } from "../../../control/cli/_cert_view.ts";
import type { IssuedCertificate } from "../../../mod/types.ts";
import { assert, assertEquals } from "../../_assert.ts";

const now = new Date("2026-06-01T00:00:00Z");
const cert = (over: Partial<IssuedCertificate> = {}): IssuedCertificate => ({
  serial: "aa01",
  subject: "CN=vm1, O=Ballast",
  role: "nbd-client",
  name: "vm1",
  volumes: ["db1", "logs:ro"],
  grants: [
    { volume: "db1", readOnly: false, uuid: "u-1" },
    { volume: "logs", readOnly: true },
  ],
  notBefore: "2026-05-01T00:00:00Z",
  notAfter: "2026-07-01T00:00:00Z",
  issuerSerial: "CA01",
  ...over,
});
const ctx = { trustedCaSerials: ["ca01", "ca02"], now };

Deno.test("certStatus(): revoked, expired, then signed by a CA no longer trusted, else valid", () => {
  assertEquals(certStatus(cert(), ctx), "valid", "issuer serials compare in any case");
  assertEquals(
    certStatus(cert({ revokedAt: "2026-05-02T00:00:00Z" }), ctx),
    "revoked 2026-05-02T00:00:00Z",
  );
  assertEquals(certStatus(cert({ notAfter: "2026-05-31T00:00:00Z" }), ctx), "expired");
  assertEquals(
    certStatus(cert(), { ...ctx, trustedCaSerials: ["ca02"] }),
    "CA no longer trusted",
    "its CA was rotated out and the overlap is over",
  );
});

Deno.test("grantsText(): a grant bound to a deleted volume is marked, by-name grants are not", () => {
  const volumes = (entries: [string, string][]) => new Map(entries);
  assertEquals(grantsText(cert(), volumes([["db1", "u-1"], ["logs", "u-9"]])), "db1,logs:ro");
  assertEquals(grantsText(cert(), volumes([["db1", "u-2"]])), "db1 (deleted),logs:ro");
  assertEquals(grantsText(cert(), volumes([])), "db1 (deleted),logs:ro");
  assertEquals(grantsText(cert(), undefined), "db1,logs:ro", "volumes unknown: as issued");
  assertEquals(grantsText(cert({ volumes: [], grants: undefined }), volumes([])), "-");
});

Deno.test("certTable() shows each certificate's grants and status", () => {
  const text = certTable([cert(), cert({ serial: "aa02", issuerSerial: "old" })], {
    ...ctx,
    volumeUuids: new Map([["db1", "u-2"]]),
  });
  const lines = text.trimEnd().split("\n");
  assertEquals(lines.length, 3);
  assert(lines[1].includes("db1 (deleted),logs:ro") && lines[1].endsWith("valid"), lines[1]);
  assert(lines[2].endsWith("CA no longer trusted"), lines[2]);
  assertEquals(certTable([], ctx), "No certificates.\n");
});

Deno.test("certTable(): node and admin certificates renewed since read 'valid (renewed since)'", () => {
  const node = (serial: string, notBefore: string, over: Partial<IssuedCertificate> = {}) =>
    cert({ serial, role: "node", name: "vm", volumes: [], grants: undefined, notBefore, ...over });
  const items = [
    node("n1", "2026-05-01T00:00:00Z"),
    node("n2", "2026-05-10T00:00:00Z"),
    node("n3", "2026-05-20T00:00:00Z", { revokedAt: "2026-05-21T00:00:00Z" }),
    node("m1", "2026-05-02T00:00:00Z", { name: "other" }),
    cert({ serial: "c1" }),
    cert({ serial: "c2", notBefore: "2026-05-15T00:00:00Z" }),
    // Admin certificates: each node's own (renewed by it) apart; ones issued on request never.
    node("a1", "2026-05-01T00:00:00Z", { role: "admin", name: "admin", own: "n1" }),
    node("a2", "2026-05-03T00:00:00Z", { role: "admin", name: "admin", own: "n2" }),
    node("a3", "2026-05-04T00:00:00Z", { role: "admin", name: "admin", own: "n1" }),
    node("o1", "2026-05-05T00:00:00Z", { role: "admin", name: "carol" }),
    node("o2", "2026-05-05T00:00:00Z", { role: "admin", name: "carol" }),
  ];
  const status = Object.fromEntries(
    certTable(items, ctx).trimEnd().split("\n").slice(1).map((l) => {
      const cols = l.split(/\s{2,}/);
      return [cols[0], cols.at(-1)];
    }),
  );
  // n3, the newest, was revoked: n2 is the one in use. Clients' certificates are not renewed.
  assertEquals(status, {
    n1: "valid (renewed since)",
    n2: "valid",
    n3: "revoked 2026-05-21T00:00:00Z",
    m1: "valid",
    c1: "valid",
    c2: "valid",
    a1: "valid (renewed since)",
    a2: "valid",
    a3: "valid",
    o1: "valid",
    o2: "valid",
  });
  // Whose own admin certificate each is: the table says, as the JSON's `own` does.
  const rows = certTable(items, ctx).split("\n");
  assert(rows.find((l) => l.startsWith("a2"))!.includes("admin (node n2's own)"), rows.join("\n"));
  assert(!rows.find((l) => l.startsWith("o1"))!.includes("own"), "an admin issued on request");
});
