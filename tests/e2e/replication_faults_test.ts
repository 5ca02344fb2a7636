/**
 * Replication under faults (issue 12), on real processes: three TLS nodes on a real etcd.
 * fio with crc32c verification through a master, then every copy compared; a master
 * frozen with SIGSTOP past its lease and resumed (no stale read, no acknowledged write of
 * the old epoch); a replica frozen (marked out of sync within the replica timeout, writes go
 * on, it comes back by Delta Sync); a resync cut by SIGKILL of the replica and of the master
 * (it resumes without copying again what is already equal).
 */

import { assert, assertEquals } from "../_assert.ts";
import { PYTHON, waitFor } from "./_cluster.ts";
import { e2eTest, run } from "./_harness.ts";
import { admin } from "./_cluster_tls.ts";
import type { Volume, VolumeEvent } from "../../mod/types.ts";
import { unendedResyncs } from "../../control/events/mod.ts";
import {
  assertCopiesEqual,
  createServed,
  localUri,
  type ReplCluster,
  untilServed,
  volumeOf,
  type VolumeView,
  withReplCluster,
} from "./_replicated.ts";

const NAMES = ["node-a", "node-b", "node-c"];
const MiB = 2 ** 20;

const withCluster = (fn: (c: ReplCluster) => Promise<void>, options?: { args?: string[] }) =>
  withReplCluster(NAMES, fn, options);
const create = (c: ReplCluster, name: string, size: string) => createServed(c, name, size, 2);

/** Writes `count` 64 KiB blocks from block `first`, each filled with `fill`; prints "ok". */
const FILL_PY = `
import sys, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
first, count, fill = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(first, first + count):
    h.pwrite(bytes([(fill + i) % 251 or 1]) * 65536, i * 65536)
h.flush()
print("ok")
`;

async function fill(uri: string, first: number, count: number, seed: number): Promise<void> {
  const r = await run(PYTHON, ["-c", FILL_PY, uri, String(first), String(count), String(seed)], {
    timeoutMs: 120_000,
  });
  assertEquals(r.stdout.trim(), "ok", r.stderr);
}

/** The volume's events as node `via` lists them (`volume events -o json`). */
async function events(c: ReplCluster, via: string, volume: string): Promise<VolumeEvent[]> {
  const r = await admin(c.nodes.get(via)!, ["volume", "events", volume, "-o", "json"]);
  assertEquals(r.code, 0, r.stderr);
  return JSON.parse(r.stdout).items as VolumeEvent[];
}

/** The JSON fields of the first (or with `last`, the last) log line with `msg`. */
function logged(logs: string, msg: string, last = false): Record<string, unknown> | undefined {
  const lines = logs.split("\n").filter((l) => l.includes(`"msg":"${msg}`));
  const line = last ? lines.at(-1) : lines[0];
  return line ? JSON.parse(line) : undefined;
}

/** Kills a replica of volume `v` (SIGKILL); waits until its master took it out of sync. */
async function killReplica(c: ReplCluster, v: VolumeView): Promise<string> {
  const lagging = NAMES.find((n) => n !== v.master)!;
  await c.nodes.get(lagging)!.kill("SIGKILL");
  await waitFor(`${lagging} out of sync`, async () => {
    const now = await volumeOf(c, v.master, v.name);
    return !now.inSync?.includes(lagging);
  }, { timeoutMs: 30_000, everyMs: 250 });
  return lagging;
}

/** Starts `lagging` again; waits until its master's resync of it has sent 8 MiB. */
async function restartIntoResync(c: ReplCluster, v: VolumeView, lagging: string): Promise<void> {
  await c.start(lagging);
  await waitFor("the resync to get going", () => {
    const p = logged(c.nodes.get(v.master)!.logs(), "resync progress", true);
    return ((p?.sentBytes ?? 0) as number) >= 8 * MiB;
  }, { timeoutMs: 60_000, everyMs: 20 });
}

e2eTest(
  "fio with crc32c verification through the master of a volume with 2 replicas; every copy ends byte-identical",
  { tools: ["fio", "etcd"] },
  () =>
    withCluster(async (c) => {
      const v = await create(c, "fio1", "128MiB");
      const fio = await run("fio", [
        "--name=verify",
        "--ioengine=nbd",
        // fio's nbd engine cannot read certificate files: the loopback plaintext listener.
        `--uri=${localUri(c.nodes.get(v.master)!, "fio1")}`,
        "--rw=randwrite",
        "--bssplit=4k/50:64k/40:1m/10",
        "--iodepth=16",
        "--size=48m",
        "--verify=crc32c",
        "--verify_fatal=1",
        "--do_verify=1",
        "--verify_state_save=0",
        "--output-format=json",
      ], { timeoutMs: 180_000 });
      assertEquals(fio.code, 0, fio.stderr);
      const job = JSON.parse(fio.stdout.slice(fio.stdout.indexOf("{"))).jobs[0];
      assertEquals(job.error, 0);
      assert(job.write.io_bytes >= 48 * MiB * 0.99, `fio wrote ${job.write.io_bytes} bytes`);
      const after = await volumeOf(c, v.master, "fio1");
      assertEquals(after.inSync?.length, 3, JSON.stringify(after));
      await assertCopiesEqual(c, v.uuid, NAMES);
    }, { args: ["--nbd-local-listen", "127.0.0.1:0"] }),
);

/**
 * Holds one NBD connection and obeys stdin: "read N" prints the first byte of 64 KiB block
 * N (or "error ERRNO message"), "write N B" writes block N filled with byte B ("ok" or "error
 * ERRNO message"); ERRNO is the error's name, "-" when libnbd gave none.
 */
const HOLD_PY = `
import sys, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
print("connected", flush=True)
for line in sys.stdin:
    cmd = line.split()
    try:
        if cmd[0] == "read":
            print("byte", h.pread(65536, int(cmd[1]) * 65536)[0], flush=True)
        elif cmd[0] == "write":
            h.pwrite(bytes([int(cmd[2])]) * 65536, int(cmd[1]) * 65536, nbd.CMD_FLAG_FUA)
            print("ok", flush=True)
    except Exception as e:
        print("error", getattr(e, "errno", None) or "-", str(e).replace("\\n", " "), flush=True)
`;

/** A held NBD connection driven line by line. */
async function hold(uri: string) {
  const p = new Deno.Command(PYTHON, {
    args: ["-c", HOLD_PY, uri],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = p.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const line = async (ms: number): Promise<string> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const nl = buffered.indexOf("\n");
      if (nl >= 0) {
        const l = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        return l;
      }
      const left = deadline - Date.now();
      if (left <= 0) return "timeout";
      let t: ReturnType<typeof setTimeout> | undefined;
      const r = await Promise.race([
        lines.read(),
        new Promise<{ done: true; value: undefined }>((res) => {
          t = setTimeout(() => res({ done: true, value: undefined }), left);
        }),
      ]);
      clearTimeout(t);
      if (r.done) return Date.now() >= deadline ? "timeout" : "closed";
      buffered += r.value;
    }
  };
  const w = p.stdin.getWriter();
  assertEquals(await line(30_000), "connected");
  return {
    async ask(cmd: string, ms = 60_000): Promise<string> {
      await w.write(new TextEncoder().encode(cmd + "\n"));
      return await line(ms);
    },
    async close() {
      await w.close().catch(() => {});
      try {
        p.kill("SIGKILL");
      } catch { /* gone */ }
      await p.status;
      await lines.cancel().catch(() => {});
      await p.stderr.cancel().catch(() => {});
    },
  };
}

e2eTest(
  "a master frozen (SIGSTOP) past its lease and resumed: no stale read and no acknowledged write of the old epoch, while the promoted master serves the new data",
  { tools: [PYTHON, "etcd"] },
  () =>
    withCluster(async (c) => {
      const v = await create(c, "frozen", "32MiB");
      const old = c.nodes.get(v.master)!;
      const client = await hold(c.uri(v.master, "frozen"));
      try {
        assertEquals(await client.ask("write 3 17"), "ok");
        assertEquals(await client.ask("read 3"), "byte 17");
        old.signal("SIGSTOP");
        const other = NAMES.find((n) => n !== v.master)!;
        let promoted: VolumeView | undefined;
        await waitFor("a new master", async () => {
          promoted = await volumeOf(c, other, "frozen");
          return promoted.master !== v.master && promoted.epoch > v.epoch;
        }, { timeoutMs: 60_000, everyMs: 250 });
        // The new master serves once the old lease lapsed (asked of a node not frozen).
        await untilServed(c, "frozen", other);
        await fill(c.uri(promoted!.master, "frozen"), 3, 1, 99 - 3); // block 3 := 99
        old.signal("SIGCONT");
        // The old master's client, on the connection it held all along.
        const read = await client.ask("read 3");
        assert(read !== "byte 17", `a stale read from the replaced master: ${read}`);
        assert(read.startsWith("error") || read === "closed", `unexpected: ${read}`);
        // A replaced master that answers says so: ESHUTDOWN, never EIO (docs/CLUSTER.md, "What a
        // replaced master answers"); it may also have closed the connection first.
        const replaced = (answer: string) =>
          answer === "closed" || (answer.startsWith("error ") && answer.split(" ")[1] !== "EIO");
        assert(replaced(read), `the replaced master's answer to a read: ${read}`);
        const wrote = await client.ask("write 5 33");
        assert(wrote !== "ok", `the replaced master acknowledged a write: ${wrote}`);
        assert(replaced(wrote), `the replaced master's answer to a write: ${wrote}`);
        // The new master has the new data and not the refused write.
        const fresh = await hold(c.uri(promoted!.master, "frozen"));
        try {
          assertEquals(await fresh.ask("read 3"), "byte 99");
          assertEquals(await fresh.ask("read 5"), "byte 0");
        } finally {
          await fresh.close();
        }
        // The old master comes back as a member and is resynced.
        await waitFor("all three in sync again", async () => {
          const now = await volumeOf(c, promoted!.master, "frozen");
          return now.inSync?.length === 3;
        }, { timeoutMs: 60_000, everyMs: 250 });
        await assertCopiesEqual(c, v.uuid, NAMES);
      } finally {
        old.signal("SIGCONT");
        await client.close();
      }
    }),
);

for (const round of [1, 2]) {
  e2eTest(
    `a replica frozen (SIGSTOP) under writes is marked out of sync and the writes go on; resumed, it is resynced and every copy ends equal (round ${round})`,
    { tools: [PYTHON, "etcd"] },
    () =>
      withCluster(async (c) => {
        const v = await create(c, "stall", "64MiB");
        const victim = NAMES.find((n) => n !== v.master)!;
        const uri = c.uri(v.master, "stall");
        await fill(uri, 0, 64, 1);
        c.nodes.get(victim)!.signal("SIGSTOP");
        try {
          // These writes wait for the frozen replica until it is marked out of sync, then
          // finish: none fails.
          await fill(uri, 64, 128, 2);
          const now = await volumeOf(c, v.master, "stall");
          assert(!now.inSync?.includes(victim), `still in sync: ${JSON.stringify(now)}`);
        } finally {
          c.nodes.get(victim)!.signal("SIGCONT");
        }
        await waitFor(`${victim} back in sync`, async () => {
          const now = await volumeOf(c, v.master, "stall");
          return now.inSync?.length === 3;
        }, { timeoutMs: 60_000, everyMs: 250 });
        await assertCopiesEqual(c, v.uuid, NAMES);
      }),
  );
}

e2eTest(
  "SIGKILL of a replica in the middle of its resync: after a restart the resync resumes and does not send again what it copied before",
  { tools: [PYTHON, "etcd"] },
  () =>
    withCluster(async (c) => {
      const v = await create(c, "cut1", "128MiB");
      const master = c.nodes.get(v.master)!;
      const victim = await killReplica(c, v);
      // The master tried the dead replica, which did not answer: no resync is announced.
      assert(await master.logged('"msg":"resync could not start'), "no failed start logged");
      const early = await events(c, v.master, "cut1");
      assertEquals(early.filter((e) => e.type.startsWith("resync")), [], JSON.stringify(early));
      const changed = 64 * MiB;
      await fill(c.uri(v.master, "cut1"), 0, changed / 65536, 5);
      await restartIntoResync(c, v, victim);
      await c.nodes.get(victim)!.kill("SIGKILL");
      // (Earlier attempts, while the replica was still down, stopped before sending.)
      let firstSent = 0;
      await waitFor("the resync to stop", () => {
        firstSent = (logged(master.logs(), "resync stopped", true)?.sentBytes ?? 0) as number;
        return firstSent > 0;
      }, { timeoutMs: 30_000, everyMs: 50 });
      assert(firstSent > 0 && firstSent < changed, `first resync sent ${firstSent}`);
      // The interruption is logged and recorded with why and how far it got.
      let interrupted = "";
      assert(await master.logged('"msg":"resync interrupted'), "no interruption logged");
      await waitFor("the interruption in the events", async () => {
        const cut = (await events(c, v.master, "cut1")).filter((e) => e.node === victim);
        const types = cut.map((e) => e.type);
        // (Its "down" may be recorded before or after the interruption.)
        const last = cut.findLast((e) => e.type === "resync-interrupted");
        if (last === undefined) return false;
        assertEquals(types.filter((t) => t.startsWith("resync")), [
          "resync-started",
          "resync-interrupted",
        ]);
        assert(/: the member( failed|'s node is down)/.test(last.message), last.message);
        assert(/it had compared \S+ \S+ of 128 MiB \(pass 1\) and sent /.test(last.message));
        interrupted = last.message;
        return true;
      }, { timeoutMs: 15_000, everyMs: 250 });
      await c.start(victim);
      await waitFor(`${victim} back in sync`, async () => {
        const now = await volumeOf(c, v.master, "cut1");
        return now.inSync?.length === 3;
      }, { timeoutMs: 90_000, everyMs: 250 });
      const done = logged(master.logs(), "resync finished")!;
      const secondSent = done.sentBytes as number;
      // deno-lint-ignore no-console
      console.log(`[resync cut] sent ${firstSent} + ${secondSent} bytes for ${changed} changed`);
      // deno-lint-ignore no-console
      console.log(`[resync cut] event: ${interrupted}`);
      assert(
        firstSent + secondSent <= changed + 4 * MiB,
        `sent ${firstSent} + ${secondSent} for ${changed}: the second resync sent again`,
      );
      await assertCopiesEqual(c, v.uuid, NAMES);
    }, { args: ["--resync-rate", "16MiB/s"] }),
);

e2eTest(
  "SIGKILL of the master in the middle of a resync: an in-sync replica is promoted, resyncs the member itself, and every acknowledged write is on both; the history closes the dead master's resync",
  { tools: [PYTHON, "etcd"] },
  () =>
    withCluster(async (c) => {
      const v = await create(c, "cut2", "96MiB");
      const master = c.nodes.get(v.master)!;
      const lagging = await killReplica(c, v);
      await fill(c.uri(v.master, "cut2"), 0, 1024, 9); // 64 MiB acknowledged
      // The start is recorded once the member answered, long before 8 MiB are sent; waiting
      // for it here (a CLI call) could let the resync finish before the kill.
      await restartIntoResync(c, v, lagging);
      await master.kill("SIGKILL");
      const left = NAMES.filter((n) => n !== v.master);
      await waitFor("a new master with both others in sync", async () => {
        const now = await volumeOf(c, left[0], "cut2");
        return now.master !== v.master && now.inSync?.length === 2 &&
          left.every((n) => now.inSync!.includes(n));
      }, { timeoutMs: 90_000, everyMs: 250 });
      await assertCopiesEqual(c, v.uuid, left);
      // The dead master could not say its resync stopped: the promotion did, and every resync
      // started in the history ended (interrupted, or its member back in sync).
      const seen = await events(c, left[0], "cut2");
      const promoted = seen.find((e) => e.type === "promoted")!;
      const cut = seen.find((e) => e.type === "resync-interrupted" && e.node === lagging);
      assertEquals(cut?.seq, promoted.seq + 1, JSON.stringify(seen, null, 1));
      assertEquals(
        cut!.message,
        `master ${v.master}'s resync of ${lagging} interrupted: the master changed (now ` +
          `${promoted.master} at epoch ${promoted.epoch}) before ${v.master} recorded its end; ` +
          `how far it got is not known (the next resync compares again, copying only what differs)`,
      );
      assertEquals(unendedResyncs(seen), [], JSON.stringify(seen, null, 1));
      // What the client saw acknowledged is there.
      const check = await run(PYTHON, [
        "-c",
        `
import sys, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
bad = [i for i in range(1024) if h.pread(65536, i * 65536) != bytes([(9 + i) % 251 or 1]) * 65536]
print("bad", len(bad))
`,
        c.uri((await volumeOf(c, left[0], "cut2")).master, "cut2"),
      ]);
      assertEquals(check.stdout.trim(), "bad 0", check.stderr);
    }, { args: ["--resync-rate", "16MiB/s"] }),
);

e2eTest(
  "SIGTERM of the master in the middle of a resync: it records the interruption (it is stopping, how far it got) before it goes, and the promotion says it stopped",
  { tools: [PYTHON, "etcd"] },
  () =>
    withCluster(async (c) => {
      const v = await create(c, "cut3", "96MiB");
      const master = c.nodes.get(v.master)!;
      const lagging = await killReplica(c, v);
      await fill(c.uri(v.master, "cut3"), 0, 1024, 3); // 64 MiB for the resync to copy
      await restartIntoResync(c, v, lagging);
      await master.stop();
      const left = NAMES.filter((n) => n !== v.master);
      let seen: VolumeEvent[] = [];
      await waitFor("the interruption and the promotion recorded", async () => {
        seen = await events(c, left[0], "cut3");
        return seen.some((e) => e.type === "promoted") &&
          seen.some((e) => e.type === "resync-interrupted");
      }, { timeoutMs: 30_000, everyMs: 250 });
      const cut = seen.find((e) => e.type === "resync-interrupted")!;
      assert(
        cut.message.startsWith(
          `master ${v.master}'s resync of ${lagging} interrupted: this node (${v.master}, the ` +
            `master) is stopping; it had compared `,
        ),
        cut.message,
      );
      const promoted = seen.find((e) => e.type === "promoted")!;
      assert(
        promoted.message.endsWith(`master ${v.master} stopped (lease revoked)`),
        promoted.message,
      );
    }, { args: ["--resync-rate", "16MiB/s"] }),
);

e2eTest(
  "etcd stopped, then a replica killed: writes wait (never acknowledged without that copy) and volume get on the master says so; etcd back: the replica is recorded out of sync and the writes complete",
  { tools: [PYTHON, "etcd"] },
  () =>
    withCluster(async (c) => {
      const v = await create(c, "hold", "16MiB");
      const uri = c.uri(v.master, "hold");
      await fill(uri, 0, 4, 1);
      await c.etcd.killMember(0);
      const replica = NAMES.find((n) => n !== v.master)!;
      await c.nodes.get(replica)!.kill("SIGKILL");
      let done = false;
      const writer = run(PYTHON, ["-c", FILL_PY, uri, "4", "4", "2"], { timeoutMs: 120_000 })
        .finally(() => done = true);
      let said = "";
      await waitFor("volume get to show the held writes", async () => {
        const r = await admin(c.nodes.get(v.master)!, ["volume", "get", "hold", "-o", "json"]);
        const seen = JSON.parse(r.stdout) as Volume;
        const m = seen.memberStatus?.find((x) => x.node === replica);
        said = `${seen.phase}: ${seen.phaseReason}`;
        return seen.phase === "degraded" && m?.state === "out-of-sync" &&
          (m.reason ?? "").includes("writes wait");
      }, { timeoutMs: 30_000, everyMs: 250 }).catch((err) => {
        throw new Error(`${err.message}; last: ${said}`);
      });
      assert(said.includes(`replica ${replica} out of sync: replication to it failed`), said);
      assert(!done, "the write waits while the failure cannot be recorded");
      await c.etcd.restartMember(0);
      const r = await writer;
      assertEquals(r.stdout.trim(), "ok", r.stderr);
      const after = await volumeOf(c, v.master, "hold");
      assert(!after.inSync?.includes(replica), JSON.stringify(after));
    }),
);
