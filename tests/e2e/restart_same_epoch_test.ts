/**
 * A master process killed and restarted while its lease holds (a 60 s lease, crash detection
 * off: nobody takes over) serves its volume again at the same epoch, with real processes on a
 * real etcd. Its replica had been resynced at that epoch (so it has a replication session);
 * the restarted master starts a new session with it before it serves (docs/CLUSTER.md, "A
 * master process restarted at the same epoch"), so its writes are applied: without that the
 * replica refused every one of them as a change of an older session and was resynced again.
 */

import { assert, assertEquals } from "../_assert.ts";
import { e2eTest, run } from "./_harness.ts";
import { admin } from "./_cluster_tls.ts";
import { PYTHON, waitFor } from "./_cluster.ts";
import {
  assertCopiesEqual,
  createServed,
  untilServed,
  volumeOf,
  withReplCluster,
} from "./_replicated.ts";

const NAMES = ["node-a", "node-b", "node-c"];

/** Writes COUNT MiB of FILL from OFFSET (both in MiB), then FLUSH; prints "ok". */
const WRITE_PY = `
import sys, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
start, count, fill = (int(x) for x in sys.argv[2:5])
for i in range(start, start + count):
    h.pwrite(bytes([fill]) * 1048576, i * 1048576)
h.flush()
print("ok")
`;

e2eTest(
  "a master killed and restarted within its lease serves again at the same epoch: new sessions first, its writes reach the replica resynced before (no refusal, no second resync), copies equal",
  { tools: [PYTHON, "etcd"] },
  () =>
    withReplCluster(NAMES, async (c) => {
      const v = await createServed(c, "rs1", "16MiB", 1);
      const master = v.master;
      const replica = v.members!.find((m) => m !== master)!;
      const write = async (start: number, count: number, fill: number) => {
        const r = await run(PYTHON, [
          "-c",
          WRITE_PY,
          c.uri(master, "rs1"),
          `${start}`,
          `${count}`,
          `${fill}`,
        ], { timeoutMs: 120_000 });
        assertEquals(r.stdout.trim(), "ok", r.stderr);
      };

      // The replica gets a session at this epoch: killed, written past, back, resynced.
      await c.nodes.get(replica)!.kill("SIGKILL");
      await write(0, 2, 1);
      await c.start(replica);
      await waitFor("the replica resynced", async () => {
        const now = await volumeOf(c, master, "rs1");
        return (now.inSync ?? []).includes(replica);
      }, { timeoutMs: 60_000, everyMs: 250 });
      await c.nodes.get(replica)!.logged("new replication session");
      const sessionsOf = () =>
        c.nodes.get(replica)!.logs().split("\n").filter((l) =>
          l.includes("new replication session")
        ).map((l) => JSON.parse(l).session as number);
      const before = sessionsOf();

      // The master's process dies and comes back at once; the record still names it.
      await c.nodes.get(master)!.kill("SIGKILL");
      const back = await c.start(master);
      const served = await untilServed(c, "rs1", replica);
      assertEquals([served.master, served.epoch], [master, v.epoch], "same master, same epoch");

      await write(2, 4, 2);
      const replicaLog = c.nodes.get(replica)!.logs();
      assert(
        !replicaLog.includes("refused a change of an older replication session"),
        "the replica refused none of the restarted master's writes",
      );
      assertEquals(
        sessionsOf(),
        [...before, before.at(-1)! + 1],
        "the resync's sessions, then one more: the restarted master's",
      );
      assert(await back.logged("serving again at the same epoch", 5_000), "the master said so");
      const resumed = back.logs().split("\n").find((l) =>
        l.includes("serving again at the same epoch")
      )!;
      assertEquals(JSON.parse(resumed).members, [replica], resumed);
      const after = await volumeOf(c, master, "rs1");
      assertEquals([after.epoch, (after.inSync ?? []).includes(replica)], [v.epoch, true]);
      await assertCopiesEqual(c, v.uuid, [master, replica]);
      // The restart leaves a trace in the history (no other change of the record does).
      await waitFor("the resumed event", async () => {
        const ev = await admin(back, ["volume", "events", "rs1", "-o", "json"]);
        const items = JSON.parse(ev.stdout || "{}").items as { type: string; message: string }[];
        return items?.some((e) =>
          e.type === "resumed" &&
          e.message === `master ${master} serves again at epoch ${v.epoch} after its node ` +
              "restarted (no other in-sync member took over meanwhile)"
        );
      }, { timeoutMs: 15_000, everyMs: 250 });
    }, { args: ["--node-lease-ttl", "60s", "--crash-detection", "false"] }),
);
