import {
  createRootCa,
  generateKeyPair,
  issueLeaf,
  type Issuer,
  readIdentity,
  ROLE_URI_PREFIX,
  x509,
} from "../../ca/mod.ts";
import { InvalidArgumentError } from "../../mod/errors.ts";
import { assert, assertEquals, assertRejects } from "../_assert.ts";
import { DAY, HAVE_OPENSSL, openssl, opensslTest } from "./_helpers.ts";

async function newCa(): Promise<Issuer> {
  const { cert, keys } = await createRootCa({ commonName: "Test CA" });
  return { cert, key: keys.privateKey };
}

async function leafFor(ca: Issuer, spec: Parameters<typeof issueLeaf>[2], ttlSeconds?: number) {
  const keys = await crypto.subtle.generateKey(
    { name: "ECDSA", namedCurve: "P-256" },
    true,
    ["sign", "verify"],
  );
  return { keys, cert: await issueLeaf(ca, keys.publicKey, spec, { ttlSeconds }) };
}

Deno.test("createRootCa() makes a v3 self-signed CA with critical basicConstraints and keyUsage", async () => {
  const { cert } = await newCa();
  assert(await cert.isSelfSigned());
  const bc = cert.getExtension(x509.BasicConstraintsExtension)!;
  assertEquals([bc.ca, bc.pathLength, bc.critical], [true, 0, true]);
  const ku = cert.getExtension(x509.KeyUsagesExtension)!;
  assertEquals(ku.usages, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign);
  assert(ku.critical);
  assert(cert.getExtension(x509.SubjectKeyIdentifierExtension));
  const years = (cert.notAfter.getTime() - cert.notBefore.getTime()) / (365.25 * DAY * 1000);
  assert(years > 9.9 && years < 10.1, `CA lifetime ${years} years`);
  assertEquals(cert.publicKey.algorithm, { name: "ECDSA", namedCurve: "P-256" } as Algorithm);
});

Deno.test("issueLeaf() writes role EKUs, SANs, AKI, CA:false and a 30-day default lifetime", async () => {
  const ca = await newCa();
  const { cert } = await leafFor(ca, {
    role: "node",
    name: "node-1",
    dnsNames: ["node-1.example"],
    ipAddresses: ["127.0.0.1", "::1"],
  });
  assertEquals(cert.getExtension(x509.BasicConstraintsExtension)!.ca, false);
  assertEquals(cert.getExtension(x509.KeyUsagesExtension)!.usages, 1 /* digitalSignature */);
  assertEquals([...cert.getExtension(x509.ExtendedKeyUsageExtension)!.usages], [
    "1.3.6.1.5.5.7.3.1",
    "1.3.6.1.5.5.7.3.2",
  ]);
  const aki = cert.getExtension(x509.AuthorityKeyIdentifierExtension)!;
  assertEquals(aki.keyId, ca.cert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId);
  assertEquals(readIdentity(cert), {
    role: "node",
    name: "node-1",
    volumes: [],
    grants: [],
    dnsNames: ["node-1.example", "node-1"],
    ipAddresses: ["127.0.0.1", "::1"],
  });
  const days = (cert.notAfter.getTime() - cert.notBefore.getTime()) / (DAY * 1000);
  assert(Math.abs(days - 30) < 0.01, `lifetime ${days} days`);
  assert(await cert.verify({ publicKey: ca.cert, signatureOnly: true }));
});

Deno.test("admin and nbd-client leaves are clientAuth only; volumes are URI SANs", async () => {
  const ca = await newCa();
  const { cert: admin } = await leafFor(ca, { role: "admin", name: "alice" });
  assertEquals([...admin.getExtension(x509.ExtendedKeyUsageExtension)!.usages], [
    "1.3.6.1.5.5.7.3.2",
  ]);
  const { cert: nbd } = await leafFor(ca, {
    role: "nbd-client",
    name: "vm-host-7",
    volumes: ["db", "logs"],
  });
  const id = readIdentity(nbd);
  assert(typeof id !== "string");
  assertEquals([id.role, id.volumes], ["nbd-client", ["db", "logs"]]);
  const uris = nbd.getExtension(x509.SubjectAlternativeNameExtension)!.names.toJSON()
    .map((n) => n.value);
  assertEquals(uris, [`${ROLE_URI_PREFIX}nbd-client`, "ballast:volume:db", "ballast:volume:logs"]);
  const { cert: all } = await leafFor(ca, { role: "nbd-client", name: "x", volumes: ["a", "*"] });
  assertEquals((readIdentity(all) as { volumes: string[] }).volumes, ["*"]);
});

Deno.test("grants: NAME:ro is read-only, a uuid binds the incarnation; both round-trip through the certificate", async () => {
  const ca = await newCa();
  const uuid = "0f1e2d3c-4b5a-4968-8776-655443322110";
  const { cert } = await leafFor(ca, {
    role: "nbd-client",
    name: "backup",
    grants: [
      { volume: "logs", readOnly: false },
      { volume: "db", readOnly: true, uuid },
      { volume: "*", readOnly: true },
    ],
  });
  const uris = cert.getExtension(x509.SubjectAlternativeNameExtension)!.names.toJSON()
    .map((n) => n.value);
  assertEquals(uris, [
    `${ROLE_URI_PREFIX}nbd-client`,
    "ballast:volume:*;ro",
    `ballast:volume:db;ro;uuid=${uuid}`,
    "ballast:volume:logs",
  ]);
  const id = readIdentity(cert);
  assert(typeof id !== "string");
  assertEquals(id.volumes, ["*:ro", "db:ro", "logs"]);
  assertEquals(id.grants, [
    { volume: "*", readOnly: true },
    { volume: "db", readOnly: true, uuid },
    { volume: "logs", readOnly: false },
  ]);
  // The text form: a read-write "*" covers everything; a name granted twice differently is refused.
  const texts = await leafFor(ca, { role: "nbd-client", name: "t", volumes: ["db:ro", "*:ro"] });
  assertEquals((readIdentity(texts.cert) as { volumes: string[] }).volumes, ["*:ro", "db:ro"]);
  for (
    const [volumes, why] of [
      [["db", "db:ro"], "granted twice"],
      [["db:rw"], "invalid volume grant"],
      [[":ro"], "invalid volume grant"],
    ] as const
  ) {
    await assertRejects(
      () => leafFor(ca, { role: "nbd-client", name: "t", volumes }),
      InvalidArgumentError,
      why,
    );
  }
  await assertRejects(
    () =>
      leafFor(ca, {
        role: "nbd-client",
        name: "t",
        grants: [{ volume: "db", readOnly: false, uuid: "x" }],
      }),
    InvalidArgumentError,
    "invalid volume uuid",
  );
});

Deno.test("readIdentity() fails closed on a grant URI it cannot read (an unknown part)", async () => {
  const keys = await generateKeyPair();
  for (const uri of ["ballast:volume:db;rw", "ballast:volume:db;uuid=nope"]) {
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      name: "CN=c, O=Ballast",
      keys,
      signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
      extensions: [
        new x509.SubjectAlternativeNameExtension([
          { type: "url", value: `${ROLE_URI_PREFIX}nbd-client` },
          { type: "url", value: uri },
        ]),
      ],
    });
    const id = readIdentity(csr);
    assert(typeof id === "string" && id.includes("unknown part"), String(id));
  }
});

Deno.test("issueLeaf() rejects bad specs before doing any work", async () => {
  const ca = await newCa();
  const pub = (await createRootCa()).keys.publicKey;
  const cases: [Parameters<typeof issueLeaf>[2], string][] = [
    [{ role: "root" as never, name: "x" }, "invalid role"],
    [{ role: "admin", name: "CN=evil, O=x" }, "invalid certificate name"],
    [{ role: "admin", name: "a", volumes: ["db"] }, "only for role nbd-client"],
    [{ role: "nbd-client", name: "a", volumes: ["Bad/Name"] }, "invalid volume grant"],
    [{ role: "node", name: "n", ipAddresses: ["0.0.0.0"] }, "wildcard listen address"],
    [{ role: "node", name: "n", ipAddresses: ["300.1.1.1"] }, "not an IP address"],
    [{ role: "admin", name: "a", dnsNames: ["a.example"] }, "only for role node"],
  ];
  for (const [spec, msg] of cases) {
    await assertRejects(() => issueLeaf(ca, pub, spec), InvalidArgumentError, msg);
  }
  await assertRejects(
    () => issueLeaf(ca, pub, { role: "admin", name: "a" }, { ttlSeconds: 0 }),
    InvalidArgumentError,
    "ttlSeconds",
  );
});

Deno.test("serials are random, positive and 128-bit", async () => {
  const ca = await newCa();
  const serials = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const { cert } = await leafFor(ca, { role: "admin", name: `a${i}` });
    // DER INTEGER is signed: the library prefixes 00 when the top bit is set.
    assert(/^[0-9a-f]{32}$/.test(cert.serialNumber), `serial ${cert.serialNumber}`);
    serials.add(cert.serialNumber);
  }
  assertEquals(serials.size, 20);
});

Deno.test("leaf notAfter never outlives the issuing CA", async () => {
  const { cert, keys } = await createRootCa({ ttlSeconds: 3600 });
  const { cert: leaf } = await leafFor({ cert, key: keys.privateKey }, {
    role: "admin",
    name: "a",
  });
  assertEquals(leaf.notAfter.getTime(), cert.notAfter.getTime());
});

Deno.test(opensslTest("openssl x509 -text parses the root and every role's leaf"), {
  ignore: !HAVE_OPENSSL,
}, async () => {
  const ca = await newCa();
  const root = await openssl(["x509", "-noout", "-text"], ca.cert.toString("pem"));
  assertEquals(root?.code, 0, root?.stderr);
  assert(root!.stdout.includes("Version: 3 (0x2)"));
  assert(!root!.stdout.includes("Negative"), "serial must be positive");
  assert(root!.stdout.includes("CA:TRUE, pathlen:0"));
  assert(root!.stdout.includes("Certificate Sign, CRL Sign"));
  const { cert } = await leafFor(ca, {
    role: "nbd-client",
    name: "consumer",
    volumes: ["db"],
  });
  const out = await openssl(["x509", "-noout", "-text"], cert.toString("pem"));
  assertEquals(out?.code, 0, out?.stderr);
  for (
    const s of [
      "Version: 3 (0x2)",
      "CA:FALSE",
      "Digital Signature",
      "TLS Web Client Authentication",
      "URI:ballast:role:nbd-client",
      "URI:ballast:volume:db",
      "X509v3 Authority Key Identifier",
    ]
  ) assert(out!.stdout.includes(s), `openssl output lacks ${s}:\n${out!.stdout}`);
  const { cert: node } = await leafFor(ca, { role: "node", name: "n1", ipAddresses: ["10.0.0.5"] });
  const nodeOut = await openssl(["x509", "-noout", "-text"], node.toString("pem"));
  assert(nodeOut!.stdout.includes("DNS:n1, IP Address:10.0.0.5, URI:ballast:role:node"));
  assert(nodeOut!.stdout.includes("TLS Web Server Authentication, TLS Web Client Authentication"));
  // openssl agrees the chain verifies.
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/ca.pem`, ca.cert.toString("pem"));
    await Deno.writeTextFile(`${dir}/leaf.pem`, node.toString("pem"));
    const v = await openssl(["verify", "-CAfile", `${dir}/ca.pem`, `${dir}/leaf.pem`]);
    assertEquals(v?.code, 0, v?.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
