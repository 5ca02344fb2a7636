/**
 * MembershipKeeper (control/volumes/_membership.ts) over the real embedded store: the record
 * it writes, the lease guard of that write, and what it shows when a change cannot be made.
 * The node list and the lease view are given (NodeRegistry and LeaseWatch are tested apart).
 */

import { assert, assertEquals } from "../../_assert.ts";
import { silentLogger } from "../../../control/common/mod.ts";
import { newRecord } from "../../../control/group/record.ts";
import { aliveKey, cordonKey } from "../../../control/nodes/mod.ts";
import type { StateStore } from "../../../control/store/mod.ts";
import { MembershipKeeper, needsNodeList } from "../../../control/volumes/_membership.ts";
import { parseRecord, VOLUME_PREFIX, type VolumeRecord } from "../../../control/volumes/_record.ts";
import type { NodeInfo } from "../../../mod/types.ts";
import { withSqlite } from "../_fixtures.ts";

const GiB = 1024 ** 3;
const KEY = VOLUME_PREFIX + "v";

function node(name: string, state: NodeInfo["state"] = "ready"): NodeInfo {
  return { name, state, labels: {}, freeBytes: 10 * GiB } as NodeInfo;
}

async function seed(store: StateStore, alive: string[], replicas = 2): Promise<VolumeRecord> {
  for (const n of alive) {
    const lease = await store.grantLease(60);
    await store.put(aliveKey(n), "{}", { lease });
  }
  const rec: VolumeRecord = {
    name: "v",
    uuid: "00000000-0000-4000-8000-000000000001",
    sizeBytes: GiB,
    replicas,
    labels: {},
    description: "",
    createdAt: "2026-12-05T00:00:00.000Z",
    updatedAt: "2026-12-05T00:00:00.000Z",
    master: "n1",
    epoch: 1,
    state: "ready",
    group: newRecord("n1", ["n2", "n3"], { replicas }),
  };
  await store.put(KEY, JSON.stringify(rec));
  return rec;
}

async function current(store: StateStore): Promise<VolumeRecord> {
  return parseRecord((await store.get(KEY))!);
}

function keeper(store: StateStore, nodes: NodeInfo[], down: string[]) {
  let now = 1_000_000;
  const k = new MembershipKeeper({
    store,
    logger: silentLogger(),
    nodeName: "n1",
    listNodes: () => Promise.resolve(nodes),
    replaceAfterMs: 60_000,
    leaseDown: () => down,
    resyncing: () => [],
    clock: () => now,
  });
  return { k, advance: (ms: number) => now += ms };
}

Deno.test("MembershipKeeper replaces a member down for --replace-after: one CAS, the new member out of sync with a note", async () => {
  await withSqlite(async (store) => {
    const rec = await seed(store, ["n1", "n3", "n4"]);
    const nodes = [node("n1"), node("n2", "down"), node("n3"), node("n4")];
    const { k, advance } = keeper(store, nodes, ["n2"]);
    await k.check(rec);
    assertEquals((await current(store)).group?.members, ["n1", "n2", "n3"], "not yet");
    advance(60_000);
    await k.check(rec);
    const after = await current(store);
    assertEquals(after.group?.members, ["n1", "n3", "n4"]);
    assertEquals(after.group?.inSync, ["n1", "n3"]);
    assertEquals(after.group?.epoch, 1);
    assertEquals(after.group?.phase, "degraded");
    assert(
      after.outOfSync?.n4?.reason.startsWith("new member (replacing n2, absent too long)"),
      JSON.stringify(after.outOfSync),
    );
    assertEquals(k.blocked("v"), undefined);
  });
});

Deno.test("MembershipKeeper: no eligible node changes nothing and says why; a new member without a lease is not added", async () => {
  await withSqlite(async (store) => {
    const rec = await seed(store, ["n1", "n3"]);
    const nodes = [node("n1"), node("n2", "down"), node("n3"), node("n4", "cordoned")];
    const { k, advance } = keeper(store, nodes, ["n2"]);
    await k.check(rec);
    advance(61_000);
    await k.check(rec);
    assertEquals((await current(store)).group?.members, ["n1", "n2", "n3"]);
    const b = k.blocked("v");
    assert(b?.reason.startsWith("cannot replace n2 (absent for 61 s, more than 60 s)"), b?.reason);
    assert(b?.reason.includes("n4 (cordoned)"), b?.reason);
    // n4 looks ready in a stale listing but holds no liveness key: the guarded CAS fails.
    const stale = keeper(store, [...nodes.slice(0, 3), node("n4")], ["n2"]);
    await stale.k.check(rec);
    stale.advance(61_000);
    await stale.k.check(rec);
    assertEquals((await current(store)).group?.members, ["n1", "n2", "n3"]);
  });
});

Deno.test("MembershipKeeper: a node cordoned after the listing it planned on is not added (the cordon key is guarded)", async () => {
  await withSqlite(async (store) => {
    const rec = await seed(store, ["n1", "n3", "n4"]);
    // The listing shows n4 ready; it was cordoned since.
    await store.put(cordonKey("n4"), JSON.stringify({ reason: "x", since: "now" }));
    const nodes = [node("n1"), node("n2", "down"), node("n3"), node("n4")];
    const { k, advance } = keeper(store, nodes, ["n2"]);
    await k.check(rec);
    advance(61_000);
    await k.check(rec);
    assertEquals((await current(store)).group?.members, ["n1", "n2", "n3"]);
  });
});

Deno.test("MembershipKeeper follows a lowered count (the out-of-sync replica goes) and ignores a record it is not master of", async () => {
  await withSqlite(async (store) => {
    const rec = await seed(store, ["n1", "n2", "n3"], 1);
    const group = { ...rec.group!, inSync: ["n1", "n3"], phase: "degraded" as const };
    const lowered = { ...rec, group };
    await store.put(KEY, JSON.stringify(lowered));
    const { k } = keeper(store, [node("n1"), node("n2"), node("n3")], []);
    await k.check({ ...lowered, group: { ...group, master: "n3" }, master: "n3" });
    assertEquals((await current(store)).group?.members, ["n1", "n2", "n3"], "not master");
    await k.check(lowered);
    const after = await current(store);
    assertEquals(after.group?.members, ["n1", "n3"]);
    assertEquals(after.replicas, 1);
  });
});

Deno.test("needsNodeList: a member known absent lists nothing until it is due; a wrong count or a lagging member lists", () => {
  const base = {
    replicas: ["n2", "n3"],
    desired: 2,
    lagging: [] as string[],
    knownAbsent: [] as string[],
    absentSince: undefined as Map<string, number> | undefined,
    now: 100_000,
    replaceAfterMs: 60_000,
  };
  assertEquals(needsNodeList(base), false, "all present");
  const down = { ...base, lagging: ["n2"], knownAbsent: ["n2"] };
  assertEquals(needsNodeList(down), false, "first seen absent now");
  assertEquals(needsNodeList({ ...down, absentSince: new Map([["n2", 50_000]]) }), false);
  assertEquals(needsNodeList({ ...down, absentSince: new Map([["n2", 40_000]]) }), true, "due");
  assertEquals(needsNodeList({ ...down, replaceAfterMs: 0 }), true, "replace at once");
  assertEquals(needsNodeList({ ...base, lagging: ["n3"] }), true, "unreachable? ask the list");
  assertEquals(needsNodeList({ ...base, desired: 3 }), true, "a replica to add");
  assertEquals(needsNodeList({ ...base, desired: 1 }), true, "a replica to remove");
});

Deno.test("MembershipKeeper lists the nodes for a member down only once its replacement is due", async () => {
  await withSqlite(async (store) => {
    const rec = await seed(store, ["n1", "n3", "n4"]);
    const down = {
      ...rec,
      group: { ...rec.group!, inSync: ["n1", "n3"], down: ["n2"], phase: "degraded" as const },
    };
    await store.put(KEY, JSON.stringify(down));
    let listings = 0;
    let now = 1_000_000;
    const k = new MembershipKeeper({
      store,
      logger: silentLogger(),
      nodeName: "n1",
      listNodes: () => {
        listings++;
        return Promise.resolve([node("n1"), node("n2", "down"), node("n3"), node("n4")]);
      },
      replaceAfterMs: 60_000,
      leaseDown: () => ["n2"],
      resyncing: () => [],
      clock: () => now,
    });
    await k.check(down);
    now += 30_000;
    await k.check(down);
    assertEquals(listings, 0);
    now += 30_000;
    await k.check(down);
    assertEquals(listings, 1);
    assertEquals((await current(store)).group?.members, ["n1", "n3", "n4"]);
  });
});

Deno.test("MembershipKeeper: the replacements of several groups spread over the nodes (the listing counts the copies placed since)", async () => {
  await withSqlite(async (store) => {
    const v = await seed(store, ["n1", "n3", "n4", "n5"]);
    const w = { ...v, name: "w", uuid: "00000000-0000-4000-8000-000000000002" };
    await store.put(VOLUME_PREFIX + "w", JSON.stringify(w));
    const copies = (n: NodeInfo, c: number) => ({ ...n, copies: c });
    const nodes = [
      copies(node("n1"), 2),
      node("n2", "down"),
      copies(node("n3"), 2),
      copies(node("n4"), 0),
      copies(node("n5"), 0),
    ];
    const { k, advance } = keeper(store, nodes, ["n2"]);
    await k.check(v);
    await k.check(w);
    advance(60_000);
    await k.check(v);
    await k.check(w);
    const placed = [
      (await current(store)).group?.members,
      parseRecord((await store.get(VOLUME_PREFIX + "w"))!).group?.members,
    ];
    assertEquals(placed, [["n1", "n3", "n4"], ["n1", "n3", "n5"]]);
  });
});
