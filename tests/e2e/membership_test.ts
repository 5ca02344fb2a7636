/**
 * Membership changes end to end (issue 12, "A new member ..."): real TLS nodes on a real etcd.
 * Raising the replica count places a new member that is seeded by Delta Sync (holes are not
 * sent) and ends byte-identical and in sync; lowering it removes a member, whose copy and
 * sidecar files are deleted; a replica's node killed with -9 while a client writes is replaced
 * after --replace-after by a node chosen by placement (not while that node is cordoned: then
 * `volume get` says why) and seeded while the writes go on; a replaced node that comes back
 * deletes its copy; a dead master is replaced by failover, then as a replica.
 */

import { assert, assertEquals } from "../_assert.ts";
import type { VolumeEvent } from "../../mod/types.ts";
import { PYTHON, waitFor } from "./_cluster.ts";
import { badBlocks, fillBlocks } from "./_blocks.ts";
import { admin } from "./_cluster_tls.ts";
import { type BallastProcess, e2eTest, run } from "./_harness.ts";
import {
  assertCopiesEqual,
  createServed,
  type ReplCluster,
  volumeOf,
  withReplCluster,
} from "./_replicated.ts";

const MiB = 1024 * 1024;

/**
 * Until STOP exists, writes random 4-64 KiB blocks in the first MIB MiB (which fillBlocks filled
 * with seed 7), keeping a shadow; then FLUSH and reads it all back: "ok WRITES", or "mismatch".
 */
const LOOP_PY = `
import os, random, sys, time, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
stop, size = sys.argv[2], int(sys.argv[3]) << 20
shadow = bytearray(b"".join(bytes([1 + (7 + i) % 250]) * 65536 for i in range(size // 65536)))
rng = random.Random(3)
n = 0
while not os.path.exists(stop):
    length = rng.randrange(1, 17) * 4096
    off = rng.randrange(0, (size - length) // 4096 + 1) * 4096
    buf = rng.randbytes(length)
    h.pwrite(buf, off)
    shadow[off:off + length] = buf
    n += 1
    time.sleep(0.005)
h.flush()
print("ok", n if h.pread(size, 0) == bytes(shadow) else "mismatch")
`;

function write(c: ReplCluster, master: string, volume: string, blocks: number) {
  return fillBlocks(c.uri(master, volume), blocks, 7);
}

/** The copy of `uuid` and its sidecar files present in node `p`'s data dir. */
async function copyFiles(p: BallastProcess, uuid: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${p.dataDir}/volumes`)) {
    if (e.name.startsWith(uuid)) out.push(e.name);
  }
  return out.sort();
}

/** The master's "resync finished" log line for `replica`, parsed (waits for it a while). */
async function resyncFinished(master: BallastProcess, replica: string) {
  await master.logged(new RegExp(`"replica":"${replica}".*resync finished`));
  const line = master.logs().split("\n").findLast((l) =>
    l.includes("resync finished") && l.includes(`"replica":"${replica}"`)
  );
  return line ? JSON.parse(line) as { sentBytes: number; zeroedBytes: number } : undefined;
}

e2eTest(
  "volume update --replicas: raising 1 -> 2 seeds the new member by Delta Sync (holes not sent) to a byte-identical in-sync copy; lowering 2 -> 1 removes a member and its files; bad counts are refused",
  { tools: [PYTHON, "etcd"] },
  () =>
    withReplCluster(["node-a", "node-b", "node-c"], async (c) => {
      const a = c.nodes.get("node-a")!;
      const v = await createServed(c, "m1", "64MiB", 1);
      assertEquals(v.members?.length, 2, JSON.stringify(v));
      // 8 MiB of data before the change; the other 56 MiB are holes.
      await write(c, v.master, "m1", 128);
      const spare = ["node-a", "node-b", "node-c"].find((n) => !v.members!.includes(n))!;

      const bad = await admin(a, ["volume", "update", "m1", "--replicas", "many"]);
      assertEquals(bad.code, 2, bad.stderr);
      const nine = await admin(a, ["volume", "update", "m1", "--replicas", "9"]);
      assertEquals(nine.code, 2, nine.stderr); // INVALID_ARGUMENT exits 2 wherever it is found
      assert(nine.stderr.includes("invalid --replicas 9"), nine.stderr);
      const three = await admin(a, ["volume", "update", "m1", "--replicas", "3"]);
      assertEquals(three.code, 1, three.stderr);
      assert(
        three.stderr.includes('cannot raise volume "m1" to 3 replicas: need 2 more eligible'),
        three.stderr,
      );
      assertEquals((await volumeOf(c, "node-a", "m1")).members, v.members, "nothing changed");

      const up = await admin(a, ["volume", "update", "m1", "--replicas", "2", "-o", "json"]);
      assertEquals(up.code, 0, up.stderr);
      const raised = JSON.parse(up.stdout) as { replicas: number; members: string[] };
      assertEquals(raised.replicas, 2);
      assertEquals(raised.members, ["node-a", "node-b", "node-c"]);
      const seeded = await waitFor("the new member in sync", async () => {
        const now = await volumeOf(c, "node-b", "m1");
        return now.inSync?.length === 3;
      }, { timeoutMs: 90_000, everyMs: 200 });
      await assertCopiesEqual(c, v.uuid, ["node-a", "node-b", "node-c"]);
      const fin = await resyncFinished(c.nodes.get(v.master)!, spare);
      assert(fin, "the master logs the end of the seeding");
      // deno-lint-ignore no-console
      console.log(
        `[membership] seeded ${spare} in ${seeded} ms: sent ${fin.sentBytes} ` +
          `bytes, zeroed ${fin.zeroedBytes}, for 8 MiB of data in a 64 MiB volume`,
      );
      assert(fin.sentBytes > 0 && fin.sentBytes <= 8 * MiB, `sent ${fin.sentBytes}`);
      assertEquals(fin.zeroedBytes, 0, "holes are neither sent nor zeroed");
      const failed = c.nodes.get(v.master)!.logs().split("\n").filter((l) =>
        l.includes("group: resync failed") && l.includes(spare)
      );
      assertEquals(failed, [], "the seeding waits for the new copy instead of failing");

      // Lowering: every member is in sync, so the first replica by name leaves.
      const down = await admin(a, ["volume", "update", "m1", "--replicas", "1"]);
      assertEquals(down.code, 0, down.stderr);
      assert(down.stdout.includes('volume "m1" updated: replicas 1'), down.stdout);
      const after = await volumeOf(c, "node-a", "m1");
      assertEquals(after.members?.length, 2, JSON.stringify(after));
      const gone = ["node-a", "node-b", "node-c"].find((n) => !after.members!.includes(n))!;
      assert(gone !== v.master, "the master stays");
      await waitFor(`${gone} deletes its copy and sidecars`, async () => {
        return (await copyFiles(c.nodes.get(gone)!, v.uuid)).length === 0;
      }, { timeoutMs: 30_000, everyMs: 200 });
      assertEquals(after.inSync?.length, 2);
      await assertCopiesEqual(c, v.uuid, after.members!);

      // Both changes are in the group's history (written with the membership CAS).
      const ev = await admin(a, ["volume", "events", "m1", "-o", "json"]);
      assertEquals(ev.code, 0, ev.stderr);
      const items = (JSON.parse(ev.stdout) as { items: VolumeEvent[] }).items;
      const changes = items.filter((e) => e.type.startsWith("member-"))
        .map((e) => [e.type, e.node]);
      assertEquals(changes, [["member-added", spare], ["member-removed", gone]]);
    }),
);

e2eTest(
  "kill -9 of a replica's node under writes with --replace-after 3s: not replaced while the only spare is cordoned (volume get says why), then replaced on it and seeded while writes go on, copies identical; the old node deletes its copy when back",
  { tools: [PYTHON, "etcd"] },
  () =>
    withReplCluster(
      ["node-a", "node-b", "node-c", "node-d"],
      async (c) => {
        const names = ["node-a", "node-b", "node-c", "node-d"];
        const v = await createServed(c, "m2", "64MiB", 2);
        await write(c, v.master, "m2", 64);
        const spare = names.find((n) => !v.members!.includes(n))!;
        const victim = v.members!.find((n) => n !== v.master)!;
        const cordon = await admin(c.nodes.get(v.master)!, ["node", "cordon", spare]);
        assertEquals(cordon.code, 0, cordon.stderr);

        // A client writes all along: the kill, the blocked replacement and the seeding.
        const tmp = await Deno.makeTempDir({ prefix: "ballast-members-" });
        const stop = `${tmp}/stop`;
        const writer = run(PYTHON, ["-c", LOOP_PY, c.uri(v.master, "m2"), stop, "4"], {
          timeoutMs: 240_000,
        });
        const killedAt = Date.now();
        await c.nodes.get(victim)!.kill("SIGKILL");
        // Nowhere to go: nothing changes, and the master says why.
        let why = "";
        await waitFor("the blocked replacement shown by volume get", async () => {
          const r = await admin(c.nodes.get(v.master)!, ["volume", "get", "m2", "-o", "json"]);
          const got = JSON.parse(r.stdout) as { membershipBlocked?: { reason: string } };
          why = got.membershipBlocked?.reason ?? "";
          return why !== "";
        }, { timeoutMs: 60_000, everyMs: 250 });
        assert(why.includes(`cannot replace ${victim}`), why);
        assert(why.includes(`${spare} (cordoned)`), why);
        const text = await admin(c.nodes.get(v.master)!, ["volume", "get", "m2"]);
        assert(text.stdout.includes("Membership:   blocked since"), text.stdout);
        assertEquals((await volumeOf(c, v.master, "m2")).members, v.members);

        const blockedIn = Date.now() - killedAt;
        const uncordonedAt = Date.now();
        const uncordon = await admin(c.nodes.get(v.master)!, ["node", "uncordon", spare]);
        assertEquals(uncordon.code, 0, uncordon.stderr);
        const replacedIn = await waitFor(`${spare} replaces ${victim} and is in sync`, async () => {
          const now = await volumeOf(c, v.master, "m2");
          return now.members?.includes(spare) === true && !now.members.includes(victim) &&
            now.inSync?.length === 3;
        }, { timeoutMs: 90_000, everyMs: 250, since: uncordonedAt });
        await Deno.writeTextFile(stop, "");
        const w = await writer;
        await Deno.remove(tmp, { recursive: true });
        assert(/^ok \d+$/.test(w.stdout.trim()), `the writer: ${w.stdout}${w.stderr}`);
        const members = (await volumeOf(c, v.master, "m2")).members!;
        assertEquals((await volumeOf(c, v.master, "m2")).inSync?.length, 3);
        await assertCopiesEqual(c, v.uuid, members);
        const fin = await resyncFinished(c.nodes.get(v.master)!, spare);
        // deno-lint-ignore no-console
        console.log(
          `[membership] ${victim} killed; replacement shown blocked ${blockedIn} ms later ` +
            `(--replace-after 3s, lease TTL 3 s + grace); ${spare} uncordoned, then member ` +
            `and in sync ${replacedIn} ms later; seed sent ${fin?.sentBytes} bytes for 4 MiB ` +
            `written (${w.stdout.trim().split(" ")[1]} client writes meanwhile)`,
        );
        // The 4 MiB the client writes in, again at most for blocks written during the seeding.
        assert(fin && fin.sentBytes <= 8 * MiB, `sent ${fin?.sentBytes}`);

        // The replaced node comes back: no longer a member, it deletes its copy.
        const back = await c.start(victim);
        await waitFor(`${victim} deletes the copy it no longer needs`, async () => {
          return (await copyFiles(back, v.uuid)).length === 0;
        }, { timeoutMs: 30_000, everyMs: 200 });
        assert(await back.logged("left the volume group"), "the node says why");
      },
      { args: ["--replace-after", "3s"] },
    ),
);

e2eTest(
  "kill -9 of the master with --replace-after 3s: a replica takes over, then replaces the dead master as a replica on a spare node and seeds it; the data written before is on both copies",
  { tools: [PYTHON, "etcd"] },
  () =>
    withReplCluster(["node-a", "node-b", "node-c"], async (c) => {
      const names = ["node-a", "node-b", "node-c"];
      const v = await createServed(c, "m3", "64MiB", 1);
      await write(c, v.master, "m3", 64);
      const heir = v.members!.find((n) => n !== v.master)!;
      const spare = names.find((n) => !v.members!.includes(n))!;
      const running = await admin(c.nodes.get(heir)!, ["node", "remove", v.master]);
      assertEquals(running.code, 1, running.stdout);
      assert(running.stderr.includes(`node ${v.master} is running`), running.stderr);
      const killedAt = Date.now();
      await c.nodes.get(v.master)!.kill("SIGKILL");
      const took = await waitFor(
        `${heir} master, ${spare} replacing ${v.master}, in sync`,
        async () => {
          const now = await volumeOf(c, heir, "m3");
          return now.master === heir && now.epoch === v.epoch + 1 &&
            now.members?.join() === [heir, spare].sort().join() && now.inSync?.length === 2;
        },
        { timeoutMs: 90_000, everyMs: 250, since: killedAt },
      );
      await assertCopiesEqual(c, v.uuid, [heir, spare]);
      assertEquals(await badBlocks(c.uri(heir, "m3"), 64, 7), 0);
      // deno-lint-ignore no-console
      console.log(
        `[membership] master ${v.master} killed; ${heir} serves at epoch ${v.epoch + 1} and ` +
          `${spare} replaced ${v.master}, in sync ${took} ms after the kill`,
      );

      // Gone for good: once no record counts on it, the cluster forgets it.
      const removed = await admin(c.nodes.get(spare)!, ["node", "remove", v.master]);
      assertEquals(removed.code, 0, removed.stderr);
      assert(
        removed.stdout.startsWith(`node "${v.master}" removed (its last report `),
        removed.stdout,
      );
      const list = await admin(c.nodes.get(heir)!, ["node", "list", "-o", "json"]);
      const left = (JSON.parse(list.stdout).items as { name: string }[]).map((n) => n.name);
      assertEquals(left, [heir, spare].sort());
    }, { args: ["--replace-after", "3s"] }),
);
