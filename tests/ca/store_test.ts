import {
  FILES,
  openPki,
  readIdentity,
  resolveSerial,
  tightenPrivateModes,
  x509,
} from "../../ca/mod.ts";
import { BallastError, FailedPreconditionError, InvalidArgumentError } from "../../mod/errors.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../_assert.ts";
import { DAY, fakeClock, tempDir } from "./_helpers.ts";

const NODE = { nodeName: "node-1", ipAddresses: ["127.0.0.1", "::1"], dnsNames: ["localhost"] };

Deno.test("openPki() creates the CA, node and admin certificates with 0600 keys", async () => {
  await using t = await tempDir();
  const pki = await openPki(`${t.dir}/pki`, NODE);
  assertEquals(pki.mode, "internal");
  const dir = `${t.dir}/pki`;
  assertEquals((await Deno.stat(dir)).mode! & 0o777, 0o700);
  for (const f of ["ca.key", "node.key", "admin.key"]) {
    assertEquals((await Deno.stat(`${dir}/${f}`)).mode! & 0o777, 0o600, f);
    assert((await Deno.readTextFile(`${dir}/${f}`)).startsWith("-----BEGIN PRIVATE KEY-----"));
  }
  for (const f of ["ca.crt", "node.crt", "admin.crt", "ca-bundle.crt", "issued.jsonl"]) {
    assertEquals((await Deno.stat(`${dir}/${f}`)).mode! & 0o777, 0o644, f);
  }
  const names = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  assert(!names.some((n) => n.includes(".tmp-")), `temp files left: ${names}`);
  const node = readIdentity(pki.local("node")!.cert);
  assertEquals(node, {
    role: "node",
    name: "node-1",
    volumes: [],
    grants: [],
    dnsNames: ["localhost", "node-1"],
    ipAddresses: ["127.0.0.1", "::1"],
  });
  for (const [which, eku] of [["node", "serverAuth"], ["admin", "clientAuth"]] as const) {
    const r = await pki.verify(pki.credentials(which).cert, { requiredEku: eku });
    assert(r.ok, !r.ok ? r.reason : "");
  }
  assertEquals((await pki.list()).map((r) => r.role), ["node", "admin"]);
});

Deno.test("tightenPrivateModes(): a PKI directory and keys others could read are set back to 0700 and 0600, and said so; certificates stay public", async () => {
  await using t = await tempDir();
  const dir = `${t.dir}/pki`;
  assertEquals(await tightenPrivateModes(dir), [], "no directory yet: nothing to do");
  await openPki(dir, NODE);
  await Deno.writeTextFile(`${dir}/cluster.kek`, "x", { mode: 0o600 });
  assertEquals(await tightenPrivateModes(dir), [], "as made: nothing to change");
  await Deno.chmod(dir, 0o755);
  for (const f of ["ca.key", "admin.key", "cluster.kek"]) await Deno.chmod(`${dir}/${f}`, 0o644);
  await Deno.chmod(`${dir}/node.key`, 0o640);
  const changed = await tightenPrivateModes(dir);
  assertEquals(changed.sort(), [
    "admin.key was 0644",
    "ca.key was 0644",
    "cluster.kek was 0644",
    "node.key was 0640",
    "the directory was 0755",
  ]);
  assertEquals((await Deno.stat(dir)).mode! & 0o777, 0o700);
  for (const f of ["ca.key", "admin.key", "node.key", "cluster.kek"]) {
    assertEquals((await Deno.stat(`${dir}/${f}`)).mode! & 0o777, 0o600, f);
  }
  assertEquals((await Deno.stat(`${dir}/ca.crt`)).mode! & 0o777, 0o644);
  // A key that is a symlink: the file it points to is what others could read.
  await Deno.rename(`${dir}/node.key`, `${t.dir}/node.key`);
  await Deno.symlink(`${t.dir}/node.key`, `${dir}/node.key`);
  await Deno.chmod(`${t.dir}/node.key`, 0o644);
  assertEquals(await tightenPrivateModes(dir), ["node.key was 0644"]);
  assertEquals((await Deno.stat(`${t.dir}/node.key`)).mode! & 0o777, 0o600);
});

Deno.test("renewDue() with nothing due writes nothing (ca-bundle.crt is rewritten only when it changes)", async () => {
  await using t = await tempDir();
  const pki = await openPki(`${t.dir}/pki`, NODE);
  const before = (await Deno.stat(`${t.dir}/pki/ca-bundle.crt`)).ino;
  assertEquals(await pki.renewDue(), []);
  assertEquals((await Deno.stat(`${t.dir}/pki/ca-bundle.crt`)).ino, before, "not replaced");
});

Deno.test("openPki() loads an existing directory without reissuing", async () => {
  await using t = await tempDir();
  const first = await openPki(t.dir, NODE);
  const again = await openPki(t.dir, NODE);
  assert(first.caCertificates[0].equal(again.caCertificates[0]));
  assertEquals(again.credentials("node"), first.credentials("node"));
  assertEquals((await again.list()).length, 2);
});

Deno.test("openPki() reissues node.crt when a new listen address appears", async () => {
  await using t = await tempDir();
  const first = await openPki(t.dir, NODE);
  const more = await openPki(t.dir, { ...NODE, ipAddresses: ["127.0.0.1", "10.1.2.3"] });
  const id = readIdentity(more.local("node")!.cert);
  assert(typeof id !== "string" && id.ipAddresses.includes("10.1.2.3"));
  assertEquals(more.credentials("node").key, first.credentials("node").key, "same key kept");
});

Deno.test("issue(), list() and revoke() persist; a revoked certificate fails verify()", async () => {
  await using t = await tempDir();
  const pki = await openPki(t.dir, NODE);
  const { cert, certPem, keyPem } = await pki.issue({
    role: "nbd-client",
    name: "vm-7",
    volumes: ["db"],
  }, { ttlSeconds: 3600 });
  assert(keyPem?.startsWith("-----BEGIN PRIVATE KEY-----"));
  assert((await pki.verify(certPem, { requiredEku: "clientAuth" })).ok);
  const rec = await pki.revoke(cert.serialNumber.toUpperCase(), "lost laptop");
  assertEquals(await pki.revoke(cert.serialNumber), rec, "idempotent");
  const r = await pki.verify(certPem, { requiredEku: "clientAuth" });
  assert(!r.ok && r.code === "revoked", JSON.stringify(r));
  const reopened = await openPki(t.dir, NODE);
  const listed = (await reopened.list()).find((x) => x.serial === cert.serialNumber)!;
  assertEquals([listed.role, listed.name, listed.volumes, listed.revokedAt], [
    "nbd-client",
    "vm-7",
    ["db"],
    rec.revokedAt,
  ]);
  assert(!(await reopened.verify(certPem, { requiredEku: "clientAuth" })).ok);
  await assertRejects(() => pki.revoke("xyz"), InvalidArgumentError, "invalid serial");
});

Deno.test("renewDue() renews at two thirds of the lifetime and after a revocation", async () => {
  await using t = await tempDir();
  const clock = fakeClock(new Date("2026-03-01T00:00:00Z"));
  const pki = await openPki(t.dir, { ...NODE, clock: clock.now, leafTtlSeconds: 30 * DAY });
  const before = pki.local("node")!.cert;
  clock.advance(19 * DAY);
  assertEquals(await pki.renewDue(), []);
  clock.advance(2 * DAY);
  assertEquals(await pki.renewDue(), ["node", "admin"]);
  const after = pki.local("node")!.cert;
  assert(after.notAfter > before.notAfter);
  assertEquals(after.publicKey.rawData, before.publicKey.rawData, "same key by default");
  await pki.revoke(pki.local("admin")!.cert.serialNumber);
  assertEquals(await pki.renewDue(), ["admin"]);
  const newKey = await pki.renew("node", { newKey: true });
  assert(newKey.publicKey.rawData.byteLength > 0);
  assert(!equalBytes(newKey.publicKey.rawData, after.publicKey.rawData), "new key on request");
});

function equalBytes(a: ArrayBuffer, b: ArrayBuffer): boolean {
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

Deno.test("rotateCa(): old-root leaves stay valid until the overlap ends", async () => {
  await using t = await tempDir();
  const clock = fakeClock(new Date());
  const pki = await openPki(t.dir, { ...NODE, clock: clock.now });
  const oldRoot = pki.caCertificates[0];
  const client = await pki.issue({ role: "nbd-client", name: "c", volumes: ["*"] });
  await pki.rotateCa({ overlapSeconds: 7 * DAY });
  const newRoot = pki.caCertificates[0];
  assert(!newRoot.equal(oldRoot));
  assertEquals(pki.trustedRoots().length, 2);
  const bundle = await Deno.readTextFile(`${t.dir}/${FILES.bundle}`);
  assertEquals(bundle.match(/BEGIN CERTIFICATE/g)!.length, 2);
  // Node and admin were reissued under the new root.
  const nodeCert = pki.local("node")!.cert;
  assert(await nodeCert.verify({ publicKey: newRoot, signatureOnly: true }));
  // The client certificate from the old root still verifies during the overlap.
  assert((await pki.verify(client.certPem, { requiredEku: "clientAuth" })).ok);
  clock.advance(6 * DAY);
  const reopened = await openPki(t.dir, { ...NODE, clock: clock.now });
  assert((await reopened.verify(client.certPem, { requiredEku: "clientAuth" })).ok);
  clock.advance(2 * DAY);
  const r = await reopened.verify(client.certPem, { requiredEku: "clientAuth" });
  assert(!r.ok && r.code === "untrusted", JSON.stringify(r));
  assertEquals(reopened.trustedRoots().length, 1);
  await reopened.writeBundle();
  const after = await Deno.readTextFile(`${t.dir}/${FILES.bundle}`);
  assertEquals(after.match(/BEGIN CERTIFICATE/g)!.length, 1);
});

Deno.test("rotateCa(): a short overlap (a key leaked) ends the trust of every older root too", async () => {
  await using t = await tempDir();
  const clock = fakeClock(new Date());
  const pki = await openPki(t.dir, { ...NODE, clock: clock.now });
  const first = await pki.issue({ role: "nbd-client", name: "c", volumes: ["*"] });
  await pki.rotateCa({ overlapSeconds: 7 * DAY });
  const second = await pki.issue({ role: "nbd-client", name: "d", volumes: ["*"] });
  await pki.rotateCa({ overlapSeconds: 60 });
  assertEquals(pki.trustedRoots().length, 3);
  // The node's own certificates (made again at each rotation) are recorded as its own.
  const recs = await pki.list();
  const own = recs.filter((r) => r.role === "node" || r.role === "admin");
  assertEquals(own.length, 6, "node.crt and admin.crt at start and at both rotations");
  assert(own.every((r) => r.own === NODE.nodeName), JSON.stringify(own));
  assert(recs.filter((r) => r.role === "nbd-client").every((r) => r.own === undefined));
  clock.advance(120_000);
  const reopened = await openPki(t.dir, { ...NODE, clock: clock.now });
  assertEquals(reopened.trustedRoots().length, 1, "neither older root is trusted after 60 s");
  for (const c of [first, second]) {
    const r = await reopened.verify(c.certPem, { requiredEku: "clientAuth" });
    assert(!r.ok && r.code === "untrusted", JSON.stringify(r));
  }
});

/** Two members' PKI directories (one/, two/) that start with the same CA, as after a join. */
async function twoMembers(dir: string, now: () => Date) {
  const one = await openPki(`${dir}/one`, { ...NODE, clock: now });
  await Deno.mkdir(`${dir}/two`);
  for (const f of [FILES.caCert, FILES.caKey]) {
    await Deno.copyFile(`${dir}/one/${f}`, `${dir}/two/${f}`);
  }
  const two = await openPki(`${dir}/two`, { ...NODE, nodeName: "node-2", clock: now });
  return { one, two };
}

/** What the cluster's CA record would hold after `dir`'s rotation: its CA and retired roots. */
async function clusterRecord(dir: string) {
  const material = {
    certPem: await Deno.readTextFile(`${dir}/${FILES.caCert}`),
    keyPem: await Deno.readTextFile(`${dir}/${FILES.caKey}`),
  };
  return { material, retired: JSON.parse(await Deno.readTextFile(`${dir}/${FILES.retired}`)) };
}

Deno.test("adoptCa(): the cluster's date of a retired root wins over a later one this member kept", async () => {
  await using t = await tempDir();
  const clock = fakeClock(new Date());
  const { one, two } = await twoMembers(t.dir, clock.now);
  await one.rotateCa({ overlapSeconds: 7 * DAY });
  const { material, retired } = await clusterRecord(`${t.dir}/one`);
  await two.adoptCa(material, retired);
  assertEquals(two.trustedRoots().length, 2);
  // The cluster shortened the overlap (a later emergency rotation capped it): two follows.
  const shortened = retired.map((r: { trustUntil: string }) => ({
    ...r,
    trustUntil: new Date(clock.now().getTime() + 60_000).toISOString(),
  }));
  await two.adoptCa(material, shortened);
  clock.advance(120_000);
  await two.adoptCa(material, shortened);
  assertEquals(two.trustedRoots().length, 1);
});

Deno.test("adoptCa(): takes another member's CA and retired roots, reissues, then is a no-op", async () => {
  await using t = await tempDir();
  const clock = fakeClock(new Date());
  // Member 1 rotates; member 2 (its own dir, same first CA) adopts what member 1 holds.
  const { one, two } = await twoMembers(t.dir, clock.now);
  const client = await one.issue({ role: "nbd-client", name: "c", volumes: ["*"] });
  const oldRoot = one.caCertificates[0];
  await one.rotateCa({ overlapSeconds: 7 * DAY });
  const { material, retired } = await clusterRecord(`${t.dir}/one`);

  assert(await two.adoptCa(material, retired), "the first adoption changes things");
  const newRoot = two.caCertificates[0];
  assert(newRoot.equal(one.caCertificates[0]) && !newRoot.equal(oldRoot));
  assertEquals(two.trustedRoots().length, 2);
  for (const which of ["node", "admin"] as const) {
    const cert = two.local(which)!.cert;
    assert(await cert.verify({ publicKey: newRoot, signatureOnly: true }), `${which} reissued`);
  }
  assert((await two.verify(client.certPem, { requiredEku: "clientAuth" })).ok, "overlap");
  assertEquals(await two.adoptCa(material, retired), false, "adopting again changes nothing");

  // A retired root past its trustUntil is dropped, not merged back in.
  clock.advance(8 * DAY);
  await two.adoptCa(material, retired);
  assertEquals(two.trustedRoots().length, 1);
  assertEquals(JSON.parse(await Deno.readTextFile(`${t.dir}/two/${FILES.retired}`)), []);
  const r = await two.verify(client.certPem, { requiredEku: "clientAuth" });
  assert(!r.ok && r.code === "untrusted", JSON.stringify(r));
});

Deno.test("an interrupted rotation is finished on the next open", async () => {
  await using t = await tempDir();
  const pki = await openPki(t.dir, NODE);
  const oldRoot = pki.caCertificates[0];
  // Simulate a crash after ca.key.next and ca.crt.next were written but before the renames.
  const other = await openPki(`${t.dir}/other`, NODE);
  await Deno.copyFile(`${t.dir}/other/ca.key`, `${t.dir}/ca.key.next`);
  await Deno.copyFile(`${t.dir}/other/ca.crt`, `${t.dir}/ca.crt.next`);
  const reopened = await openPki(t.dir, NODE);
  assert(reopened.caCertificates[0].equal(other.caCertificates[0]));
  assert(!reopened.caCertificates[0].equal(oldRoot));
  const r = await reopened.verify(reopened.credentials("node").cert, { requiredEku: "serverAuth" });
  assert(r.ok, "node.crt was reissued under the recovered CA");
});

Deno.test("key errors name the file, never the key material", async () => {
  await using t = await tempDir();
  await openPki(t.dir, NODE);
  const keyPem = await Deno.readTextFile(`${t.dir}/admin.key`);
  const body = keyPem.split("\n")[1];
  const broken = keyPem.replace(body, body.slice(0, 20) + "AAAA" + body.slice(24));
  await Deno.writeTextFile(`${t.dir}/admin.key`, broken);
  const err = await assertRejects(() => openPki(t.dir, NODE), InvalidArgumentError, "admin.key");
  assert(!err.message.includes(body.slice(0, 16)), err.message);
  assertEquals(err.cause, undefined);
  await Deno.writeTextFile(
    `${t.dir}/admin.key`,
    "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n",
  );
  await assertRejects(() => openPki(t.dir, NODE), InvalidArgumentError, "openssl pkcs8 -topk8");
});

Deno.test("openPki() refuses a ca.key that does not belong to ca.crt", async () => {
  await using t = await tempDir();
  await openPki(`${t.dir}/a`, NODE);
  await openPki(`${t.dir}/b`, NODE);
  await Deno.copyFile(`${t.dir}/b/ca.key`, `${t.dir}/a/ca.key`);
  await assertRejects(() => openPki(`${t.dir}/a`, NODE), FailedPreconditionError, "does not match");
});

Deno.test("openPki() checks its options before touching the disk", async () => {
  await using t = await tempDir();
  await assertRejects(
    () => openPki(`${t.dir}/x`, { nodeName: "bad name" }),
    InvalidArgumentError,
    "invalid certificate name",
  );
  await assertRejects(() => Deno.stat(`${t.dir}/x`), Deno.errors.NotFound);
  void x509;
});

Deno.test("resolveSerial() takes a serial or an unambiguous prefix of 8 digits or more, refuses unknown, ambiguous and short ones", () => {
  const known = ["b4e05f05aa01ee", "b4e05f05ff11", "0c1d2e3f4a", "00ab12cd34ef"];
  assertEquals(resolveSerial("B4:E0:5F:05:AA:01:EE", known), "b4e05f05aa01ee", "full, colons");
  assertEquals(resolveSerial("b4e05f05a", known), "b4e05f05aa01ee", "unambiguous prefix");
  assertEquals(resolveSerial("0c1d2e3f4", known), "0c1d2e3f4a", "odd-length prefix");
  assertEquals(resolveSerial("00ab12cd34", known), "ab12cd34ef", "leading zero bytes ignored");
  assertThrows(
    () => resolveSerial("b4e05f05", known),
    InvalidArgumentError,
    "b4e05f05aa01ee, b4e05f05ff11",
  );
  assertThrows(() => resolveSerial("b4e0", known), InvalidArgumentError, "too short");
  assertThrows(() => resolveSerial("00b4e05f", known), InvalidArgumentError, "too short");
  const err = assertThrows(() => resolveSerial("deadbeef", known), BallastError);
  assertEquals(err.code, "NOT_FOUND");
  assert(err.message.includes('"deadbeef"'), err.message);
  assertEquals(resolveSerial("deadbeef", known, { allowUnknown: true }), "deadbeef");
  assertThrows(() => resolveSerial("xyz", known), InvalidArgumentError, "invalid serial");
});
