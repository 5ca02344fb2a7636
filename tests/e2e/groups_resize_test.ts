/**
 * End-to-end test of growing a replicated volume: three real `ballast serve --etcd`
 * processes on one real etcd. The record's size changes by CAS from any node, every
 * member grows its own copy (files on disk, the master's NBD export), shrinking is
 * refused, and a member killed with kill -9 while the volume grows catches up when it
 * restarts.
 */

import { assert, assertEquals } from "../_assert.ts";
import { type BallastProcess, cli, e2eTest, run } from "./_harness.ts";
import {
  createVolume,
  eventually,
  getVolume,
  nbdSize,
  servedAs,
  startGroupCluster,
  tools,
  type VolumeJson,
} from "./_groups.ts";

const MiB = 2 ** 20;

/** Size of a member's copy on disk (DATA/volumes/<uuid>.vol), -1 if missing. */
async function copySize(p: BallastProcess, uuid: string): Promise<number> {
  return await Deno.stat(`${p.dataDir}/volumes/${uuid}.vol`).then((s) => s.size, () => -1);
}

async function resize(api: string, name: string, size: string) {
  return await cli(["volume", "resize", name, "--size", size, "-o", "json"], { api });
}

e2eTest(
  "volume resize of a replicated volume: asked of a replica, every copy grows and the master's " +
    "NBD export shows the new size; shrinking is refused; a member killed meanwhile grows after restart",
  { tools: [...tools, "qemu-io"] },
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
      const master = c.nodes.get(g.master)!;
      const [r1, r2] = g.members!.filter((m) => m !== g.master);
      await eventually("g exported", () => nbdSize(master, "g"));
      const sizes = () => Promise.all(g.members!.map((m) => copySize(c.nodes.get(m)!, g.uuid)));
      assertEquals(await sizes(), [4 * MiB, 4 * MiB, 4 * MiB]);

      // Asked of a replica: the record changes at once; every copy grows.
      const grown = await resize(c.nodes.get(r1)!.api, "g", "8MiB");
      assertEquals(grown.code, 0, grown.stderr);
      assertEquals((JSON.parse(grown.stdout) as VolumeJson).sizeBytes, 8 * MiB);
      await eventually("every copy is 8 MiB", async () => {
        const s = await sizes();
        return s.every((n) => n === 8 * MiB) ? s : undefined;
      });
      assertEquals(
        await eventually("master's export is 8 MiB", async () => {
          const n = await nbdSize(master, "g");
          return n === 8 * MiB ? n : undefined;
        }),
        8 * MiB,
      );
      for (const p of c.nodes.values()) {
        assertEquals((await getVolume(p.api, "g"))!.sizeBytes, 8 * MiB, `volume get via ${p.api}`);
      }
      const table = await cli(["volume", "get", "g"], { api: c.nodes.get(r2)!.api });
      assert(table.stdout.includes("8 MiB"), table.stdout);
      // The new space is usable through the master.
      const io = await run("qemu-io", [
        "-f",
        "raw",
        "-c",
        "write -P 0x6b 6M 64k",
        "-c",
        "read -P 0x6b 6M 64k",
        master.nbdUri("g"),
      ]);
      assertEquals(io.code, 0, io.stderr);
      assert(!io.stdout.includes("Pattern verification failed"), io.stdout);

      // Shrinking stays refused, and changes nothing.
      const shrink = await resize(c.nodes.get(r2)!.api, "g", "4MiB");
      assertEquals(shrink.code, 1, shrink.stdout);
      assert(shrink.stderr.includes("volumes can only grow"), shrink.stderr);
      assertEquals((await getVolume(master.api, "g"))!.sizeBytes, 8 * MiB);

      // A replica killed (kill -9) just before the volume grows again (asked of the master).
      const killed = c.nodes.get(r2)!;
      await killed.kill("SIGKILL");
      const again = await resize(master.api, "g", "12MiB");
      assertEquals(again.code, 0, again.stderr);
      // Asked of the master: its export has the new size when the command returns.
      assertEquals(await nbdSize(master, "g"), 12 * MiB);
      await eventually("the live replica grows", async () => {
        const n = await copySize(c.nodes.get(r1)!, g.uuid);
        return n === 12 * MiB ? n : undefined;
      });
      assertEquals(await copySize(killed, g.uuid), 8 * MiB, "the killed member is behind");

      // It restarts: it grows its copy from the record, and does not export g.
      const back = await c.start(r2);
      await eventually("the restarted member grows its copy", async () => {
        const n = await copySize(back, g.uuid);
        return n === 12 * MiB ? n : undefined;
      });
      assertEquals((await getVolume(back.api, "g"))!.sizeBytes, 12 * MiB);
      // Attach anywhere: a member that is not the master forwards, never serves its copy.
      assertEquals(await servedAs(back, "g"), "forwarded", `${r2} does not serve its copy of g`);
      assertEquals(await sizes(), [12 * MiB, 12 * MiB, 12 * MiB]);
      // The data written before both resizes is still there.
      const read = await run("qemu-io", [
        "-f",
        "raw",
        "-r",
        "-c",
        "read -P 0x6b 6M 64k",
        master.nbdUri("g"),
      ]);
      assertEquals(read.code, 0, read.stderr);
      assert(!read.stdout.includes("Pattern verification failed"), read.stdout);
    } finally {
      await c.stop();
    }
  },
);
