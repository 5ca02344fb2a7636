import {
  createRootCa,
  generateKeyPair,
  importPrivateKeyPem,
  installCa,
  issueLeaf,
  openPki,
  parseCertificates,
  signCsr,
  verifyPeer,
  x509,
} from "../../ca/mod.ts";
import {
  AlreadyExistsError,
  FailedPreconditionError,
  InvalidArgumentError,
} from "../../mod/errors.ts";
import { assert, assertEquals, assertRejects } from "../_assert.ts";
import { HAVE_OPENSSL, openssl, opensslTest, operatorCa, tempDir } from "./_helpers.ts";

const NODE = { nodeName: "node-1", ipAddresses: ["127.0.0.1"] };

Deno.test(opensslTest("bring your own intermediate: leaves chain to the operator's root"), {
  ignore: !HAVE_OPENSSL,
}, async () => {
  await using t = await tempDir();
  const op = await operatorCa(t.dir);
  const dir = `${t.dir}/pki`;
  await installCa(dir, { certPem: op.int, keyPem: op.intKey, chainPem: op.root });
  await assertRejects(
    () => installCa(dir, { certPem: op.int, keyPem: op.intKey }),
    AlreadyExistsError,
  );
  const pki = await openPki(dir, NODE);
  assertEquals(pki.mode, "intermediate");
  const creds = pki.credentials("node");
  // node.crt carries the intermediate; the bundle carries intermediate and root.
  assertEquals(parseCertificates(creds.cert, "node.crt").map((c) => c.subject), [
    "CN=node-1, O=Ballast",
    "O=Example, CN=Ballast Issuing CA",
  ]);
  assertEquals(parseCertificates(creds.ca, "bundle").length, 2);
  await Deno.writeTextFile(`${t.dir}/leaf.crt`, creds.cert);
  const v = await openssl([
    "verify",
    "-CAfile",
    `${t.dir}/root.crt`,
    "-untrusted",
    `${t.dir}/int.crt`,
    `${t.dir}/leaf.crt`,
  ]);
  assertEquals(v?.code, 0, v?.stderr);
  assert((await pki.verify(creds.cert, { requiredEku: "serverAuth" })).ok);
  // Trust is pinned to the intermediate: a certificate the operator's root signs directly,
  // even with a Ballast role, is not a Ballast identity.
  const root = parseCertificates(op.root, "root")[0];
  const rootKey = await importPrivateKeyPem(op.rootKey, "root.key", root.publicKey);
  const keys = await generateKeyPair();
  const sideways = await issueLeaf({ cert: root, key: rootKey }, keys.publicKey, {
    role: "admin",
    name: "someone",
  });
  const r = await pki.verify(sideways.toString("pem"), { requiredEku: "clientAuth" });
  assert(!r.ok && r.code === "untrusted", JSON.stringify(r));
});

Deno.test(opensslTest("installCa() refuses a key that does not match and a broken chain"), {
  ignore: !HAVE_OPENSSL,
}, async () => {
  await using t = await tempDir();
  const op = await operatorCa(t.dir);
  await assertRejects(
    () => installCa(`${t.dir}/a`, { certPem: op.int, keyPem: op.rootKey }),
    InvalidArgumentError,
    "does not match",
  );
  const stranger = (await createRootCa()).cert.toString("pem");
  await assertRejects(
    () => installCa(`${t.dir}/b`, { certPem: op.int, keyPem: op.intKey, chainPem: stranger }),
    InvalidArgumentError,
    "is not signed by",
  );
});

Deno.test("external mode: CSR out, signed certificate in, no CA key on the node", async () => {
  await using t = await tempDir();
  const external = await createRootCa({ commonName: "Corp Issuing CA" });
  const issuer = { cert: external.cert, key: external.keys.privateKey };
  const dir = `${t.dir}/pki`;
  await installCa(dir, { certPem: external.cert.toString("pem") });
  const pki = await openPki(dir, NODE);
  assertEquals(pki.mode, "external");
  assertEquals(pki.pending(), ["node", "admin"]);
  await assertRejects(() => Deno.stat(`${dir}/ca.key`), Deno.errors.NotFound);
  assertEquals((await Deno.stat(`${dir}/node.key.pending`)).mode! & 0o777, 0o600);
  await assertRejects(
    () => pki.issue({ role: "admin", name: "x" }),
    FailedPreconditionError,
    "no CA key",
  );
  let err: unknown;
  try {
    pki.credentials("node");
  } catch (e) {
    err = e;
  }
  assert(err instanceof FailedPreconditionError);

  // The operator signs the CSRs with their CA.
  const nodeCsr = await Deno.readTextFile(`${dir}/node.csr`);
  const nodeCert = await signCsr(issuer, nodeCsr, {
    role: "node",
    name: "node-1",
    ipAddresses: ["127.0.0.1"],
  });
  // A certificate for the wrong key is refused.
  const adminCsr = await Deno.readTextFile(`${dir}/admin.csr`);
  await assertRejects(
    () => pki.importSigned("admin", nodeCert.toString("pem")),
    InvalidArgumentError,
    "does not match",
  );
  await pki.importSigned("node", nodeCert.toString("pem"));
  const adminCert = await signCsr(issuer, adminCsr, { role: "admin" });
  // An admin certificate imported as the node's: the error says which --which it needs.
  await assertRejects(
    () => pki.importSigned("node", adminCert.toString("pem")),
    InvalidArgumentError,
    "it is an admin certificate (role admin); import it with --which admin",
  );
  await pki.importSigned("admin", adminCert.toString("pem"));
  assertEquals(pki.pending(), []);
  assertEquals((await Deno.stat(`${dir}/node.key`)).mode! & 0o777, 0o600);
  await assertRejects(() => Deno.stat(`${dir}/node.csr`), Deno.errors.NotFound);

  const reopened = await openPki(dir, NODE);
  assertEquals(reopened.pending(), []);
  const r = await verifyPeer(reopened.credentials("admin").cert, {
    now: new Date(),
    roots: reopened.trustedRoots(),
    requiredEku: "clientAuth",
    allowedRoles: ["admin"],
  });
  assert(r.ok, !r.ok ? r.reason : "");
});

Deno.test("importSigned() refuses a certificate from an untrusted CA or with the wrong role", async () => {
  await using t = await tempDir();
  const external = await createRootCa();
  await installCa(t.dir, { certPem: external.cert.toString("pem") });
  const pki = await openPki(t.dir, NODE);
  const csr = await Deno.readTextFile(`${t.dir}/admin.csr`);
  const rogue = await createRootCa();
  const fromRogue = await signCsr({ cert: rogue.cert, key: rogue.keys.privateKey }, csr, {
    role: "admin",
  });
  await assertRejects(
    () => pki.importSigned("admin", fromRogue.toString("pem")),
    InvalidArgumentError,
    "not signed by a trusted Ballast CA",
  );
  // The right key, but issued as an nbd-client by a sloppy external CA.
  const wrongRole = await issueLeaf(
    { cert: external.cert, key: external.keys.privateKey },
    new x509.Pkcs10CertificateRequest(csr).publicKey,
    { role: "nbd-client", name: "admin" },
  );
  await assertRejects(
    () => pki.importSigned("admin", wrongRole.toString("pem")),
    InvalidArgumentError,
    "has role nbd-client",
  );
});
