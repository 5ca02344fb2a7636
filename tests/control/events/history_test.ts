/**
 * A replicated volume's history (control/events/history.ts): events read off a record
 * change, and the operations written with it (bounded window, removed with the record).
 */

import { assertEquals } from "../../_assert.ts";
import {
  eventKey,
  EVENTS_KEEP,
  eventsPrefix,
  historyOf,
  type HistoryRecord,
  parseEvents,
  resyncInterrupted,
  resyncStarted,
  unendedResyncs,
  withHistory,
} from "../../../control/events/mod.ts";
import { type GroupRecord, newRecord, withHandover } from "../../../control/group/mod.ts";
import type { VolumeEvent } from "../../../mod/types.ts";

function rec(group: GroupRecord, extra: Partial<HistoryRecord> = {}): HistoryRecord {
  return { name: "v", uuid: "u1", state: "ready", group, ...extra };
}

const base = newRecord("n1", ["n2", "n3"]);

Deno.test("historyOf(): creation, a drain's handover asked and done", () => {
  const creating = rec(base, { state: "creating" });
  assertEquals(historyOf(creating, rec(base)).map((e) => e.message), [
    "created with master n1 and replicas n2, n3",
  ]);
  const asked = withHandover(base, { to: "n2", reason: "drain of node n1" });
  assertEquals(historyOf(rec(base), rec(asked)), [{
    type: "handover-requested",
    node: "n2",
    message: "handover of the master from n1 to n2 asked (drain of node n1); n1 closes its " +
      "export first",
  }]);
  const done = withHandover({ ...base, epoch: 2, master: "n2" }, undefined);
  assertEquals(historyOf(rec(asked), rec(done)).map((e) => [e.type, e.message]), [
    ["handover", "n1 handed over to n2 at epoch 2 (drain of node n1)"],
  ]);
  const gaveUp = withHandover({ ...base, inSync: ["n1", "n3"] }, undefined);
  assertEquals(historyOf(rec(asked), rec(gaveUp)).map((e) => e.type), [
    "handover-abandoned",
    "out-of-sync",
  ]);
});

Deno.test("historyOf(): a delete started, then refused by the master: not a second creation", () => {
  const deleting = rec(base, { state: "deleting" });
  assertEquals(historyOf(rec(base), deleting).map((e) => e.type), ["deleting"]);
  const why = 'volume "v" has 1 NBD client(s) connected to its master node "n1"; disconnect them';
  assertEquals(historyOf(deleting, rec(base, { deleteRefused: why })), [{
    type: "delete-refused",
    message: `delete refused: ${why}`,
  }]);
});

Deno.test("historyOf(): a failover, a member down, out of sync with its reason, back and resynced", () => {
  const failed: GroupRecord = {
    ...base,
    epoch: 2,
    master: "n2",
    inSync: ["n2", "n3"],
    down: ["n1"],
    phase: "degraded",
  };
  const events = historyOf(
    rec(base),
    rec(failed, { outOfSync: { n1: { reason: "it was master until epoch 1" } } }),
  );
  assertEquals(events.map((e) => e.message), [
    "n2 promoted to master at epoch 2: master n1's liveness lease expired",
    "n1 down: its node's liveness lease expired",
    "n1 left the in-sync set: it was master until epoch 1",
  ]);
  const back = { ...failed, down: [] };
  assertEquals(historyOf(rec(failed), rec(back)).map((e) => [e.type, e.node]), [
    ["up", "n1"],
  ]);
  const synced = { ...back, inSync: ["n1", "n2", "n3"], phase: "healthy" as const };
  assertEquals(historyOf(rec(back), rec(synced)).map((e) => e.message), [
    "n1 back in sync: its resync finished",
  ]);
  // No group change, no event; a volume without a group has none.
  assertEquals(historyOf(rec(synced), rec(synced)), []);
  assertEquals(historyOf(undefined, { name: "x", uuid: "u", state: "ready" }), []);
});

Deno.test("historyOf(): members added and removed by a replica count change or a replacement", () => {
  // Lowered to 1 while n3 was down: n3 leaves, and is not reported "up again".
  const down: GroupRecord = { ...base, inSync: ["n1", "n2"], down: ["n3"], phase: "degraded" };
  const lowered: GroupRecord = {
    ...base,
    members: ["n1", "n2"],
    inSync: ["n1", "n2"],
    desired: { replicas: 1 },
    phase: "healthy",
  };
  assertEquals(historyOf(rec(down), rec(lowered)).map((e) => [e.type, e.node, e.message]), [
    [
      "member-removed",
      "n3",
      "n3 removed from the group (replicas lowered to 1); its copy is deleted",
    ],
  ]);
  // Raised again: n4 joins out of sync, is seeded, then is in sync.
  const reason = "new member (replicas raised to 2): its copy is being seeded by Delta Sync";
  const raised: GroupRecord = { ...lowered, members: ["n1", "n2", "n4"], desired: { replicas: 2 } };
  const joined = rec(raised, { outOfSync: { n4: { reason } } });
  assertEquals(historyOf(rec(lowered), joined).map((e) => [e.type, e.node, e.message]), [
    ["member-added", "n4", `n4 added: ${reason}`],
  ]);
  const seeded = rec({ ...raised, inSync: ["n1", "n2", "n4"] });
  assertEquals(historyOf(joined, seeded).map((e) => e.message), [
    "n4 in sync: its copy is seeded",
  ]);
  // A replacement: n3, absent too long, gives way to n4 in one change.
  const replaced: GroupRecord = { ...down, members: ["n1", "n2", "n4"], down: [] };
  assertEquals(historyOf(rec(down), rec(replaced)).map((e) => [e.type, e.message]), [
    ["member-removed", "n3 removed from the group (replaced by n4); its copy is deleted"],
    ["member-added", "n4 added"],
  ]);
});

Deno.test("withHistory(): numbers events, keeps the last EVENTS_KEEP, removes them with the record", () => {
  const at = new Date("2026-12-05T03:00:00Z");
  const asked = withHandover(base, { to: "n2", reason: "drain" });
  const first = withHistory(rec(base, { eventSeq: EVENTS_KEEP }), rec(asked), at);
  assertEquals((first.record as HistoryRecord).eventSeq, EVENTS_KEEP + 1);
  assertEquals(first.ops.map((o) => [o.type, o.key]), [
    ["put", eventKey("v", "u1", EVENTS_KEEP + 1)],
    ["delete", eventKey("v", "u1", 1)],
  ]);
  const put = first.ops[0];
  const kvs = put.type === "put" ? [{ key: put.key, value: put.value }] : [];
  const [e] = parseEvents(kvs, "v", "u1");
  assertEquals([e.seq, e.at, e.epoch, e.master], [EVENTS_KEEP + 1, at.toISOString(), 1, "n1"]);
  assertEquals(parseEvents(kvs, "v", "another-uuid"), []);
  assertEquals(withHistory(rec(base), rec(base), at).ops, []);
  assertEquals(withHistory(rec(base), "delete", at).ops, [
    { type: "delete", key: eventsPrefix("v"), prefix: true },
  ]);
});

Deno.test("historyOf(): a member leaving the in-sync set is not announced resynced (the master writes that once it answers)", () => {
  const out = { ...base, inSync: ["n1", "n3"], phase: "degraded" as const };
  const reason = "replication to it failed: replica n2 closed the connection";
  const events = historyOf(rec(base), rec(out, { outOfSync: { n2: { reason } } }));
  assertEquals(events.map((e) => [e.type, e.message]), [
    ["out-of-sync", `n2 left the in-sync set: ${reason}`],
  ]);
});

Deno.test("withHistory(): events the writer adds follow those the change implies, numbered on", () => {
  const at = new Date("2026-12-05T03:00:00Z");
  const started = resyncStarted("n1", "n2");
  const lagging: GroupRecord = { ...base, inSync: ["n1", "n3"], phase: "degraded" };
  const plain = withHistory(rec(lagging, { eventSeq: 7 }), rec(lagging), at, {
    extra: [started],
  });
  assertEquals((plain.record as HistoryRecord).eventSeq, 8);
  const put = plain.ops[0];
  const [e] = parseEvents(
    put.type === "put" ? [{ key: put.key, value: put.value }] : [],
    "v",
    "u1",
  );
  assertEquals([e.seq, e.type, e.node, e.epoch, e.master], [8, "resync-started", "n2", 1, "n1"]);
  assertEquals(
    e.message,
    "master n1 resyncs n2: it answered, the copies are being compared (Delta Sync: only " +
      "differing blocks are sent)",
  );
  // No group, no history: extra events are not written either.
  const none = withHistory(undefined, { name: "x", uuid: "u", state: "ready" }, at, {
    extra: [started],
  });
  assertEquals(none.ops, []);
});

Deno.test("withHistory(): a resync started is kept open until it ends; a replaced master's is closed with an event", () => {
  const at = new Date("2026-12-06T02:00:00Z");
  // n2 is out of sync; its master n1 starts its resync.
  const lagging: GroupRecord = { ...base, inSync: ["n1", "n3"], phase: "degraded" };
  const write = (
    prev: HistoryRecord,
    next: HistoryRecord,
    extra: ReturnType<typeof resyncStarted>[] = [],
  ) => withHistory(prev, next, at, { extra }).record as HistoryRecord;
  const started = write(rec(lagging), rec(lagging), [resyncStarted("n1", "n2")]);
  assertEquals(started.resyncs, { n2: { master: "n1", epoch: 1 } });
  // A change that leaves it running keeps it (an unrelated write, here n3 down and up).
  const n3Down = { ...lagging, down: ["n3"] };
  assertEquals(write(started, rec(n3Down)).resyncs, { n2: { master: "n1", epoch: 1 } });
  // Its end: the member back in sync (the in-sync CAS), or the master's interruption event.
  assertEquals(write(started, rec(base)).resyncs, undefined);
  const stopped = write(started, rec(lagging), [resyncInterrupted("n1", "n2", "x", undefined)]);
  assertEquals(stopped.resyncs, undefined);

  // The master dies mid-resync (kill -9: it says nothing): the change promoting n3 ends it.
  const promoted: GroupRecord = {
    ...lagging,
    epoch: 2,
    master: "n3",
    inSync: ["n3"],
    down: ["n1"],
    phase: "degraded",
  };
  const failover = withHistory(started, rec(promoted), at);
  assertEquals((failover.record as HistoryRecord).resyncs, undefined);
  const events = parseEvents(
    failover.ops.flatMap((op) => op.type === "put" ? [{ key: op.key, value: op.value }] : []),
    "v",
    "u1",
  );
  assertEquals(events.map((e) => [e.type, e.node]), [
    ["promoted", "n3"],
    ["resync-interrupted", "n2"],
    ["down", "n1"],
    ["out-of-sync", "n1"],
  ]);
  assertEquals(
    events[1].message,
    "master n1's resync of n2 interrupted: the master changed (now n3 at epoch 2) before n1 " +
      "recorded its end; how far it got is not known (the next resync compares again, copying " +
      "only what differs)",
  );
  // No such event for a resync that ended, or whose member left the group with the change.
  assertEquals(historyOf(stopped, rec(promoted)).map((e) => e.type), [
    "promoted",
    "down",
    "out-of-sync",
  ]);
  const removed = { ...promoted, members: ["n1", "n3"], desired: { replicas: 1 } };
  assertEquals(
    historyOf(started, rec(removed)).filter((e) => e.type === "resync-interrupted"),
    [],
  );
});

Deno.test("unendedResyncs(): a resync start without a later end of the same member", () => {
  const e = (seq: number, type: string, node: string) =>
    ({
      seq,
      at: "2026-12-06T02:00:00Z",
      type,
      node,
      message: `${type} ${node}`,
      epoch: 1,
      master: "n1",
    }) as VolumeEvent;
  const history = [
    e(1, "resync-started", "n2"),
    e(2, "resync-interrupted", "n2"),
    e(3, "resync-started", "n3"),
    e(4, "resync-started", "n2"),
    e(5, "in-sync", "n3"),
    e(6, "in-sync", "n3"),
  ];
  assertEquals(unendedResyncs(history).map((x) => x.seq), [4]);
  assertEquals(unendedResyncs([...history, e(7, "in-sync", "n2")]), []);
  // An end before the start does not count.
  assertEquals(unendedResyncs([e(1, "in-sync", "n2"), e(2, "resync-started", "n2")]).length, 1);
  // Each start needs an end of its own: a later start's end does not close an earlier one.
  assertEquals(
    unendedResyncs([
      e(1, "resync-started", "n2"),
      e(2, "resync-started", "n2"),
      e(3, "in-sync", "n2"),
    ]).map((x) => x.seq),
    [1],
  );
  // A member removed ends its resync.
  assertEquals(unendedResyncs([e(1, "resync-started", "n2"), e(2, "member-removed", "n2")]), []);
});

Deno.test("withHistory(): no start for a member out of the group or in sync; a start over one without an end interrupts it first; a stale entry is not reported", () => {
  const at = new Date("2026-12-06T02:00:00Z");
  const lagging: GroupRecord = { ...base, inSync: ["n1", "n3"], phase: "degraded" };
  const types = (r: ReturnType<typeof withHistory>) =>
    parseEvents(
      r.ops.flatMap((op) => op.type === "put" ? [{ key: op.key, value: op.value }] : []),
      "v",
      "u1",
    ).map((x) => [x.type, x.node, x.message.slice(0, 40)]);
  // n3 is in sync, n4 no member: neither start is written, nor kept.
  for (const who of ["n3", "n4"]) {
    const r = withHistory(rec(lagging), rec(lagging), at, { extra: [resyncStarted("n1", who)] });
    assertEquals(r.ops, []);
    assertEquals((r.record as HistoryRecord).resyncs, undefined);
  }
  // n1 restarted at the same epoch and resyncs n2 again: the first start's end comes first.
  const open = rec(lagging, { resyncs: { n2: { master: "n1", epoch: 1 } } });
  const again = withHistory(open, rec(lagging), at, { extra: [resyncStarted("n1", "n2")] });
  assertEquals(types(again), [
    ["resync-interrupted", "n2", "master n1's resync of n2 interrupted: a "],
    ["resync-started", "n2", "master n1 resyncs n2: it answered, the c"],
  ]);
  assertEquals((again.record as HistoryRecord).resyncs, { n2: { master: "n1", epoch: 1 } });
  // An entry that was not the record's own master's (an older node carried it over): dropped
  // without an event; so is one whose member is in sync after the promotion.
  const promoted: GroupRecord = { ...lagging, epoch: 3, master: "n3", down: ["n1"] };
  const stale = rec({ ...lagging, epoch: 2, master: "n3" }, {
    resyncs: { n2: { master: "n1", epoch: 1 } },
  });
  const moved = withHistory(stale, rec(promoted), at);
  assertEquals(types(moved).filter(([t]) => t === "resync-interrupted"), []);
  assertEquals((moved.record as HistoryRecord).resyncs, undefined);
  const healed = withHistory(open, rec({ ...promoted, inSync: ["n2", "n3"] }), at);
  assertEquals(types(healed).filter(([t]) => t === "resync-interrupted"), []);
});

Deno.test("resyncInterrupted(): says why and how far the resync got", () => {
  const MiB = 2 ** 20;
  const reach = {
    pass: 1,
    comparedBytes: 24 * MiB,
    totalBytes: 128 * MiB,
    sentBytes: 8 * MiB,
    zeroedBytes: 0,
  };
  assertEquals(
    resyncInterrupted("n1", "n2", "the member failed: replica n2 closed the connection", reach),
    {
      type: "resync-interrupted",
      node: "n2",
      message: "master n1's resync of n2 interrupted: the member failed: replica n2 closed the " +
        "connection; it had compared 24 MiB of 128 MiB (pass 1) and sent 8 MiB",
    },
  );
  assertEquals(
    resyncInterrupted("n1", "n2", "x", { ...reach, zeroedBytes: 2 * MiB }).message,
    "master n1's resync of n2 interrupted: x; it had compared 24 MiB of 128 MiB (pass 1) and " +
      "sent 8 MiB (and zeroed 2 MiB)",
  );
  assertEquals(
    resyncInterrupted("n1", "n2", "x", undefined).message,
    "master n1's resync of n2 interrupted: x",
  );
});

Deno.test("historyOf(): a member or master whose node stopped cleanly is said stopped, not expired", () => {
  const facts = { stopped: ["n1", "n3"] };
  const failed: GroupRecord = {
    ...base,
    epoch: 2,
    master: "n2",
    inSync: ["n2"],
    down: ["n1", "n3"],
    phase: "degraded",
  };
  assertEquals(historyOf(rec(base), rec(failed), facts).map((e) => e.message), [
    "n2 promoted to master at epoch 2: master n1 stopped (lease revoked)",
    "n1 down: its node stopped (lease revoked)",
    "n3 down: its node stopped (lease revoked)",
    "n1 left the in-sync set",
    "n3 left the in-sync set",
  ]);
  // Only the nodes named: another one's lease expired.
  assertEquals(
    historyOf(rec(base), rec(failed), { stopped: ["n3"] }).slice(0, 3).map((e) => e.message),
    [
      "n2 promoted to master at epoch 2: master n1's liveness lease expired",
      "n1 down: its node's liveness lease expired",
      "n3 down: its node stopped (lease revoked)",
    ],
  );
});

Deno.test("a resync's start written late (after a recorded interruption, at its end) keeps the time its member answered", () => {
  const lagging: GroupRecord = { ...base, inSync: ["n1", "n3"], phase: "degraded" };
  const answered = new Date("2030-01-01T00:00:05.000Z");
  const at = new Date("2030-01-01T00:00:40.000Z");
  const r = withHistory(rec(lagging), rec(lagging), at, {
    extra: [resyncStarted("n1", "n2", answered)],
  });
  const put = r.ops.find((op) => op.type === "put");
  assertEquals(put && put.type === "put" && JSON.parse(put.value).at, answered.toISOString());
  const now = withHistory(rec(lagging), rec(lagging), at, { extra: [resyncStarted("n1", "n2")] });
  const p = now.ops.find((op) => op.type === "put");
  assertEquals(p && p.type === "put" && JSON.parse(p.value).at, at.toISOString());
});
