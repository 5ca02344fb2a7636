/**
 * The StateStore contract: the behaviour every implementation (embedded sqlite,
 * etcd) must show. Call defineStateStoreContract() from an implementation's test
 * file; it registers one Deno.test per property.
 *
 * Implementation-neutral: each test works under its own random key prefix, looks at
 * revisions only relative to ones it observed, and handles lease expiry either with
 * a fake clock plus expire() or, when no clock is given, with real time (TTL 2 s).
 * Timeouts below only stop a broken implementation from hanging the run.
 * @module
 */

import type { StateStore } from "../../../control/store/state_store.ts";
import { InvalidArgumentError, NotFoundError, UnavailableError } from "../../../mod/errors.ts";
import { assert, assertEquals, assertRejects } from "../../_assert.ts";
import {
  type ContractTest,
  defineWatchAndLeaseTests,
  type OpenedStore,
} from "./_state_store_contract_watch.ts";

export type { OpenedStore };

/** Registers every contract test for the store `open` creates (a fresh store per test). */
export function defineStateStoreContract(
  name: string,
  open: () => Promise<OpenedStore>,
): void {
  const test: ContractTest = (title, fn) =>
    Deno.test(`${name}: ${title}`, async () => {
      const opened = await open();
      try {
        await fn({ ...opened, p: `/contract/${crypto.randomUUID()}/` });
      } finally {
        await opened.cleanup();
      }
    });

  test("a put creates version 1 with createRevision = modRevision = its revision; updates bump version and modRevision", async ({ store, p }) => {
    const before = await store.currentRevision();
    assertEquals(await store.get(`${p}k`), undefined);
    const r1 = (await store.put(`${p}k`, "v1")).revision;
    assertEquals(r1, before + 1);
    assertEquals(await store.get(`${p}k`), {
      key: `${p}k`,
      value: "v1",
      createRevision: r1,
      modRevision: r1,
      version: 1,
      lease: 0,
    });
    const r2 = (await store.put(`${p}k`, "v2")).revision;
    assertEquals(r2, r1 + 1);
    assertEquals(await store.get(`${p}k`), {
      key: `${p}k`,
      value: "v2",
      createRevision: r1,
      modRevision: r2,
      version: 2,
      lease: 0,
    });
    assertEquals(await store.currentRevision(), r2);
    assertEquals(await store.delete(`${p}k`), { revision: r2 + 1, deleted: 1 });
    assertEquals(await store.get(`${p}k`), undefined);
    const r4 = (await store.put(`${p}k`, "again")).revision;
    const kv = await store.get(`${p}k`);
    assertEquals(
      [kv?.createRevision, kv?.modRevision, kv?.version],
      [r4, r4, 1],
      "re-created key starts over",
    );
  });

  test("reads, deleting a missing key and a txn that writes nothing keep the revision", async ({ store, p }) => {
    const r = (await store.put(`${p}a`, "1")).revision;
    await store.get(`${p}a`);
    assertEquals((await store.list(p)).revision, r);
    assertEquals(await store.delete(`${p}missing`), { revision: r, deleted: 0 });
    assertEquals(await store.delete(`${p}nothing/`, { prefix: true }), { revision: r, deleted: 0 });
    const t = await store.txn([], [{ type: "get", key: `${p}a` }, {
      type: "delete",
      key: `${p}missing`,
    }]);
    assertEquals([t.succeeded, t.revision], [true, r]);
    assertEquals(await store.currentRevision(), r);
  });

  test("list returns exactly the keys with the prefix, sorted, and not those of a sibling prefix", async ({ store, p }) => {
    for (const k of ["a/bc", "a/b/2", "a/b", "a/b/1", "a/b/10", "a", "b"]) {
      await store.put(`${p}${k}`, k);
    }
    const keys = async (prefix: string) =>
      (await store.list(`${p}${prefix}`)).kvs.map((kv) => kv.key.slice(p.length));
    assertEquals(await keys("a/b/"), ["a/b/1", "a/b/10", "a/b/2"]);
    assertEquals(await keys("a/b"), ["a/b", "a/b/1", "a/b/10", "a/b/2", "a/bc"]);
    assertEquals(await keys("a/x"), []);
    const list = await store.list(`${p}a/b/`);
    assertEquals(list.revision, await store.currentRevision());
    assertEquals(list.kvs[0].value, "a/b/1");
  });

  test("keys sort in UTF-8 byte order, as in etcd", async ({ store, p }) => {
    // U+FF5E is 0xEF.. in UTF-8 and sorts before U+1F600 (0xF0..), though not in UTF-16.
    const keys = ["\u{1F600}", "\uFF5E", "z", "\u00E9", "Z", "~"];
    for (const k of keys) await store.put(`${p}${k}`, k);
    const listed = (await store.list(p)).kvs.map((kv) => kv.value);
    assertEquals(listed, ["Z", "z", "~", "\u00E9", "\uFF5E", "\u{1F600}"]);
    assertEquals((await store.list(`${p}\uFF5E`)).kvs.map((kv) => kv.value), ["\uFF5E"]);
  });

  test("put-if-absent with a version == 0 compare succeeds once, then runs the failure branch without bumping the revision", async ({ store, p }) => {
    const k = `${p}lock`;
    const absent = [{ key: k, target: "version" as const, op: "==" as const, value: 0 }];
    const first = await store.txn(absent, [{ type: "put", key: k, value: "me" }], [{
      type: "get",
      key: k,
    }]);
    assertEquals(first.succeeded, true);
    assertEquals(first.responses, [{ type: "put", revision: first.revision }]);
    const second = await store.txn(absent, [{ type: "put", key: k, value: "you" }], [{
      type: "get",
      key: k,
    }]);
    assertEquals(second.succeeded, false);
    assertEquals(second.revision, first.revision);
    const got = second.responses[0];
    assert(
      got.type === "get" && got.kvs.length === 1 && got.kvs[0].value === "me",
      "failure branch read the winner",
    );
    assertEquals((await store.get(k))?.value, "me");
  });

  test("CAS on modRevision: of two concurrent writers expecting the same modRevision exactly one wins", async ({ store, p }) => {
    const k = `${p}cas`;
    const rev = (await store.put(k, "0")).revision;
    const cas = (value: string) =>
      store.txn([{ key: k, target: "modRevision", op: "==", value: rev }], [{
        type: "put",
        key: k,
        value,
      }]);
    const results = await Promise.all([cas("a"), cas("b")]);
    assertEquals(results.map((r) => r.succeeded).sort(), [false, true]);
    const winner = results[0].succeeded ? "a" : "b";
    const kv = await store.get(k);
    assertEquals([kv?.value, kv?.version, kv?.modRevision], [winner, 2, rev + 1]);
    assertEquals(await store.currentRevision(), rev + 1);
  });

  test("value, lease and ordering compares hold as in etcd; a value compare on a missing key fails", async ({ store, p }) => {
    const k = `${p}v`;
    const rev = (await store.put(k, "x")).revision;
    const holds = async (c: Parameters<StateStore["txn"]>[0][number]) =>
      (await store.txn([c], [])).succeeded;
    assertEquals(await holds({ key: k, target: "value", op: "==", value: "x" }), true);
    assertEquals(await holds({ key: k, target: "value", op: "==", value: "y" }), false);
    assertEquals(await holds({ key: k, target: "value", op: "!=", value: "y" }), true);
    assertEquals(await holds({ key: `${p}none`, target: "value", op: "!=", value: "y" }), false);
    assertEquals(await holds({ key: `${p}none`, target: "value", op: "==", value: "" }), false);
    assertEquals(await holds({ key: k, target: "lease", op: "==", value: 0 }), true);
    assertEquals(await holds({ key: k, target: "createRevision", op: "<", value: rev + 1 }), true);
    assertEquals(await holds({ key: k, target: "modRevision", op: ">", value: rev }), false);
    assertEquals(await holds({ key: k, target: "version", op: "!=", value: 1 }), false);
    assertEquals(
      await holds({ key: `${p}none`, target: "createRevision", op: "==", value: 0 }),
      true,
    );
    const both = await store.txn([
      { key: k, target: "value", op: "==", value: "x" },
      { key: k, target: "version", op: "==", value: 7 },
    ], [{ type: "put", key: k, value: "no" }]);
    assertEquals(both.succeeded, false, "all compares must hold");
  });

  test("delete with prefix removes exactly the keys with that prefix in one revision", async ({ store, p }) => {
    for (const k of ["d/1", "d/2", "d/3/x", "dd", "e"]) await store.put(`${p}${k}`, k);
    const before = await store.currentRevision();
    assertEquals(await store.delete(`${p}d/`, { prefix: true }), {
      revision: before + 1,
      deleted: 3,
    });
    assertEquals((await store.list(p)).kvs.map((kv) => kv.value), ["dd", "e"]);
  });

  test("a multi-op txn is one revision shared by all its writes", async ({ store, p }) => {
    await store.put(`${p}old`, "o");
    const before = await store.currentRevision();
    const t = await store.txn([], [
      { type: "put", key: `${p}a`, value: "1" },
      { type: "put", key: `${p}b`, value: "2" },
      { type: "delete", key: `${p}old` },
    ]);
    assertEquals(t.revision, before + 1);
    assertEquals(t.responses, [
      { type: "put", revision: before + 1 },
      { type: "put", revision: before + 1 },
      { type: "delete", deleted: 1 },
    ]);
    const kvs = (await store.list(p)).kvs;
    assertEquals(kvs.map((kv) => [kv.key.slice(p.length), kv.modRevision]), [["a", before + 1], [
      "b",
      before + 1,
    ]]);
  });

  test("get ops inside a txn return sorted kvs and see earlier writes of the same txn", async ({ store, p }) => {
    await store.put(`${p}g/2`, "two");
    await store.put(`${p}g/1`, "one");
    const t = await store.txn([], [
      { type: "get", key: `${p}g/`, prefix: true },
      { type: "put", key: `${p}g/1`, value: "uno" },
      { type: "get", key: `${p}g/1` },
      { type: "get", key: `${p}g/none` },
    ]);
    const values = t.responses.map((
      r,
    ) => (r.type === "get" ? r.kvs.map((kv) => kv.value) : r.type));
    assertEquals(values, [["one", "two"], "put", ["uno"], []]);
  });

  test("a txn branch that puts one key twice is rejected with InvalidArgumentError", async ({ store, p }) => {
    const before = await store.currentRevision();
    await assertRejects(
      () =>
        store.txn([], [{ type: "put", key: `${p}x`, value: "1" }, {
          type: "put",
          key: `${p}x`,
          value: "2",
        }]),
      InvalidArgumentError,
    );
    assertEquals(await store.currentRevision(), before);
  });

  test("put with an unknown lease rejects with NotFoundError and writes nothing", async ({ store, p }) => {
    const lease = await store.grantLease(60);
    await store.revokeLease(lease);
    await assertRejects(() => store.put(`${p}k`, "v", { lease }), NotFoundError);
    assertEquals(await store.get(`${p}k`), undefined);
  });

  defineWatchAndLeaseTests(test);

  test("a closed store rejects every call with UnavailableError", async ({ store, p }) => {
    const lease = await store.grantLease(60);
    await store.close();
    const calls: [string, () => Promise<unknown>][] = [
      ["get", () => store.get(`${p}k`)],
      ["list", () => store.list(p)],
      ["put", () => store.put(`${p}k`, "v")],
      ["delete", () => store.delete(`${p}k`)],
      ["txn", () => store.txn([], [{ type: "put", key: `${p}k`, value: "v" }])],
      ["grantLease", () => store.grantLease(60)],
      ["keepAlive", () => store.keepAlive(lease)],
      ["revokeLease", () => store.revokeLease(lease)],
      ["compact", () => store.compact(1)],
      ["currentRevision", () => store.currentRevision()],
      ["watch", () => store.watch(p)[Symbol.asyncIterator]().next()],
    ];
    for (const [what, call] of calls) await assertRejects(call, UnavailableError, undefined, what);
  });
}
