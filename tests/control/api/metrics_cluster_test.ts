/**
 * The cluster families of /metrics (control/api/_metrics_cluster.ts): groups' phases and
 * counts, nodes' states, orphaned copies. Pure rendering; the e2e test of a live cluster
 * (tests/e2e/replication_view_test.ts) and promtool (tests/packaging/) check the rest.
 */

import { renderClusterMetrics } from "../../../control/api/_metrics_cluster.ts";
import type { NodeInfo, Volume } from "../../../mod/types.ts";
import { assertEquals } from "../../_assert.ts";

const BASE: Volume = {
  name: "plain",
  uuid: "u1",
  sizeBytes: 1024,
  replicas: 0,
  master: "n1",
  epoch: 1,
  state: "ready",
  labels: {},
  description: "",
  createdAt: "2030-01-01T00:00:00.000Z",
  updatedAt: "2030-01-01T00:00:00.000Z",
};

function render(input: Parameters<typeof renderClusterMetrics>[0]): string[] {
  const out: string[] = [];
  const family = (name: string, type: string, help: string) =>
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  const labels = (p: Record<string, string>) =>
    `{${Object.entries(p).map(([k, v]) => `${k}="${v}"`).join(",")}}`;
  renderClusterMetrics(input, family, labels, out);
  return out.filter((l) => !l.startsWith("#"));
}

Deno.test("renderClusterMetrics(): a group's phase, in-sync, members, desired copies and epoch; plain volumes left out", () => {
  const group: Volume = {
    ...BASE,
    name: "db",
    replicas: 2,
    master: "n2",
    epoch: 3,
    members: ["n1", "n2", "n3"],
    inSync: ["n2"],
    down: ["n1"],
    phase: "degraded",
  };
  assertEquals(render({ volumes: [BASE, group] }), [
    'ballast_volume_phase{volume="db",phase="healthy"} 0',
    'ballast_volume_phase{volume="db",phase="degraded"} 1',
    'ballast_volume_phase{volume="db",phase="failing-over"} 0',
    'ballast_volume_phase{volume="db",phase="unavailable"} 0',
    'ballast_volume_in_sync_members{volume="db"} 1',
    'ballast_volume_members{volume="db"} 3',
    'ballast_volume_desired_copies{volume="db"} 3',
    'ballast_volume_epoch{volume="db"} 3',
  ]);
});

Deno.test("renderClusterMetrics(): each node's state as seen here, and orphaned copies", () => {
  const node = (name: string, state: NodeInfo["state"]): NodeInfo => ({
    name,
    state,
    reason: "",
    apiAddress: "",
    nbdAddress: "",
    version: "0",
    labels: {},
    capacityBytes: 0,
    freeBytes: 0,
    volumes: 0,
    startedAt: "",
    lastSeen: "",
  });
  const got = render({
    volumes: [],
    nodes: [node("n1", "ready"), node("n2", "cordoned")],
    orphaned: { copies: 2, bytes: 8192 },
  }).filter((l) => !l.startsWith("ballast_volume_"));
  assertEquals(got, [
    'ballast_node_state{node="n1",state="ready"} 1',
    'ballast_node_state{node="n1",state="unreachable"} 0',
    'ballast_node_state{node="n1",state="down"} 0',
    'ballast_node_state{node="n1",state="cordoned"} 0',
    'ballast_node_state{node="n2",state="ready"} 0',
    'ballast_node_state{node="n2",state="unreachable"} 0',
    'ballast_node_state{node="n2",state="down"} 0',
    'ballast_node_state{node="n2",state="cordoned"} 1',
    "ballast_orphaned_copies 2",
    "ballast_orphaned_bytes 8192",
  ]);
});
