/**
 * A volume as `volume get` shows it from any node (control/volumes/_live.ts): live fields
 * and resync progress from the node serving it (this one, or asked through the node-to-node
 * API), each member's state, and root hashes when the data plane offers them. The data
 * plane, the groups and the other node are fakes; the real path is in
 * tests/e2e/replication_view_test.ts.
 */

import type { DataPlane } from "../../../data/plane.ts";
import { type ActorState, newRecord } from "../../../control/group/mod.ts";
import type { VolumeGroups } from "../../../control/volumes/_groups.ts";
import {
  eventsView,
  listedView,
  type LiveContext,
  localLive,
  type PeerStatusSource,
  seenPhase,
  spreadChecked,
  uncompared,
  verifyVolume,
  volumeView,
} from "../../../control/volumes/_live.ts";
import { verifyText } from "../../../control/cli/_verify_view.ts";
import { eventsTable } from "../../../control/cli/_drain_view.ts";
import { eventsPrefix } from "../../../control/events/mod.ts";
import type { VolumeRecord } from "../../../control/volumes/_record.ts";
import { ResyncTracker } from "../../../control/volumes/_resyncs.ts";
import { UnavailableError } from "../../../mod/errors.ts";
import type { NodeInfo, Volume, VolumeLiveStatus } from "../../../mod/types.ts";
import { assert, assertEquals } from "../../_assert.ts";

const MiB = 2 ** 20;
const NOW = new Date("2030-01-01T00:01:00.000Z");
const STARTED = Date.parse("2030-01-01T00:00:00.000Z");

function record(master: string, over: Partial<VolumeRecord> = {}): VolumeRecord {
  const group = { ...newRecord(master, ["n1", "n2", "n3"].filter((n) => n !== master)) };
  return {
    name: "g",
    uuid: "uuid-1",
    sizeBytes: 64 * MiB,
    replicas: 2,
    labels: {},
    description: "",
    createdAt: NOW.toISOString(),
    updatedAt: NOW.toISOString(),
    master,
    epoch: 1,
    state: "ready",
    group: { ...group, inSync: [master, "n3"].sort() },
    outOfSync: { n2: { since: "2030-01-01T00:00:30.000Z", reason: "a replicated write failed" } },
    ...over,
  };
}

/** A data plane exporting "g" on this node, resyncing n2 halfway through pass 1. */
function plane(over: Partial<DataPlane> = {}): DataPlane {
  return {
    volumeStatus: (name: string) =>
      name === "g" ? { allocatedBytes: 3 * MiB, connections: 2, writes: 9 } : undefined,
    resyncStatus: () => [{
      replica: "n2",
      comparedBytes: 32 * MiB,
      totalBytes: 64 * MiB,
      sentBytes: 5 * MiB,
      zeroedBytes: 0,
      hashBytes: 1024,
      pass: 1,
      startedAt: STARTED,
    }],
    ...over,
  } as unknown as DataPlane;
}

function groups(
  gone: string[] = [],
  tracker = new ResyncTracker(),
  blocked?: { reason: string; since: string },
  actor?: Partial<ActorState>,
  serveFailure?: string,
): VolumeGroups {
  return {
    leaseGone: () => gone,
    leaseStopped: () => [],
    resyncs: tracker,
    members: { blocked: () => blocked },
    actor: () => actor,
    serveFailure: () => serveFailure,
  } as unknown as VolumeGroups;
}

function ctx(over: Partial<LiveContext> = {}): LiveContext {
  return { plane: plane(), node: "n1", groups: groups(), now: () => NOW, ...over };
}

Deno.test("volumeView() on the master: live fields and resync progress from its own data plane", async () => {
  const v = await volumeView(ctx(), record("n1"));
  assertEquals([v.allocatedBytes, v.connections], [3 * MiB, 2]);
  assertEquals(v.live, { node: "n1", observedAt: NOW.toISOString() });
  const [master, n2, n3] = v.memberStatus!;
  assertEquals([master.node, master.role, master.state], ["n1", "master", "in-sync"]);
  assertEquals([n2.state, n2.resync?.percent, n2.lagBytes, n2.lagSeconds], [
    "resyncing",
    50,
    32 * MiB,
    30,
  ]);
  assertEquals(n3.state, "in-sync");
  assert(v.memberStatus!.every((m) => m.rootHash === undefined), "no memberRoots: no hashes");
  assert(!("outOfSync" in v), "the stored notes are not part of the API");
});

Deno.test("volumeView() on another node asks the master through the node-to-node API", async () => {
  const asked: string[] = [];
  const master = await localLive(ctx(), record("n1"), { roots: true });
  const peers: PeerStatusSource = {
    volumeStatus: (node, name) => {
      asked.push(`${node}/${name}`);
      return Promise.resolve({ ...master!, roots: { n1: "aa", n2: "bb", n3: null } });
    },
  };
  const v = await volumeView(ctx({ node: "n3", plane: plane({}), peers }), record("n1"));
  assertEquals(asked, ["n1/g"]);
  assertEquals(v.live?.node, "n1");
  assertEquals([v.allocatedBytes, v.connections], [3 * MiB, 2]);
  assertEquals(v.memberStatus!.map((m) => [m.state, m.rootHash]), [
    ["in-sync", "aa"],
    ["resyncing", "bb"],
    ["in-sync", undefined],
  ]);
});

Deno.test("volumeView(): the master cannot be asked (down, no answer, another copy): the record alone, live.error says why", async () => {
  const failing: PeerStatusSource = {
    volumeStatus: () => Promise.reject(new UnavailableError("no answer within 2 s")),
  };
  const down = await volumeView(
    ctx({ node: "n3", groups: groups(["n1"]), peers: failing }),
    record("n1"),
  );
  assertEquals(down.live, { node: "n1", error: "node n1 is down (its liveness lease is gone)" });
  assertEquals(down.memberStatus!.map((m) => m.state), ["down", "out-of-sync", "in-sync"]);
  assertEquals(down.allocatedBytes, undefined);

  const silent = await volumeView(ctx({ node: "n3", peers: failing }), record("n1"));
  assertEquals(silent.live?.error, "node n1 did not answer: no answer within 2 s");
  const n2 = silent.memberStatus![1];
  assertEquals(n2.state, "out-of-sync", "no progress known: not shown resyncing");
  assert(n2.reason!.startsWith("a replicated write failed; resync progress unknown"), n2.reason);

  const other: PeerStatusSource = {
    volumeStatus: async () => ({
      ...(await localLive(ctx(), record("n1"), { roots: false }))!,
      uuid: "x",
    }),
  };
  const renamed = await volumeView(ctx({ node: "n3", peers: other }), record("n1"));
  assertEquals(renamed.live?.error, "node n1 serves another volume of that name");
});

Deno.test("volumeView(): members whose lease is gone count as down and the phase follows, though no live member wrote the record", async () => {
  // Master n1 and replica n2, both in sync, died together: the record still says healthy.
  const g = { ...record("n1").group!, members: ["n1", "n2"], inSync: ["n1", "n2"] };
  const both = record("n1", { group: { ...g, phase: "healthy" as const }, outOfSync: {} });
  const dead = await volumeView(ctx({ node: "n3", groups: groups(["n1", "n2"]) }), both);
  assertEquals([dead.phase, dead.down], ["unavailable", ["n1", "n2"]]);
  assert(
    dead.phaseReason!.startsWith("no in-sync member is up: master n1 is down"),
    dead.phaseReason,
  );
  // Only the master's lease gone, an in-sync replica up: failing over, as the docs say.
  const master = await volumeView(ctx({ node: "n3", groups: groups(["n1"]) }), both);
  assertEquals([master.phase, master.down], ["failing-over", ["n1"]]);
  // Nothing gone: the record's own phase.
  const alive = await volumeView(ctx({ node: "n3", peers: undefined }), both);
  assertEquals([alive.phase, alive.down], ["healthy", []]);
});

Deno.test("a volume without replicas whose node is down: unavailable, with why (get and list)", async () => {
  const { group: _g, outOfSync: _o, ...plain } = record("n1", { replicas: 0 });
  const down = await volumeView(
    ctx({ node: "n3", groups: groups(["n1"]), peers: undefined }),
    plain,
  );
  assertEquals(down.phase, "unavailable");
  assert(
    down.phaseReason!.startsWith("its node n1 is down (liveness lease gone)"),
    down.phaseReason,
  );
  const up = await volumeView(ctx({ node: "n3", groups: groups([]), peers: undefined }), plain);
  assertEquals([up.phase, up.phaseReason], [undefined, undefined]);
  const listed = seenPhase({ ...down, phase: undefined, phaseReason: undefined }, plain, ["n1"]);
  assertEquals(listed.phase, "unavailable");
  assertEquals(seenPhase(up, plain, ["n2"]).phase, undefined, "another node down");
});

Deno.test("eventsView(): what no live member could write yet follows the written events, marked pending", () => {
  const g = { ...record("n1").group!, members: ["n1", "n2"], inSync: ["n1", "n2"] };
  const both = record("n1", { group: { ...g, phase: "healthy" as const }, outOfSync: {} });
  const written = {
    key: `${eventsPrefix(both.name)}${both.uuid}/000000000001`,
    value: JSON.stringify({
      seq: 1,
      at: "2030-01-01T00:00:00.000Z",
      type: "created",
      epoch: 1,
      master: "n1",
      message: "created with master n1 and replicas n2",
    }),
  };
  const kvs = [{ ...written, createRevision: 2, modRevision: 2, version: 1, lease: 0 }];
  // Both members died together: nobody writes the record; this node sees both leases gone.
  const dead = eventsView(ctx({ node: "n3", groups: groups(["n1", "n2"]) }), both, kvs);
  assertEquals(dead.map((e) => [e.seq, e.type, e.node, e.pending ?? false]), [
    [1, "created", undefined, false],
    [0, "down", "n1", true],
    [0, "down", "n2", true],
  ]);
  assertEquals(dead[1].at, NOW.toISOString());
  assert(dead[1].message.includes("not recorded yet"), dead[1].message);
  assert(eventsTable(dead, NOW.getTime()).includes("down (pending)"));
  // Nothing gone, or the record already says so: only what was written.
  assertEquals(eventsView(ctx({ node: "n3", groups: groups([]) }), both, kvs).length, 1);
  const recorded = record("n1", { group: { ...g, down: ["n1", "n2"] }, outOfSync: {} });
  assertEquals(
    eventsView(ctx({ node: "n3", groups: groups(["n1", "n2"]) }), recorded, kvs).length,
    1,
  );
});

Deno.test("volumeView() of an unreplicated volume: no members; single node: no live block at all", async () => {
  const rec = record("n1", { replicas: 0, group: undefined, outOfSync: undefined });
  const single = await volumeView(ctx({ groups: undefined }), rec);
  assertEquals([single.allocatedBytes, single.memberStatus, single.live], [
    3 * MiB,
    undefined,
    undefined,
  ]);
  const peers: PeerStatusSource = {
    volumeStatus: async () => (await localLive(ctx(), rec, { roots: false }))!,
  };
  const remote = await volumeView(ctx({ node: "n2", peers }), rec);
  assertEquals([remote.allocatedBytes, remote.live?.node], [3 * MiB, "n1"]);
});

Deno.test("localLive(): resyncs from their first moment (tracked, no progress yet) with the --resync-rate, and their failures; a replica reports none", async () => {
  const tracker = new ResyncTracker(() => STARTED + 5_000);
  let finish: () => void = () => {};
  const running = tracker.run("g", "n3", () => new Promise<void>((r) => finish = r));
  tracker.fail("g", "n2", "replica n2: connection reset");
  const live = await localLive(ctx({ groups: groups([], tracker) }), record("n1"), { roots: true });
  assertEquals(live!.resyncs.map((r) => [r.member, r.pass, r.comparedBytes, r.totalBytes]), [
    ["n2", 1, 32 * MiB, 64 * MiB],
    ["n3", 0, 0, 64 * MiB],
  ]);
  assertEquals(live!.resyncFailures, [{
    member: "n2",
    message: "replica n2: connection reset",
    at: new Date(STARTED + 5_000).toISOString(),
  }]);
  assertEquals(live!.resyncs.map((r) => r.rateLimitBytesPerSecond), [undefined, undefined]);
  const capped = await localLive(
    ctx({ groups: groups([], tracker), plane: plane({ resyncRateBytesPerSecond: 8 * MiB }) }),
    record("n1"),
    { roots: true },
  );
  assertEquals(capped!.resyncs.map((r) => r.rateLimitBytesPerSecond), [8 * MiB, 8 * MiB]);
  finish();
  await running;
  // n3's resync finished; the record does not list it in sync yet: shown finished, not lost.
  const base = record("n1");
  const lagging = record("n1", {
    group: { ...base.group!, inSync: ["n1"] },
    outOfSync: { n3: { since: new Date(STARTED).toISOString(), reason: "write failed" } },
  });
  const done = await localLive(ctx({ groups: groups([], tracker) }), lagging, { roots: true });
  assertEquals(done!.resyncs.map((r) => [r.member, r.finishedAt, r.comparedBytes]), [
    ["n2", undefined, 32 * MiB],
    ["n3", new Date(STARTED + 5_000).toISOString(), 64 * MiB],
  ]);
  const listed = { ...base, group: { ...base.group!, inSync: ["n1", "n2", "n3"] } };
  const afterCas = await localLive(ctx({ groups: groups([], tracker) }), listed, { roots: true });
  assertEquals(afterCas!.resyncs.map((r) => r.member), ["n2"], "in sync: nothing to add");
  const leftAgain = record("n1", {
    group: { ...base.group!, inSync: ["n1"] },
    outOfSync: { n3: { since: new Date(STARTED + 6_000).toISOString(), reason: "write failed" } },
  });
  const later = await localLive(ctx({ groups: groups([], tracker) }), leftAgain, { roots: true });
  assertEquals(later!.resyncs.map((r) => r.member), ["n2"], "out of sync again since");
  const replica = await localLive(ctx({ node: "n2" }), record("n1"), { roots: true });
  assertEquals([replica!.resyncs, replica!.resyncFailures], [[], []]);
  assertEquals(await localLive(ctx(), record("n1", { name: "other" }), { roots: true }), undefined);
});

Deno.test("localLive(): root hashes when the data plane offers them (undefined as null), left out when it is too slow", async () => {
  const roots = plane({
    memberRoots: () => Promise.resolve({ n1: "aa", n2: undefined, n3: "cc" }),
  });
  const live = await localLive(ctx({ plane: roots }), record("n1"), { roots: true });
  assertEquals(live!.roots, { n1: "aa", n2: null, n3: "cc" });
  const json = JSON.parse(JSON.stringify(live)) as VolumeLiveStatus;
  assertEquals(json.roots, { n1: "aa", n2: null, n3: "cc" });
  const noRoots = await localLive(ctx({ plane: roots }), record("n1"), { roots: false });
  assertEquals(noRoots!.roots, undefined);

  const stuck = plane({ memberRoots: () => new Promise(() => {}) });
  const slow = await localLive(ctx({ plane: stuck }), record("n1"), { roots: true });
  assertEquals(slow!.roots, undefined);
  const failing = plane({ memberRoots: () => Promise.reject(new Error("boom")) });
  assertEquals(
    (await localLive(ctx({ plane: failing }), record("n1"), { roots: true }))!.roots,
    undefined,
  );
});

Deno.test("volumeView(): a membership change the master cannot make is shown with its reason", async () => {
  const blocked = {
    reason: "cannot replace n3 (absent for 301 s, more than 300 s): need 1 more eligible " +
      "node, found 0; not eligible: n4 (cordoned)",
    since: "2026-12-05T01:00:00.000Z",
  };
  const v = await volumeView(
    ctx({ groups: groups([], new ResyncTracker(), blocked) }),
    record("n1"),
  );
  assertEquals(v.membershipBlocked, blocked);
  const none = await volumeView(ctx(), record("n1"));
  assertEquals(none.membershipBlocked, undefined);
});

Deno.test("volumeView(): replicas the master found failing and could not record yet (etcd unreachable) are out of sync, the group degraded, writes said to wait", async () => {
  const rec = record("n1");
  const healthy = { ...rec, group: { ...rec.group!, inSync: ["n1", "n2", "n3"] } };
  const known = { revision: 7, record: healthy.group };
  const report = { replica: "n3", inSync: false, epoch: 1 };
  const failing = groups([], new ResyncTracker(), undefined, {
    known,
    reports: [report],
    holding: 1,
  });
  const v = await volumeView(ctx({ groups: failing }), healthy);
  assertEquals(v.memberStatus!.map((m) => m.state), ["in-sync", "in-sync", "out-of-sync"]);
  assert(v.memberStatus![2].reason!.includes("writes wait"), v.memberStatus![2].reason);
  assertEquals(v.phase, "degraded");
  assert(
    v.phaseReason!.startsWith("replica n3 out of sync: replication to it failed"),
    v.phaseReason,
  );
  // Recorded already (the record lists n3 out of sync), or nothing reported: as the record says.
  const recorded = { ...healthy, group: { ...healthy.group, inSync: ["n1", "n2"] } };
  const v2 = await volumeView(ctx({ groups: failing }), recorded);
  assertEquals(v2.memberStatus!.map((m) => m.state), ["in-sync", "in-sync", "out-of-sync"]);
  assert(!v2.memberStatus![2].reason!.includes("writes wait"), v2.memberStatus![2].reason);
  const quiet = groups([], new ResyncTracker(), undefined, { known, reports: [] });
  assertEquals((await volumeView(ctx({ groups: quiet }), healthy)).phase, "healthy");
});

Deno.test("volumeView(): a master refused by a member that has seen a newer epoch (the record behind its members) is unavailable, with why", async () => {
  const fenced = plane({
    volumeStatus: (name: string) =>
      name === "g"
        ? { allocatedBytes: 3 * MiB, connections: 0, writes: 0, fenced: true }
        : undefined,
  });
  const v = await volumeView(ctx({ plane: fenced }), record("n1"));
  assertEquals(v.phase, "unavailable");
  assert(
    v.phaseReason!.startsWith(
      "master n1 is refused by a member that has seen a newer epoch than the record's 1",
    ),
    v.phaseReason,
  );
  assertEquals((await volumeView(ctx(), record("n1"))).phase === "unavailable", false);
  // volume list on that node says the same; on another node the record alone.
  const listed = listedView(ctx({ plane: fenced }), record("n1"));
  assertEquals([listed.phase, listed.phaseReason], [v.phase, v.phaseReason]);
  assertEquals(listedView(ctx(), record("n1")).phase, "healthy");
  assertEquals(listedView(ctx({ plane: fenced, node: "n2" }), record("n1")).phase, "healthy");
});

Deno.test("verifyVolume(): a member down or out of sync that the master did not compare is listed with why, and verify says NOT OK; one compared while out of sync is marked resyncing", async () => {
  const rec = record("n1");
  const down = record("n1", { group: { ...rec.group!, down: ["n2"], phase: "degraded" } });
  const equal = { differing: [], differingCount: 0, corrupt: [], corruptCount: 0, equal: true };
  // The master's data plane compares the members it replicates to: n1 and n3.
  const compared = plane({
    verifyVolume: () =>
      Promise.resolve({
        deep: false,
        regionBytes: MiB,
        regions: 64,
        ms: 5,
        members: [
          { node: "n1", role: "master" as const, root: "aa", ...equal },
          { node: "n3", role: "replica" as const, root: "aa", ...equal },
        ],
      }),
  });
  const r = await verifyVolume(ctx({ plane: compared }), down, { deep: false });
  assertEquals(r.ok, false);
  assertEquals(r.members.map((m) => [m.node, m.error]), [
    ["n1", undefined],
    ["n3", undefined],
    ["n2", "not compared: the member is down (a replicated write failed)"],
  ]);
  const text = verifyText(r);
  assert(/n2 +replica +- +not compared +not compared: the member is down/.test(text), text);
  assert(text.endsWith("NOT OK: n2 not compared (ERROR above).\n"), text);
  // Out of sync but up (no resync under way): listed the same way.
  assertEquals(
    uncompared(rec, ["n1", "n3"])[0].error,
    "not compared: the member is out of sync (a replicated write failed)",
  );
  // n3 compared though the record lists it out of sync: it is being resynced, and says so.
  const lagging = record("n1", { group: { ...rec.group!, inSync: ["n1"] } });
  const during = await verifyVolume(ctx({ plane: compared }), lagging, { deep: false });
  assertEquals(during.members.map((m) => [m.node, m.resyncing]), [
    ["n1", undefined],
    ["n3", true],
    ["n2", undefined],
  ]);
  // Every member compared, or no group: nothing added.
  assertEquals(uncompared(rec, ["n1", "n2", "n3"]), []);
  assertEquals(uncompared(record("n1", { group: undefined }), ["n1"]), []);
});

Deno.test("spreadChecked(): members sharing the --spread-by value (a label changed since placement) are named in the phase reason; a spread kept, or none asked, changes nothing", async () => {
  const v = {
    name: "z1",
    phase: "healthy",
    spreadBy: "zone",
    members: ["n3", "n4", "n5"],
  } as unknown as Volume;
  const nodes = (zones: Record<string, string>) => () =>
    Promise.resolve(
      Object.entries(zones).map(([name, zone]) =>
        ({ name, labels: { zone } }) as unknown as NodeInfo
      ),
    );
  const kept = await spreadChecked(v, nodes({ n3: "c", n4: "a", n5: "b" }));
  assertEquals(kept.phaseReason, undefined);
  const broken = await spreadChecked(v, nodes({ n3: "c", n4: "b", n5: "b" }));
  assertEquals(
    broken.phaseReason,
    "spread by zone broken: n4 and n5 share zone=b (a label changed since placement): " +
      "one zone failing takes more than one copy",
  );
  const none = { ...v, spreadBy: undefined } as Volume;
  assertEquals(
    (await spreadChecked(none, nodes({ n3: "a", n4: "a", n5: "a" }))).phaseReason,
    undefined,
  );
});

Deno.test("volumeView() of a master whose export failed (a full disk; it tries again): unavailable, and why", async () => {
  const why = "No space left on device (os error 28)";
  const c = ctx({
    plane: plane({ volumeStatus: () => undefined }),
    groups: groups([], new ResyncTracker(), undefined, undefined, why),
  });
  const v = await volumeView(c, record("n1"));
  assertEquals(v.phase, "unavailable");
  assertEquals(v.phaseReason, `its master n1 cannot export it: ${why} (it tries again)`);
  const listed = listedView(c, record("n1"));
  assertEquals([listed.phase, listed.phaseReason], [v.phase, v.phaseReason]);
  // A node that masters nothing here answers "not exported", as before.
  assertEquals(await localLive(c, record("n2"), { roots: false }), undefined);
});
