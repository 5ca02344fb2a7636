/**
 * What an operator sees of replication (issue 12), end to end: three TLS nodes on a real
 * etcd, resyncs limited to 20 MiB/s so that one lasts long enough to be watched. `volume get
 * -o json` on any node lists every member with its role and state (in sync; down and out of
 * sync after kill -9, with why; resyncing with progress once it is back; in sync again),
 * `volume get --watch` prints a line per change and exits 0 once the group is healthy (130
 * on Ctrl-C), and the master's /metrics carries the replication series.
 */

import { BallastClient } from "../../mod/client.ts";
import type { Volume, VolumeMember } from "../../mod/types.ts";
import { assert, assertEquals } from "../_assert.ts";
import { PYTHON, waitFor } from "./_cluster.ts";
import { admin } from "./_cluster_tls.ts";
import { type BallastProcess, e2eTest, MAIN_TS, REPO_ROOT, run } from "./_harness.ts";
import { assertCopiesEqual, startReplCluster } from "./_replicated.ts";

const NAMES = ["node-a", "node-b", "node-c"];
const GiB = 2 ** 30;

/**
 * Writes `count` MiB of non-zero data from each offset given as OFFSET:COUNT (in MiB), then
 * FLUSH; prints "ok".
 */
const WRITE_PY = `
import sys, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
for spec in sys.argv[2:]:
    start, count = (int(x) for x in spec.split(":"))
    for i in range(start, start + count):
        h.pwrite(bytes([(i % 250) + 1]) * 1048576, i * 1048576)
h.flush()
print("ok")
`;

async function getJson(node: BallastProcess, name: string): Promise<Volume> {
  const r = await admin(node, ["volume", "get", name, "-o", "json"]);
  assertEquals(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Volume;
}

function memberOf(v: Volume, node: string): VolumeMember {
  const m = v.memberStatus?.find((x) => x.node === node);
  assert(m, `no member ${node} in ${JSON.stringify(v.memberStatus)}`);
  return m;
}

/** The master's /metrics (admin credentials of its data dir). */
async function metrics(node: BallastProcess): Promise<string[]> {
  const pki = `${node.dataDir}/pki`;
  using client = new BallastClient(node.api, {
    caCertPem: await Deno.readTextFile(`${pki}/ca-bundle.crt`),
    certPem: await Deno.readTextFile(`${pki}/admin.crt`),
    keyPem: await Deno.readTextFile(`${pki}/admin.key`),
  });
  return (await client.metrics()).split("\n");
}

/** The first line of a child's stdout; throws after `ms` without one. */
async function firstLine(stream: ReadableStream<Uint8Array>, ms: number): Promise<string> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let text = "";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no line within ${ms} ms: ${text}`)), ms);
  });
  try {
    while (!text.includes("\n")) {
      const { value, done } = await Promise.race([reader.read(), late]);
      if (done) throw new Error(`stdout ended without a line: ${text}`);
      text += decoder.decode(value, { stream: true });
    }
    return text.split("\n")[0];
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
}

e2eTest(
  "volume get shows each member's role and state on any node: in sync, down after kill -9 (out of sync and why), resyncing with progress at 20 MiB/s, in sync again; --watch exits 0 once healthy, 130 on Ctrl-C; /metrics has the replication series",
  { tools: [PYTHON, "etcd"] },
  async () => {
    const c = await startReplCluster(NAMES, { args: ["--resync-rate", "20MiB/s"] });
    try {
      const a = c.nodes.get("node-a")!;
      const made = await admin(a, ["volume", "create", "rv", "--size", "2GiB", "--replicas", "2"]);
      assertEquals(made.code, 0, made.stderr);
      const first = await getJson(a, "rv");
      const master = first.master;
      const [victim, other] = NAMES.filter((n) => n !== master);
      const viaOther = () => getJson(c.nodes.get(other)!, "rv");

      // Healthy, as a node that does not serve it sees it: the master answered for it.
      const healthy = await viaOther();
      assertEquals(healthy.live?.node, master, JSON.stringify(healthy.live));
      assertEquals(healthy.live?.error, undefined);
      assertEquals(healthy.allocatedBytes, 0, "live fields from the master");
      assertEquals(
        healthy.memberStatus?.map((m) => [m.node, m.role, m.state, m.lagBytes]),
        [master, victim, other].map((n) => [
          n,
          n === master ? "master" : "replica",
          "in-sync",
          0,
        ]).sort((x, y) => x[0] === master ? -1 : y[0] === master ? 1 : x[0] < y[0] ? -1 : 1),
      );
      // A new volume: every copy is zeros, so every member shows the same root hash.
      const roots = healthy.memberStatus!.map((m) => m.rootHash);
      assert(
        roots.every((r) => typeof r === "string" && /^[0-9a-f]{32}$/.test(r) && r === roots[0]),
        `every member's root hash, all equal: ${JSON.stringify(roots)}`,
      );
      const table = await admin(c.nodes.get(other)!, ["volume", "get", "rv"]);
      assertEquals(table.code, 0, table.stderr);
      assert(/MEMBER\s+ROLE\s+STATE\s+ROOT HASH\s+DETAIL/.test(table.stdout), table.stdout);
      assert(table.stdout.includes(`Live status:  from node ${master} at `), table.stdout);

      // kill -9 a replica, then write 32 MiB in the first GiB and 224 MiB in the second:
      // the master drops it from the in-sync set at the first write it cannot replicate.
      await c.nodes.get(victim)!.kill("SIGKILL");
      const w = await run(PYTHON, ["-c", WRITE_PY, c.uri(master, "rv"), "0:32", "1024:224"], {
        timeoutMs: 180_000,
      });
      assertEquals(w.stdout.trim(), "ok", w.stderr);
      let away: VolumeMember | undefined;
      await waitFor(`${victim} down`, async () => {
        away = memberOf(await viaOther(), victim);
        return away.state === "down";
      }, { timeoutMs: 30_000, everyMs: 250 });
      assert(away!.reason?.startsWith("the node's liveness lease is gone"), away!.reason);
      // Out of sync first, in the data plane's words (the link to the killed replica broke).
      const before = away!.reason?.split("out of sync before: replication to it failed: ")[1];
      assert(before?.includes(`replica ${victim}`), away!.reason);
      assertEquals(away!.lagBytes, 2 * GiB);
      assert(away!.outOfSyncSince && away!.lagSeconds !== undefined, JSON.stringify(away));
      const fromMaster = memberOf(await getJson(c.nodes.get(master)!, "rv"), victim);
      assertEquals([fromMaster.state, fromMaster.role], ["down", "replica"]);
      // The phase says why (issue 10 item 14), on any node; every node's /metrics has the
      // group's phase and counts and the nodes' states; node list counts masters and copies.
      const degraded = await viaOther();
      assertEquals(degraded.phase, "degraded");
      assert(degraded.phaseReason?.startsWith(`replica ${victim} down: `), degraded.phaseReason);
      const seen = await metrics(c.nodes.get(other)!);
      for (
        const want of [
          'ballast_volume_phase{volume="rv",phase="degraded"} 1',
          'ballast_volume_phase{volume="rv",phase="healthy"} 0',
          'ballast_volume_in_sync_members{volume="rv"} 2',
          'ballast_volume_desired_copies{volume="rv"} 3',
          `ballast_volume_epoch{volume="rv"} ${degraded.epoch}`,
          `ballast_node_state{node="${victim}",state="down"} 1`,
          `ballast_node_state{node="${other}",state="ready"} 1`,
        ]
      ) assert(seen.includes(want), `${want} in the /metrics of ${other}`);
      const listed = await admin(c.nodes.get(other)!, ["node", "list", "-o", "json"]);
      assertEquals(listed.code, 0, listed.stderr);
      const held = (JSON.parse(listed.stdout).items as Array<Record<string, unknown>>)
        .map((n) => [n.name, n.masters, n.copies]);
      assertEquals(held, NAMES.map((n) => [n, n === master ? 1 : 0, 1]));

      const m = c.nodes.get(master)!;
      const series = (lines: string[], family: string, extra = "") =>
        lines.find((l) => l.startsWith(`${family}{volume="rv",member="${victim}"${extra}}`));
      const down = await metrics(m);
      assertEquals(
        series(down, "ballast_replication_member_state", ',role="replica",state="down"'),
        `ballast_replication_member_state{volume="rv",member="${victim}",role="replica",state="down"} 1`,
      );
      assertEquals(
        series(down, "ballast_replication_lag_bytes"),
        `ballast_replication_lag_bytes{volume="rv",member="${victim}"} ${2 * GiB}`,
      );
      assert(series(down, "ballast_replication_lag_seconds"), "lag seconds of the victim");

      // Ctrl-C ends a watch of the degraded group cleanly.
      const o = c.nodes.get(other)!;
      const watching = new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", MAIN_TS, "volume", "get", "rv", "--watch", "--data-dir", o.dataDir],
        env: { BALLAST_API: o.api, NO_COLOR: "1" },
        cwd: REPO_ROOT,
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      let line = "";
      try {
        line = await firstLine(watching.stdout, 60_000);
      } finally {
        watching.kill("SIGINT");
      }
      assert(line.includes(`${victim} replica down`), line);
      const interrupted = await watching.status;
      await watching.stdout.cancel();
      const err = new TextDecoder().decode(
        (await new Response(watching.stderr).arrayBuffer()) as ArrayBuffer,
      );
      assertEquals([interrupted.code, err], [130, ""]);

      // Back: a watch through the third node follows the resync to the end.
      await c.start(victim);
      const watch = run(
        Deno.execPath(),
        [
          "run",
          "-A",
          MAIN_TS,
          "volume",
          "get",
          "rv",
          "--watch",
          "--timeout",
          "10m",
          "--data-dir",
          o.dataDir,
        ],
        { env: { BALLAST_API: o.api, NO_COLOR: "1" }, timeoutMs: 600_000 },
      );
      let during: VolumeMember | undefined;
      await waitFor(`${victim} resyncing, partly done`, async () => {
        during = memberOf(await viaOther(), victim);
        const p = during.resync?.percent ?? 0;
        // The ETA comes once a few differing regions were copied (estimating before).
        return during.state === "resyncing" && p > 0 && p < 100 &&
          during.resync?.etaSeconds !== undefined;
      }, { timeoutMs: 120_000, everyMs: 200 });
      const r = during!.resync!;
      assert(r.bytesLeft > 0 && r.bytesLeft === r.totalBytes - r.comparedBytes, JSON.stringify(r));
      assertEquals(during!.lagBytes, r.bytesLeft);
      assert(
        r.sentBytes > 0 && r.rateBytesPerSecond > 0 && r.etaSeconds !== undefined,
        JSON.stringify(r),
      );
      // 256 MiB written (1 MiB regions): the regions it touched are what the pass copies.
      assert(
        (r.regionsCopied ?? 0) >= 1 && (r.regionsToCopy ?? 0) > r.regionsCopied! &&
          r.regionsToCopy! <= 256,
        JSON.stringify(r),
      );
      let resyncing: string[] = [];
      await waitFor("resync series on the master", async () => {
        resyncing = await metrics(m);
        return series(resyncing, "ballast_resync_sent_bytes") !== undefined;
      }, { timeoutMs: 60_000, everyMs: 200 });
      assert(series(resyncing, "ballast_resync_remaining_bytes"), resyncing.join("\n"));
      assertEquals(
        series(resyncing, "ballast_replication_member_state", ',role="replica",state="resyncing"'),
        `ballast_replication_member_state{volume="rv",member="${victim}",role="replica",state="resyncing"} 1`,
      );

      const watched = await watch;
      assertEquals(watched.code, 0, `${watched.stdout}\n${watched.stderr}`);
      const lines = watched.stdout.trimEnd().split("\n");
      assert(lines.some((l) => l.includes(`${victim} replica resyncing `)), watched.stdout);
      // deno-lint-ignore no-console
      console.log(`[watch]\n${lines.filter((l) => l.includes(" resyncing ")).join("\n")}`);
      assert(lines.at(-1)!.includes("rv healthy ("), lines.at(-1));
      assert(!watched.stdout.includes("\x1b["), "a pipe gets lines, not redraws");

      const after = await viaOther();
      assertEquals(after.memberStatus!.map((x) => [x.state, x.lagBytes]), [
        ["in-sync", 0],
        ["in-sync", 0],
        ["in-sync", 0],
      ]);
      assertEquals(after.phase, "healthy");
      await assertCopiesEqual(c, first.uuid, NAMES);
      const done = await metrics(m);
      assertEquals(series(done, "ballast_resync_sent_bytes"), undefined, "no resync under way");
      assertEquals(
        series(done, "ballast_replication_lag_seconds"),
        `ballast_replication_lag_seconds{volume="rv",member="${victim}"} 0`,
      );
    } finally {
      await c.stop();
    }
  },
);
