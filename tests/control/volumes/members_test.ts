/**
 * The members of a replicated volume as operators see them (control/volumes/_members.ts),
 * the notes of why and since when members left the in-sync set (_sync_notes.ts), and the
 * resyncs a master tracks (_resyncs.ts): pure functions and fakes, no cluster.
 */

import { type GroupRecord, newRecord } from "../../../control/group/mod.ts";
import { memberDetail, resyncDetail } from "../../../control/cli/_members_view.ts";
import {
  ETA_MIN_REGIONS,
  ETA_MIN_SECONDS,
  memberStatus,
  phaseReason,
  resyncEta,
  resyncView,
} from "../../../control/volumes/_members.ts";
import { interruptionReason, ResyncTracker, runResync } from "../../../control/volumes/_resyncs.ts";
import { VOLUME_PREFIX } from "../../../control/volumes/_record.ts";
import { eventsPrefix, parseEvents } from "../../../control/events/mod.ts";
import { createLogger } from "../../../control/common/mod.ts";
import { withSqlite } from "../_fixtures.ts";
import {
  FailureReasons,
  nextSyncNotes,
  SYNC_REASONS,
} from "../../../control/volumes/_sync_notes.ts";
import type { LiveResync, VolumeLiveStatus } from "../../../mod/types.ts";
import { assert, assertEquals, assertRejects } from "../../_assert.ts";

const MiB = 2 ** 20;
const SIZE = 1024 * MiB;
const T0 = Date.parse("2030-01-01T00:00:00.000Z");
const iso = (ms: number) => new Date(ms).toISOString();

/** A group of n1 (master), n2, n3 changed by `over`, with its phase left as it was. */
function group(over: Partial<GroupRecord> = {}): GroupRecord {
  return { ...newRecord("n1", ["n2", "n3"]), ...over };
}

function live(over: Partial<VolumeLiveStatus> = {}): VolumeLiveStatus {
  return {
    name: "g",
    uuid: "u",
    node: "n1",
    observedAt: iso(T0 + 10_000),
    allocatedBytes: 0,
    connections: 0,
    resyncs: [],
    resyncFailures: [],
    ...over,
  };
}

function resync(over: Partial<LiveResync> = {}): LiveResync {
  return {
    member: "n2",
    startedAt: iso(T0),
    pass: 1,
    comparedBytes: 256 * MiB,
    totalBytes: SIZE,
    sentBytes: 40 * MiB,
    zeroedBytes: 0,
    hashBytes: 16 * 1024,
    ...over,
  };
}

Deno.test("memberStatus(): a healthy group lists the master first, every member in sync with no lag", () => {
  const members = memberStatus({ group: group(), sizeBytes: SIZE, gone: [], now: T0 });
  assertEquals(members, [
    { node: "n1", role: "master", state: "in-sync", lagBytes: 0, lagSeconds: 0 },
    { node: "n2", role: "replica", state: "in-sync", lagBytes: 0, lagSeconds: 0 },
    { node: "n3", role: "replica", state: "in-sync", lagBytes: 0, lagSeconds: 0 },
  ]);
});

Deno.test("memberStatus(): down wins (lease gone, or listed down), then in sync, then resyncing, else out of sync", () => {
  const g = group({ inSync: ["n1"], down: ["n3"] });
  const notes = {
    n2: { since: iso(T0), reason: SYNC_REASONS.writeFailed },
    n3: { since: iso(T0 - 5_000), reason: SYNC_REASONS.down },
  };
  const base = { group: g, sizeBytes: SIZE, notes, now: T0 + 60_000 };
  const [, n2, n3] = memberStatus({ ...base, gone: [], live: live() });
  assertEquals(n2.state, "out-of-sync");
  assertEquals(n2.reason, SYNC_REASONS.writeFailed);
  assertEquals([n2.lagBytes, n2.lagSeconds, n2.outOfSyncSince], [SIZE, 60, iso(T0)]);
  assertEquals(n3.state, "down");
  assert(n3.reason!.startsWith("the group record lists it down"), n3.reason);
  assert(n3.reason!.includes(`out of sync before: ${SYNC_REASONS.down}`), n3.reason);
  assertEquals(n3.lagSeconds, 65);

  // The lease gone: down at once, even while the record still lists it in sync.
  const [master, , n3Gone] = memberStatus({
    group: group(),
    sizeBytes: SIZE,
    gone: ["n1", "n3"],
    now: T0,
  });
  assertEquals([master.state, master.role], ["down", "master"]);
  assert(n3Gone.reason!.startsWith("the node's liveness lease is gone"), n3Gone.reason);
  assertEquals([n3Gone.lagBytes, n3Gone.lagSeconds], [0, 0], "in sync when it went: no lag");
  // Its node stopped cleanly (the stopping mark seen): said so.
  const [, , n3Stopped] = memberStatus({
    group: group(),
    sizeBytes: SIZE,
    gone: ["n3"],
    stopped: ["n3"],
    now: T0,
  });
  assertEquals(
    [n3Stopped.state, n3Stopped.reason],
    ["down", "the node stopped (its lease revoked at its clean stop)"],
  );

  // The master resyncs n2: resyncing, lag = what the pass has still to compare.
  const [, resyncing] = memberStatus({ ...base, gone: [], live: live({ resyncs: [resync()] }) });
  assertEquals(resyncing.state, "resyncing");
  assertEquals(resyncing.reason, undefined);
  assertEquals(resyncing.lagBytes, 768 * MiB);
  assertEquals(resyncing.resync?.percent, 25);
});

Deno.test("memberStatus(): an out-of-sync member says why as best it can: no note, a failed resync, no live status", () => {
  const g = group({ inSync: ["n1", "n3"] });
  const failure = { member: "n2", message: "replica n2: connection reset", at: iso(T0) };
  const [, n2] = memberStatus({
    group: g,
    sizeBytes: SIZE,
    gone: [],
    live: live({ resyncFailures: [failure] }),
    now: T0,
  });
  assertEquals(
    n2.reason,
    "not in the group's in-sync set (no reason recorded); the last resync failed at " +
      `${iso(T0)}: replica n2: connection reset`,
  );
  assertEquals(n2.lagSeconds, undefined, "no note: since when is not known");
  assertEquals(n2.outOfSyncSince, undefined);
  const [, unknown] = memberStatus({
    group: g,
    sizeBytes: SIZE,
    gone: [],
    liveError: "node n1 did not answer: no answer within 2 s",
    now: T0,
  });
  assert(
    unknown.reason!.endsWith(
      "resync progress unknown (node n1 did not answer: no answer within 2 s)",
    ),
    unknown.reason,
  );
});

Deno.test("memberStatus(): a resync whose member has not answered yet says so and why the last one failed, not 0.0%", () => {
  const g = group({ inSync: ["n1", "n3"], phase: "degraded" });
  const failure = { member: "n2", message: "no connect within 10000 ms", at: iso(T0) };
  const members = memberStatus({
    group: g,
    sizeBytes: SIZE,
    gone: [],
    live: live({
      resyncs: [resync({ pass: 0, waiting: true, comparedBytes: 0, sentBytes: 0 })],
      resyncFailures: [failure],
    }),
    now: T0,
  });
  const n2 = members[1];
  assertEquals(n2.state, "resyncing");
  assert(
    n2.reason!.endsWith(`the last resync failed at ${iso(T0)}: no connect within 10000 ms`),
    n2.reason,
  );
  assertEquals(resyncDetail(n2.resync!), `waiting for the member to answer (asked at ${iso(T0)})`);
  assert(memberDetail(n2).endsWith("no connect within 10000 ms"), memberDetail(n2));
  const why = phaseReason(g, members)!;
  assert(why.startsWith("replica n2 resyncing (waiting for it to answer; "), why);
  // Answered, trees being compared (pass 0, no progress yet): a percentage as before.
  const comparing = resyncView(resync({ pass: 0, comparedBytes: 0 }), SIZE, T0);
  assert(resyncDetail(comparing).startsWith("0.0% ["), resyncDetail(comparing));
});

Deno.test("memberStatus(): root hashes from the master, absent when unknown or not offered", () => {
  const roots = { n1: "aa11", n2: "bb22", n3: null };
  const m = memberStatus({
    group: group(),
    sizeBytes: SIZE,
    gone: [],
    live: live({ roots }),
    now: T0,
  });
  assertEquals(m.map((x) => x.rootHash), ["aa11", "bb22", undefined]);
  const none = memberStatus({ group: group(), sizeBytes: SIZE, gone: [], live: live(), now: T0 });
  assert(none.every((x) => !("rootHash" in x)), "no roots offered: no field");
  // A root the master kept from before a member left is not shown: it would look equal.
  const left = memberStatus({
    group: group({ inSync: ["n1"], phase: "degraded" }),
    sizeBytes: SIZE,
    gone: ["n3"],
    live: live({ roots: { n1: "aa11", n2: "aa11", n3: "aa11" } }),
    now: T0,
  });
  assertEquals(left.map((x) => [x.node, x.state, x.rootHash]), [
    ["n1", "in-sync", "aa11"],
    ["n2", "out-of-sync", undefined],
    ["n3", "down", undefined],
  ]);
});

Deno.test("resyncView(): percent of the pass, bytes left, rate over every pass so far and ETA, by the master's clock", () => {
  // 10 s in, a quarter of pass 1 compared: 25.6 MiB/s, 768 MiB left, 30 s to go.
  const r = resyncView(resync(), SIZE, T0 + 10_000);
  assertEquals(r, {
    pass: 1,
    percent: 25,
    comparedBytes: 256 * MiB,
    totalBytes: SIZE,
    bytesLeft: 768 * MiB,
    sentBytes: 40 * MiB,
    zeroedBytes: 0,
    rateBytesPerSecond: Math.round(256 * MiB / 10),
    sendRateBytesPerSecond: 4 * MiB,
    etaSeconds: 30,
    startedAt: iso(T0),
  });
  // The master's --resync-rate goes along; the send rate counts zeroed ranges too.
  const capped = resyncView(
    resync({ zeroedBytes: 10 * MiB, rateLimitBytesPerSecond: 8 * MiB }),
    SIZE,
    T0 + 10_000,
  );
  assertEquals([capped.sendRateBytesPerSecond, capped.rateLimitBytesPerSecond], [5 * MiB, 8 * MiB]);
  // Pass 2 counts pass 1's whole volume in the rate.
  const p2 = resyncView(resync({ pass: 2, comparedBytes: 0 }), SIZE, T0 + 20_000);
  assertEquals([p2.percent, p2.bytesLeft, p2.rateBytesPerSecond], [0, SIZE, Math.round(SIZE / 20)]);
  assertEquals(p2.etaSeconds, 20);
});

Deno.test("resyncView(): the edges: nothing compared yet, no time elapsed, rounding down below 100, an unknown total", () => {
  const start = resyncView(
    resync({ pass: 0, waiting: true, comparedBytes: 0, sentBytes: 0 }),
    SIZE,
    T0 + 5_000,
  );
  assertEquals([start.percent, start.rateBytesPerSecond, start.etaSeconds], [0, 0, undefined]);
  const instant = resyncView(resync(), SIZE, T0);
  assertEquals([instant.rateBytesPerSecond, instant.etaSeconds], [0, undefined]);
  const almost = resyncView(resync({ comparedBytes: SIZE - 1 }), SIZE, T0 + 1_000);
  assertEquals(almost.percent, 99.9, "never 100 before the end");
  const noTotal = resyncView(resync({ totalBytes: 0, comparedBytes: 0 }), 64 * MiB, T0 + 1);
  assertEquals([noTotal.totalBytes, noTotal.bytesLeft], [64 * MiB, 64 * MiB]);
  const over = resyncView(resync({ comparedBytes: 2 * SIZE }), SIZE, T0 + 1_000);
  assertEquals([over.percent, over.bytesLeft], [100, 0]);
});

Deno.test("nextSyncNotes(): a member taken out of sync is noted with the time and a reason read off the change", () => {
  const now = new Date(T0);
  const healthy = group();
  // The master drops n2 at the same epoch: a replicated write failed (or, unreplicated, a write).
  const dropped = group({ inSync: ["n1", "n3"] });
  assertEquals(nextSyncNotes(healthy, dropped, undefined, now, { replicates: true }), {
    n2: { since: iso(T0), reason: SYNC_REASONS.writeFailed },
  });
  assertEquals(
    nextSyncNotes(healthy, dropped, undefined, now, { replicates: false })?.n2.reason,
    SYNC_REASONS.unreplicated,
  );
  // Listed down: its lease expired.
  const down = group({ inSync: ["n1", "n3"], down: ["n2"] });
  assertEquals(
    nextSyncNotes(healthy, down, undefined, now, { replicates: true })?.n2.reason,
    SYNC_REASONS.down,
  );
  // Down because its node stopped cleanly (its stopping mark seen): said so.
  const facts = { stopped: ["n2"] };
  assertEquals(
    nextSyncNotes(healthy, down, undefined, now, { replicates: true, facts })?.n2.reason,
    "its node stopped (lease revoked)",
  );
  // The old master, replaced at a higher epoch.
  const promoted = group({ epoch: 2, master: "n2", inSync: ["n2", "n3"], down: ["n1"] });
  assertEquals(nextSyncNotes(healthy, promoted, undefined, now, { replicates: true }), {
    n1: { since: iso(T0), reason: SYNC_REASONS.replaced(1) },
  });
  // Its node stopped cleanly (a SIGTERM, a drain's restart): said so, nothing alarming.
  const stoppedMaster = nextSyncNotes(healthy, promoted, undefined, now, {
    replicates: true,
    facts: { stopped: ["n1"] },
  });
  assertEquals(
    stoppedMaster?.n1.reason,
    "it was master until epoch 1; its node stopped (cleanly) and another member took over: " +
      "the writes acknowledged since reach it by a resync when it is back",
  );
});

Deno.test("nextSyncNotes(): notes are kept while out of sync, dropped back in sync, and not invented", () => {
  const first = { n2: { since: iso(T0), reason: SYNC_REASONS.writeFailed } };
  const out = group({ inSync: ["n1", "n3"] });
  const later = new Date(T0 + 60_000);
  // Still out (now also down): the first note stays.
  const stillOut = group({ inSync: ["n1", "n3"], down: ["n2"] });
  assertEquals(nextSyncNotes(out, stillOut, first, later, { replicates: true }), first);
  // Back in sync: nothing left to note.
  assertEquals(nextSyncNotes(out, group(), first, later, { replicates: true }), undefined);
  // Out of sync before any note was kept (an older record): no reason made up.
  assertEquals(nextSyncNotes(out, stillOut, undefined, later, { replicates: true }), undefined);
});

Deno.test("nextSyncNotes() with the data plane's causes, and FailureReasons keeping them briefly", async () => {
  let now = T0;
  const reasons = new FailureReasons(() => now);
  const reported: string[][] = [];
  const hook = reasons.hook("v", (nodes) => {
    reported.push(nodes);
    return Promise.resolve();
  });
  // The data plane reports n2 with its words; the record change then notes them.
  await hook(["n2"], { n2: "replica n2 refused: ENOSPC: write: No space left on device" });
  assertEquals(reported, [["n2"]]);
  const dropped = group({ inSync: ["n1", "n3"] });
  const note = nextSyncNotes(group(), dropped, undefined, new Date(T0), {
    replicates: true,
    causes: reasons.causes("v"),
  });
  assertEquals(
    note?.n2.reason,
    "replication to it failed: replica n2 refused: ENOSPC: write: No space left on device",
  );
  // A member recorded down still reads as down, whatever was said of it.
  const down = group({ inSync: ["n1", "n3"], down: ["n2"] });
  assertEquals(
    nextSyncNotes(group(), down, undefined, new Date(T0), {
      replicates: true,
      causes: reasons.causes("v"),
    })?.n2.reason,
    SYNC_REASONS.down,
  );
  // Other volumes have none; a cause older than a minute is dropped.
  assertEquals(reasons.causes("w").size, 0);
  now = T0 + 61_000;
  assertEquals(reasons.causes("v").size, 0);
  assertEquals(
    nextSyncNotes(group(), dropped, undefined, new Date(now), {
      replicates: true,
      causes: reasons.causes("v"),
    })?.n2.reason,
    SYNC_REASONS.writeFailed,
  );
});

Deno.test("ResyncTracker: under way while running, a failure kept until a later resync succeeds", async () => {
  let now = T0;
  const t = new ResyncTracker(() => now);
  let finish: () => void = () => {};
  const running = t.run("g", "n2", () => new Promise<void>((r) => finish = r));
  assertEquals(t.running("g"), [{ member: "n2", startedAt: T0 }]);
  finish();
  await running;
  assertEquals(t.running("g"), []);

  now = T0 + 1_000;
  await assertRejects(() => t.run("g", "n3", () => Promise.reject(new Error("reset"))));
  assertEquals(t.failures("g"), [{ member: "n3", message: "reset", at: T0 + 1_000 }]);
  t.fail("g", "n2", "no peer address");
  assertEquals(t.failures("g").map((f) => f.member), ["n3", "n2"]);
  await t.run("g", "n3", () => Promise.resolve());
  assertEquals(t.failures("g").map((f) => f.member), ["n2"], "n3's resync succeeded since");
  t.forget("g");
  assertEquals(t.failures("g"), []);
});

Deno.test("ResyncTracker: a finished resync is kept with its result until the member's next resync or a failure", async () => {
  let now = T0;
  const t = new ResyncTracker(() => now);
  const result = { passes: 2, sentBytes: 5 * MiB };
  now = T0 + 1_000;
  await t.run("g", "n2", () => {
    now = T0 + 9_000;
    return Promise.resolve(result);
  });
  assertEquals(t.finished("g"), [{ member: "n2", startedAt: T0 + 1_000, at: T0 + 9_000, result }]);
  let finish: () => void = () => {};
  const again = t.run("g", "n2", () => new Promise<void>((r) => finish = r));
  assertEquals(t.finished("g"), [], "a new resync of the member replaces it");
  finish();
  await again;
  t.fail("g", "n2", "no peer address");
  assertEquals(t.finished("g"), []);
});

Deno.test("memberStatus(): a resync that finished before the record lists its member in sync shows it done, rated up to its end; the phase says it is being marked in sync", () => {
  const g = group({ inSync: ["n1", "n3"], phase: "degraded" });
  const finished = resync({
    comparedBytes: SIZE,
    finishedAt: iso(T0 + 8_000),
    pass: 2,
  });
  const members = memberStatus({
    group: g,
    sizeBytes: SIZE,
    gone: [],
    live: live({ resyncs: [finished] }),
    now: T0 + 10_000,
  });
  const n2 = members.find((m) => m.node === "n2")!;
  assertEquals([n2.state, n2.resync?.percent, n2.resync?.bytesLeft], ["resyncing", 100, 0]);
  assertEquals(n2.resync?.finishedAt, iso(T0 + 8_000));
  assertEquals(n2.resync?.sendRateBytesPerSecond, 5 * MiB, "40 MiB over the 8 s it ran");
  assertEquals(phaseReason(g, members), "replica n2 resync finished, being marked in sync");
});

Deno.test("interruptionReason(): stopping, removed, master changed, member down, else its failure", () => {
  const base = {
    self: "n1",
    member: "n2",
    epoch: 1,
    group: group(),
    gone: [] as string[],
    stopping: false,
    serving: 1 as number | undefined,
    error: "replica n2 closed the connection",
  };
  const table: [Partial<typeof base> & { group?: GroupRecord | undefined }, string][] = [
    [{ stopping: true }, "this node (n1, the master) is stopping"],
    [{ group: undefined }, "the member was removed from the group"],
    [{ group: group({ members: ["n1", "n3"] }) }, "the member was removed from the group"],
    [{ group: group({ master: "n3", epoch: 2 }) }, "the master changed (now n3 at epoch 2)"],
    [
      { group: group({ handover: { to: "n3", reason: "drain of node n1" } }), serving: undefined },
      "the master hands over to n3 (drain of node n1) and closed its export",
    ],
    [
      { serving: undefined, error: 'volume "g" is no longer served here' },
      'this node stopped serving the volume: volume "g" is no longer served here',
    ],
    [{ gone: ["n2"] }, "the member's node is down (liveness lease gone): " + base.error],
    [
      { group: group({ down: ["n2"] }) },
      "the member's node is down (liveness lease gone): " +
      base.error,
    ],
    [{}, "the member failed: replica n2 closed the connection"],
  ];
  for (const [over, want] of table) {
    assertEquals(interruptionReason({ ...base, ...over }), want, JSON.stringify(over));
  }
});

Deno.test("runResync(): the start is written once the member answered, an interruption after it with how far it got, a member that never answered leaves no event", async () => {
  await withSqlite(async (store) => {
    // n2 is out of sync (a start is written only for such a member).
    const lagging = group({ inSync: ["n1", "n3"], phase: "degraded" });
    const rec = { name: "g", uuid: "u", state: "ready", sizeBytes: SIZE, group: lagging };
    await store.put(VOLUME_PREFIX + "g", JSON.stringify(rec));
    const events = async () =>
      parseEvents((await store.list(eventsPrefix("g"))).kvs, "g", "u").map((e) => e.message);
    const tracker = new ResyncTracker();
    const run = (resync: (onStarted: () => void) => Promise<unknown>) =>
      runResync({
        volume: "g",
        uuid: "u",
        store,
        self: "n1",
        member: "n2",
        epoch: 1,
        tracker,
        log: createLogger({ level: "silent" }),
        resync,
        now: () => ({ group: lagging, gone: [], stopping: false, serving: 1 }),
      });
    // Refused at once: nothing announced.
    await assertRejects(() => run(() => Promise.reject(new Error("connection refused"))));
    assertEquals(await events(), []);
    // Answered, then cut: started, then interrupted with its progress.
    const progress = {
      pass: 1,
      comparedBytes: 256 * MiB,
      totalBytes: SIZE,
      sentBytes: 16 * MiB,
      zeroedBytes: 0,
    };
    await assertRejects(() =>
      run((started) => {
        started();
        return Promise.reject(Object.assign(new Error("replica n2 closed the connection"), {
          progress,
        }));
      })
    );
    assertEquals(await events(), [
      "master n1 resyncs n2: it answered, the copies are being compared (Delta Sync: only " +
      "differing blocks are sent)",
      "master n1's resync of n2 interrupted: the member failed: replica n2 closed the " +
      "connection; it had compared 256 MiB of 1 GiB (pass 1) and sent 16 MiB",
    ]);
    // Retries that fail the same way (a member's full disk) are not written again, however
    // many: the history keeps why the member left and what happened before.
    for (let i = 0; i < 3; i++) {
      await assertRejects(() =>
        run((started) => {
          started();
          return Promise.reject(new Error("replica n2 closed the connection"));
        })
      );
    }
    assertEquals((await events()).length, 2, "the same failure again: no new events");
    // Answered and finished: its start is written before runResync returns.
    await run((started) => {
      started();
      return Promise.resolve();
    });
    assertEquals((await events()).length, 3);
    assertEquals(tracker.failures("g"), []);
  });
});

Deno.test("resyncEta(): regions left at the rate regions were copied since copying began, not bytes compared", () => {
  // Scattered 4 KiB changes: the tree compare found 3/4 of the volume equal at once (768 MiB
  // compared in the first second), then 256 differing regions copy at 8 regions/s.
  const copying = (copied: number) =>
    resync({
      pass: 1,
      comparedBytes: 768 * MiB + copied * MiB,
      regionsToCopy: 256,
      regionsCopied: copied,
      copyingSince: iso(T0 + 1_000),
    });
  const at = (seconds: number) => T0 + 1_000 + seconds * 1000;
  // 10 s of copying, 80 regions copied: 176 left at 8/s = 22 s. The bytes compared per second
  // since the start (848 MiB in 11 s: 77 MiB/s, 176 MiB left) would have said 3 s.
  assertEquals(resyncEta(copying(80), at(10)), 22);
  assertEquals(resyncView(copying(80), SIZE, at(10)).etaSeconds, 22);
  assertEquals(
    resyncView(copying(80), SIZE, at(10)).rateBytesPerSecond,
    Math.round(848 * MiB / 11),
  );
  // The rate holds: the ETA counts down with the regions.
  assertEquals(resyncEta(copying(240), at(30)), 2);
  // Every region of the pass copied: the pass is about to end.
  assertEquals(resyncEta(copying(256), at(32)), 0);
});

Deno.test("resyncEta(): estimating until the pass has copied a few regions for a few seconds", () => {
  const r = (over: Partial<LiveResync>) =>
    resync({ regionsToCopy: 1000, regionsCopied: 0, copyingSince: iso(T0), ...over });
  const s = (x: number) => T0 + x * 1000;
  // Before the first comparison: nothing to go by.
  assertEquals(resyncEta(resync({ pass: 0, comparedBytes: 0 }), s(5)), undefined);
  // Copying, but too few regions, or too short a time.
  assertEquals(resyncEta(r({ regionsCopied: ETA_MIN_REGIONS - 1 }), s(10)), undefined);
  assertEquals(resyncEta(r({ regionsCopied: 500 }), s(ETA_MIN_SECONDS) - 1), undefined);
  assertEquals(resyncEta(r({ regionsCopied: ETA_MIN_REGIONS }), s(ETA_MIN_SECONDS)), 248);
  // A pass with few regions waits for a quarter of them.
  const few = (copied: number) => r({ regionsToCopy: 3, regionsCopied: copied });
  assertEquals(resyncEta(few(0), s(10)), undefined);
  assertEquals(resyncEta(few(1), s(10)), 20);
  // Finished: 0, shown as done.
  assertEquals(resyncView(resync({ finishedAt: iso(s(3)) }), SIZE, s(3)).etaSeconds, 0);
  // A master of an older version reports no regions: bytes left at the bytes compared per
  // second, after the same wait.
  assertEquals(resyncEta(resync(), T0 + 1_000), undefined);
  assertEquals(resyncEta(resync(), T0 + 10_000), 30);
});
