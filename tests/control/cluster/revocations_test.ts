/**
 * Cluster-wide revocations and issued index (control/cluster/revocations.ts): the pure
 * merge, then two members with real PKI directories under one CA sharing a real state
 * store (the embedded one; the etcd run with real TLS endpoints is
 * tests/e2e/cluster_revoke_test.ts).
 */

import { assert, assertEquals, assertRejects } from "../../_assert.ts";
import { FILES, type IssuedRecord, openPki, type Pki } from "../../../ca/mod.ts";
import { InvalidArgumentError, UnavailableError } from "../../../mod/errors.ts";
import {
  CA_ISSUED_PREFIX,
  CA_REVOKED_PREFIX,
  ClusterCertificates,
  joinCertificateLists,
  parseRecords,
} from "../../../control/cluster/revocations.ts";
import { silentLogger } from "../../../control/common/mod.ts";
import { SqliteStateStore } from "../../../control/store/sqlite/mod.ts";
import type { KeyValue, StateStore } from "../../../control/store/mod.ts";

function issued(serial: string, notBefore: string, revokedAt?: string): IssuedRecord {
  return {
    serial,
    subject: `CN=${serial}, O=Ballast`,
    role: "nbd-client",
    name: serial,
    volumes: ["db"],
    notBefore,
    notAfter: "2099-01-01T00:00:00.000Z",
    issuerSerial: "01",
    ...(revokedAt ? { revokedAt } : {}),
  };
}

function kv(key: string, value: string): KeyValue {
  return { key, value, createRevision: 1, modRevision: 1, version: 1, lease: 0 };
}

Deno.test("joinCertificateLists() unions etcd's index with unpublished local records, revokedAt from either", () => {
  const T1 = "2026-01-01T00:00:00.000Z";
  const T2 = "2026-01-02T00:00:00.000Z";
  const shared = [issued("bb", T2), issued("aa", T1)];
  const local = [issued("aa", T1, "2026-01-05T00:00:00.000Z"), issued("cc", T2)];
  const revoked = [{ serial: "bb", revokedAt: "2026-01-03T00:00:00.000Z" }];
  assertEquals(
    joinCertificateLists(shared, local, revoked).map((r) => [r.serial, r.revokedAt]),
    [
      ["aa", "2026-01-05T00:00:00.000Z"], // revoked here, not yet in etcd
      ["bb", "2026-01-03T00:00:00.000Z"], // revoked through another member
      ["cc", undefined], // issued here while etcd was down
    ],
  );
  assertEquals(joinCertificateLists([], [], []), []);
});

Deno.test("parseRecords() keeps readable records and names the keys it cannot read", () => {
  const P = CA_REVOKED_PREFIX;
  const { records, bad } = parseRecords<{ serial: string; revokedAt: string }>(
    [
      kv(P + "0a", JSON.stringify({ serial: "0A", revokedAt: "2026-01-01T00:00:00Z" })),
      kv(P + "0b", "not json"),
      kv(P + "0c", JSON.stringify({ serial: "0d", revokedAt: "2026-01-01T00:00:00Z" })),
      kv(P + "0e", JSON.stringify({ serial: "0e" })),
      kv(P + "0f", "null"),
    ],
    P,
    ["revokedAt"],
  );
  assertEquals(records, [{ serial: "0a", revokedAt: "2026-01-01T00:00:00Z" }]);
  assertEquals(bad, [P + "0b", P + "0c", P + "0e", P + "0f"]);
});

/** Two members under one CA (B's pki/ starts with A's ca.crt and ca.key, as after a join). */
async function twoMembers(root: string): Promise<[Pki, Pki]> {
  const a = await openPki(`${root}/a`, { nodeName: "node-a" });
  await Deno.mkdir(`${root}/b`, { mode: 0o700 });
  for (const f of [FILES.caCert, FILES.caKey]) {
    await Deno.copyFile(`${root}/a/${f}`, `${root}/b/${f}`);
  }
  const b = await openPki(`${root}/b`, { nodeName: "node-b" });
  return [a, b];
}

/** A store whose transactions can be made to fail as if etcd were unreachable. */
function flaky(inner: StateStore): StateStore & { down: boolean } {
  const s: StateStore & { down: boolean } = {
    down: false,
    description: inner.description,
    get: (key) => inner.get(key),
    list: (prefix) => inner.list(prefix),
    put: (key, value, o) => inner.put(key, value, o),
    delete: (key, o) => inner.delete(key, o),
    txn: (c, ok, fail) =>
      s.down
        ? Promise.reject(new UnavailableError("etcd unreachable (test)"))
        : inner.txn(c, ok, fail),
    watch: (prefix, o) => inner.watch(prefix, o),
    grantLease: (ttl) => inner.grantLease(ttl),
    keepAlive: (lease) => inner.keepAlive(lease),
    revokeLease: (lease) => inner.revokeLease(lease),
    compact: (rev) => inner.compact(rev),
    currentRevision: () => inner.currentRevision(),
    close: () => inner.close(),
  };
  return s;
}

async function until(what: string, cond: () => Promise<boolean> | boolean, ms = 5_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function refused(pki: Pki, certPem: string): Promise<boolean> {
  const r = await pki.verify(certPem, { requiredEku: "clientAuth" });
  return !r.ok && r.code === "revoked";
}

Deno.test("ClusterCertificates: issued on A, revoked through B, refused by A; list shows it on both", async () => {
  const root = await Deno.makeTempDir({ prefix: "ballast-revoke-test-" });
  const store = SqliteStateStore.open(`${root}/state.db`);
  const log = silentLogger();
  const [pa, pb] = await twoMembers(root);
  const a = new ClusterCertificates({ store, pki: pa, nodeName: "node-a", log });
  const b = new ClusterCertificates({ store, pki: pb, nodeName: "node-b", log });
  try {
    await Promise.all([a.start(), b.start()]);
    // Certificates issued before start() (node and admin of each) are published too.
    await until(
      "4 local certificates published",
      async () => (await store.list(CA_ISSUED_PREFIX)).kvs.length === 4,
    );

    const vm = await pa.issue({ role: "nbd-client", name: "vm1", volumes: ["db"] });
    const serial = (await pa.list()).at(-1)!.serial;
    assert(await store.get(CA_ISSUED_PREFIX + serial), "recorded in the store at issue");
    assert((await pa.verify(vm.certPem, { requiredEku: "clientAuth" })).ok);

    const r1 = await b.revoke(serial.toUpperCase(), "laptop lost");
    assertEquals([r1.alreadyRevoked, r1.sharePending, r1.record.reason], [
      false,
      false,
      "laptop lost",
    ]);
    assert(await refused(pb, vm.certPem), "B refuses at once");
    await until("A refuses the certificate revoked through B", () => refused(pa, vm.certPem));
    const line = (await Deno.readTextFile(`${root}/a/${FILES.revoked}`)).trim();
    assertEquals(JSON.parse(line).serial, serial, "A's local cache holds it (works without etcd)");

    const r2 = await a.revoke(serial);
    assertEquals([r2.alreadyRevoked, r2.record.revokedAt], [true, r1.record.revokedAt]);
    await assertRejects(() => a.revoke("xyz"), InvalidArgumentError, "invalid serial");

    for (const m of [a, b]) {
      const items = await m.list();
      assertEquals(items.length, 5);
      const it = items.find((i) => i.serial === serial)!;
      assertEquals([it.name, it.revokedAt], ["vm1", r1.record.revokedAt]);
    }
  } finally {
    await a.stop();
    await b.stop();
    await store.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("ClusterCertificates: while the store refuses writes, revoke holds locally and is shared once it answers", async () => {
  const root = await Deno.makeTempDir({ prefix: "ballast-revoke-test-" });
  const inner = SqliteStateStore.open(`${root}/state.db`);
  const store = flaky(inner);
  const log = silentLogger();
  const [pa, pb] = await twoMembers(root);
  // Revoked on A before it shared anything (a single node that becomes a cluster's first).
  const old = await pa.issue({ role: "admin", name: "old-admin" });
  const oldSerial = (await pa.list()).at(-1)!.serial;
  await pa.revoke(oldSerial, "before the cluster");
  const a = new ClusterCertificates({ store, pki: pa, nodeName: "node-a", log });
  const b = new ClusterCertificates({ store, pki: pb, nodeName: "node-b", log });
  try {
    await Promise.all([a.start(), b.start()]);
    await until("B learns A's earlier revocation", () => refused(pb, old.certPem));
    assert(await inner.get(CA_REVOKED_PREFIX + oldSerial));

    store.down = true;
    const vm = await pb.issue({ role: "nbd-client", name: "vm2", volumes: ["*"] });
    const serial = (await pb.list()).at(-1)!.serial;
    assertEquals(await inner.get(CA_ISSUED_PREFIX + serial), undefined);
    const r = await b.revoke(serial);
    assertEquals([r.alreadyRevoked, r.sharePending], [false, true]);
    assert(await refused(pb, vm.certPem), "B refuses at once, etcd or not");
    assert(!(await refused(pa, vm.certPem)), "A cannot know yet");

    store.down = false;
    // B retries with a backoff that doubles up to 5 s while the store refuses: the next
    // try may come that long after it answers again (more on a loaded machine).
    await until("A refuses once B published", () => refused(pa, vm.certPem), 30_000);
    await until(
      "the issued record is published",
      async () => (await inner.get(CA_ISSUED_PREFIX + serial)) !== undefined,
    );
    const listed = (await a.list()).find((i) => i.serial === serial);
    assertEquals(listed?.revokedAt, r.record.revokedAt);
  } finally {
    await a.stop();
    await b.stop();
    await inner.close();
    await Deno.remove(root, { recursive: true });
  }
});
