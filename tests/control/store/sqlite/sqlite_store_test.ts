import { FakeClock } from "../../../../control/common/mod.ts";
import { SqliteStateStore } from "../../../../control/store/sqlite/sqlite_store.ts";
import type { WatchMessage } from "../../../../control/store/mod.ts";
import {
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
} from "../../../../mod/errors.ts";
import { assert, assertEquals, assertRejects, assertThrows } from "../../../_assert.ts";
import { defineStateStoreContract } from "../state_store_contract.ts";

async function tempDb(): Promise<{ path: string; remove: () => Promise<void> }> {
  const dir = await Deno.makeTempDir({ prefix: "ballast-sqlite-" });
  return { path: `${dir}/state.db`, remove: () => Deno.remove(dir, { recursive: true }) };
}

defineStateStoreContract("SqliteStateStore", async () => {
  const { path, remove } = await tempDb();
  const clock = new FakeClock();
  const store = SqliteStateStore.open(path, { clock });
  return {
    store,
    clock,
    expire: async () => void await store.expireLeases(),
    cleanup: async () => {
      await store.close();
      await remove();
    },
  };
});

Deno.test("SqliteStateStore: data, revision and leases survive close and reopen", async () => {
  const { path, remove } = await tempDb();
  const clock = new FakeClock();
  try {
    let store = SqliteStateStore.open(path, { clock });
    const lease = await store.grantLease(30);
    await store.put("/a", "1");
    await store.put("/b", "2", { lease });
    const rev = (await store.put("/a", "3")).revision;
    await store.close();

    store = SqliteStateStore.open(path, { clock });
    assertEquals(await store.currentRevision(), rev);
    assertEquals((await store.get("/a"))?.version, 2);
    assertEquals((await store.list("/")).kvs.map((kv) => kv.value), ["3", "2"]);
    assertEquals(await store.keepAlive(lease), 30, "the lease persisted");
    assertEquals((await store.put("/c", "4")).revision, rev + 1);
    clock.advance(30_001);
    assertEquals(await store.expireLeases(), 1);
    assertEquals(await store.get("/b"), undefined);
    await store.close();
  } finally {
    await remove();
  }
});

Deno.test("SqliteStateStore: an acknowledged write survives kill -9 of the writing process", async () => {
  const { path, remove } = await tempDb();
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    const storeUrl = new URL("../../../../control/store/sqlite/mod.ts", import.meta.url).href;
    // The repository's import map: the store's package imports resolve through it (npm:).
    const config = new URL("../../../../deno.json", import.meta.url).pathname;
    await Deno.writeTextFile(
      script,
      `import { SqliteStateStore } from ${JSON.stringify(storeUrl)};
const store = SqliteStateStore.open(Deno.args[0]);
const lease = await store.grantLease(3600);
for (let i = 0; i < 50; i++) await store.put("/k/" + String(i).padStart(2, "0"), "v" + i);
const t = await store.txn([], [{ type: "put", key: "/leased", value: "x", lease }, { type: "delete", key: "/k/00" }]);
await Deno.stdout.write(new TextEncoder().encode("committed " + t.revision + " " + lease + "\\n"));
setInterval(() => store.put("/busy", String(Date.now())), 1);
`,
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-lock", "--config", config, script, path],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    let out = "";
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    while (!out.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
    child.kill("SIGKILL");
    const status = await child.status;
    const stderr = await new Response(child.stderr).text();
    reader.releaseLock();
    await child.stdout.cancel().catch(() => {});
    const match = /^committed (\d+) (\d+)/.exec(out);
    assert(match, `child did not report a commit: ${out}${stderr}`);
    assertEquals(status.signal, "SIGKILL");

    const store = SqliteStateStore.open(path);
    try {
      const acked = Number(match[1]);
      assert((await store.currentRevision()) >= acked, "revision went back");
      const keys = (await store.list("/k/")).kvs.map((kv) => kv.key);
      assertEquals(keys.length, 49);
      assertEquals(keys[0], "/k/01");
      const leased = await store.get("/leased");
      assertEquals([leased?.value, leased?.lease, leased?.modRevision], [
        "x",
        Number(match[2]),
        acked,
      ]);
      assertEquals(await store.keepAlive(Number(match[2])), 3600);
    } finally {
      await store.close();
    }
  } finally {
    await Deno.remove(script);
    await remove();
  }
});

Deno.test("SqliteStateStore: history stays bounded by historyLimit and older watches get compacted", async () => {
  const { path, remove } = await tempDb();
  try {
    const store = SqliteStateStore.open(path, { historyLimit: 50 });
    const first = (await store.put("/h/0", "0")).revision;
    let last = first;
    for (let i = 1; i < 500; i++) {
      const t = await store.txn([], [
        { type: "put", key: `/h/${i % 7}`, value: String(i) },
        { type: "put", key: `/g/${i % 5}`, value: String(i) },
      ]);
      last = t.revision;
    }
    assertEquals(await store.compactRevision(), last - 49);
    const it = store.watch("/h/", { startRevision: first })[Symbol.asyncIterator]();
    assertEquals((await it.next()).value, { kind: "compacted", compactRevision: last - 49 });
    const replay = store.watch("/h/", { startRevision: last - 49 })[Symbol.asyncIterator]();
    let count = 0;
    let revision = 0;
    while (revision < last) {
      const m = (await replay.next()).value as WatchMessage;
      assert(m.kind === "events" && m.events.length === 1);
      revision = m.revision;
      count++;
    }
    assertEquals(count, 50, "exactly the kept revisions replay");
    await replay.return?.();
    await store.close();

    const { DatabaseSync } = await import("node:sqlite");
    const db = new DatabaseSync(path);
    const rows = db.prepare("SELECT count(*) AS n, min(revision) AS low FROM history").get();
    db.close();
    assertEquals({ ...rows }, { n: 100, low: last - 49 }, "history table holds 50 revisions");
  } finally {
    await remove();
  }
});

Deno.test("SqliteStateStore: a slow watcher falls back to history and misses nothing", async () => {
  const store = SqliteStateStore.open(":memory:");
  try {
    const w = store.watch("/s/");
    const it = w[Symbol.asyncIterator]();
    const first = (await store.put("/s/x", "0")).revision;
    assertEquals((await it.next()).value?.kind, "events", "the watch is live");
    for (let i = 1; i <= 3000; i++) await store.put(`/s/${i % 3}`, String(i));
    const revisions: number[] = [];
    while (revisions.length < 3000) {
      const m = (await it.next()).value as WatchMessage;
      assert(m.kind === "events" && m.events.length === 1);
      revisions.push(m.revision);
    }
    assertEquals(revisions, Array.from({ length: 3000 }, (_, i) => first + 1 + i));
    w.cancel();
  } finally {
    await store.close();
  }
});

Deno.test("SqliteStateStore: close() ends running watches", async () => {
  const store = SqliteStateStore.open(":memory:");
  const w = store.watch("/");
  const pending = w[Symbol.asyncIterator]().next();
  await store.close();
  assertEquals((await pending).done, true);
  await store.close(); // idempotent
});

Deno.test("SqliteStateStore: a second process-level open of the same file is refused", async () => {
  const { path, remove } = await tempDb();
  const store = SqliteStateStore.open(path);
  try {
    await store.put("/x", "1");
    // A second connection in this process stands in for a second process: same lock.
    assertThrows(
      () => SqliteStateStore.open(path, { busyTimeoutMs: 50 }),
      UnavailableError,
      "locked",
    );
  } finally {
    await store.close();
    await remove();
  }
});

Deno.test("SqliteStateStore: bad arguments reject with InvalidArgumentError", async () => {
  const store = SqliteStateStore.open(":memory:");
  try {
    await assertRejects(() => store.put("", "v"), InvalidArgumentError, "key");
    await assertRejects(() => store.put("/k", 1 as unknown as string), InvalidArgumentError);
    await assertRejects(() => store.grantLease(0), InvalidArgumentError, "ttlSeconds");
    await assertRejects(() => store.grantLease(1.5), InvalidArgumentError);
    await assertRejects(() => store.keepAlive(12345), NotFoundError);
    await assertRejects(() => store.revokeLease(12345), NotFoundError);
    await assertRejects(
      async () => store.compact((await store.currentRevision()) + 1),
      InvalidArgumentError,
    );
    await assertRejects(
      () =>
        store.txn([], [{ type: "put", key: "/a/b", value: "1" }, {
          type: "delete",
          key: "/a/",
          prefix: true,
        }]),
      InvalidArgumentError,
    );
    await assertRejects(
      () => store.txn([{ key: "/a", target: "value", op: "<" as "==", value: "x" }], []),
      InvalidArgumentError,
    );
    const it = store.watch("/", { startRevision: -1 })[Symbol.asyncIterator]();
    await assertRejects(() => it.next(), InvalidArgumentError);
    assertThrows(
      () => SqliteStateStore.open(":memory:", { historyLimit: 0 }),
      InvalidArgumentError,
    );
  } finally {
    await store.close();
  }
});

Deno.test("SqliteStateStore: a lease past its TTL is dead before the sweep runs", async () => {
  const clock = new FakeClock();
  const store = SqliteStateStore.open(":memory:", { clock, sweepIntervalMs: 0 });
  try {
    const lease = await store.grantLease(5);
    await store.put("/k", "v", { lease });
    clock.advance(4_999);
    assertEquals(await store.keepAlive(lease), 5);
    clock.advance(5_000);
    await assertRejects(() => store.keepAlive(lease), NotFoundError);
    await assertRejects(() => store.put("/j", "v", { lease }), NotFoundError);
    assertEquals((await store.get("/k"))?.value, "v", "not swept yet");
    assertEquals(await store.expireLeases(), 1);
    assertEquals(await store.get("/k"), undefined);
  } finally {
    await store.close();
  }
});

Deno.test("SqliteStateStore: the background sweep expires leases on the injected clock", async () => {
  const clock = new FakeClock();
  const store = SqliteStateStore.open(":memory:", { clock, sweepIntervalMs: 5 });
  try {
    const lease = await store.grantLease(1);
    await store.put("/t", "v", { lease });
    const w = store.watch("/");
    const it = w[Symbol.asyncIterator]();
    clock.advance(1000);
    // The sweep timer is unref'd; a ref'd timer keeps this test's event loop alive.
    const keepLoopAlive = setInterval(() => {}, 1000);
    const m = (await it.next().finally(() => clearInterval(keepLoopAlive))).value as WatchMessage;
    assert(m.kind === "events");
    assertEquals(m.events.map((e) => [e.type, e.kv.key]), [["delete", "/t"]]);
    w.cancel();
  } finally {
    await store.close();
  }
});

Deno.test("SqliteStateStore: a database from a newer schema version is refused", async () => {
  const { path, remove } = await tempDb();
  try {
    await SqliteStateStore.open(path).close();
    const { DatabaseSync } = await import("node:sqlite");
    const db = new DatabaseSync(path);
    db.exec("UPDATE meta SET value = 999 WHERE name = 'schema_version'");
    db.close();
    assertThrows(() => SqliteStateStore.open(path), FailedPreconditionError, "999");
  } finally {
    await remove();
  }
});

Deno.test("SqliteStateStore: state.db and its WAL are 0600, and older 0644 files are fixed at open", async () => {
  const { path, remove } = await tempDb();
  const modes = async () => {
    const out: Record<string, number> = {};
    for (const f of [path, `${path}-wal`, `${path}-shm`]) {
      const st = await Deno.stat(f).catch(() => undefined);
      if (st) out[f.slice(path.length) || "db"] = st.mode! & 0o777;
    }
    return out;
  };
  try {
    let store = SqliteStateStore.open(path);
    await store.put("/a", "1");
    const fresh = await modes();
    assert("-wal" in fresh, `a WAL file while open: ${JSON.stringify(fresh)}`);
    for (const [f, m] of Object.entries(fresh)) assertEquals(m.toString(8), "600", f);
    await store.put("/b", "2");
    // A database left by an older version (0644), WAL still there as after kill -9.
    for (const f of [path, `${path}-wal`]) await Deno.chmod(f, 0o644);
    await store.close();
    await Deno.writeFile(`${path}-wal`, new Uint8Array(0), { create: true, mode: 0o644 });
    await Deno.chmod(`${path}-wal`, 0o644);
    await Deno.chmod(path, 0o644);
    store = SqliteStateStore.open(path);
    await store.put("/c", "3");
    for (const [f, m] of Object.entries(await modes())) assertEquals(m.toString(8), "600", f);
    await store.close();
  } finally {
    await remove();
  }
});
