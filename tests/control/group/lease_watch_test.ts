/**
 * LeaseWatch (control/group/lease_watch.ts) over the embedded store: which nodes'
 * liveness leases are up, and the grace period that keeps a lease expired by an etcd
 * outage (and renewed right after) from being reported as a dead node.
 */

import { assertEquals } from "../../_assert.ts";
import { LeaseWatch } from "../../../control/group/lease_watch.ts";
import { silentLogger } from "../../../control/common/mod.ts";
import { aliveKey, NODE_PREFIX } from "../../../control/nodes/mod.ts";
import type { SqliteStateStore } from "../../../control/store/sqlite/mod.ts";
import { eventually, withSqlite } from "../_fixtures.ts";

async function register(store: SqliteStateStore, node: string): Promise<number> {
  await store.put(NODE_PREFIX + node, JSON.stringify({ name: node }));
  const lease = await store.grantLease(60);
  await store.put(aliveKey(node), "{}", { lease });
  return lease;
}

/**
 * LeaseWatch's grace runs on real timers. Only n2 re-registering within it is timed, and
 * that takes a few store writes: the grace leaves seconds of room for a loaded machine.
 */
const GRACE_MS = 3_000;

Deno.test("LeaseWatch: a lease renewed within the grace is never reported; one that stays gone is", async () => {
  await withSqlite(async (store) => {
    await register(store, "n1");
    const lease2 = await register(store, "n2");
    const lease3 = await register(store, "n3");
    const watch = new LeaseWatch({ store, logger: silentLogger(), graceMs: GRACE_MS });
    const seen: string[] = [];
    watch.subscribe((node, up) => seen.push(`${node} ${up ? "up" : "down"}`));
    await watch.start();
    try {
      assertEquals(watch.down(), []);
      // An etcd outage expired n2's and n3's leases; n2 registers again right after.
      const revokedAt = Date.now();
      await store.revokeLease(lease2);
      await store.revokeLease(lease3);
      const lease2b = await register(store, "n2");
      const backAfterMs = Date.now() - revokedAt;
      // n3 stays gone: it is reported once its grace runs out. n2's grace started before
      // n3's, so by then a grace that n2's lease did not cancel would have reported it too.
      await eventually("n3 reported down", () => seen.length > 0, GRACE_MS + 30_000, 10);
      assertEquals(
        [seen, watch.down()],
        [["n3 down"], ["n3"]],
        `a lease back in time (after ${backAfterMs} ms of a ${GRACE_MS} ms grace) is never reported`,
      );

      // n3 comes back; then n2 really dies (its grace, cancelled once, runs again).
      await register(store, "n3");
      await store.revokeLease(lease2b);
      await eventually("n2 reported down", () => seen.length > 2, GRACE_MS + 30_000, 10);
      assertEquals([seen, watch.down()], [["n3 down", "n3 up", "n2 down"], ["n2"]]);
      await register(store, "n2");
      await eventually("n2 reported up", () => seen.length > 3, 30_000, 10);
      assertEquals([seen, watch.down()], [["n3 down", "n3 up", "n2 down", "n2 up"], []]);
    } finally {
      await watch.stop();
    }
  });
});

Deno.test("LeaseWatch: a node already without a lease at start is down at once", async () => {
  await withSqlite(async (store) => {
    await register(store, "n1");
    await store.put(NODE_PREFIX + "n3", JSON.stringify({ name: "n3" }));
    const watch = new LeaseWatch({ store, logger: silentLogger(), graceMs: 60_000 });
    await watch.start();
    try {
      assertEquals(watch.down(), ["n3"]);
    } finally {
      await watch.stop();
    }
  });
});

/**
 * A watch from n1's point of view, with a grace far longer than any wait in these tests (a
 * report within one skipped the grace), and the reports it makes, in order.
 */
function watchAsN1(store: SqliteStateStore): { watch: LeaseWatch; seen: string[] } {
  const watch = new LeaseWatch({ store, logger: silentLogger(), graceMs: 120_000, self: "n1" });
  const seen: string[] = [];
  watch.subscribe((node, up) => seen.push(`${node} ${up ? "up" : "down"}`));
  return { watch, seen };
}

Deno.test("LeaseWatch with self: a peer's lease gone while this node's own holds is reported without the grace; in an outage that took this node's lease too, the grace applies", async () => {
  await withSqlite(async (store) => {
    const lease1 = await register(store, "n1");
    const lease2 = await register(store, "n2");
    await register(store, "n3");
    const { watch, seen } = watchAsN1(store);
    await watch.start();
    try {
      // n2 dies alone: n1's own lease held, so this is not an outage.
      await store.revokeLease(lease2);
      await eventually("n2 reported down", () => seen.length > 0, 60_000, 10);
      assertEquals([seen, watch.down()], [["n2 down"], ["n2"]]);

      // An outage: n1's own lease goes too, and n3's; both come back right after.
      const lease2b = await register(store, "n2"); // n2 is back first
      await eventually("n2 reported up", () => seen.length > 1, 30_000, 10);
      const revokes = [store.revokeLease(lease1), store.revokeLease(lease2b)];
      await Promise.all(revokes);
      await register(store, "n1");
      await register(store, "n2");
      // n1's lease was gone within the grace: n2's loss waits out the grace and is never
      // reported, since it came back. Give the settle time several times over.
      await new Promise((r) => setTimeout(r, 2_000));
      assertEquals(seen, ["n2 down", "n2 up"]);
    } finally {
      await watch.stop();
    }
  });
});

Deno.test("LeaseWatch with self: a node that starts before registering its own lease reports a peer's death without the grace", async () => {
  await withSqlite(async (store) => {
    // n1 has a record from an earlier run but no liveness key yet: the watch starts first.
    await store.put(NODE_PREFIX + "n1", JSON.stringify({ name: "n1" }));
    const lease2 = await register(store, "n2");
    const { watch, seen } = watchAsN1(store);
    await watch.start();
    try {
      await register(store, "n1");
      await eventually("n1 registered", () => seen.includes("n1 up"), 30_000, 10);
      // Not being registered yet was no lapse of n1's lease: n2's death is no outage.
      await store.revokeLease(lease2);
      await eventually("n2 reported down", () => seen.includes("n2 down"), 60_000, 10);
      assertEquals(watch.down(), ["n2"]);
    } finally {
      await watch.stop();
    }
  });
});

Deno.test("LeaseWatch: each node's peer address follows its record, without a store read", async () => {
  await withSqlite(async (store) => {
    await store.put(NODE_PREFIX + "n1", JSON.stringify({ name: "n1", peerAddress: "h:1" }));
    await store.put(NODE_PREFIX + "n2", JSON.stringify({ name: "n2" }));
    const watch = new LeaseWatch({ store, logger: silentLogger() });
    await watch.start();
    try {
      assertEquals(watch.peerAddress("n1"), "h:1", "from the listing");
      assertEquals(watch.peerAddress("n2"), undefined, "a record without one");
      assertEquals(watch.peerAddress("n9"), undefined, "no record");
      // n1 restarted on another port; n2 got a peer listener.
      await store.put(NODE_PREFIX + "n1", JSON.stringify({ name: "n1", peerAddress: "h:2" }));
      await store.put(NODE_PREFIX + "n2", JSON.stringify({ name: "n2", peerAddress: "h:3" }));
      await eventually(
        "the new addresses",
        () => watch.peerAddress("n1") === "h:2" && watch.peerAddress("n2") === "h:3",
      );
      await store.delete(NODE_PREFIX + "n1");
      await eventually("n1's address gone", () => watch.peerAddress("n1") === undefined);
    } finally {
      await watch.stop();
    }
  });
});
