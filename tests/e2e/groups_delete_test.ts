/**
 * End-to-end test of deleting a replicated volume while a member is down: three real
 * `ballast serve --etcd` processes on one real etcd (loopback, --tls off, 3 s node
 * leases). Without --force the delete is refused and says why; with --force the live
 * members remove their copies and the record goes; the member that was down removes its
 * orphaned copy when it starts again (BALLAST_ORPHAN_MIN_AGE_MS shortens the safety
 * margin from 10 minutes to 1 s for the test).
 */

import { assert, assertEquals } from "../_assert.ts";
import { cli, e2eTest } from "./_harness.ts";
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
    "delete and the record goes; the killed member moves its orphaned copy aside when it restarts",
  { tools },
  async () => {
    const c = await startGroupCluster({ n1: "", n2: "", n3: "" }, {
      env: { BALLAST_ORPHAN_MIN_AGE_MS: "1000" },
    });
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
      for (const needle of [`member down: ${victim}`, "--force"]) {
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
      assert((await volumeFiles(c.nodes.get(victim)!)).includes(file), "the down copy is left");

      // The killed member starts again: reconcile removes its copy before it is ready.
      const back = await c.start(victim);
      assertEquals(await volumeFiles(back), [], back.dataDir);
      assert(back.logs().includes("moved orphaned volume copy"), back.logs());
      assert(back.logs().includes(g.uuid), "the log names the file");
      const aside = [...Deno.readDirSync(`${back.dataDir}/orphaned`)].map((e) => e.name);
      assert(aside.includes(file), `moved to DATA/orphaned/, not deleted: ${aside}`);
      assert(
        aside.every((n) =>
          n === file || /^\S+\.vol\.(hashes|al|epoch)$/.test(n) && n.startsWith(file)
        ),
        `only the copy and its sidecars are moved: ${aside}`,
      );
    } finally {
      await c.stop();
    }
  },
);
