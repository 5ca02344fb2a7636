/**
 * End-to-end test of deleting a replicated volume while a member is down: three real
 * `ballast serve --etcd` processes on one real etcd (loopback, --tls off, 3 s node
 * leases). Without --force the delete is refused and says why; with --force the live
 * members remove their copies and the record goes, leaving a tombstone that names the
 * member that was down; that member removes its copy when it starts again, with the
 * default 10-minute safety margin for copies without a record (a tombstoned copy needs
 * none), and clears the tombstone. A copy of an unknown uuid is moved to DATA/orphaned/
 * instead, and `node get` and /metrics show what it holds there.
 */

import { assert, assertEquals } from "../_assert.ts";
import { cli, e2eTest, run } from "./_harness.ts";
import {
  createVolume,
  eventually,
  getVolume,
  startGroupCluster,
  tools,
  volumeFiles,
  type VolumeJson,
} from "./_groups.ts";

e2eTest(
  "volume delete of a group with a member killed: refused without --force; with it the live members " +
    "delete and the record goes; the killed member removes its copy when it restarts (tombstone); " +
    "an unknown copy goes to DATA/orphaned/, shown by node get and /metrics",
  { tools },
  async () => {
    const c = await startGroupCluster({ n1: "", n2: "", n3: "" });
    try {
      const created = await createVolume(c.nodes.get("n1")!.api, [
        "g",
        "--size",
        "4MiB",
        "--replicas",
        "2",
      ]);
      assertEquals(created.code, 0, created.stderr);
      const g = JSON.parse(created.stdout) as VolumeJson;
      assertEquals(g.members, ["n1", "n2", "n3"]);
      const file = `${g.uuid}.vol`;
      const victim = g.members!.find((m) => m !== g.master)!;
      const live = g.members!.filter((m) => m !== victim).map((m) => c.nodes.get(m)!);
      const api = c.nodes.get(g.master)!.api;

      await c.nodes.get(victim)!.kill("SIGKILL");
      await eventually(`${victim} recorded down`, async () => {
        const v = await getVolume(api, "g");
        return v?.down?.includes(victim) ? v : undefined;
      });

      const refused = await cli(["volume", "delete", "g"], { api });
      assertEquals(refused.code, 1, refused.stdout + refused.stderr);
      for (
        const needle of [`member down: ${victim}`, "--force", "removes its copy when it comes back"]
      ) {
        assert(refused.stderr.includes(needle), `"${needle}" in: ${refused.stderr}`);
      }
      assertEquals((await getVolume(api, "g"))?.state, "ready", "nothing changed");

      const forced = await cli(["volume", "delete", "g", "--force"], { api });
      assertEquals(forced.code, 0, forced.stderr);
      await eventually("record and live copies gone", async () => {
        if (await getVolume(api, "g")) return undefined;
        for (const p of live) if ((await volumeFiles(p)).includes(file)) return undefined;
        return true;
      });
      const victimDir = c.nodes.get(victim)!.dataDir;
      assert((await volumeFiles(c.nodes.get(victim)!)).includes(file), "the down copy is left");
      // Under the default --etcd-prefix.
      const tombstone = `/ballast-cluster/ballast/volume-tombstones/${g.uuid}`;
      const buried = await etcdGet(c.etcd.endpoints, tombstone);
      assert(buried.includes(`"members":["${victim}"]`), `tombstone names ${victim}: ${buried}`);

      // A copy no record and no tombstone knows, an hour old (past the 10-minute margin).
      const stray = "00000000-0000-4000-8000-000000000001";
      await Deno.writeFile(`${victimDir}/volumes/${stray}.vol`, new Uint8Array(8192));
      const hourAgo = new Date(Date.now() - 3600_000);
      await Deno.utime(`${victimDir}/volumes/${stray}.vol`, hourAgo, hourAgo);

      // The killed member starts again: reconcile removes its copy before it is ready.
      const back = await c.start(victim);
      assertEquals(await volumeFiles(back), [], back.dataDir);
      const logs = back.logs();
      assert(
        logs.includes("removed the copy of a volume deleted (--force) while this node was down"),
        logs,
      );
      assert(logs.includes(g.uuid), "the log names the copy");
      assert(!logs.includes("kept: too new"), "a tombstoned copy waits for no margin");
      const aside = [...Deno.readDirSync(`${back.dataDir}/orphaned`)].map((e) => e.name);
      assertEquals(aside, [`${stray}.vol`], "only the unknown copy is moved aside");
      assertEquals(await etcdGet(c.etcd.endpoints, tombstone), "", "tombstone cleared");

      // What DATA/orphaned/ holds is visible: node get (any node asks the record; the
      // node itself answers live) and the node's /metrics.
      const got = await cli(["node", "get", victim, "-o", "json"], { api: back.api });
      assertEquals(got.code, 0, got.stderr);
      const orphaned = JSON.parse(got.stdout).orphaned as { copies: number; bytes: number };
      assertEquals(orphaned.copies, 1);
      assert(orphaned.bytes > 0, JSON.stringify(orphaned));
      const text = await cli(["node", "get", victim], { api: back.api });
      assert(/Orphaned:\s+1 copy, .* in DATA\/orphaned\//.test(text.stdout), text.stdout);
      const metrics = await (await fetch(`${back.api}/metrics`)).text();
      assert(metrics.includes("ballast_orphaned_copies 1\n"), "ballast_orphaned_copies 1");
      assert(metrics.includes(`ballast_orphaned_bytes ${orphaned.bytes}\n`), "orphaned bytes");
    } finally {
      await c.stop();
    }
  },
);

/** The value of `key` in etcd ("" when absent), read with etcdctl. */
async function etcdGet(endpoints: string[], key: string): Promise<string> {
  const r = await run("etcdctl", [
    "--endpoints",
    endpoints.join(","),
    "get",
    key,
    "--print-value-only",
  ], {
    env: { ETCDCTL_API: "3" },
  });
  assertEquals(r.code, 0, r.stderr);
  return r.stdout.trim();
}
