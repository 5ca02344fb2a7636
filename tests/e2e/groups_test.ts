/**
 * End-to-end tests of volume groups: three real `ballast serve --etcd` processes on
 * one real etcd (loopback, --tls off, 3 s node leases). Placement across nodes and
 * failure domains, impossible placements that leave nothing behind, cordon, the copy
 * on every member, delete on every member, and what a kill -9 of the master does to
 * a never-written group (a replica takes over at epoch 2 and serves NBD) and to a
 * written one (unavailable, no promotion, back when the master restarts).
 */

import { assert, assertEquals } from "../_assert.ts";
import type { VolumeEvent } from "../../mod/types.ts";
import { cli, e2eTest, run } from "./_harness.ts";
import {
  createVolume,
  eventually,
  getVolume,
  LEASE_TTL_S,
  nbdSize,
  servedAs,
  startGroupCluster,
  tools,
  volumeFiles,
  type VolumeJson,
} from "./_groups.ts";

e2eTest(
  "volume create --replicas: distinct nodes and zones, a copy on every member, only the master serves its copy (the others forward to it); " +
    "impossible placements and cordoned nodes fail with the reason and leave nothing; delete removes every copy",
  { tools },
  async () => {
    const c = await startGroupCluster({ n1: "zone=a", n2: "zone=b", n3: "zone=b" });
    try {
      const n1 = c.nodes.get("n1")!;
      const all = () => [...c.nodes.values()];

      // Labels reach the node list.
      const listed = await fetch(`${n1.api}/v1/nodes`).then((r) => r.json());
      assertEquals(
        listed.items.map((n: { name: string; labels: Record<string, string> }) =>
          `${n.name}:${n.labels.zone}`
        ),
        ["n1:a", "n2:b", "n3:b"],
      );

      // replicas 2: master + 2 replicas on the 3 distinct nodes.
      const created = await createVolume(n1.api, ["g1", "--size", "4MiB", "--replicas", "2"]);
      assertEquals(created.code, 0, created.stderr);
      const g1 = JSON.parse(created.stdout) as VolumeJson;
      assertEquals(g1.members, ["n1", "n2", "n3"]);
      assertEquals(
        [g1.state, g1.epoch, g1.phase, g1.inSync],
        ["ready", 1, "healthy", ["n1", "n2", "n3"]],
      );
      for (const p of all()) assertEquals(await volumeFiles(p), [`${g1.uuid}.vol`], p.dataDir);
      // Only the master serves it from its copy; the other members forward to it.
      const master = c.nodes.get(g1.master)!;
      assertEquals(await eventually("master exports g1", () => nbdSize(master, "g1")), 4 << 20);
      assertEquals(await servedAs(master, "g1"), "local");
      for (const [name, p] of c.nodes) {
        if (name !== g1.master) {
          // Attach anywhere: another node forwards to the master, never serves its own copy.
          assertEquals(await servedAs(p, "g1"), "forwarded", `${name} serves its copy`);
        }
      }
      // Any node shows the group; the human table has epoch, in-sync and phase.
      const table = await cli(["volume", "get", "g1"], { api: c.nodes.get("n3")!.api });
      assertEquals(table.code, 0, table.stderr);
      for (const needle of ["Phase", "healthy", "In sync", "n1, n2, n3", "Epoch"]) {
        assert(table.stdout.includes(needle), `${needle} in:\n${table.stdout}`);
      }

      // spread by zone: one copy in zone a and one in zone b.
      const z1 = await createVolume(n1.api, [
        "z1",
        "--size",
        "4MiB",
        "--replicas",
        "1",
        "--spread-by",
        "zone",
      ]);
      assertEquals(z1.code, 0, z1.stderr);
      const z1v = JSON.parse(z1.stdout) as VolumeJson;
      const zones = z1v.members!.map((m) => c.labels[m]).sort();
      assertEquals(zones, ["zone=a", "zone=b"]);
      assertEquals(z1v.spreadBy, "zone");

      const filesBefore = await Promise.all(all().map(volumeFiles));
      const refused = async (args: string[], needles: string[]) => {
        const res = await createVolume(n1.api, args);
        assertEquals(res.code, 1, `${args.join(" ")}: ${res.stdout}${res.stderr}`);
        for (const n of needles) assert(res.stderr.includes(n), `"${n}" in: ${res.stderr}`);
        assertEquals(await getVolume(n1.api, args[0]), undefined, "no record left");
      };
      await refused(["z2", "--size", "4MiB", "--replicas", "2", "--spread-by", "zone"], [
        "need 3 nodes in distinct zone values, have 2",
        "zone=b (n2,n3)",
      ]);
      await refused(["big", "--size", "4MiB", "--replicas", "3"], [
        "need 4 eligible nodes, have 3",
      ]);

      // Cordon: n3 takes no new placements; node list says so with the reason.
      const cordon = await cli(["node", "cordon", "n3", "--reason", "disk swap"], {
        api: n1.api,
      });
      assertEquals(cordon.code, 0, cordon.stderr);
      const nodeList = await cli(["node", "list"], { api: c.nodes.get("n2")!.api });
      assert(
        /n3\s+cordoned \(disk swap\)/.test(nodeList.stdout),
        nodeList.stdout,
      );
      await refused(["c1", "--size", "4MiB", "--replicas", "2"], ["n3 (cordoned)"]);
      assertEquals(await Promise.all(all().map(volumeFiles)), filesBefore, "no file left behind");
      const un = await cli(["node", "uncordon", "n3"], { api: n1.api });
      assertEquals(un.code, 0, un.stderr);
      const c1 = await createVolume(n1.api, ["c1", "--size", "4MiB", "--replicas", "2"]);
      assertEquals(c1.code, 0, c1.stderr);

      // Every volume is thin (issue 10 item 13): a replicated volume larger than any node's
      // free space is placed as a plain one would be created; its copies are sparse.
      const nodesNow = await cli(["node", "list", "-o", "json"], { api: n1.api });
      assertEquals(nodesNow.code, 0, nodesNow.stderr);
      const free = Math.max(
        ...(JSON.parse(nodesNow.stdout).items as Array<{ freeBytes: number }>).map((n) =>
          n.freeBytes
        ),
      );
      const thin = Math.ceil(free / 2 ** 40 + 1);
      const huge = await createVolume(n1.api, ["thin", "--size", `${thin}TiB`, "--replicas", "1"]);
      assertEquals(huge.code, 0, `${thin} TiB over ${free} bytes free: ${huge.stderr}`);
      const del2 = await cli(["volume", "delete", "thin"], { api: n1.api });
      assertEquals(del2.code, 0, del2.stderr);

      // Delete (asked of a replica) removes the copy on every member and the record.
      const del = await cli(["volume", "delete", "g1"], { api: c.nodes.get("n2")!.api });
      assertEquals(del.code, 0, del.stderr);
      await eventually("g1 gone everywhere", async () => {
        if (await getVolume(n1.api, "g1")) return undefined;
        for (const p of all()) if ((await volumeFiles(p)).includes(`${g1.uuid}.vol`)) return;
        return true;
      });
    } finally {
      await c.stop();
    }
  },
);

e2eTest(
  "kill -9 of a group's master: a never-written group fails over (epoch 2, NBD at the new master); " +
    "a written one goes unavailable without promotion and comes back when its master restarts",
  { tools: [...tools, "qemu-io"] },
  async () => {
    const c = await startGroupCluster({ n1: "", n2: "", n3: "" });
    try {
      const anyApi = (except: string) =>
        [...c.nodes.entries()].find(([n, p]) => n !== except && !p.exited())![1].api;

      // --- never written: a replica takes over.
      const a = await createVolume(c.nodes.get("n1")!.api, [
        "a",
        "--size",
        "4MiB",
        "--replicas",
        "2",
      ]);
      assertEquals(a.code, 0, a.stderr);
      const av = JSON.parse(a.stdout) as VolumeJson;
      const oldMaster = av.master;
      await eventually("a exported", () => nbdSize(c.nodes.get(oldMaster)!, "a"));
      await c.nodes.get(oldMaster)!.kill("SIGKILL");
      const after = await eventually("a promoted to epoch 2", async () => {
        const v = await getVolume(anyApi(oldMaster), "a");
        return v && v.epoch === 2 ? v : undefined;
      });
      assert(after.master !== oldMaster, `new master ${after.master}`);
      assertEquals(after.down, [oldMaster]);
      assert(!after.inSync!.includes(oldMaster), "the old master left the in-sync set");
      assertEquals(after.phase, "degraded");
      const newMaster = c.nodes.get(after.master)!;
      assertEquals(await eventually("new master serves a", () => nbdSize(newMaster, "a")), 4 << 20);

      // The old master restarts: back in the group, not serving (epoch 2 is not its).
      const back = await c.start(oldMaster);
      await eventually("old master back, not down", async () => {
        const v = await getVolume(back.api, "a");
        return v && v.down!.length === 0 ? v : undefined;
      });
      assertEquals(await servedAs(back, "a"), "forwarded", "old master does not serve its copy");
      assertEquals((await getVolume(back.api, "a"))!.master, after.master);

      // --- written: replicas fall out of sync at the first write; no promotion.
      const b = await createVolume(back.api, ["b", "--size", "4MiB", "--replicas", "2"]);
      assertEquals(b.code, 0, b.stderr);
      const bv = JSON.parse(b.stdout) as VolumeJson;
      const bMaster = c.nodes.get(bv.master)!;
      await eventually("b exported", () => nbdSize(bMaster, "b"));
      const write = await run("qemu-io", [
        "-f",
        "raw",
        "-c",
        "write -P 0x5a 0 64k",
        bMaster.nbdUri("b"),
      ]);
      assertEquals(write.code, 0, write.stderr);
      await eventually("replicas of b out of sync", async () => {
        const v = await getVolume(bMaster.api, "b");
        return v && v.inSync!.join() === bv.master ? v : undefined;
      });
      await bMaster.kill("SIGKILL");
      const unavailable = await eventually("b unavailable", async () => {
        const v = await getVolume(anyApi(bv.master), "b");
        return v && v.phase === "unavailable" ? v : undefined;
      });
      assertEquals([unavailable.epoch, unavailable.master], [1, bv.master]);
      // Its replicas are alive: they record the master's death (written, not pending). The
      // phase above may come from this node's view of the leases a moment before a replica
      // wrote it (they wait out a short grace first): wait for the record.
      const downs = await eventually("the replicas to record the master down", async () => {
        const ev = await cli(["volume", "events", "b", "-o", "json"], { api: anyApi(bv.master) });
        assertEquals(ev.code, 0, ev.stderr);
        const d = (JSON.parse(ev.stdout).items as VolumeEvent[]).filter((e) => e.type === "down");
        return d.length > 0 && d.every((e) => !e.pending) ? d : undefined;
      });
      assertEquals(downs.map((e) => [e.node, e.pending ?? false]), [[bv.master, false]]);
      // Give a (wrong) promotion every chance to happen: another lease period and more.
      await new Promise((r) => setTimeout(r, (LEASE_TTL_S + 2) * 1000));
      const still = (await getVolume(anyApi(bv.master), "b"))!;
      assertEquals([still.epoch, still.master, still.phase], [1, bv.master, "unavailable"]);
      for (const [name, p] of c.nodes) {
        if (name !== bv.master) assertEquals(await nbdSize(p, "b"), undefined, `${name} serves b`);
      }

      // The master restarts: it serves b again with its data; the group is degraded.
      const bBack = await c.start(bv.master);
      const healed = await eventually("b master back", async () => {
        const v = await getVolume(bBack.api, "b");
        return v && v.down!.length === 0 ? v : undefined;
      });
      assertEquals([healed.epoch, healed.master, healed.phase], [1, bv.master, "degraded"]);
      await eventually("b exported again", () => nbdSize(bBack, "b"));
      const read = await run("qemu-io", [
        "-f",
        "raw",
        "-r",
        "-c",
        "read -P 0x5a 0 64k",
        bBack.nbdUri("b"),
      ]);
      assertEquals(read.code, 0, read.stderr);
      assert(!read.stdout.includes("Pattern verification failed"), read.stdout);

      // --- both members of a group die: nobody can write its record; the third node shows
      // their deaths as pending events (written once a member returns).
      const d = await createVolume(bBack.api, ["d", "--size", "4MiB", "--replicas", "1"]);
      assertEquals(d.code, 0, d.stderr);
      const dv = JSON.parse(d.stdout) as VolumeJson;
      const members = dv.members!;
      const third = [...c.nodes.keys()].find((n) => !members.includes(n))!;
      await eventually("d in sync on both", async () => {
        const v = await getVolume(c.nodes.get(third)!.api, "d");
        return v && v.inSync!.length === 2 ? v : undefined;
      });
      await Promise.all(members.map((m) => c.nodes.get(m)!.kill("SIGKILL")));
      const pending = await eventually("d's deaths pending in its events", async () => {
        const ev = await cli(["volume", "events", "d", "-o", "json"], {
          api: c.nodes.get(third)!.api,
        });
        const items = ev.code === 0 ? JSON.parse(ev.stdout).items as VolumeEvent[] : [];
        const seen = items.filter((e) => e.pending);
        return seen.length === 2 ? seen : undefined;
      });
      assertEquals(pending.map((e) => [e.type, e.seq]).sort(), [["down", 0], ["down", 0]]);
      assertEquals(pending.map((e) => e.node).sort(), [...members].sort());
      const table = await cli(["volume", "events", "d"], { api: c.nodes.get(third)!.api });
      assert(table.stdout.includes("down (pending)"), table.stdout);
    } finally {
      await c.stop();
    }
  },
);
