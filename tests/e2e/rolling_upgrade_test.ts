/**
 * The rolling upgrade of docs/CLUSTER.md ("Rolling upgrade"), step by step, with real
 * processes: four TLS nodes on a real etcd, a volume with 2 replicas, a libnbd client writing
 * through the node that holds no copy of it (_anywhere.ts). Each member in turn is drained,
 * stopped with SIGTERM, started again on its data directory (the same program stands in for
 * the new one: what the upgrade exercises is the stop and the return), uncordoned, and waited
 * for until every copy is in sync again. The client sees no error, only pauses; every write it
 * saw acknowledged is there; the three copies end byte-identical; the history shows a handover
 * (not a failover) each time the master's node was upgraded, and an end for every resync.
 */

import { assert, assertEquals } from "../_assert.ts";
import { waitFor } from "./_cluster.ts";
import { admin } from "./_cluster_tls.ts";
import { e2eTest } from "./_harness.ts";
import { assertCopiesEqual, startReplCluster, volumeOf } from "./_replicated.ts";
import { allInSync, createWithFront, NAMES, PYTHON, startWriter } from "./_anywhere.ts";
import { unendedResyncs } from "../../control/events/mod.ts";
import type { VolumeEvent } from "../../mod/types.ts";

e2eTest(
  "rolling upgrade as documented: each member drained, stopped, started again, uncordoned, resynced in turn; the client through another node sees no error and loses nothing",
  { tools: [PYTHON, "etcd"] },
  async () => {
    const c = await startReplCluster(NAMES);
    const dir = await Deno.makeTempDir({ prefix: "ballast-rolling-" });
    try {
      const { v, front } = await createWithFront(c, "ru");
      const w = startWriter(c, front, "ru", dir);
      const via = c.nodes.get(front)!;
      const steps: string[] = [];
      for (const node of v.members!) {
        await w.advance(200, `the writer to make progress before ${node}'s upgrade`);
        const wasMaster = (await volumeOf(c, front, "ru")).master === node;
        // 1. every replicated volume healthy (the loop's last step waited for it).
        const list = await admin(via, ["volume", "list", "-o", "json"]);
        assertEquals(list.code, 0, list.stderr);
        const phases = (JSON.parse(list.stdout) as { items: { phase?: string }[] }).items
          .map((i) => i.phase);
        assertEquals(phases, ["healthy"], list.stdout);
        // 2. drain: the master moves off the node by handover; exit 0.
        const dry = await admin(via, ["node", "drain", node, "--dry-run"]);
        assertEquals(dry.code, 0, dry.stdout + dry.stderr);
        const drained = await admin(via, ["node", "drain", node]);
        assertEquals(drained.code, 0, drained.stdout + drained.stderr);
        const after = await volumeOf(c, front, "ru");
        assert(after.master !== node, `${node} still masters ru after its drain`);
        // 3. stop it (SIGTERM), start it again on its data directory.
        await c.nodes.get(node)!.stop();
        await w.advance(100, `the writer to go on while ${node} is down`);
        await c.start(node);
        // 4. uncordon, and wait for every copy to be in sync again.
        const back = await admin(via, ["node", "uncordon", node]);
        assertEquals(back.code, 0, back.stdout + back.stderr);
        await allInSync(c, front, "ru");
        const nodes = await admin(via, ["node", "get", node, "-o", "json"]);
        assertEquals(nodes.code, 0, nodes.stderr);
        assertEquals(JSON.parse(nodes.stdout).state, "ready", nodes.stdout);
        steps.push(`${node}${wasMaster ? " (master, handed over)" : ""}`);
      }
      await w.advance(100, "the writer to go on after the upgrade");
      const pauses = await w.finish(c, "ru");
      const end = await volumeOf(c, front, "ru");
      await assertCopiesEqual(c, end.uuid, v.members!);

      // Masters moved by handover only: no failover happened during the upgrade.
      const ev = await admin(via, ["volume", "events", "ru", "-o", "json"]);
      assertEquals(ev.code, 0, ev.stderr);
      const events = (JSON.parse(ev.stdout) as { items: VolumeEvent[] }).items;
      const types = events.map((e) => e.type);
      assert(!types.includes("promoted"), `a failover during the upgrade: ${ev.stdout}`);
      assert(types.includes("handover"), `no handover recorded: ${ev.stdout}`);
      // Each return was resynced, and the history says where each resync ended.
      assert(types.includes("resync-started"), ev.stdout);
      assertEquals(unendedResyncs(events), [], ev.stdout);
      // Generous bound (noisy machine); a handover pauses the client for well under a second.
      const worst = Math.max(0, ...pauses);
      assert(worst < 30_000, `the client paused ${worst} ms`);
      await waitFor("every member up", async () => {
        const list = await admin(via, ["node", "list", "-o", "json"]);
        const items = (JSON.parse(list.stdout) as { items: { state: string }[] }).items;
        return items.length === NAMES.length && items.every((n) => n.state === "ready");
      }, { timeoutMs: 30_000 });
      // deno-lint-ignore no-console
      console.log(
        `rolling upgrade: ${steps.join(", ")}; client pauses ${JSON.stringify(pauses)} ms`,
      );
    } finally {
      await c.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
);
