/**
 * A node that loses its liveness lease and comes back without a restart (issue 10 item 10),
 * with real processes: three `ballast serve --etcd --tls off` nodes with 3 s leases on a real
 * etcd (_groups.ts), NBD clients in Python libnbd.
 *
 * - the master of a group whose replica is out of sync frozen (SIGSTOP) until the others mark
 *   it down, then resumed: it registers again, takes itself off every group's down list, its
 *   volume is degraded (not unavailable) and served, and a group it is a replica of counts it
 *   again;
 * - etcd stopped (every member SIGSTOPped) during a group's first write, past the lease TTL:
 *   the write held at the gate completes once etcd is back, and nobody stays down;
 * - etcd stopped past the lease TTL (item 12): while the nodes register again, no node list
 *   shows a running node other than ready, and a node killed during the outage shows down.
 */

import { assertEquals } from "../_assert.ts";
import { e2eTest, run } from "./_harness.ts";
import { nbdPy, nodeRows, PYTHON, report } from "./_cluster.ts";
import {
  createVolume,
  eventually,
  getVolume,
  LEASE_TTL_S,
  startGroupCluster,
  type TestCluster,
  tools,
  type VolumeJson,
} from "./_groups.ts";

const NAMES = ["node-a", "node-b", "node-c"];
/** How long a returning node may take to be counted again everywhere (a generous bound). */
const BACK_MS = 20_000;

async function withCluster(fn: (c: TestCluster) => Promise<void>): Promise<void> {
  const c = await startGroupCluster(Object.fromEntries(NAMES.map((n) => [n, ""])));
  try {
    await fn(c);
  } finally {
    for (const p of c.nodes.values()) p.signal("SIGCONT");
    c.etcd.resumeMember(0);
    await c.stop();
  }
}

async function create(c: TestCluster, name: string, args: string[]): Promise<VolumeJson> {
  const res = await createVolume(c.nodes.get("node-a")!.api, [name, "--size", "8MiB", ...args]);
  assertEquals(res.code, 0, res.stderr);
  return JSON.parse(res.stdout) as VolumeJson;
}

/** Waits until `volume` as node `via` shows it satisfies `ok`; returns it. */
function until(
  c: TestCluster,
  via: string,
  volume: string,
  what: string,
  ok: (v: VolumeJson) => boolean,
  ms = BACK_MS,
): Promise<VolumeJson> {
  return eventually(`${volume}: ${what}`, async () => {
    const v = await getVolume(c.nodes.get(via)!.api, volume);
    return v && ok(v) ? v : undefined;
  }, ms);
}

/** Waits until node `via` lists every node ready. */
function everyNodeReady(c: TestCluster, via: string): Promise<true> {
  return eventually(`every node ready via ${via}`, async () => {
    const rows = await nodeRows(c.nodes.get(via)!.api);
    return NAMES.every((n) => rows[n]?.state === "ready") ? true : undefined;
  }, BACK_MS);
}

e2eTest(
  "lease: a node frozen past its lease and resumed registers again and rejoins its groups without a restart",
  { tools: [...tools, PYTHON] },
  () =>
    withCluster(async (c) => {
      const T = "frozen-node";
      // "un": master + 1 replica; a write takes the replica out of sync, so while its master
      // is away nobody can take over ("unavailable"), and it must come back as master.
      const un = await create(c, "un", ["--replicas", "1"]);
      const victim = un.master;
      const p = c.nodes.get(victim)!;
      const other = NAMES.find((n) => n !== victim && un.members?.includes(n))!;
      const fill = await nbdPy(["fill", p.nbdUri("un"), "7", "1"], 60_000);
      assertEquals(fill.code, 0, fill.stdout + fill.stderr);
      await until(c, other, "un", "the replica out of sync", (v) => v.inSync?.join() === victim);
      // "all": every node a member, no writes: the victim is a member either way.
      await create(c, "all", ["--replicas", "2"]);

      p.signal("SIGSTOP");
      const stoppedAt = Date.now();
      const seen = await until(c, other, "un", `${victim} marked down`, (v) =>
        v.down?.includes(victim) === true, 30_000);
      assertEquals(seen.phase, "unavailable");
      await until(c, other, "all", `${victim} marked down`, (v) =>
        v.down?.includes(victim) === true, 30_000);
      report(T, `${victim} frozen; marked down in both groups after ${Date.now() - stoppedAt} ms`);
      // Past two TTLs: the lease is certainly gone.
      await new Promise((r) =>
        setTimeout(r, Math.max(0, stoppedAt + 3 * LEASE_TTL_S * 1000 - Date.now()))
      );
      p.signal("SIGCONT");
      const resumedAt = Date.now();

      await eventually(`${victim} ready in node list`, async () => {
        const rows = await nodeRows(c.nodes.get(other)!.api);
        return rows[victim]?.state === "ready" ? true : undefined;
      }, BACK_MS);
      const back = await until(c, other, "un", `${victim} off the down list`, (v) =>
        (v.down ?? []).length === 0);
      assertEquals([back.master, back.phase, back.epoch], [victim, "degraded", un.epoch]);
      await until(c, other, "all", `${victim} off the down list`, (v) =>
        !(v.down ?? []).includes(victim));
      report(T, `${victim} counted again ${Date.now() - resumedAt} ms after SIGCONT`);
      // Still served by the node that came back, and writable.
      const again = await nbdPy(["fill", p.nbdUri("un"), "8", "1"], 60_000);
      assertEquals(again.code, 0, again.stdout + again.stderr);
      const check = await nbdPy(["check", p.nbdUri("un"), "8", "1"], 60_000);
      assertEquals(check.code, 0, check.stdout + check.stderr);
    }),
);

e2eTest(
  "lease: etcd stopped past the lease TTL during a group's first write: the held write completes once etcd is back, nobody stays down",
  { tools: [...tools, PYTHON] },
  () =>
    withCluster(async (c) => {
      const T = "outage-first-write";
      const v = await create(c, "fw", ["--replicas", "1"]);
      const p = c.nodes.get(v.master)!;
      c.etcd.pauseMember(0);
      const pausedAt = Date.now();
      // The first write waits at the gate for the record to show the replica out of sync.
      const write = nbdPy(["fill", p.nbdUri("fw"), "9", "1"], 120_000);
      await new Promise((r) => setTimeout(r, 3 * LEASE_TTL_S * 1000));
      c.etcd.resumeMember(0);
      const resumedAt = Date.now();
      report(T, `etcd paused for ${resumedAt - pausedAt} ms`);
      const done = await write;
      report(T, `the held write ended ${Date.now() - resumedAt} ms after etcd came back`);
      assertEquals(done.code, 0, done.stdout + done.stderr);
      const after = await until(c, "node-b", "fw", "the replica out of sync, nobody down", (x) =>
        x.inSync?.join() === v.master && (x.down ?? []).length === 0);
      assertEquals([after.master, after.phase], [v.master, "degraded"]);
      await everyNodeReady(c, "node-b");
      const check = await nbdPy(["check", p.nbdUri("fw"), "9", "1"], 60_000);
      assertEquals(check.code, 0, check.stdout + check.stderr);
    }),
);

/** Nodes holding a liveness key in etcd right now (etcdctl). */
async function aliveInEtcd(c: TestCluster): Promise<string[]> {
  const res = await run("etcdctl", [
    "--endpoints",
    c.etcd.endpoints.join(","),
    "get",
    "--prefix",
    "--keys-only",
    "/ballast-cluster/ballast/nodes/",
  ]);
  if (res.code !== 0) throw new Error(`etcdctl: ${res.stderr}`);
  return res.stdout.split("\n").filter((k) => k.endsWith("/alive")).map((k) =>
    k.split("/").at(-2)!
  );
}

e2eTest(
  "lease: after etcd was away past the lease TTL, node list never shows the running nodes down while they register again; a node killed meanwhile is down",
  { tools: [...tools, PYTHON] },
  () =>
    withCluster(async (c) => {
      const T = "etcd-blip";
      const [a, b] = ["node-a", "node-b"].map((n) => c.nodes.get(n)!);
      await everyNodeReady(c, "node-b");
      c.etcd.pauseMember(0);
      await new Promise((r) => setTimeout(r, 2 * LEASE_TTL_S * 1000));
      await c.nodes.get("node-c")!.kill("SIGKILL");
      await new Promise((r) => setTimeout(r, LEASE_TTL_S * 1000));
      c.etcd.resumeMember(0);
      const resumedAt = Date.now();
      // Every answer      // Every answer, through node-a and node-b, until both hold leases again, node-c shows
      // down through both, and each was asked a few times.
      const wrong: string[] = [];
      let polls = 0;
      let registeredMs = NaN;
      for (;;) {
        const views = await Promise.all([a, b].map((p) => nodeRows(p.api).catch(() => undefined)));
        const alive = await aliveInEtcd(c);
        for (const [i, rows] of views.entries()) {
          if (!rows) continue;
          polls++;
          for (const n of ["node-a", "node-b"]) {
            if (rows[n]?.state === "ready") continue;
            const via = NAMES[i];
            wrong.push(
              `+${Date.now() - resumedAt} ms via ${via}: ${n} ${rows[n]?.state} (${
                rows[n]?.reason
              })`,
            );
          }
        }
        if (isNaN(registeredMs) && alive.includes("node-a") && alive.includes("node-b")) {
          registeredMs = Date.now() - resumedAt;
        }
        const cDown = views.every((rows) => rows?.["node-c"]?.state === "down");
        if (!isNaN(registeredMs) && cDown && polls >= 10) break;
        if (Date.now() - resumedAt > BACK_MS) {
          throw new Error(
            `not within ${BACK_MS} ms: registered again, node-c down: ${JSON.stringify(views)}`,
          );
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      report(
        T,
        `${polls} node lists; node-a and node-b registered again ${registeredMs} ms after etcd ` +
          `came back; node-c down through both after ${Date.now() - resumedAt} ms`,
      );
      assertEquals(wrong, [], "a running node was shown other than ready");
    }),
);
