/**
 * `ballast volume verify` on a real 3-node TLS cluster: equal copies pass (asked of a node
 * that is not the master), and a replica's copy changed behind Ballast's back (silent
 * corruption on its disk) is found by --deep, by region, with exit code 3; the master then
 * takes that replica out of sync and its resync repairs the region.
 */

import { assert, assertEquals } from "../_assert.ts";
import { admin } from "./_cluster_tls.ts";
import { e2eTest, run } from "./_harness.ts";
import { assertCopiesEqual, dumpWarnings, startReplCluster, untilServed } from "./_replicated.ts";
import type { VolumeVerifyReport } from "../../mod/types.ts";

const PYTHON = "/usr/bin/python3";
const NAMES = ["node-a", "node-b", "node-c"];
const MiB = 2 ** 20;

e2eTest(
  "volume verify: equal copies pass on any node; a replica corrupted on disk is found by --deep, region by region, exit code 3, and repaired by the resync that starts",
  { tools: [PYTHON, "etcd"] },
  async () => {
    const c = await startReplCluster(NAMES);
    try {
      const made = await admin(c.nodes.get("node-a")!, [
        "volume",
        "create",
        "ver",
        "--size",
        "32MiB",
        "--replicas",
        "2",
      ]);
      assertEquals(made.code, 0, made.stderr);
      const v = await untilServed(c, "ver");
      const w = await run(PYTHON, [
        "-c",
        `
import sys, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
for i in range(0, 32, 2):
    h.pwrite(bytes([i + 1]) * (1 << 20), i << 20)
h.flush()
print("ok")
`,
        c.uri(v.master, "ver"),
      ]);
      assertEquals(w.stdout.trim(), "ok", w.stderr);
      const other = NAMES.find((n) => n !== v.master)!;
      const verify = async (...flags: string[]) => {
        const r = await admin(c.nodes.get(other)!, ["volume", "verify", "ver", ...flags]);
        return { code: r.code, stderr: r.stderr, out: r.stdout };
      };
      const quick = await verify("-o", "json");
      assertEquals(quick.code, 0, quick.out + quick.stderr);
      const q = JSON.parse(quick.out) as VolumeVerifyReport;
      assertEquals(q.node, v.master, "the master compares");
      assertEquals(q.members.length, 3);
      assert(q.members.every((m) => m.root === q.members[0].root), JSON.stringify(q.members));
      const text = await verify("--deep");
      assertEquals(text.code, 0, text.out + text.stderr);
      assert(text.out.includes("OK: every member holds the master's data"), text.out);

      // Silent corruption: bytes of region 5 of one replica's copy change on its disk.
      const victim = NAMES.find((n) => n !== v.master && n !== other)!;
      const file = `${c.nodes.get(victim)!.dataDir}/volumes/${v.uuid}.vol`;
      using f = await Deno.open(file, { write: true });
      await f.seek(5 * MiB + 4096, Deno.SeekMode.Start);
      await f.write(new Uint8Array(512).fill(0xee));
      const deep = await verify("--deep", "-o", "json");
      assertEquals(deep.code, 3, deep.out + deep.stderr);
      const d = JSON.parse(deep.out) as VolumeVerifyReport;
      assertEquals(d.ok, false);
      const bad = d.members.find((m) => m.node === victim)!;
      assertEquals([bad.equal, bad.differing, bad.differingCount], [false, [5], 1]);
      assert(bad.corrupt.every((r) => r === 5), JSON.stringify(bad));
      assertEquals(bad.resyncing, true, "the master takes it out of sync to resync it");
      for (const m of d.members.filter((m) => m.node !== victim)) {
        assertEquals([m.equal, m.differingCount, m.corruptCount], [true, 0, 0], m.node);
        assertEquals(m.resyncing, undefined, m.node);
      }

      // Its resync repairs it: the victim marked region 5 for rehashing, so the hash trees
      // differ there and the differing blocks are copied. Deep verification passes again.
      const deadline = Date.now() + 60_000;
      let repaired = await verify("--deep");
      while (repaired.code !== 0 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 500));
        repaired = await verify("--deep");
      }
      // deno-lint-ignore no-console
      console.log(repaired.out);
      assertEquals(repaired.code, 0, repaired.out + repaired.stderr);
      await assertCopiesEqual(c, v.uuid, NAMES);
    } catch (err) {
      dumpWarnings(c);
      throw err;
    } finally {
      await c.stop();
    }
  },
);
