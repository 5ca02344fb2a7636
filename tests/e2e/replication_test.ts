/**
 * Synchronous replication end to end (issue 12): three TLS nodes on a real etcd, a volume
 * with 2 replicas, real NBD clients on its master. Every acknowledged write is on every
 * in-sync member; a replica killed under load is marked out of sync before any write it
 * missed is acknowledged; the master killed under load is replaced by an in-sync replica
 * that holds every write the client saw acknowledged.
 */

import { assert, assertEquals } from "../_assert.ts";
import { PYTHON, waitFor } from "./_cluster.ts";
import { fillBlocks } from "./_blocks.ts";
import { e2eTest, run } from "./_harness.ts";
import {
  assertCopiesEqual,
  createServed,
  type ReplCluster,
  volumeOf,
  withReplCluster,
} from "./_replicated.ts";

const NAMES = ["node-a", "node-b", "node-c"];

const withCluster = (fn: (c: ReplCluster) => Promise<void>) => withReplCluster(NAMES, fn);

e2eTest(
  "a volume with 2 replicas: every write a client saw acknowledged is on all three copies, byte for byte",
  { tools: [PYTHON, "etcd"] },
  () =>
    withCluster(async (c) => {
      const v = await createServed(c, "r1", "64MiB", 2);
      assertEquals(v.inSync?.length, 3, `all in sync: ${JSON.stringify(v)}`);
      await fillBlocks(c.uri(v.master, "r1"), 512, 7, 4);
      const after = await volumeOf(c, "node-a", "r1");
      assertEquals(after.inSync?.length, 3, `still all in sync: ${JSON.stringify(after)}`);
      assertEquals(after.epoch, v.epoch);
      await assertCopiesEqual(c, v.uuid, NAMES);
    }),
);

/**
 * Writes 64 KiB blocks (FUA on every 8th) round a ring of the first `ring` blocks until `stop`
 * exists or the connection breaks, appending "offset seq time" for each acknowledged write to a
 * manifest. Each block holds its sequence number, so the last write per offset is checkable.
 */
const WRITER_PY = `
import os, sys, time, nbd
uri, manifest, stop, ring = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(uri)
out = open(manifest, "w", buffering=1)
ring = min(ring, h.get_size() // 65536)
i = 0
try:
    while not os.path.exists(stop) and i < 1000000:
        data = (("%08d" % i) * 8192).encode()
        off = (i % ring) * 65536
        h.pwrite(data, off, nbd.CMD_FLAG_FUA if i % 8 == 0 else 0)
        out.write("%d %d %f\\n" % (off, i, time.time()))
        i += 1
    if i % 8 != 1:
        h.flush()
    print("done", i)
except nbd.Error as e:
    print("stopped", i, e)
`;

/** Checks every write in the manifest (the last per offset) through `uri`. */
const VERIFY_PY = `
import sys, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
last = {}
for line in open(sys.argv[2]):
    off, i, _ = line.split()
    last[int(off)] = int(i)
bad = [off for off, i in last.items() if h.pread(65536, off) != (("%08d" % i) * 8192).encode()]
print("bad", len(bad), "of", len(last))
`;

async function manifestLines(path: string): Promise<number> {
  try {
    return (await Deno.readTextFile(path)).split("\n").filter((l) => l.trim()).length;
  } catch {
    return 0;
  }
}

e2eTest(
  "kill -9 of a replica under load: marked out of sync, writes go on; restarted, it catches up by Delta Sync sending only what changed; every copy ends equal",
  { tools: [PYTHON, "etcd"] },
  () =>
    withCluster(async (c) => {
      const v = await createServed(c, "r2", "256MiB", 2);
      const victim = NAMES.find((n) => n !== v.master)!;
      const tmp = await Deno.makeTempDir({ prefix: "ballast-repl-kill-" });
      const manifest = `${tmp}/manifest`;
      const stop = `${tmp}/stop`;
      // The writer goes round the first 32 MiB of a 256 MiB volume: a replica away for a
      // while misses at most 32 MiB, and Delta Sync must not copy the other 224.
      const writer = run(PYTHON, ["-c", WRITER_PY, c.uri(v.master, "r2"), manifest, stop, "512"], {
        timeoutMs: 180_000,
      });
      try {
        await waitFor("200 writes", async () => await manifestLines(manifest) >= 200, {
          timeoutMs: 60_000,
          everyMs: 50,
        });
        await c.nodes.get(victim)!.kill("SIGKILL");
        const atKill = await manifestLines(manifest);
        // The master marks the dead replica out of sync and the writes go on.
        await waitFor(`${victim} out of sync`, async () => {
          const now = await volumeOf(c, v.master, "r2");
          return now.inSync?.length === 2 && !now.inSync.includes(victim);
        }, { timeoutMs: 30_000, everyMs: 200 });
        await waitFor(
          "200 more writes",
          async () => await manifestLines(manifest) >= atKill + 200,
          {
            timeoutMs: 60_000,
            everyMs: 50,
          },
        );
        // Back, it is resynced while the writer keeps going, and put back in sync.
        const back = await c.start(victim);
        await waitFor(`${victim} back in sync`, async () => {
          const now = await volumeOf(c, v.master, "r2");
          return now.inSync?.length === 3;
        }, { timeoutMs: 60_000, everyMs: 200 });
        await Deno.writeTextFile(stop, "");
        const w = await writer;
        assert(w.stdout.startsWith("done"), `the writer was cut: ${w.stdout}${w.stderr}`);
        await assertCopiesEqual(c, v.uuid, NAMES);
        // Only what changed was sent: the distinct blocks written since the kill (64 KiB
        // each), at most twice over (a block written again during the resync is sent again).
        const master = c.nodes.get(v.master)!;
        await master.logged("resync finished");
        const line = master.logs().split("\n").find((l) => l.includes("resync finished"));
        assert(line, "the master logs the end of the resync");
        const sent = JSON.parse(line).sentBytes as number;
        const lines = (await Deno.readTextFile(manifest)).split("\n").filter((l) => l.trim());
        const changed = new Set(lines.slice(atKill).map((l) => l.split(" ")[0])).size * 65536;
        // deno-lint-ignore no-console
        console.log(`[delta sync] sent ${sent} bytes for ${changed} bytes written since the kill`);
        assert(sent > 0, "something was copied");
        assert(sent <= 2 * changed, `sent ${sent} bytes for ${changed} changed`);
        assert(sent < 64 * 1024 * 1024, `sent ${sent} bytes: more than the ring ever touched`);
        assert(back.logs().includes("ballast ready"));
        // The resync began a new replication session of the copy first (fencing what an
        // earlier link of the master might still deliver), and writes went on in it.
        const session = back.logs().split("\n").find((l) =>
          l.includes('"msg":"new replication session')
        );
        assert(session, "the returning member was given a new session before its resync");
        assertEquals(JSON.parse(session).session, 1);
        assert(
          !back.logs().includes("older replication session"),
          "a change of the session refused",
        );
      } finally {
        await Deno.writeTextFile(stop, "").catch(() => {});
        await writer.catch(() => {});
        await Deno.remove(tmp, { recursive: true });
      }
    }),
);

e2eTest(
  "kill -9 of the master under load: an in-sync replica is promoted at a new epoch and holds every write the client saw acknowledged",
  { tools: [PYTHON, "etcd"] },
  () =>
    withCluster(async (c) => {
      const v = await createServed(c, "r3", "128MiB", 2);
      const tmp = await Deno.makeTempDir({ prefix: "ballast-repl-master-" });
      const manifest = `${tmp}/manifest`;
      try {
        const writer = run(PYTHON, [
          "-c",
          WRITER_PY,
          c.uri(v.master, "r3"),
          manifest,
          `${tmp}/stop`,
          "1000000",
        ], {
          timeoutMs: 180_000,
        });
        await waitFor("300 writes", async () => await manifestLines(manifest) >= 300, {
          timeoutMs: 60_000,
          everyMs: 50,
        });
        await c.nodes.get(v.master)!.kill("SIGKILL");
        const w = await writer;
        assert(w.stdout.startsWith("stopped"), `the writer goes on? ${w.stdout}`);
        const survivor = NAMES.find((n) => n !== v.master)!;
        const promoted = await eventuallyPromoted(c, survivor, "r3", v.epoch);
        assert(promoted.master !== v.master && promoted.epoch > v.epoch, JSON.stringify(promoted));
        const check = await run(PYTHON, ["-c", VERIFY_PY, c.uri(promoted.master, "r3"), manifest]);
        assertEquals(check.code, 0, check.stderr);
        assert(check.stdout.startsWith("bad 0 of "), `acknowledged writes lost: ${check.stdout}`);
        const left = NAMES.filter((n) => n !== v.master);
        await assertCopiesEqual(c, v.uuid, left);
      } finally {
        await Deno.remove(tmp, { recursive: true });
      }
    }),
);

async function eventuallyPromoted(c: ReplCluster, via: string, name: string, epoch: number) {
  let got: Awaited<ReturnType<typeof volumeOf>> | undefined;
  await waitFor("a replica promoted", async () => {
    got = await volumeOf(c, via, name);
    return got.epoch > epoch;
  }, { timeoutMs: 60_000, everyMs: 200 });
  return got!;
}
