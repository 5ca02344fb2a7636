/**
 * LeaseWatch (control/group/lease_watch.ts) over the embedded store: which nodes'
 * liveness leases are up, and the grace period that keeps a lease expired by an etcd
 * outage (and renewed right after) from being reported as a dead node.
 */

import { assertEquals } from "../../_assert.ts";
import { LeaseWatch } from "../../../control/group/lease_watch.ts";
import { silentLogger } from "../../../control/log.ts";
import { aliveKey, NODE_PREFIX } from "../../../control/nodes.ts";
import type { SqliteStateStore } from "../../../control/sqlite_store.ts";
import { eventually, withSqlite } from "../_fixtures.ts";

async function register(store: SqliteStateStore, node: string): Promise<number> {
  await store.put(NODE_PREFIX + node, JSON.stringify({ name: node }));
  const lease = await store.grantLease(60);
  await store.put(aliveKey(node), "{}", { lease });
  return lease;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("LeaseWatch: a lease renewed within the grace is never reported; one that stays gone is", async () => {
  await withSqlite(async (store) => {
    await register(store, "n1");
    const lease2 = await register(store, "n2");
    const watch = new LeaseWatch({ store, logger: silentLogger(), graceMs: 600 });
    const seen: string[] = [];
    watch.subscribe((node, up) => seen.push(`${node} ${up ? "up" : "down"}`));
    await watch.start();
    try {
      assertEquals(watch.down(), []);
      // An etcd outage expired n2's lease; n2 registers again right after.
      await store.revokeLease(lease2);
      await sleep(150);
      assertEquals([seen, watch.down()], [[], []], "not reported during the grace");
      const lease2b = await register(store, "n2");
      await sleep(800);
      assertEquals([seen, watch.down()], [[], []], "a lease back in time is never reported");

      // Now n2 really dies.
      await store.revokeLease(lease2b);
      await eventually("n2 reported down", () => seen.length > 0, 10_000, 10);
      assertEquals([seen, watch.down()], [["n2 down"], ["n2"]]);
      await register(store, "n2");
      await eventually("n2 reported up", () => seen.length > 1, 10_000, 10);
      assertEquals([seen, watch.down()], [["n2 down", "n2 up"], []]);
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
