/**
 * `ballast node drain` and `ballast volume events` end to end (issue 13): three TLS nodes on
 * a real etcd, a volume with 2 replicas written through real NBD clients. A drain refuses,
 * with the reason, while a volume it masters has no replica (nothing changed); with --force
 * it moves the replicated master to an in-sync replica at the next epoch (the client
 * attached to the old master is disconnected, not left hanging), the data is intact on
 * the new master, writes go on there and reach the drained node (still an in-sync replica),
 * the events show the handover; uncordon clears the cordon; and with both replicas down the
 * drain refuses, naming them.
 */

import { assert, assertEquals } from "../_assert.ts";
import { PYTHON, waitFor } from "./_cluster.ts";
import { badBlocks, fillBlocks } from "./_blocks.ts";
import { admin } from "./_cluster_tls.ts";
import { e2eTest, run } from "./_harness.ts";
import {
  assertCopiesEqual,
  dumpWarnings,
  startReplCluster,
  untilServed,
  volumeOf,
} from "./_replicated.ts";

const NAMES = ["node-a", "node-b", "node-c"];

/**
 * Connects, touches a file, then writes 64 KiB blocks round a ring of 64 blocks from block
 * 256 until the connection fails (or 90 s), appending "offset seq" for each acknowledged
 * write to a manifest; prints how it ended. Each block holds its sequence number.
 */
const WRITER_PY = `
import sys, time, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
out = open(sys.argv[2], "w", buffering=1)
open(sys.argv[3], "w").close()
t0, i = time.time(), 0
try:
    while time.time() - t0 < 90:
        off = (256 + i % 64) * 65536
        h.pwrite((("%08d" % i) * 8192).encode(), off, nbd.CMD_FLAG_FUA if i % 8 == 0 else 0)
        out.write("%d %d\\n" % (off, i))
        i += 1
    print("still connected", i)
except nbd.Error as e:
    print("disconnected", i, str(e).replace("\\n", " "))
`;

/**
 * Checks the last write per offset of a WRITER_PY manifest; prints "bad N of M" and what the
 * bad blocks hold. Write argv[3] (the one in flight when the connection failed, never
 * acknowledged) may or may not have landed: either content passes at its offset.
 */
const VERIFY_PY = `
import sys, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
last = {}
for line in open(sys.argv[2]):
    off, i = line.split()
    last[int(off)] = int(i)
failed = int(sys.argv[3])
block = lambda i: (("%08d" % i) * 8192).encode()
bad = []
for o, i in last.items():
    got = h.pread(65536, o)
    if got != block(i) and not (o == (256 + failed % 64) * 65536 and got == block(failed)):
        bad.append("%d:%s" % (o // 65536, got[:8].decode(errors="replace")))
print("bad", len(bad), "of", len(last), *bad)
`;

interface Report {
  result: string;
  cordoned: boolean;
  volumes: { volume: string; status: string; to?: string; epoch?: number; reason?: string }[];
}

e2eTest(
  "node drain: refused with the reason, then moves the master to an in-sync replica (data intact, old clients disconnected, writes go on), events show it, uncordon clears it, and a volume with its replicas down is refused",
  { tools: [PYTHON, "etcd"] },
  async () => {
    const c = await startReplCluster(NAMES);
    try {
      const a = c.nodes.get("node-a")!;
      const made = await admin(a, ["volume", "create", "r1", "--size", "32MiB", "--replicas", "2"]);
      assertEquals(made.code, 0, made.stderr);
      const v = await untilServed(c, "r1");
      const old = v.master;
      const oldNode = c.nodes.get(old)!;
      // An unreplicated volume on the same node: it cannot move.
      const u = await admin(oldNode, ["volume", "create", "u1", "--size", "8MiB"]);
      assertEquals(u.code, 0, u.stderr);
      await fillBlocks(c.uri(old, "r1"), 128, 11);

      // Refused without --force: the reason per volume, exit 3, nothing changed.
      const refused = await admin(a, ["node", "drain", old, "-o", "json"]);
      assertEquals(refused.code, 3, refused.stderr);
      const rr = JSON.parse(refused.stdout) as Report;
      assertEquals(rr.result, "refused");
      assertEquals(rr.cordoned, false);
      const u1 = rr.volumes.find((x) => x.volume === "u1");
      assertEquals(u1?.status, "refused");
      assert(u1?.reason?.includes("it is not replicated"), JSON.stringify(u1));
      assertEquals(rr.volumes.find((x) => x.volume === "r1")?.status, "planned");
      assertEquals((await volumeOf(c, "node-a", "r1")).master, old);
      const state = await admin(a, ["node", "get", old, "-o", "json"]);
      assertEquals(JSON.parse(state.stdout).state, "ready");

      // A client writing through the old master's node while it is drained.
      const marker = await Deno.makeTempFile();
      await Deno.remove(marker);
      const manifest = await Deno.makeTempFile();
      const held = run(PYTHON, ["-c", WRITER_PY, c.uri(old, "r1"), manifest, marker], {
        timeoutMs: 120_000,
      });
      await waitFor("the writer connected", async () => {
        try {
          await Deno.stat(marker);
          return true;
        } catch {
          return false;
        }
      }, { timeoutMs: 30_000 });

      // With --force: r1 moves, u1 stays; progress and summary on stdout.
      const drainStart = Date.now();
      const drained = await admin(a, ["node", "drain", old, "--force"]);
      const drainedAt = Date.now();
      assertEquals(drained.code, 0, drained.stdout + drained.stderr);
      assert(drained.stdout.includes("r1: moved to "), drained.stdout);
      assert(drained.stdout.includes("u1: left on"), drained.stdout);
      assert(drained.stdout.includes(`node "${old}" drained`), drained.stdout);
      const after = await volumeOf(c, "node-a", "r1");
      assert(after.master !== old, `master still ${old}`);
      assertEquals(after.epoch, v.epoch + 1);
      assertEquals(after.inSync?.length, 3, `all still in sync: ${JSON.stringify(after)}`);
      const gone = await held;
      assert(gone.stdout.startsWith("disconnected"), `writer: ${gone.stdout} ${gone.stderr}`);

      // The data is intact on the new master, and writes go on there (reaching the drained
      // node, an in-sync replica now).
      await untilServed(c, "r1");
      // A planned handover: the new master did not wait out the old master's read lease, and
      // the volume was unavailable from the old master's close to the new master's export.
      const logAt = (logs: string, msg: RegExp) => {
        const l = logs.split("\n").find((x) => msg.test(x));
        return l ? Date.parse(JSON.parse(l).time) : NaN;
      };
      const exportedLine = /"epoch":2,.*"msg":"volume exported \(group master\)"/;
      assert(await c.nodes.get(after.master)!.logged(exportedLine), "the new master exported");
      const newLogs = c.nodes.get(after.master)!.logs();
      assert(!/lease to lapse/.test(newLogs), "the new master waited out a read lease");
      const closed = logAt(oldNode.logs(), /handing over; closing the export first/);
      const exported = logAt(newLogs, exportedLine);
      // deno-lint-ignore no-console
      console.log(
        `handover: volume unavailable for ${exported - closed} ms (old master's close to the ` +
          `new master's export); drain returned ${drainedAt - drainStart} ms after it started`,
      );
      assertEquals(await badBlocks(c.uri(after.master, "r1"), 128, 11), 0);
      // Every write acknowledged by the old master before it closed is on the new one.
      const inFlight = gone.stdout.split(" ")[1];
      const acked = await run(PYTHON, [
        "-c",
        VERIFY_PY,
        c.uri(after.master, "r1"),
        manifest,
        inFlight,
      ]);
      assert(/^bad 0 of [1-9]/.test(acked.stdout.trim()), `${acked.stdout} ${acked.stderr}`);
      await Deno.remove(manifest);
      await Deno.remove(marker);
      await fillBlocks(c.uri(after.master, "r1"), 64, 5);
      await assertCopiesEqual(c, v.uuid, NAMES);

      // The drained node masters no replicated volume, and is cordoned.
      const list = await admin(a, ["volume", "list", "-o", "json"]);
      const items = JSON.parse(list.stdout).items as { name: string; master: string }[];
      assertEquals(items.filter((x) => x.master === old).map((x) => x.name), ["u1"]);
      const cordoned = JSON.parse((await admin(a, ["node", "get", old, "-o", "json"])).stdout);
      assertEquals(cordoned.state, "cordoned");

      // The events: created, the handover asked and done.
      const ev = await admin(c.nodes.get(after.master)!, ["volume", "events", "r1", "-o", "json"]);
      assertEquals(ev.code, 0, ev.stderr);
      const events = JSON.parse(ev.stdout).items as { type: string; epoch: number }[];
      const types = events.map((e) => e.type);
      assertEquals(types.slice(0, 3), ["created", "handover-requested", "handover"], ev.stdout);
      assertEquals(events[2].epoch, v.epoch + 1);
      const table = await admin(a, ["volume", "events", "r1"]);
      assert(table.stdout.includes(`${old} handed over to ${after.master}`), table.stdout);

      // Uncordon: ready again (placements allowed).
      const back = await admin(a, ["node", "uncordon", old, "-o", "json"]);
      assertEquals(JSON.parse(back.stdout).state, "ready");

      // Both replicas of r1 down: draining its master is refused, naming them.
      const others = NAMES.filter((n) => n !== after.master);
      for (const n of others) await c.nodes.get(n)!.kill("SIGKILL");
      await waitFor("the record shows both replicas down", async () => {
        const x = await volumeOf(c, after.master, "r1");
        return others.every((n) => (x as { down?: string[] }).down?.includes(n));
      }, { timeoutMs: 60_000 });
      const none = await admin(c.nodes.get(after.master)!, [
        "node",
        "drain",
        after.master,
        "-o",
        "json",
      ]);
      assertEquals(none.code, 3, none.stdout + none.stderr);
      const nr = JSON.parse(none.stdout) as Report;
      const r1 = nr.volumes.find((x) => x.volume === "r1");
      assertEquals(r1?.status, "refused");
      for (const n of others) assert(r1?.reason?.includes(`${n} is down`), JSON.stringify(r1));
      const human = await admin(c.nodes.get(after.master)!, ["node", "drain", after.master]);
      assertEquals(human.code, 3);
      assert(human.stdout.includes(`drain of node "${after.master}" refused`), human.stdout);
      assert(!human.stdout.includes("draining"), human.stdout);

      // The replicas come back and are resynced; then the master dies and one is promoted:
      // the events tell all of it.
      for (const n of others) await c.start(n);
      await waitFor("both replicas back in sync", async () => {
        return (await volumeOf(c, after.master, "r1")).inSync?.length === 3;
      }, { timeoutMs: 120_000 });
      await c.nodes.get(after.master)!.kill("SIGKILL");
      await waitFor("a replica promoted", async () => {
        const x = await volumeOf(c, others[0], "r1");
        return x.epoch === v.epoch + 2 && x.master !== after.master;
      }, { timeoutMs: 60_000 });
      const late = await admin(c.nodes.get(others[0])!, ["volume", "events", "r1", "-o", "json"]);
      const seen = (JSON.parse(late.stdout).items as { type: string; node?: string }[])
        .map((e) => `${e.type} ${e.node ?? ""}`.trim());
      for (const n of others) {
        for (const t of ["down", "up", "resync-started", "in-sync"]) {
          assert(seen.includes(`${t} ${n}`), `no "${t} ${n}" in ${seen.join(", ")}`);
        }
      }
      assert(seen.some((e) => e.startsWith("promoted ")), seen.join(", "));
      assert(seen.includes(`down ${after.master}`), seen.join(", "));
    } catch (err) {
      dumpWarnings(c);
      throw err;
    } finally {
      await c.stop();
    }
  },
);
