import {
  createRootCa,
  exportPrivateKeyPem,
  generateKeyPair,
  issueLeaf,
  type Issuer,
  type LeafSpec,
  verifyPeer,
  type VerifyPeerOptions,
  x509,
} from "../../ca/mod.ts";
import { assert, assertEquals } from "../_assert.ts";
import { DAY, HAVE_OPENSSL, openssl, opensslTest, tempDir } from "./_helpers.ts";

const ca: Issuer = await (async () => {
  const { cert, keys } = await createRootCa({ commonName: "Ballast Test CA" });
  return { cert, key: keys.privateKey };
})();
const NOW = new Date();

async function leaf(spec: LeafSpec, issuer = ca, opts: { now?: Date; ttlSeconds?: number } = {}) {
  const keys = await generateKeyPair();
  return (await issueLeaf(issuer, keys.publicKey, spec, opts)).toString("pem");
}

function opts(extra: Partial<VerifyPeerOptions> = {}): VerifyPeerOptions {
  return { now: NOW, roots: [ca.cert], requiredEku: "clientAuth", ...extra };
}

async function expectFail(pem: string | Uint8Array, o: VerifyPeerOptions, code: string) {
  const r = await verifyPeer(pem, o);
  assert(!r.ok, `expected ${code}, got ok`);
  assertEquals(r.code, code, r.reason);
  return r.reason;
}

Deno.test("verifyPeer() accepts a valid admin certificate (PEM and DER) and returns its identity", async () => {
  const pem = await leaf({ role: "admin", name: "alice" });
  const r = await verifyPeer(pem, opts());
  assert(r.ok, !r.ok ? r.reason : "");
  assertEquals([r.identity.role, r.identity.name, r.identity.volumes], ["admin", "alice", []]);
  const der = new Uint8Array(x509.PemConverter.decodeFirst(pem));
  assert((await verifyPeer(der, opts())).ok);
});

Deno.test("verifyPeer() returns an nbd-client's volume grants", async () => {
  const pem = await leaf({ role: "nbd-client", name: "vm1", volumes: ["db", "logs"] });
  const r = await verifyPeer(pem, opts({ allowedRoles: ["nbd-client"] }));
  assert(r.ok);
  assertEquals(r.identity.volumes, ["db", "logs"]);
});

Deno.test("verifyPeer() refuses a certificate from another CA", async () => {
  const other = await createRootCa({ commonName: "Ballast Test CA" }); // same name, other key
  const pem = await leaf({ role: "admin", name: "mallory" }, {
    cert: other.cert,
    key: other.keys.privateKey,
  });
  const reason = await expectFail(pem, opts(), "untrusted");
  assert(reason.includes("not signed by a trusted Ballast CA"), reason);
});

Deno.test("verifyPeer() refuses expired and not-yet-valid certificates", async () => {
  const past = new Date(NOW.getTime() - 40 * DAY * 1000);
  const expired = await leaf({ role: "admin", name: "old" }, ca, { now: past });
  assert((await expectFail(expired, opts(), "expired")).includes("expired at"));
  const fresh = await leaf({ role: "admin", name: "new" }, ca, { ttlSeconds: 60 });
  await expectFail(fresh, opts({ now: new Date(NOW.getTime() - 3600_000) }), "not-yet-valid");
  await expectFail(fresh, opts({ now: new Date(NOW.getTime() + 3600_000) }), "expired");
});

Deno.test("verifyPeer() refuses a certificate whose issuing CA is outside its validity", async () => {
  // A CA that only becomes valid in an hour; the leaf itself is valid now.
  const later = await createRootCa({ now: new Date(NOW.getTime() + 3600_000) });
  const issuer = { cert: later.cert, key: later.keys.privateKey };
  const pem = await leaf({ role: "admin", name: "a" }, issuer, { now: NOW });
  await expectFail(pem, opts({ roots: [later.cert] }), "ca-expired");
});

Deno.test("verifyPeer() refuses revoked serials in any spelling", async () => {
  const pem = await leaf({ role: "admin", name: "gone" });
  const serial = new x509.X509Certificate(pem).serialNumber;
  await expectFail(pem, opts({ revokedSerials: [serial] }), "revoked");
  const colons = serial.toUpperCase().match(/../g)!.join(":");
  await expectFail(pem, opts({ revokedSerials: new Set([colons]) }), "revoked");
  assert((await verifyPeer(pem, opts({ revokedSerials: ["01"] }))).ok);
});

Deno.test("verifyPeer() enforces extendedKeyUsage and roles", async () => {
  const admin = await leaf({ role: "admin", name: "a" });
  assert((await expectFail(admin, opts({ requiredEku: "serverAuth" }), "extended-key-usage"))
    .includes("not certified for serverAuth"));
  const nbd = await leaf({ role: "nbd-client", name: "c", volumes: ["db"] });
  assert((await expectFail(nbd, opts({ allowedRoles: ["admin"] }), "wrong-role"))
    .includes("has role nbd-client"));
  const node = await leaf({ role: "node", name: "n1" });
  assert((await verifyPeer(node, opts({ requiredEku: "serverAuth" }))).ok);
  assert((await verifyPeer(node, opts({ allowedRoles: ["node"] }))).ok);
});

Deno.test("verifyPeer() refuses a leaf without EKU, without a role, or a CA certificate", async () => {
  const keys = await generateKeyPair();
  const base = {
    issuer: ca.cert.subjectName,
    publicKey: keys.publicKey,
    signingKey: ca.key,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    notBefore: new Date(NOW.getTime() - 60_000), // X.509 times have 1 s resolution
    notAfter: new Date(NOW.getTime() + 3600_000),
  };
  const noEku = await x509.X509CertificateGenerator.create({
    ...base,
    subject: "CN=no-eku",
    extensions: [
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: "ballast:role:admin" }]),
    ],
  });
  await expectFail(noEku.toString("pem"), opts(), "extended-key-usage");
  const noRole = await x509.X509CertificateGenerator.create({
    ...base,
    subject: "CN=no-role",
    extensions: [new x509.ExtendedKeyUsageExtension(["1.3.6.1.5.5.7.3.2"])],
  });
  await expectFail(noRole.toString("pem"), opts(), "no-role");
  await expectFail(ca.cert.toString("pem"), opts({ roots: [ca.cert] }), "not-a-leaf");
});

Deno.test("verifyPeer() refuses garbage without throwing", async () => {
  await expectFail(
    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
    opts(),
    "malformed",
  );
  await expectFail(new Uint8Array([0x30, 0x03, 1, 2]), opts(), "malformed");
});

Deno.test(opensslTest("verifyPeer() refuses an X.509 v1 certificate signed by the trusted CA"), {
  ignore: !HAVE_OPENSSL,
}, async () => {
  await using t = await tempDir();
  await Deno.writeTextFile(`${t.dir}/ca.crt`, ca.cert.toString("pem"));
  await Deno.writeTextFile(`${t.dir}/ca.key`, await exportPrivateKeyPem(ca.key));
  const gen = await openssl([
    "genpkey",
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-out",
    `${t.dir}/k`,
  ]);
  assertEquals(gen?.code, 0, gen?.stderr);
  const req = await openssl([
    "req",
    "-new",
    "-key",
    `${t.dir}/k`,
    "-subj",
    "/CN=v1",
    "-out",
    `${t.dir}/r`,
  ]);
  assertEquals(req?.code, 0, req?.stderr);
  // Without -extfile, `openssl x509 -req` writes a version 1 certificate.
  const sign = await openssl([
    "x509",
    "-req",
    "-in",
    `${t.dir}/r`,
    "-CA",
    `${t.dir}/ca.crt`,
    "-CAkey",
    `${t.dir}/ca.key`,
    "-set_serial",
    "7",
    "-days",
    "1",
    "-out",
    `${t.dir}/v1.crt`,
  ]);
  assertEquals(sign?.code, 0, sign?.stderr);
  const pem = await Deno.readTextFile(`${t.dir}/v1.crt`);
  const reason = await expectFail(pem, opts(), "v1-certificate");
  assert(reason.includes("v1"), reason);
});
