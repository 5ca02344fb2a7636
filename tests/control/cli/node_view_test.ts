/**
 * What `node get` prints (control/cli/node.ts nodeFields): every address the JSON has, and
 * what a node that is down last reported of itself marked as such.
 */

import { assert, assertEquals } from "../../_assert.ts";
import type { NodeInfo } from "../../../mod/types.ts";
import { nodeFields, nodeTable } from "../../../control/cli/node.ts";

const node: NodeInfo = {
  name: "n2",
  state: "ready",
  reason: "",
  apiAddress: "https://127.0.0.1:44301",
  nbdAddress: "127.0.0.1:46881",
  peerAddress: "127.0.0.1:43277",
  version: "0.1.0",
  labels: { zone: "b" },
  capacityBytes: 2 ** 40,
  freeBytes: 2 ** 39,
  volumes: 1,
  masters: 1,
  copies: 2,
  dataWorkers: { size: 1, min: 1, max: 2 },
  startedAt: "2026-12-05T17:39:07.122Z",
  lastSeen: "2026-12-05T17:40:20.291Z",
};

const row = (text: string, key: string) =>
  text.split("\n").find((l) => l.startsWith(`${key}:`))?.slice(key.length + 1).trim();

Deno.test("nodeFields(): the peer address is shown; a ready node's own figures are plain", () => {
  const t = nodeFields(node);
  assertEquals(row(t, "Peer"), "127.0.0.1:43277");
  assertEquals(row(t, "Exported"), "1 (volumes served over NBD here)");
  assertEquals(row(t, "Data workers"), "1 (pool of 1..2)");
  assertEquals(row(nodeFields({ ...node, peerAddress: undefined }), "Peer"), "-");
});

Deno.test("nodeFields(): a node that is down: what it reported of itself is marked as last reported", () => {
  const t = nodeFields({ ...node, state: "down", reason: "liveness lease expired" });
  const stale = " (as last reported, 2026-12-05T17:40:20.291Z)";
  assertEquals(row(t, "Exported"), `1 (volumes served over NBD here)${stale}`);
  assertEquals(row(t, "Free"), `512 GiB (${2 ** 39} bytes)${stale}`);
  assertEquals(row(t, "Data workers"), `1 (pool of 1..2)${stale}`);
  assert(row(t, "State")!.startsWith("down (liveness lease expired)"), t);
});

Deno.test("nodeTable(): STATE says why a node is not ready, in brackets", () => {
  const state = (n: NodeInfo) => {
    const [head, line] = nodeTable([n], Date.parse(n.lastSeen)).split("\n");
    return line.slice(head.indexOf("STATE"), head.indexOf("MASTERS")).trim();
  };
  assertEquals(state(node), "ready");
  const expired = "liveness lease expired; last seen 2026-12-05T17:40:20.291Z";
  assertEquals(state({ ...node, state: "down", reason: expired }), "down (liveness lease expired)");
  const hung = "liveness lease still held, but its API at https://127.0.0.1:41705 did not answer " +
    "a health check within 2500 ms (cannot reach the Ballast API at https://127.0.0.1:41705: " +
    "connection refused); last seen 2026-12-05T17:40:20.291Z";
  assertEquals(
    state({ ...node, state: "unreachable", reason: hung }),
    "unreachable (liveness lease still held, but its API at https://127.0.0.1:41705 did ...)",
  );
  // Times as the time of day, never cut in the middle.
  const stopped = "node stopped: lease revoked at its clean stop at 2026-12-06T19:04:47.123Z";
  assertEquals(
    state({ ...node, state: "down", reason: stopped }),
    "down (node stopped: lease revoked at its clean stop at 19:04:47Z)",
  );
  const cordon = "cordoned since 2026-12-05T17:41:00.000Z: disk swap";
  assertEquals(state({ ...node, state: "cordoned", reason: cordon }), "cordoned (disk swap)");
});
