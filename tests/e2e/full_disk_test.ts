/**
 * A write that fails on a full master disk (ENOSPC) after writing part of its range there: the
 * replicas get what the master's copy holds in that range, so the copies listed in sync stay
 * equal (data/nbd/_change.ts repairThenFail). Each node's data directory is its own small
 * tmpfs (needs root to mount).
 */

import { assertEquals } from "../_assert.ts";
import { admin } from "./_cluster_tls.ts";
import { e2eTest, run } from "./_harness.ts";
import { assertCopiesEqual, startReplCluster, untilServed, volumeOf } from "./_replicated.ts";
import type { VolumeVerifyReport } from "../../mod/types.ts";

const NAMES = ["node-a", "node-b"];
const PYTHON = "/usr/bin/python3";
/** Writes 4 MiB of 0x5a in one request; prints the errno name it failed with, or "ok". */
const WRITE_PY = `
import sys, errno, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
try:
    h.pwrite(b"\\x5a" * (4 << 20), 0)
    print("ok")
except nbd.Error as e:
    print("ENOSPC" if e.errno == errno.ENOSPC or "ENOSPC" in str(e) else str(e))
`;
/** Prints the first byte of the volume in hex. */
const READ_PY = `
import sys, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
print(h.pread(1, 0).hex())
`;
const MiB = 2 ** 20;

/** Bytes free on the file system holding `dir`. */
async function freeBytes(dir: string): Promise<number> {
  const r = await run("df", ["-B1", "--output=avail", dir]);
  assertEquals(r.code, 0, r.stderr);
  return Number(r.stdout.trim().split("\n").at(-1));
}

e2eTest(
  "a write that fills the master's disk midway fails with ENOSPC, and the replica gets what the master holds: the copies stay equal",
  {
    tools: ["etcd", "mount", "umount", "df", "fallocate", PYTHON],
    skip: Deno.uid() === 0 ? undefined : "not root: cannot mount a tmpfs for a node's data dir",
  },
  async () => {
    const base = await Deno.makeTempDir({ prefix: "ballast-fulldisk-" });
    const dirs = Object.fromEntries(NAMES.map((n) => [n, `${base}/${n}`]));
    const mounted: string[] = [];
    try {
      for (const d of Object.values(dirs)) {
        await Deno.mkdir(d);
        const m = await run("mount", ["-t", "tmpfs", "-o", "size=96m", "tmpfs", d]);
        assertEquals(m.code, 0, m.stderr);
        mounted.push(d);
      }
      const c = await startReplCluster(NAMES, { dataDirs: dirs });
      try {
        const made = await admin(c.nodes.get("node-a")!, [
          "volume",
          "create",
          "full",
          "--size",
          "32MiB",
          "--replicas",
          "1",
        ]);
        assertEquals(made.code, 0, made.stderr);
        const v = await untilServed(c, "full");
        const master = c.nodes.get(v.master)!;
        // Leave 2 MiB on the master's disk, then write 4 MiB in one request.
        const room = await freeBytes(master.dataDir) - 2 * MiB;
        const fill = await run("fallocate", ["-l", String(room), `${master.dataDir}/filler`]);
        assertEquals(fill.code, 0, fill.stderr);
        const w = await run(PYTHON, ["-c", WRITE_PY, c.uri(v.master, "full")]);
        assertEquals(
          w.stdout.trim(),
          "ENOSPC",
          `the write fails with ENOSPC: ${w.stdout}${w.stderr}`,
        );
        await Deno.remove(`${master.dataDir}/filler`);
        // The master's copy holds part of the write; the replica the same, not the old zeros.
        const verify = await admin(master, ["volume", "verify", "full", "-o", "json"]);
        const report = JSON.parse(verify.stdout) as VolumeVerifyReport;
        assertEquals(verify.code, 0, `verify says the copies differ: ${verify.stdout}`);
        assertEquals(report.members.length, 2);
        const after = await volumeOf(c, v.master, "full");
        assertEquals(after.inSync?.length, 2, "both members still in sync");
        await assertCopiesEqual(c, v.uuid, v.members!);
        const r = await run(PYTHON, ["-c", READ_PY, c.uri(v.master, "full")]);
        assertEquals(
          r.stdout.trim(),
          "5a",
          `part of the failed write is on the master: ${r.stderr}`,
        );
      } finally {
        await c.stop();
      }
    } finally {
      for (const d of mounted) await run("umount", [d]);
      await Deno.remove(base, { recursive: true }).catch(() => {});
    }
  },
);
