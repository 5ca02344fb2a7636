/**
 * The planned handover of a group (`ballast node drain`) in the pure machine and plan():
 * the master closes its export, waits for the driver's confirmation, then hands over at
 * the next epoch, staying in sync; it gives up when the target cannot take over.
 */

import { assertEquals } from "../../_assert.ts";
import {
  type ActorState,
  type Effect,
  type GroupEvent,
  initActor,
  step,
} from "../../../control/group/machine.ts";
import { type GroupRecord, newRecord, plan, withHandover } from "../../../control/group/record.ts";

function run(s: ActorState, ...events: GroupEvent[]): { state: ActorState; effects: Effect[] } {
  const effects: Effect[] = [];
  for (const e of events) {
    const r = step(s, e);
    s = r.state;
    effects.push(...r.effects);
  }
  return { state: s, effects };
}

/** n1 master of n1,n2,n3, all in sync, serving at epoch 1 (revision 5). */
function servingMaster(): { state: ActorState; record: GroupRecord } {
  const record = newRecord("n1", ["n2", "n3"]);
  const { state } = run(initActor("n1").state, {
    type: "read-result",
    current: { revision: 5, record },
  });
  assertEquals(state.serving, 1);
  return { state, record };
}

Deno.test("step(): a master asked to hand over closes its export, and CASes only once the driver confirms", () => {
  const { state, record } = servingMaster();
  const asked = withHandover(record, { to: "n2", reason: "drain of node n1" });
  const a = run(state, { type: "record-changed", current: { revision: 6, record: asked } });
  assertEquals(a.effects, [{
    type: "notify",
    notice: { kind: "stop-serving", epoch: 1, handover: true },
  }]);
  assertEquals(a.state.serving, undefined);
  assertEquals(a.state.stopping, 1);
  const b = run(a.state, { type: "serving-stopped" });
  assertEquals(b.state.stopping, 0);
  assertEquals(b.effects.length, 1);
  const cas = b.effects[0];
  if (cas.type !== "cas") throw new Error(`expected a CAS, got ${cas.type}`);
  assertEquals(cas.expectedRevision, 6);
  assertEquals(cas.record.epoch, 2);
  assertEquals(cas.record.master, "n2");
  assertEquals(cas.record.inSync, ["n1", "n2", "n3"]); // the old master stays in sync
  assertEquals(cas.record.handover, undefined);
  assertEquals(cas.guard, { down: [], up: ["n1", "n2"] });
  // Once won, n1 does not serve again; a replica does not serve either.
  const c = run(b.state, { type: "cas-won", revision: 7 });
  assertEquals(c.state.serving, undefined);
  assertEquals(c.effects, []);
});

Deno.test("step(): the new master serves the handed-over epoch and fences the old master", () => {
  const record = newRecord("n1", ["n2", "n3"]);
  const { state } = run(initActor("n2").state, {
    type: "read-result",
    current: { revision: 5, record },
  });
  const handed = { ...record, epoch: 2, master: "n2" };
  const r = run(state, { type: "record-changed", current: { revision: 7, record: handed } });
  assertEquals(r.state.serving, 2);
  assertEquals(r.effects, [
    { type: "notify", notice: { kind: "serve", epoch: 2 } },
    { type: "notify", notice: { kind: "fence", node: "n1", epoch: 2 } },
  ]);
});

Deno.test("step(): a member that saw the handover asked serves handed over (no lease to wait out); after a failover it does not", () => {
  const asked = withHandover(newRecord("n1", ["n2", "n3"]), { to: "n2", reason: "drain" });
  const { state } = run(initActor("n2").state, {
    type: "read-result",
    current: { revision: 6, record: asked },
  });
  const handed = withHandover({ ...asked, epoch: 2, master: "n2" }, undefined);
  const r = run(state, { type: "record-changed", current: { revision: 7, record: handed } });
  assertEquals(r.effects[0], {
    type: "notify",
    notice: { kind: "serve", epoch: 2, handedOver: true },
  });
  // The old master went down instead: n2 promotes itself, and waits out its lease.
  const p = run(state, { type: "lease-expired", node: "n1" });
  const cas = p.effects.find((e) => e.type === "cas");
  if (cas?.type !== "cas") throw new Error("expected a promotion CAS");
  assertEquals([cas.record.master, cas.record.inSync, cas.record.handover], [
    "n2",
    ["n2", "n3"],
    undefined,
  ]);
  const won = run(p.state, { type: "cas-won", revision: 7 });
  assertEquals(won.effects[0], { type: "notify", notice: { kind: "serve", epoch: 2 } });
});

Deno.test("step(): a master does not serve again while the record asks for a handover (restart)", () => {
  const asked = withHandover(newRecord("n1", ["n2"]), { to: "n2", reason: "drain" });
  const r = run(initActor("n1").state, {
    type: "read-result",
    current: { revision: 3, record: asked },
  });
  assertEquals(r.state.serving, undefined);
  // Nothing to close after a restart: it hands over at once.
  const cas = r.effects.find((e) => e.type === "cas");
  assertEquals(cas?.type === "cas" && cas.record.master, "n2");
});

Deno.test("plan(): a handover to a member out of sync or down is given up, and the master serves again", () => {
  const base = newRecord("n1", ["n2", "n3"]);
  const obs = { self: "n1", leaseDown: [], serving: undefined, reports: [] };
  const outOfSync = withHandover({ ...base, inSync: ["n1", "n3"] }, { to: "n2", reason: "d" });
  assertEquals(plan(outOfSync, obs)?.record.handover, undefined);
  assertEquals(plan(outOfSync, obs)?.record.epoch, 1);
  const down = withHandover(base, { to: "n3", reason: "d" });
  const p = plan(down, { ...obs, leaseDown: ["n3"] });
  assertEquals(p?.record.handover, undefined);
  assertEquals(p?.record.down, ["n3"]);
  assertEquals(p?.guard, { down: ["n3"], up: ["n1"] });
  // Given up: the master serves the same epoch again.
  const { state } = run(initActor("n1").state, {
    type: "read-result",
    current: { revision: 4, record: p!.record },
  });
  assertEquals(state.serving, 1);
});

Deno.test("plan(): a master still closing its export waits; a failover ends a handover", () => {
  const asked = withHandover(newRecord("n1", ["n2", "n3"]), { to: "n2", reason: "drain" });
  const obs = { self: "n1", leaseDown: [], serving: undefined, reports: [] };
  assertEquals(plan(asked, { ...obs, stopping: 1 }), undefined);
  const promoted = plan(asked, { self: "n3", leaseDown: ["n1"], serving: undefined, reports: [] });
  assertEquals(promoted?.record.master, "n3");
  assertEquals(promoted?.record.handover, undefined);
});
