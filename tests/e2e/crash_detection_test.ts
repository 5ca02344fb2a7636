/**
 * Crash detection (`--crash-detection`, control/nodes/crash_watch.ts) with real processes:
 * three TLS nodes on a real etcd with a 60 s liveness lease. `kill -9` of a replicated
 * volume's master closes its sockets: the replica sees its connection end, finds the
 * master's listeners refusing connections and revokes its lease, so the group fails over in
 * seconds, long before the lease would have expired (at least 40 s after the kill). A
 * failover that waited for the lease would miss the deadlines below by far.
 */

import { assert, assertEquals } from "../_assert.ts";
import { BallastClient, type NodeInfo, type VolumeEvent } from "../../mod/mod.ts";
import { e2eTest } from "./_harness.ts";
import { PYTHON, waitFor } from "./_cluster.ts";
import { admin } from "./_cluster_tls.ts";
import { createServed, untilServed, volumeOf, withReplCluster } from "./_replicated.ts";

const NAMES = ["node-a", "node-b", "node-c"];
const TTL_S = 60;
/** Well under 2/3 of the TTL, the earliest a lease of a killed node could expire by itself. */
const DEADLINE_MS = 30_000;

e2eTest(
  "crash detection: kill -9 of a master ends its 60 s lease at once; its group fails over and is served well before the lease could expire",
  { tools: [PYTHON, "etcd"] },
  () =>
    withReplCluster(NAMES, async (c) => {
      const v = await createServed(c, "cd1", "16MiB", 1);
      const replica = v.members!.find((m) => m !== v.master)!;
      const killedAt = Date.now();
      await c.nodes.get(v.master)!.kill("SIGKILL");
      // The replica is promoted at a new epoch and serves.
      let promoted = v;
      await waitFor("the replica promoted", async () => {
        promoted = await volumeOf(c, replica, "cd1");
        return promoted.epoch > v.epoch;
      }, { timeoutMs: DEADLINE_MS, everyMs: 200 });
      assertEquals(promoted.master, replica, JSON.stringify(promoted));
      await untilServed(c, "cd1", replica);
      const tookMs = Date.now() - killedAt;
      assert(tookMs < DEADLINE_MS, `served again after ${tookMs} ms`);
      // The master's node is shown down (its lease was revoked), and the replica said why.
      const listed = await admin(c.nodes.get(replica)!, ["node", "list", "-o", "json"]);
      assertEquals(listed.code, 0, listed.stderr);
      const rows = (JSON.parse(listed.stdout) as { items: { name: string; state: string }[] })
        .items;
      const dead = rows.find((r) => r.name === v.master);
      assertEquals(dead?.state, "down", JSON.stringify(rows));
      await c.nodes.get(replica)!.logged("revoking its liveness lease");
      const line = c.nodes.get(replica)!.logs().split("\n").find((l) =>
        l.includes("revoking its liveness lease")
      );
      assert(line, "the replica logged the revocation");
      assertEquals(JSON.parse(line).peer, v.master);
      const pki = `${c.nodes.get(replica)!.dataDir}/pki`;
      using client = new BallastClient(c.nodes.get(replica)!.api, {
        caCertPem: await Deno.readTextFile(`${pki}/ca-bundle.crt`),
        certPem: await Deno.readTextFile(`${pki}/admin.crt`),
        keyPem: await Deno.readTextFile(`${pki}/admin.key`),
      });
      const metrics = (await client.metrics()).split("\n");
      assert(
        metrics.includes('ballast_crash_checks_total{outcome="revoked"} 1'),
        metrics.filter((l) => l.startsWith("ballast_crash")).join("\n"),
      );
      // deno-lint-ignore no-console
      console.log(
        `[crash detection] served again ${tookMs} ms after kill -9 (lease TTL ${TTL_S} s)`,
      );

      // A clean stop is told from a lost lease: the killed master left no stopping mark, a
      // member stopped with SIGTERM did (node get, and the group's down event).
      const killed = await admin(c.nodes.get(replica)!, ["node", "get", v.master, "-o", "json"]);
      const killedReason = (JSON.parse(killed.stdout) as NodeInfo).reason;
      assert(killedReason.startsWith("liveness lease expired; last seen "), killedReason);
      const made = await admin(c.nodes.get(replica)!, [
        "volume",
        "create",
        "cd2",
        "--size",
        "4MiB",
        "--replicas",
        "1",
      ]);
      assertEquals(made.code, 0, made.stderr);
      const v2 = await untilServed(c, "cd2", replica);
      const stopped = v2.members!.find((m) => m !== v2.master)!;
      await c.nodes.get(stopped)!.stop();
      let down: VolumeEvent | undefined;
      await waitFor(`${stopped} recorded down`, async () => {
        const ev = await admin(c.nodes.get(v2.master)!, ["volume", "events", "cd2", "-o", "json"]);
        down = (JSON.parse(ev.stdout).items as VolumeEvent[]).find((e) =>
          e.type === "down" && e.node === stopped && !e.pending
        );
        return down !== undefined;
      }, { timeoutMs: DEADLINE_MS, everyMs: 200 });
      assertEquals(down!.message, `${stopped} down: its node stopped (lease revoked)`);
      const got = await admin(c.nodes.get(v2.master)!, ["node", "get", stopped, "-o", "json"]);
      const info = JSON.parse(got.stdout) as NodeInfo;
      assertEquals(info.state, "down");
      assert(info.stoppedAt !== undefined, got.stdout);
      assertEquals(
        info.reason,
        `node stopped: lease revoked at its clean stop at ${info.stoppedAt}`,
      );
    }, { args: ["--node-lease-ttl", `${TTL_S}s`] }),
);
