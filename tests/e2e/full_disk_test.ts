/**
 * A change that fails on a full master disk (ENOSPC) after changing part of its range there
 * (data/nbd/_change.ts repairThenFail): the replicas get what the master's copy holds in that
 * range, so the copies listed in sync stay equal; a range too large to read back takes the
 * replicas out of sync instead, and their resync makes the copies equal. A full replica
 * leaves the in-sync set (the client's write succeeds on the master) and catches up once it
 * has room, also when it is full as a new master takes over (it cannot write the new epoch,
 * so it cannot grant the lease). Each node's data directory is its own small tmpfs (needs
 * root to mount).
 */

import { assert, assertEquals } from "../_assert.ts";
import { admin } from "./_cluster_tls.ts";
import { waitFor } from "./_cluster.ts";
import { e2eTest, run } from "./_harness.ts";
import {
  assertCopiesEqual,
  createServed,
  type ReplCluster,
  startReplCluster,
  volumeOf,
  type VolumeView,
} from "./_replicated.ts";
import type { VolumeEvent, VolumeVerifyReport } from "../../mod/types.ts";

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
/** Writes 8 MiB of 0x5a at 0, then zeroes 80 MiB from 0 with NO_HOLE; prints "ok" or why not. */
const ZERO_PY = `
import sys, errno, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
h.pwrite(b"\\x5a" * (8 << 20), 0)
h.flush()
print("written", flush=True)
sys.stdin.readline()
try:
    h.zero(80 << 20, 0, nbd.CMD_FLAG_NO_HOLE)
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

const SKIP = Deno.uid() === 0 ? undefined : "not root: cannot mount a tmpfs for a node's data dir";

/**
 * Two nodes whose data directories are 96 MiB tmpfs mounts, and a volume of `size` with one
 * replica on them, served; unmounted afterwards.
 */
async function withSmallDisks(
  size: string,
  fn: (c: ReplCluster, v: VolumeView) => Promise<void>,
  names = NAMES,
): Promise<void> {
  const base = await Deno.makeTempDir({ prefix: "ballast-fulldisk-" });
  const dirs = Object.fromEntries(names.map((n) => [n, `${base}/${n}`]));
  const mounted: string[] = [];
  try {
    for (const d of Object.values(dirs)) {
      await Deno.mkdir(d);
      const m = await run("mount", ["-t", "tmpfs", "-o", "size=96m", "tmpfs", d]);
      assertEquals(m.code, 0, m.stderr);
      mounted.push(d);
    }
    const c = await startReplCluster(names, { dataDirs: dirs });
    try {
      await fn(c, await createServed(c, "full", size, names.length - 1));
    } finally {
      await c.stop();
    }
  } finally {
    for (const d of mounted) await run("umount", [d]);
    await Deno.remove(base, { recursive: true }).catch(() => {});
  }
}

/** Fills the disk of `dataDir` up to 2 MiB free; returns the filler's path. */
async function leaveTwoMiB(dataDir: string): Promise<string> {
  const room = await freeBytes(dataDir) - 2 * MiB;
  const filler = `${dataDir}/filler`;
  const fill = await run("fallocate", ["-l", String(room), filler]);
  assertEquals(fill.code, 0, fill.stderr);
  return filler;
}

e2eTest(
  "a write that fills the master's disk midway fails with ENOSPC, and the replica gets what the master holds: the copies stay equal",
  { tools: ["etcd", "mount", "umount", "df", "fallocate", PYTHON], skip: SKIP },
  () =>
    withSmallDisks("32MiB", async (c, v) => {
      const master = c.nodes.get(v.master)!;
      // Leave 2 MiB on the master's disk, then write 4 MiB in one request.
      const filler = await leaveTwoMiB(master.dataDir);
      const w = await run(PYTHON, ["-c", WRITE_PY, c.uri(v.master, "full")]);
      assertEquals(
        w.stdout.trim(),
        "ENOSPC",
        `the write fails with ENOSPC: ${w.stdout}${w.stderr}`,
      );
      await Deno.remove(filler);
      // The master's copy holds part of the write; the replica the same, not the old zeros.
      const verify = await admin(master, ["volume", "verify", "full", "-o", "json"]);
      const report = JSON.parse(verify.stdout) as VolumeVerifyReport;
      assertEquals(verify.code, 0, `verify says the copies differ: ${verify.stdout}`);
      assertEquals(report.members.length, 2);
      const after = await volumeOf(c, v.master, "full");
      assertEquals(after.inSync?.length, 2, "both members still in sync");
      await assertCopiesEqual(c, v.uuid, v.members!);
      const r = await run(PYTHON, ["-c", READ_PY, c.uri(v.master, "full")]);
      assertEquals(r.stdout.trim(), "5a", `part of the failed write is on the master: ${r.stderr}`);
    }),
);

e2eTest(
  "a WRITE_ZEROES larger than a request may carry fails midway on a full master: the replica leaves the in-sync set with the reason, then its resync makes the copies equal",
  { tools: ["etcd", "mount", "umount", "df", "fallocate", PYTHON], skip: SKIP },
  () =>
    withSmallDisks("88MiB", async (c, v) => {
      const master = c.nodes.get(v.master)!;
      const replica = v.members!.find((n) => n !== v.master)!;
      // 8 MiB of data on both copies, then 80 MiB zeroed (NO_HOLE: zeros written, in 1 MiB
      // pieces on tmpfs): the first 8 MiB change in place, the holes after them need space.
      const client = new Deno.Command(PYTHON, {
        args: ["-c", ZERO_PY, c.uri(v.master, "full")],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const out = client.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const first = await out.read();
      assertEquals(first.value?.trim(), "written", "the 8 MiB are written");
      const filler = await leaveTwoMiB(master.dataDir);
      const stdin = client.stdin.getWriter();
      await stdin.write(new TextEncoder().encode("\n"));
      await stdin.close();
      let said = "";
      for (let r = await out.read(); !r.done; r = await out.read()) said += r.value;
      const done = await client.status;
      const err = await new Response(client.stderr).text();
      assertEquals(said.trim(), "ENOSPC", `the zeroing fails with ENOSPC: ${said}${err}`);
      assert(done.success, err);
      // Too large to read back and send: the replica was taken out of sync, saying why.
      const events = await admin(master, ["volume", "events", "full", "-o", "json"]);
      assertEquals(events.code, 0, events.stderr);
      const items = (JSON.parse(events.stdout) as { items: VolumeEvent[] }).items;
      const left = items.find((e) =>
        e.node === replica && e.message.includes("failed on the master")
      );
      assert(left, `an event says why ${replica} left the in-sync set: ${events.stdout}`);
      await Deno.remove(filler);
      await waitFor(`${replica} back in sync`, async () => {
        return (await volumeOf(c, v.master, "full")).inSync?.length === 2;
      }, { timeoutMs: 60_000, everyMs: 200 });
      await assertCopiesEqual(c, v.uuid, v.members!);
      const r = await run(PYTHON, ["-c", READ_PY, c.uri(v.master, "full")]);
      assertEquals(r.stdout.trim(), "00", `the master's first bytes were zeroed: ${r.stderr}`);
    }),
);

e2eTest(
  "a full disk on the replica: the client's writes succeed on the master, the replica leaves the in-sync set saying ENOSPC; with room again its resync makes the copies equal",
  { tools: ["etcd", "mount", "umount", "df", "fallocate", PYTHON], skip: SKIP },
  () =>
    withSmallDisks("32MiB", async (c, v) => {
      const master = c.nodes.get(v.master)!;
      const replica = v.members!.find((n) => n !== v.master)!;
      const filler = await leaveTwoMiB(c.nodes.get(replica)!.dataDir);
      const w = await run(PYTHON, ["-c", WRITE_PY, c.uri(v.master, "full")]);
      assertEquals(
        w.stdout.trim(),
        "ok",
        `the write succeeds on the master: ${w.stdout}${w.stderr}`,
      );
      const view = await volumeOf(c, v.master, "full");
      assertEquals(view.inSync, [v.master], "the replica left the in-sync set before the reply");
      const events = await admin(master, ["volume", "events", "full", "-o", "json"]);
      assertEquals(events.code, 0, events.stderr);
      const items = (JSON.parse(events.stdout) as { items: VolumeEvent[] }).items;
      const left = items.find((e) => e.node === replica && e.message.includes("ENOSPC"));
      assert(left, `an event says ${replica} left for ENOSPC: ${events.stdout}`);
      const get = await admin(master, ["volume", "get", "full"]);
      assert(
        get.stdout.split("\n").some((l) => l.includes(replica) && l.includes("ENOSPC")),
        `volume get shows why ${replica} is out of sync:\n${get.stdout}`,
      );
      // The master goes on serving: another write, and what was written reads back.
      const again = await run(PYTHON, ["-c", WRITE_PY, c.uri(v.master, "full")]);
      assertEquals(again.stdout.trim(), "ok", again.stderr);
      const r = await run(PYTHON, ["-c", READ_PY, c.uri(v.master, "full")]);
      assertEquals(r.stdout.trim(), "5a", r.stderr);
      await Deno.remove(filler);
      await waitFor(`${replica} back in sync`, async () => {
        return (await volumeOf(c, v.master, "full")).inSync?.length === 2;
      }, { timeoutMs: 90_000, everyMs: 500 });
      await assertCopiesEqual(c, v.uuid, v.members!);
    }),
);

e2eTest(
  "a replica whose disk is full when a new master takes over (it cannot write the new epoch) leaves the in-sync set, and the new master serves; with room again it catches up",
  { tools: ["etcd", "mount", "umount", "df", "fallocate", PYTHON], skip: SKIP },
  () =>
    withSmallDisks("32MiB", async (c, v) => {
      // The drain hands over to the replica sorted first; the other one's disk is full.
      const [heir, full] = v.members!.filter((n) => n !== v.master).sort();
      const dir = c.nodes.get(full)!.dataDir;
      const filler = `${dir}/filler`;
      const fill = await run("fallocate", ["-l", String(await freeBytes(dir)), filler]);
      assertEquals(fill.code, 0, fill.stderr);
      const drain = await admin(c.nodes.get(heir)!, ["node", "drain", v.master]);
      assertEquals(drain.code, 0, drain.stdout + drain.stderr);
      // The new master's lease cannot be granted by the full member: without the fix every
      // request failed with EIO after 15 s; now the member leaves and writes go through.
      const w = await run(PYTHON, ["-c", WRITE_PY, c.uri(heir, "full")], { timeoutMs: 60_000 });
      assertEquals(w.stdout.trim(), "ok", `a write through ${heir}: ${w.stdout}${w.stderr}`);
      const after = await volumeOf(c, heir, "full");
      assertEquals(after.master, heir);
      assert(!after.inSync?.includes(full), `${full} left the in-sync set: ${after.inSync}`);
      await Deno.remove(filler);
      await waitFor(`${full} back in sync`, async () => {
        return (await volumeOf(c, heir, "full")).inSync?.length === 3;
      }, { timeoutMs: 90_000, everyMs: 500 });
      await assertCopiesEqual(c, v.uuid, v.members!);
    }, ["node-a", "node-b", "node-c"]),
);
