/**
 * The pure parts of cluster joining (control/cluster/join_token.ts, _crypto.ts) and
 * the first-node logic of control/cluster/bootstrap.ts against a real state store (the embedded
 * one; the etcd runs are in tests/e2e/join_test.ts).
 */

import { assert, assertEquals, assertRejects, assertThrows } from "../../_assert.ts";
import {
  BallastError,
  ConflictError,
  FailedPreconditionError,
  InvalidArgumentError,
} from "../../../mod/errors.ts";
import {
  checkJoinToken,
  formatJoinToken,
  type JoinToken,
  type JoinTokenRecord,
  newJoinToken,
  parseJoinToken,
  sha256Hex,
} from "../../../control/cluster/join_token.ts";
import { rotateClusterCa } from "../../../control/cluster/rotation.ts";
import {
  decodeKek,
  newKek,
  openCaKey,
  parseCaRecord,
  sealCaKey,
  toBase64,
} from "../../../control/cluster/_crypto.ts";
import { CLUSTER_CA_KEY, KEK_FILE, readClusterCa } from "../../../control/cluster/_ca_record.ts";
import { NEEDS_JOIN_MESSAGE, prepareClusterPki } from "../../../control/cluster/bootstrap.ts";
import { resolveConfig } from "../../../control/serve/mod.ts";
import { silentLogger } from "../../../control/common/mod.ts";
import { SqliteStateStore } from "../../../control/store/sqlite/mod.ts";

const PIN = "ab".repeat(32);
const OTHER_PIN = "cd".repeat(32);

Deno.test("formatJoinToken() and parseJoinToken() round-trip a new token", () => {
  const t = newJoinToken(PIN);
  assert(/^[a-z0-9]{6}$/.test(t.id), t.id);
  assert(/^[0-9a-f]{32}$/.test(t.secret));
  const text = formatJoinToken(t);
  assert(text.startsWith("ballast1."), text);
  assertEquals(parseJoinToken(text), t);
  assertEquals(parseJoinToken(`  ${text}\n`), t, "surrounding blanks are ignored");
});

Deno.test("newJoinToken() draws id and secret from the random source", () => {
  const fixed = (b: Uint8Array) => b.fill(1);
  const t = newJoinToken(PIN, fixed);
  assertEquals(t, { id: "bbbbbb", secret: "01".repeat(16), caPin: PIN });
  assertThrows(() => newJoinToken("nope"), InvalidArgumentError, "64 hex");
});

Deno.test("parseJoinToken() rejects malformed tokens, naming the source but never the secret", () => {
  const good = formatJoinToken({ id: "abc123", secret: "f".repeat(32), caPin: PIN });
  const table: Array<[string, string]> = [
    ["", "not a Ballast join token"],
    ["abcdef.0123456789abcdef", "not a Ballast join token"], // kubeadm shape
    [good.replace("ballast1", "ballast2"), "not a Ballast join token"],
    [good.replace("abc123", "ABC123"), "id"],
    [good.replace("abc123", "abc12"), "id"],
    [good.replace("f".repeat(32), "f".repeat(31)), "secret"],
    [good.replace("f".repeat(32), "g".repeat(32)), "secret"],
    [good.slice(0, -1), "CA pin"],
    [good + ".extra", "not a Ballast join token"],
  ];
  for (const [text, why] of table) {
    const err = assertThrows(
      () => parseJoinToken(text, "BALLAST_JOIN_TOKEN"),
      InvalidArgumentError,
    );
    assert(err.message.includes("invalid BALLAST_JOIN_TOKEN"), err.message);
    assert(err.message.includes(why), `${JSON.stringify(text)}: ${err.message}`);
    assert(!err.message.includes("f".repeat(31)), "the secret is not echoed");
  }
});

Deno.test("checkJoinToken() refuses forged, foreign, used and expired tokens with stable reasons", async () => {
  const token: JoinToken = { id: "abc123", secret: "0".repeat(32), caPin: PIN };
  const hash = await sha256Hex(token.secret);
  const now = new Date("2026-11-01T12:00:00Z");
  const rec = (over: Partial<JoinTokenRecord> = {}): JoinTokenRecord => ({
    id: token.id,
    secretSha256: hash,
    createdAt: "2026-11-01T11:00:00Z",
    expiresAt: "2026-11-01T13:00:00Z",
    ...over,
  });
  const reasonOf = (r: ReturnType<typeof checkJoinToken>) =>
    r.ok ? "ok" : `${r.error.code}/${r.error.details?.reason}`;
  const wrongHash = await sha256Hex("1".repeat(32));
  const table: Array<[string, JoinTokenRecord | undefined, JoinToken, string, Date, string]> = [
    ["valid", rec(), token, PIN, now, "ok"],
    ["unknown id", undefined, token, PIN, now, "UNAUTHENTICATED/JOIN_TOKEN_INVALID"],
    [
      "wrong secret",
      rec({ secretSha256: wrongHash }),
      token,
      PIN,
      now,
      "UNAUTHENTICATED/JOIN_TOKEN_INVALID",
    ],
    [
      "wrong secret wins over used",
      rec({ secretSha256: wrongHash, usedAt: "x" }),
      token,
      PIN,
      now,
      "UNAUTHENTICATED/JOIN_TOKEN_INVALID",
    ],
    ["another CA", rec(), token, OTHER_PIN, now, "PERMISSION_DENIED/JOIN_TOKEN_CA_MISMATCH"],
    [
      "used",
      rec({ usedAt: "2026-11-01T11:30:00Z", usedBy: "n2" }),
      token,
      PIN,
      now,
      "UNAUTHENTICATED/JOIN_TOKEN_USED",
    ],
    [
      "expired",
      rec(),
      token,
      PIN,
      new Date("2026-11-01T13:00:00Z"),
      "UNAUTHENTICATED/JOIN_TOKEN_EXPIRED",
    ],
  ];
  for (const [name, record, t, clusterPin, at, want] of table) {
    assertEquals(reasonOf(checkJoinToken(record, t, hash, clusterPin, at)), want, name);
  }
  const used = checkJoinToken(
    rec({ usedAt: "2026-11-01T11:30:00Z", usedBy: "n2" }),
    token,
    hash,
    PIN,
    now,
  );
  assert(!used.ok && used.error.message.includes("by node n2"), "names who used it");
  assertEquals(used.ok ? 0 : used.error.status, 401);
});

Deno.test("sealCaKey() encrypts with AES-256-GCM; only the right KEK and pin open it", async () => {
  const pem =
    "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
  const kek = newKek();
  const sealed = await sealCaKey(kek, pem, PIN);
  assertEquals(sealed.alg, "AES-256-GCM");
  const stored = JSON.stringify(sealed);
  assert(!stored.includes("PRIVATE KEY") && !stored.includes("MIGHAgEA"), "no clear key");
  assertEquals(await openCaKey(kek, sealed, PIN), pem);
  const again = await sealCaKey(kek, pem, PIN);
  assert(again.iv !== sealed.iv && again.ciphertext !== sealed.ciphertext, "fresh IV each time");

  await assertRejects(
    () => openCaKey(newKek(), sealed, PIN),
    FailedPreconditionError,
    "cluster.kek",
  );
  await assertRejects(() => openCaKey(kek, sealed, OTHER_PIN), FailedPreconditionError);
  const flipped = atob(sealed.ciphertext).split("");
  flipped[0] = String.fromCharCode(flipped[0].charCodeAt(0) ^ 1);
  await assertRejects(
    () => openCaKey(kek, { ...sealed, ciphertext: btoa(flipped.join("")) }, PIN),
    FailedPreconditionError,
  );
});

Deno.test("decodeKek() accepts exactly 256 bits of base64", () => {
  const kek = newKek();
  assertEquals(decodeKek(toBase64(kek) + "\n", "f"), kek);
  assertThrows(() => decodeKek(toBase64(new Uint8Array(16)), "f"), InvalidArgumentError, "256-bit");
  assertThrows(() => decodeKek("***", "f"), InvalidArgumentError, "base64");
});

Deno.test("resolveConfig() takes --join or BALLAST_JOIN_TOKEN only in cluster mode with TLS", () => {
  const token = formatJoinToken(newJoinToken(PIN));
  const base = { "data-dir": "/tmp/x", "node-name": "n1" };
  const etcd = { ...base, etcd: "http://127.0.0.1:2379" };
  assertEquals(resolveConfig({ ...etcd, join: token }, {}).joinToken, token);
  assertEquals(resolveConfig(etcd, { BALLAST_JOIN_TOKEN: token }).joinToken, token);
  assertEquals(resolveConfig(etcd, {}).joinToken, undefined);
  assertThrows(() => resolveConfig({ ...base, join: token }, {}), InvalidArgumentError, "--etcd");
  assertThrows(
    () => resolveConfig({ ...etcd, join: token, tls: "off" }, {}),
    InvalidArgumentError,
    "TLS on",
  );
  assertThrows(
    () => resolveConfig(etcd, { BALLAST_JOIN_TOKEN: "x" }),
    InvalidArgumentError,
    "BALLAST_JOIN_TOKEN",
  );
});

async function withStore(fn: (store: SqliteStateStore, root: string) => Promise<void>) {
  const root = await Deno.makeTempDir({ prefix: "ballast-cluster-ca-" });
  const store = SqliteStateStore.open(`${root}/state.db`);
  try {
    await fn(store, root);
  } finally {
    await store.close();
    await Deno.remove(root, { recursive: true });
  }
}

function config(dataDir: string, name: string, join?: string) {
  return resolveConfig({
    "data-dir": dataDir,
    "node-name": name,
    etcd: "http://127.0.0.1:2379", // only the shape matters: the store is passed in
    ...(join ? { join } : {}),
  }, {});
}

Deno.test("prepareClusterPki(): the first node stores its CA sealed; a restart loads it; a stranger must join", async () => {
  await withStore(async (store, root) => {
    const log = silentLogger();
    const first = await prepareClusterPki(config(`${root}/a`, "a"), store, log);
    assert(first, "internal CA");
    const kv = await store.get(CLUSTER_CA_KEY);
    assert(kv && !kv.value.includes("PRIVATE KEY"), "no clear key in the store");
    const rec = await readClusterCa(store);
    assertEquals(rec?.pin, first.pin);
    assertEquals((await Deno.stat(`${root}/a/pki/${KEK_FILE}`)).mode! & 0o777, 0o600);
    assertEquals((await Deno.stat(`${root}/a/pki/ca.key`)).mode! & 0o777, 0o600);
    const caPem = await Deno.readTextFile(`${root}/a/pki/ca.crt`);
    assertEquals(caPem.trim(), rec!.certPem.trim());

    const again = await prepareClusterPki(config(`${root}/a`, "a"), store, log);
    assertEquals(again?.pin, first.pin, "restart keeps the cluster CA");
    assertEquals(again?.kek, first.kek);

    await Deno.remove(`${root}/a/pki/ca.key`);
    await prepareClusterPki(config(`${root}/a`, "a"), store, log);
    assert((await Deno.readTextFile(`${root}/a/pki/ca.key`)).includes("PRIVATE KEY"), "restored");

    const err = await assertRejects(
      () => prepareClusterPki(config(`${root}/b`, "b"), store, log),
      FailedPreconditionError,
    );
    assertEquals(err.message, NEEDS_JOIN_MESSAGE);
  });
});

Deno.test("prepareClusterPki(): of two first nodes racing, exactly one creates the CA", async () => {
  await withStore(async (store, root) => {
    const log = silentLogger();
    const results = await Promise.allSettled(
      ["a", "b", "c"].map((n) => prepareClusterPki(config(`${root}/${n}`, n), store, log)),
    );
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
    assertEquals(won.length, 1, JSON.stringify(results.map((r) => r.status)));
    assertEquals(lost.length, 2);
    for (const l of lost) {
      assert(l.reason instanceof BallastError, String(l.reason));
      assert(l.reason.message.includes("ballast cluster join-token"), l.reason.message);
    }
    const kekFiles = ["a", "b", "c"].filter((n) => {
      try {
        Deno.statSync(`${root}/${n}/pki/${KEK_FILE}`);
        return true;
      } catch {
        return false;
      }
    });
    assertEquals(kekFiles.length, 1, "losers removed the KEK they made");
  });
});

Deno.test("prepareClusterPki(): --join on a cluster without a CA says so", async () => {
  await withStore(async (store, root) => {
    const token = formatJoinToken(newJoinToken(PIN));
    await assertRejects(
      () => prepareClusterPki(config(`${root}/j`, "j", token), store, silentLogger()),
      FailedPreconditionError,
      "no CA in etcd yet",
    );
  });
});

Deno.test("rotateClusterCa(): a new sealed root with the old one retired; of two racing, one wins", async () => {
  await withStore(async (store, root) => {
    const cluster = await prepareClusterPki(config(`${root}/a`, "a"), store, silentLogger());
    assert(cluster);
    const before = (await readClusterCa(store))!;
    const rotated = await rotateClusterCa(store, cluster, { overlapSeconds: 3600, nodeName: "a" });
    const stored = (await readClusterCa(store))!;
    assertEquals(stored.pin, rotated.pin);
    assert(stored.pin !== before.pin, "a new root");
    assert(!(await store.get(CLUSTER_CA_KEY))!.value.includes("PRIVATE KEY"), "key sealed");
    assert((await openCaKey(cluster.kek, stored.key, stored.pin)).includes("PRIVATE KEY"));
    assertEquals(stored.retired?.map((r) => r.certPem), [before.certPem]);
    const until = Date.parse(stored.retired![0].trustUntil) - Date.now();
    assert(until > 3500_000 && until <= 3600_000, `trustUntil in ${until} ms`);

    // Both read the same record: exactly one compare-and-swap applies.
    const results = await Promise.allSettled([
      rotateClusterCa(store, cluster, { overlapSeconds: 60, nodeName: "a" }),
      rotateClusterCa(store, cluster, { overlapSeconds: 60, nodeName: "b" }),
    ]);
    assertEquals(results.filter((r) => r.status === "fulfilled").length, 1);
    const lost = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    assert(lost?.reason instanceof ConflictError, String(lost?.reason));
    const last = (await readClusterCa(store))!;
    assertEquals(last.retired?.length, 2, "both earlier roots still in their overlap");

    // A record that is not a list of retired CAs is refused, naming the field.
    const bad = JSON.stringify({ ...last, retired: [{ certPem: 1 }] });
    assertThrows(() => parseCaRecord(bad, CLUSTER_CA_KEY), FailedPreconditionError, "retired");
  });
});
