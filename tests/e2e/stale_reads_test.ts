/**
 * Reads during an etcd outage (issue 10 item 11), with real processes: two `ballast serve
 * --etcd --tls off` nodes on a real etcd (_groups.ts) that is stopped (SIGSTOP). A node's read
 * cache follows the watches it holds, so a record that changed after the node first read it
 * is answered as it is, not as it was; and every such answer says as of when it is known
 * current (Ballast-Stale), how many seconds ago that was (Age), and the CLI says so too.
 */

import { assert, assertEquals } from "../_assert.ts";
import { cli, e2eTest } from "./_harness.ts";
import { nbdPy, PYTHON, report } from "./_cluster.ts";
import { createVolume, eventually, startGroupCluster, tools, type VolumeJson } from "./_groups.ts";
import { AGE_HEADER, STALE_HEADER } from "../../mod/client.ts";

e2eTest(
  "stale reads: during an etcd outage a node answers a record as its watch last saw it, not as it first read it, and says how old that is",
  { tools: [...tools, PYTHON] },
  async () => {
    const T = "stale-reads";
    const c = await startGroupCluster({ "node-a": "", "node-b": "" });
    try {
      const res = await createVolume(c.nodes.get("node-a")!.api, [
        "r",
        "--size",
        "8MiB",
        "--replicas",
        "1",
      ]);
      assertEquals(res.code, 0, res.stderr);
      const v = JSON.parse(res.stdout) as VolumeJson;
      const replica = ["node-a", "node-b"].find((n) => n !== v.master)!;
      const master = c.nodes.get(v.master)!;
      const r = c.nodes.get(replica)!;
      const seenLine =
        `group record: e${v.epoch} master ${v.master} in-sync [${v.master}] degraded`;
      // The replica read the record when it started following the group (healthy, both in
      // sync); the first write takes it out of sync, which the replica sees only on its watch.
      const writeAt = Date.now();
      const fill = await nbdPy(["fill", master.nbdUri("r"), "3", "1"], 60_000);
      assertEquals(fill.code, 0, fill.stdout + fill.stderr);
      await eventually(
        `${replica} sees the record change`,
        () => Promise.resolve(r.logs().includes(seenLine) ? true : undefined),
      );

      c.etcd.pauseMember(0);
      try {
        const got = await fetch(`${r.api}/v1/volumes/r`, { signal: AbortSignal.timeout(20_000) });
        const body = await got.json();
        assertEquals(got.status, 200, JSON.stringify(body));
        assertEquals([body.phase, body.inSync], ["degraded", [v.master]]);
        const since = Date.parse(got.headers.get(STALE_HEADER) ?? "");
        assert(
          since >= writeAt,
          `Ballast-Stale ${got.headers.get(STALE_HEADER)} is before the write`,
        );
        const age = got.headers.get(AGE_HEADER);
        assert(age !== null && /^\d+$/.test(age), `Age: ${age}`);
        report(
          T,
          `volume get via ${replica}: ${body.phase}, Ballast-Stale ${
            got.headers.get(STALE_HEADER)
          }, Age ${age}`,
        );

        const list = await cli(["volume", "list", "-o", "json"], { api: r.api });
        assertEquals(list.code, 0, list.stderr);
        const row = JSON.parse(list.stdout).items.find((x: VolumeJson) => x.name === "r");
        assertEquals(row?.phase, "degraded");
        assert(/etcd unreachable; showing state as of \d+ s ago/.test(list.stderr), list.stderr);
        report(T, `volume list via ${replica}: ${list.stderr.trim()}`);
      } finally {
        c.etcd.resumeMember(0);
      }
    } finally {
      await c.stop();
    }
  },
);
