/**
 * Transparent failover under faults other than a kill (issue 13), through a node that holds
 * no copy of the volume (_anywhere.ts): the master frozen (SIGSTOP) past its lease and
 * resumed; the master cut off from etcd but not from its replicas (its etcd connections go
 * through a relay the test cuts); etcd stopped for 60 s (nothing fails over, I/O goes on);
 * a replica and then the master killed in turn. In every case the client sees no error and
 * every write it saw acknowledged is there at the end.
 */

import { assert, assertEquals } from "../_assert.ts";
import { e2eTest } from "./_harness.ts";
import { type ReplCluster, startReplCluster, volumeOf } from "./_replicated.ts";
import { TcpCut } from "./_tcp_cut.ts";
import { allInSync, createWithFront, NAMES, newMaster, PYTHON, startWriter } from "./_anywhere.ts";

async function scenario(
  name: string,
  body: (c: ReplCluster, dir: string) => Promise<void>,
  options: Parameters<typeof startReplCluster>[1] = {},
  cleanup?: () => void,
): Promise<void> {
  const c = await startReplCluster(NAMES, options);
  const dir = await Deno.makeTempDir({ prefix: `ballast-${name}-` });
  try {
    await body(c, dir);
  } finally {
    for (const p of c.nodes.values()) p.signal("SIGCONT");
    cleanup?.();
    await c.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

e2eTest(
  "attach anywhere: the master frozen (SIGSTOP) past its lease, then resumed: the client through another node only pauses, nothing acknowledged is lost",
  { tools: [PYTHON, "etcd"] },
  () =>
    scenario("frozen", async (c, dir) => {
      const { v, front } = await createWithFront(c, "fz");
      const w = startWriter(c, front, "fz", dir);
      await w.advance(300, "the writer to make progress");
      c.nodes.get(v.master)!.signal("SIGSTOP");
      await newMaster(c, front, "fz", v.master);
      await w.advance(300, "the writer to go on after the failover");
      c.nodes.get(v.master)!.signal("SIGCONT");
      await allInSync(c, front, "fz");
      await w.advance(300, "the writer to go on once the old master is back");
      const pauses = await w.finish(c, "fz");
      assert(Math.max(0, ...pauses) < 30_000, `paused ${JSON.stringify(pauses)} ms`);
    }),
);

const relays = new Map<string, TcpCut>();
e2eTest(
  "attach anywhere: the master cut off from etcd but not from its replicas: a replica takes over, the client through another node only pauses",
  { tools: [PYTHON, "etcd"] },
  () =>
    scenario(
      "cut",
      async (c, dir) => {
        const { v, front } = await createWithFront(c, "ct");
        const w = startWriter(c, front, "ct", dir);
        await w.advance(300, "the writer to make progress");
        relays.get(v.master)!.cut();
        const after = await newMaster(c, front, "ct", v.master);
        assert(after.epoch > v.epoch, "a new epoch");
        await w.advance(300, "the writer to go on after the failover");
        relays.get(v.master)!.restore();
        await allInSync(c, front, "ct");
        await w.advance(300, "the writer to go on once the old master is back");
        await w.finish(c, "ct");
      },
      {
        etcdVia: (name, endpoints) => {
          const r = TcpCut.start(endpoints[0]);
          relays.set(name, r);
          return [r.url];
        },
      },
      () => {
        for (const r of relays.values()) r.close();
        relays.clear();
      },
    ),
);

e2eTest(
  "attach anywhere: etcd stopped for 60 s: nothing fails over and the client through another node goes on writing",
  { tools: [PYTHON, "etcd"] },
  () =>
    scenario("etcd", async (c, dir) => {
      const { v, front } = await createWithFront(c, "ed");
      const w = startWriter(c, front, "ed", dir);
      await w.advance(300, "the writer to make progress");
      await c.etcd.killMember(0);
      const until = Date.now() + 60_000;
      while (Date.now() < until) {
        // I/O goes on through the whole outage, not only at its start.
        await w.advance(200, "the writer to go on while etcd is down");
        await new Promise((r) => setTimeout(r, Math.min(10_000, Math.max(0, until - Date.now()))));
      }
      await c.etcd.restartMember(0);
      await w.advance(300, "the writer to go on after etcd is back");
      const now = await volumeOf(c, front, "ed");
      assertEquals([now.master, now.epoch], [v.master, v.epoch], "nothing failed over");
      const pauses = await w.finish(c, "ed");
      assert(Math.max(0, ...pauses) < 10_000, `paused ${JSON.stringify(pauses)} ms`);
    }),
);

e2eTest(
  "attach anywhere: a replica and then the master killed in turn (2 replicas): the last in-sync member takes over, the client only pauses",
  { tools: [PYTHON, "etcd"] },
  () =>
    scenario("turn", async (c, dir) => {
      const { v, front } = await createWithFront(c, "tn");
      const w = startWriter(c, front, "tn", dir);
      await w.advance(300, "the writer to make progress");
      const replica = v.members!.find((m) => m !== v.master)!;
      await c.nodes.get(replica)!.kill("SIGKILL");
      await w.advance(300, "the writer to go on without the replica");
      await c.nodes.get(v.master)!.kill("SIGKILL");
      const after = await newMaster(c, front, "tn", v.master);
      const last = v.members!.find((m) => m !== v.master && m !== replica)!;
      assertEquals(after.master, last, "the member that stayed in sync took over");
      await w.advance(300, "the writer to go on after the failover");
      await c.start(replica);
      await c.start(v.master);
      await allInSync(c, front, "tn");
      await w.finish(c, "tn");
    }),
);
