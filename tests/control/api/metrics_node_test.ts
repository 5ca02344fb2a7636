import { openPki } from "../../../ca/mod.ts";
import { certificateExpiries, renderNodeMetrics } from "../../../control/api/_metrics_node.ts";
import { versionInfo } from "../../../control/common/mod.ts";
import { assert, assertEquals } from "../../_assert.ts";
import { tempDir } from "../../ca/_helpers.ts";

const NODE = { nodeName: "node-1", ipAddresses: ["127.0.0.1"] };

Deno.test("certificateExpiries(): CA, node and admin, and per client the newest unrevoked one", async () => {
  await using t = await tempDir();
  const pki = await openPki(`${t.dir}/pki`, NODE);
  const secs = (d: Date) => Math.floor(d.getTime() / 1000);
  const old = await pki.issue({ role: "nbd-client", name: "vm1", volumes: ["db1"] }, {
    ttlSeconds: 3600,
  });
  const renewed = await pki.issue({ role: "nbd-client", name: "vm1", volumes: ["db1"] }, {
    ttlSeconds: 7200,
  });
  const lost = await pki.issue({ role: "nbd-client", name: "laptop", volumes: ["*"] });
  await pki.revoke(lost.cert.serialNumber, "lost");

  const got = await certificateExpiries(pki);
  const by = (c: string, name = "") => got.filter((e) => e.certificate === c && e.name === name);
  assertEquals(by("ca", pki.caCertificates[0].serialNumber).length, 1);
  assertEquals(by("node")[0].notAfter, secs(pki.local("node")!.cert.notAfter));
  assertEquals(by("admin")[0].notAfter, secs(pki.local("admin")!.cert.notAfter));
  const vm1 = by("client", "vm1");
  assertEquals(vm1.length, 1, "only the newest of vm1's certificates");
  assertEquals(vm1[0].notAfter, secs(renewed.cert.notAfter));
  assert(vm1[0].notAfter !== secs(old.cert.notAfter));
  assertEquals(vm1[0].role, "nbd-client");
  assertEquals(by("client", "laptop"), [], "revoked certificates are left out");
  assert(!got.some((e) => e.certificate === "client" && e.role === "node"), "no node records");
});

Deno.test("renderNodeMetrics(): build, disk, crash check and certificate families, empty labels left out", () => {
  const out: string[] = [];
  const family = (name: string, type: string, help: string) =>
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  const labels = (p: Record<string, string>) =>
    `{${Object.entries(p).map(([k, v]) => `${k}="${v}"`).join(",")}}`;
  renderNodeMetrics(
    {
      build: { ...versionInfo(), commit: "abc", build: "self-extracting", version: "9.9.9" },
      disk: { capacityBytes: 1000, freeBytes: 250 },
      crashChecks: { revoked: 2, alive: 5, skipped: 1 },
      certificates: [
        { certificate: "node", name: "", role: "", notAfter: 123 },
        { certificate: "client", name: "vm1", role: "nbd-client", notAfter: 456 },
      ],
    },
    family,
    labels,
    out,
  );
  const samples = out.filter((l) => !l.startsWith("#"));
  assertEquals(samples, [
    `ballast_build_info{version="9.9.9",commit="abc",build="self-extracting",deno="${Deno.version.deno}"} 1`,
    "ballast_data_capacity_bytes 1000",
    "ballast_data_free_bytes 250",
    'ballast_crash_checks_total{outcome="revoked"} 2',
    'ballast_crash_checks_total{outcome="alive"} 5',
    'ballast_crash_checks_total{outcome="skipped"} 1',
    'ballast_certificate_expiry_timestamp_seconds{certificate="node"} 123',
    'ballast_certificate_expiry_timestamp_seconds{certificate="client",name="vm1",role="nbd-client"} 456',
  ]);
  assertEquals(out.filter((l) => l.startsWith("# TYPE")).length, 5);
});
