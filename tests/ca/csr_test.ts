import {
  createCsr,
  createRootCa,
  type Issuer,
  keyMatches,
  needsRenewal,
  readIdentity,
  renewLeaf,
  signCsr,
  x509,
} from "../../ca/mod.ts";
import { BallastError, InvalidArgumentError } from "../../mod/errors.ts";
import { assert, assertEquals, assertRejects } from "../_assert.ts";
import { DAY } from "./_helpers.ts";

async function newCa(): Promise<Issuer> {
  const { cert, keys } = await createRootCa();
  return { cert, key: keys.privateKey };
}

Deno.test("CSR round trip: a joining node's request is signed and matches its key", async () => {
  const ca = await newCa();
  const { csrPem, keys } = await createCsr({
    role: "node",
    name: "node-2",
    ipAddresses: ["10.0.0.2"],
  });
  assert(csrPem.startsWith("-----BEGIN CERTIFICATE REQUEST-----"));
  const cert = await signCsr(ca, csrPem, {
    role: "node",
    name: "node-2",
    ipAddresses: ["10.0.0.2"],
  }, { ttlSeconds: 3600 });
  assert(await keyMatches(keys.privateKey, cert));
  assert(await cert.verify({ publicKey: ca.cert, signatureOnly: true }));
  const id = readIdentity(cert);
  assertEquals(id, {
    role: "node",
    name: "node-2",
    volumes: [],
    grants: [],
    dnsNames: ["node-2"],
    ipAddresses: ["10.0.0.2"],
  });
  // Extensions come from the role, not from the request.
  assertEquals(cert.getExtension(x509.BasicConstraintsExtension)!.ca, false);
  assertEquals(cert.getExtension(x509.ExtendedKeyUsageExtension)!.usages.length, 2);
  const other = await crypto.subtle.generateKey(
    { name: "ECDSA", namedCurve: "P-256" },
    false,
    ["sign", "verify"],
  );
  assertEquals(await keyMatches(other.privateKey, cert), false);
});

Deno.test("signCsr() refuses requests outside the policy", async () => {
  const ca = await newCa();
  const node = (await createCsr({ role: "node", name: "n3", ipAddresses: ["10.0.0.3"] })).csrPem;
  const nbd = (await createCsr({ role: "nbd-client", name: "c", volumes: ["db", "logs"] })).csrPem;
  const all = (await createCsr({ role: "nbd-client", name: "c", volumes: ["*"] })).csrPem;
  const cases: [string, Parameters<typeof signCsr>[2], string][] = [
    [node, { role: "admin" }, "asks for role node, policy grants admin"],
    [node, { role: "node", name: "n4", ipAddresses: "any" }, "is not the expected"],
    [node, { role: "node" }, "IP address 10.0.0.3 is not allowed"],
    [nbd, { role: "nbd-client", volumes: ["db"] }, `volume "logs" is not grantable`],
    [all, { role: "nbd-client", volumes: ["db", "logs"] }, `volume "*" is not grantable`],
  ];
  for (const [csr, policy, msg] of cases) {
    const err = await assertRejects(() => signCsr(ca, csr, policy), BallastError, msg);
    assertEquals(err.code, "PERMISSION_DENIED");
  }
  // Allowed versions of the same requests go through.
  await signCsr(ca, node, { role: "node", ipAddresses: ["10.0.0.3"] });
  await signCsr(ca, nbd, { role: "nbd-client", volumes: ["*"] });
});

Deno.test("signCsr() grants read-only where the policy allows, binds the uuids it is given, never the CSR's", async () => {
  const ca = await newCa();
  const uuid = "0f1e2d3c-4b5a-4968-8776-655443322110";
  const ro =
    (await createCsr({ role: "nbd-client", name: "c", volumes: ["db:ro", "logs"] })).csrPem;
  const cert = await signCsr(ca, ro, {
    role: "nbd-client",
    volumes: ["db", "logs"],
    bind: { db: uuid },
  });
  const id = readIdentity(cert);
  assert(typeof id !== "string");
  assertEquals(id.grants, [
    { volume: "db", readOnly: true, uuid },
    { volume: "logs", readOnly: false },
  ]);
  // A policy that allows db read-only refuses db read-write.
  const rw = (await createCsr({ role: "nbd-client", name: "c", volumes: ["db"] })).csrPem;
  await assertRejects(
    () => signCsr(ca, rw, { role: "nbd-client", volumes: ["db:ro"] }),
    BallastError,
    'volume "db" is not grantable',
  );
  await signCsr(ca, ro, { role: "nbd-client", volumes: ["db:ro", "logs"] });
  // A CSR naming a uuid of its own gets the signer's binding (here: none).
  const pinned = (await createCsr({
    role: "nbd-client",
    name: "c",
    grants: [{ volume: "db", readOnly: false, uuid }],
  })).csrPem;
  const unbound = readIdentity(await signCsr(ca, pinned, { role: "nbd-client", volumes: ["db"] }));
  assertEquals((unbound as { grants: unknown }).grants, [{ volume: "db", readOnly: false }]);
});

Deno.test("signCsr() rejects garbage and a CSR whose signature does not verify", async () => {
  const ca = await newCa();
  await assertRejects(
    () => signCsr(ca, "not a csr", { role: "admin" }),
    InvalidArgumentError,
    "not a PKCS#10",
  );
  const { csr } = await createCsr({ role: "admin", name: "bob" });
  const der = new Uint8Array(csr.rawData);
  der[der.length - 5] ^= 0xff; // inside the signature value
  await assertRejects(
    () => signCsr(ca, x509.PemConverter.encode(der, "CERTIFICATE REQUEST"), { role: "admin" }),
    InvalidArgumentError,
  );
});

Deno.test("needsRenewal() turns true after two thirds of the lifetime", async () => {
  const ca = await newCa();
  const start = new Date("2026-01-01T00:00:00Z");
  const keys = await createCsr({ role: "admin", name: "a" });
  const cert = await signCsr(ca, keys.csrPem, { role: "admin" }, {
    now: start,
    ttlSeconds: 30 * DAY,
  });
  const at = (days: number) => new Date(start.getTime() + days * DAY * 1000);
  assertEquals(needsRenewal(cert, at(19)), false);
  assertEquals(needsRenewal(cert, at(20.1)), true);
  assertEquals(needsRenewal(cert, at(10), 0.25), true);
});

Deno.test("needsRenewal() counts a short lifetime from issue, not from the backdated notBefore", async () => {
  const ca = await newCa();
  const start = new Date("2026-01-01T00:00:00Z");
  const keys = await createCsr({ role: "admin", name: "a" });
  const cert = await signCsr(ca, keys.csrPem, { role: "admin" }, { now: start, ttlSeconds: 30 });
  const at = (seconds: number) => new Date(start.getTime() + seconds * 1000);
  assertEquals(needsRenewal(cert, at(3)), false, "a fresh 30 s certificate is not due yet");
  assertEquals(needsRenewal(cert, at(19)), false);
  assertEquals(needsRenewal(cert, at(20.5)), true);
});

Deno.test("renewLeaf() keeps identity, and uses the old key or a new one", async () => {
  const ca = await newCa();
  const { csrPem, keys } = await createCsr({ role: "nbd-client", name: "c", volumes: ["db"] });
  const old = await signCsr(ca, csrPem, { role: "nbd-client", volumes: ["db"] });
  const same = await renewLeaf(ca, old, { ttlSeconds: 60 });
  assertEquals(readIdentity(same), readIdentity(old));
  assert(same.serialNumber !== old.serialNumber);
  assert(await keyMatches(keys.privateKey, same));
  const fresh = (await createCsr({ role: "admin", name: "z" })).keys;
  const rekeyed = await renewLeaf(ca, old, { keys: fresh });
  assert(await keyMatches(fresh.privateKey, rekeyed));
  assertEquals(await keyMatches(keys.privateKey, rekeyed), false);
  assertEquals(readIdentity(rekeyed), readIdentity(old));
});
