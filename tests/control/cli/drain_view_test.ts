/**
 * What `node drain` and `volume events` print (control/cli/_drain_view.ts), and the pure
 * planning under them (control/volumes/_drain.ts planDrain, group/handover.ts).
 */

import { assert, assertEquals } from "../../_assert.ts";
import type { DrainReport, NodeInfo, VolumeEvent } from "../../../mod/types.ts";
import {
  drainProgressText,
  drainSummary,
  eventsTable,
  EXIT_NOT_DRAINED,
} from "../../../control/cli/_drain_view.ts";
import { planDrain } from "../../../control/volumes/_drain.ts";
import { handoverTarget, newRecord } from "../../../control/group/mod.ts";
import type { VolumeRecord } from "../../../control/volumes/mod.ts";

const report = (r: Partial<DrainReport>): DrainReport => ({
  node: "n1",
  dryRun: false,
  force: false,
  result: "drained",
  cordoned: true,
  volumes: [],
  ms: 1500,
  ...r,
});

Deno.test("drainSummary(): exit 0 drained, 3 refused or incomplete, dry runs by what would happen", () => {
  const moved = { volume: "r1", from: "n1", status: "moved" as const, to: "n2", epoch: 2 };
  const refused = { volume: "u1", from: "n1", status: "refused" as const, reason: "no" };
  assertEquals(drainSummary(report({ volumes: [moved] })).code, 0);
  assert(drainSummary(report({ volumes: [moved] })).text.includes('node "n1" drained in 1.5 s'));
  const refusal = drainSummary(report({ result: "refused", volumes: [refused] }));
  assertEquals(refusal.code, 3);
  assert(refusal.text.includes("refused: 1 volume would be left"), refusal.text);
  assert(refusal.text.includes("give them one as the reason says"), refusal.text);
  assert(!refusal.text.includes("--replicas 1"), "no advice that fails for unreplicated volumes");
  const two = drainSummary(report({ result: "refused", volumes: [refused, refused] })).text;
  assert(two.includes("refused: 2 volumes would be left"), two);
  const failed = { ...moved, status: "failed" as const, reason: "late" };
  const inc = drainSummary(report({ result: "incomplete", volumes: [failed] }));
  assertEquals(inc.code, EXIT_NOT_DRAINED);
  assert(inc.text.includes("NOT fully drained") && inc.text.includes("1 failed"), inc.text);
  assertEquals(drainSummary(report({ dryRun: true, volumes: [refused] })).code, 3);
  assertEquals(drainSummary(report({ dryRun: true, force: true, volumes: [refused] })).code, 0);
});

Deno.test("drainProgressText(): the plan, then each volume under one heading", () => {
  const plan = drainProgressText({
    type: "plan",
    node: "n1",
    volumes: [{ volume: "r1", from: "n1", status: "planned", to: "n2" }],
  }, { dryRun: false });
  assertEquals(plan, 'node "n1" masters 1 volume:\n  r1: master n1 -> n2\n');
  const line = { volume: "r1", from: "n1", status: "moved" as const, to: "n2", epoch: 2, ms: 80 };
  assertEquals(
    drainProgressText({ type: "volume", volume: line }, { dryRun: false, first: true }),
    "\ndraining, one volume at a time:\n  r1: moved to n2 (epoch 2, 0.1 s)\n",
  );
  assertEquals(
    drainProgressText({ type: "plan", node: "n3", volumes: [] }, { dryRun: false }),
    'node "n3" masters no volume\n',
  );
});

Deno.test("eventsTable(): relative ages, whole-second times, one row per event", () => {
  const e: VolumeEvent = {
    seq: 1,
    at: "2026-12-05T03:00:00.123Z",
    type: "handover",
    epoch: 2,
    master: "n2",
    node: "n2",
    message: "n1 handed over to n2 at epoch 2 (drain of node n1)",
  };
  const text = eventsTable([e], Date.parse("2026-12-05T03:02:30Z"));
  assertEquals(text.split("\n")[1].split(/\s{3,}/), [
    "2m",
    "2026-12-05T03:00:00Z",
    "2",
    "n2",
    "handover",
    "n1 handed over to n2 at epoch 2 (drain of node n1)",
  ]);
  assert(eventsTable([]).startsWith("No events"));
});

const node = (name: string, state: NodeInfo["state"]) => ({ name, state }) as NodeInfo;

Deno.test("planDrain(): each volume the node masters, with its target or why it cannot move", () => {
  const g = newRecord("n1", ["n2", "n3"]);
  const rec = (name: string, extra: Partial<VolumeRecord>) =>
    ({ name, uuid: name, state: "ready", master: "n1", ...extra }) as VolumeRecord;
  const records = [
    rec("r1", { group: g }),
    rec("u1", {}),
    rec("elsewhere", { master: "n2", group: { ...g, master: "n2" } }),
    rec(
      "lagging",
      {
        group: { ...g, inSync: ["n1"] },
        outOfSync: { n2: { since: "", reason: "a write failed" }, n3: { since: "", reason: "x" } },
      },
    ),
  ];
  const nodes = [node("n1", "ready"), node("n2", "cordoned"), node("n3", "ready")];
  assertEquals(planDrain("n1", records, nodes).map((v) => [v.volume, v.status, v.to ?? v.reason]), [
    [
      "lagging",
      "refused",
      "no in-sync replica could take over: n2 is out of sync (a write failed); n3 is out of " +
      "sync (x); moving the master would leave no in-sync copy",
    ],
    ["r1", "planned", "n3"], // a ready node before a cordoned one
    [
      "u1",
      "refused",
      "it is not replicated: its only copy is on n1 (to move it, copy its data to a volume created with --replicas)",
    ],
  ]);
  assertEquals(handoverTarget(g, "n1", [node("n2", "cordoned")]), { to: "n2", cordoned: true });
  // Only a cordoned member left: the plan says so.
  const onlyCordoned = planDrain("n1", [records[0]], [node("n1", "ready"), node("n2", "cordoned")]);
  assertEquals(onlyCordoned.map((v) => [v.status, v.to, v.reason]), [
    ["planned", "n2", "n2 is cordoned too: no ready in-sync member with room is left"],
  ]);
  assertEquals(
    drainProgressText({ type: "plan", node: "n1", volumes: onlyCordoned }, { dryRun: false }),
    'node "n1" masters 1 volume:\n  r1: master n1 -> n2 (n2 is cordoned too: no ready in-sync ' +
      "member with room is left)\n",
  );
  assertEquals(
    handoverTarget({ ...g, down: ["n2", "n3"] }, "n1", nodes),
    {
      refused: "no in-sync replica could take over: n2 is down; n3 is down; moving the master " +
        "would leave no in-sync copy",
    },
  );
  // A full disk could not serve (its epoch file): a ready member with room goes first, even a
  // cordoned one; with only full ones left the handover is refused.
  const full = { ...node("n3", "ready"), freeBytes: 0 };
  const room = { ...node("n2", "cordoned"), freeBytes: 2 ** 30 };
  assertEquals(handoverTarget(g, "n1", [full, room]), { to: "n2", cordoned: true });
  assertEquals(
    handoverTarget(g, "n1", [full, { ...room, freeBytes: 0 }]),
    {
      refused: "no in-sync replica could take over: n2's disk is full (0 B free: it could not " +
        "serve); n3's disk is full (0 B free: it could not serve); moving the master would " +
        "leave no in-sync copy",
    },
  );
});
