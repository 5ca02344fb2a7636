/**
 * The API side of "what an operator sees" (issue 12): the node-to-node route that gives a
 * volume's live status (who may call it, what it answers on a real node), the replication
 * families of /metrics rendered from members in every state, and a single node's `volume
 * get` left as it was.
 */

import type { PeerIdentity } from "../../../ca/mod.ts";
import { authorize } from "../../../control/api/_auth.ts";
import { ApiRequestCounter, renderMetrics } from "../../../control/api/_metrics.ts";
import type { ServedGroup } from "../../../control/volumes/mod.ts";
import type { VolumeMember } from "../../../mod/types.ts";
import { assert, assertEquals } from "../../_assert.ts";
import { call, NODE, startTestNode } from "../_fixtures.ts";

const MiB = 2 ** 20;

Deno.test("api: GET /v1/peer/volumes/{name} answers what this node knows first-hand of a volume it exports; 404 otherwise", async () => {
  const node = await startTestNode();
  try {
    await call(node.app, "POST", "/v1/volumes", { name: "p1", size: "8MiB" });
    const live = await call(node.app, "GET", "/v1/peer/volumes/p1");
    assertEquals(live.status, 200);
    const { observedAt, uuid, ...rest } = live.body;
    assert(!Number.isNaN(Date.parse(observedAt)), observedAt);
    assert(/^[0-9a-f-]{36}$/.test(uuid), uuid);
    assertEquals(rest, {
      name: "p1",
      node: NODE,
      allocatedBytes: 0,
      connections: 0,
      resyncs: [],
      resyncFailures: [],
    });
    const missing = await call(node.app, "GET", "/v1/peer/volumes/nope");
    assertEquals([missing.status, missing.body.error.code], [404, "NOT_FOUND"]);
    const bad = await call(node.app, "GET", "/v1/peer/volumes/p1?x=1");
    assertEquals(bad.status, 400, "unknown query parameters are refused");

    // A single node's get is unchanged: live fields, no member status, no live block.
    const got = await call(node.app, "GET", "/v1/volumes/p1");
    assertEquals([got.body.allocatedBytes, got.body.connections], [0, 0]);
    assertEquals([got.body.memberStatus, got.body.live], [undefined, undefined]);
  } finally {
    await node.close();
  }
});

Deno.test("authorize(): node and admin certificates may ask for a volume's live status, an NBD client may not", () => {
  const who = (role: PeerIdentity["role"]) => ({
    identity: { role, name: "x", serial: "01" } as unknown as PeerIdentity,
  });
  const path = "/v1/peer/volumes/r2";
  assertEquals(authorize({ tls: true }, who("node"), "GET", path).ok, true);
  assertEquals(authorize({ tls: true }, who("admin"), "GET", path).ok, true);
  const refused = authorize({ tls: true }, who("nbd-client"), "GET", path);
  assertEquals(refused.ok ? "allowed" : refused.error.code, "PERMISSION_DENIED");
  const nodeOnVolumes = authorize({ tls: true }, who("node"), "GET", "/v1/volumes/r2");
  assertEquals(nodeOnVolumes.ok, false, "a node certificate still cannot read the volume API");
});

const member = (node: string, over: Partial<VolumeMember>): VolumeMember => ({
  node,
  role: "replica",
  state: "in-sync",
  lagBytes: 0,
  lagSeconds: 0,
  ...over,
});

Deno.test("renderMetrics(): replication families with HELP and TYPE, one series per member of each group served here", () => {
  const groups: ServedGroup[] = [{
    volume: "r2",
    sizeBytes: 1024 * MiB,
    members: [
      member("n1", { role: "master" }),
      member("n2", {
        state: "resyncing",
        lagBytes: 600 * MiB,
        lagSeconds: 42,
        resync: {
          pass: 1,
          percent: 41.4,
          comparedBytes: 424 * MiB,
          totalBytes: 1024 * MiB,
          bytesLeft: 600 * MiB,
          sentBytes: 96 * MiB,
          zeroedBytes: 0,
          rateBytesPerSecond: 20 * MiB,
          sendRateBytesPerSecond: 4 * MiB,
          etaSeconds: 30,
          startedAt: "2030-01-01T00:00:00.000Z",
        },
      }),
      member("n3", { state: "down", lagBytes: 1024 * MiB, lagSeconds: undefined }),
    ],
  }];
  const text = renderMetrics({
    stats: [],
    volumes: [],
    groups,
    nbdConnections: 0,
    api: new ApiRequestCounter(),
    rssBytes: 1,
  });
  const lines = text.split("\n");
  for (
    const family of [
      "ballast_replication_member_state",
      "ballast_replication_lag_bytes",
      "ballast_replication_lag_seconds",
      "ballast_resync_sent_bytes",
      "ballast_resync_remaining_bytes",
    ]
  ) {
    assert(lines.includes(`# TYPE ${family} gauge`), `TYPE of ${family}`);
    assert(lines.some((l) => l.startsWith(`# HELP ${family} `)), `HELP of ${family}`);
  }
  const samples = lines.filter((l) => /^ballast_(replication|resync)_/.test(l));
  assertEquals(samples.filter((l) => l.endsWith(" 1") && l.includes("member_state")), [
    'ballast_replication_member_state{volume="r2",member="n1",role="master",state="in-sync"} 1',
    'ballast_replication_member_state{volume="r2",member="n2",role="replica",state="resyncing"} 1',
    'ballast_replication_member_state{volume="r2",member="n3",role="replica",state="down"} 1',
  ]);
  assertEquals(samples.filter((l) => l.includes("member_state")).length, 12, "4 states each");
  for (
    const line of [
      'ballast_replication_lag_bytes{volume="r2",member="n1"} 0',
      `ballast_replication_lag_bytes{volume="r2",member="n2"} ${600 * MiB}`,
      `ballast_replication_lag_bytes{volume="r2",member="n3"} ${1024 * MiB}`,
      'ballast_replication_lag_seconds{volume="r2",member="n2"} 42',
      `ballast_resync_sent_bytes{volume="r2",member="n2"} ${96 * MiB}`,
      `ballast_resync_remaining_bytes{volume="r2",member="n2"} ${600 * MiB}`,
    ]
  ) {
    assert(samples.includes(line), `missing ${line}`);
  }
  assert(!samples.some((l) => l.includes('lag_seconds{volume="r2",member="n3"}')), "unknown");
  assertEquals(samples.filter((l) => l.startsWith("ballast_resync_")).length, 2, "n2 only");
  // Without groups the families are still described, with no series.
  const empty = renderMetrics({
    stats: [],
    volumes: [],
    nbdConnections: 0,
    api: new ApiRequestCounter(),
    rssBytes: 1,
  });
  assert(empty.includes("# TYPE ballast_replication_lag_bytes gauge\n"));
  assert(!/^ballast_replication_lag_bytes\{/m.test(empty));
});
