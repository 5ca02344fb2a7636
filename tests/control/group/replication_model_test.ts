/**
 * Exhaustive exploration of the volume-group state machine (control/group/machine.ts) with
 * the replicated data path (_replication.ts) on the group model (_model.ts): every
 * interleaving of client writes in flight, replicas applying or refusing them, replicas
 * failing (crashed or slow) and being dropped, the out-of-sync CAS and the release of held
 * writes, resyncs, promotions, lost etcd replies, cuts from etcd (a master that goes on
 * serving, frozen or not, while another is promoted), lease grants lapsing, and reads.
 *
 * Invariants after every step: every acknowledged write is on every member the record lists
 * in sync and on every member promoted; no read misses a write acknowledged before it; no
 * write is acknowledged at an older epoch than one already acknowledged; and the machine's
 * own (one master per epoch, epochs never go back, only in-sync members promoted).
 * Liveness: from every reachable state, one is reachable where the record is healthy, its
 * master serves and has no write pending.
 *
 * The model found, in machine.ts, two ways a replica could stay out of sync with a write
 * held for ever (both fixed, see the tests below); and that the NBD request path must hold
 * every later write too, not only the one a replica failed (skipDroppedMembers below).
 */

import { assert } from "../../_assert.ts";
import { step } from "../../../control/group/machine.ts";
import { planMembership } from "../../../control/group/membership.ts";
import { phaseOf } from "../../../control/group/record.ts";
import type { StepFn } from "./_model.ts";
import type { MembershipEnvOptions } from "./_membership_env.ts";
import { caught, holds, run } from "./_replication_runs.ts";

// Each of these (but the 3-node cut) also gets stuck, a write held for ever, with either
// machine fault below put back: a held replica resynced and put back in sync before the
// record showed it out (step() now lets a replica reported resynced stop holding writes
// back), and a member failing once its resync was done but before the record showed it in
// sync (step() now asks for another resync: no record change would).

Deno.test("replicated group model: master + 1 replica, 2 writes, a slow replica, a cut from etcd (frozen master), a lost etcd reply: invariants and liveness hold", () => {
  holds("replicated: 2 writes, slow replica, cut, lost reply", {
    maxPartitions: 1,
    maxSyncLosses: 1,
    maxLostReplies: 1,
    maxWrites: 2,
  }, 100_000);
});

Deno.test("replicated group model: master + 1 replica, a write, a crash, a cut from etcd: invariants and liveness hold", () => {
  holds("replicated: crash, cut", { maxCrashes: 1, maxPartitions: 1 }, 50_000);
});

Deno.test("replicated group model: master + 1 replica, a write, a crash, a slow replica, a lost etcd reply: invariants and liveness hold", () => {
  holds("replicated: crash, slow replica, lost reply", {
    maxCrashes: 1,
    maxSyncLosses: 1,
    maxLostReplies: 1,
  }, 40_000);
});

Deno.test("replicated group model: master + 2 replicas, a write, a cut from etcd (two replicas may take over from a frozen master): invariants and liveness hold", () => {
  // With a slow replica as well: 2M states, 80 s (it holds).
  holds("replicated 3 nodes: cut", { replicas: 2, maxPartitions: 1 }, 30_000);
});

Deno.test("replicated group model: master + 2 replicas, a write, a slow replica, a lost etcd reply: invariants and liveness hold", () => {
  holds("replicated 3 nodes: slow replica, lost reply", {
    replicas: 2,
    maxSyncLosses: 1,
    maxLostReplies: 1,
  }, 6_000);
});

Deno.test("replicated group model: master + 1 replica, a drain's handover, 2 writes, a crash: invariants and liveness hold", () => {
  // The master closes its export, then hands over at the next epoch staying in sync; a
  // write in flight when it closes fails, never acknowledged by two epochs. (With a lost
  // etcd reply as well: 232k states, 19 s; it holds.)
  holds("replicated: handover, 2 writes, crash", {
    maxHandovers: 1,
    maxWrites: 2,
    maxCrashes: 1,
  }, 20_000);
});

Deno.test("replicated group model: master + 1 replica, a drain's handover, a write, a slow replica, a cut from etcd: invariants and liveness hold", () => {
  holds("replicated: handover, slow replica, cut", {
    maxHandovers: 1,
    maxSyncLosses: 1,
    maxPartitions: 1,
  }, 20_000);
});

Deno.test("replicated group model: master + 2 replicas, a drain's handover, a write: invariants and liveness hold", () => {
  // With a crash as well: over 3M states.
  holds("replicated 3 nodes: handover, lost reply", {
    replicas: 2,
    maxHandovers: 1,
    maxLostReplies: 1,
  }, 5_000);
});

function caughtHandover(): void {
  caught(
    "handover confirmed before the export closed",
    { maxHandovers: 1, maxSyncLosses: 1 },
    { faults: { confirmBeforeClosed: true } },
    "stale read",
  );
}

Deno.test("replicated group model: acknowledging a write before the out-of-sync CAS is caught", () => {
  caught(
    "ack before the CAS",
    { maxSyncLosses: 1 },
    { faults: { ackBeforeCas: true } },
    "which the record lists in sync",
  );
});

Deno.test("replicated group model: promoting a member that missed a write is caught by the data invariants alone", () => {
  // The actor believes itself in sync whatever the record says; the model's own rule
  // (only an in-sync member is promoted) is not checked, to show what a client would see.
  const lies: StepFn = (s, e) => {
    const k = s.known;
    if (!k || k.record.inSync.includes(s.self)) return step(s, e);
    const inSync = [...k.record.inSync, s.self].sort();
    return step({ ...s, known: { ...k, record: { ...k.record, inSync } } }, e);
  };
  caught(
    "promotes a member that missed a write",
    { maxPartitions: 1, maxSyncLosses: 1 },
    { step: lies, ruleChecks: false },
    "promoted without acknowledged w0",
  );
});

Deno.test("replicated group model: a frozen master serving a read without the lease guard is caught (stale read)", () => {
  caught(
    "read without the guard",
    { maxPartitions: 1 },
    { faults: { readWithoutGuard: true } },
    "stale read",
  );
});

Deno.test("replicated group model: a new master serving before its grant to the old epoch lapsed is caught (stale read)", () => {
  caught(
    "serves before the old grant lapsed",
    { maxPartitions: 1 },
    { faults: { serveBeforeGrantsLapse: true } },
    "stale read",
  );
});

Deno.test("replicated group model: a frozen master acknowledging without checking its grants again is caught (two epochs acknowledge)", () => {
  caught(
    "acknowledges without the guard",
    { maxPartitions: 1, maxWrites: 2 },
    { faults: { ackWithoutGuard: true } },
    "after a write was acknowledged at e2",
  );
});

Deno.test("replicated group model: acknowledging a later write that skips a dropped member before the out-of-sync CAS is caught", () => {
  // What the NBD request path does today: only the request a replica failed waits.
  caught(
    "later writes skip a dropped member",
    { maxSyncLosses: 1 },
    { faults: { skipDroppedMembers: true } },
    "which the record lists in sync",
  );
});

Deno.test("replicated group model: forgetting a resynced member whose in-sync CAS reply was lost is caught", () => {
  caught(
    "forgets a maybe-in-sync member",
    { maxCrashes: 1, maxSyncLosses: 1, maxLostReplies: 1 },
    { faults: { guardKnownInSyncOnly: true } },
    "which the record lists in sync",
  );
});

// Membership changes (control/group/membership.ts): a spare node, the master replacing a
// member whose lease is gone, and the operator changing the replica count.

Deno.test("replicated group model with a spare node: a replica crashes and is replaced by the spare, seeded by resync, while a write is in flight: invariants and liveness hold", () => {
  holds(
    "replicated: replacement",
    {
      spares: 1,
      maxCrashes: 1,
      maxEnvChanges: 1,
    },
    20_000,
    { members: {} },
  );
});

Deno.test("replicated group model with a spare node: the operator raises the count to 2 or lowers it to 0, a write, a slow replica: the master adds or removes members; invariants and liveness hold", () => {
  // With a crash instead (2.4M states, 5 min) or a cut from etcd (1.5M states, 3 min) it
  // holds too (run by hand).
  holds(
    "replicated: replica count changes, slow replica",
    {
      spares: 1,
      maxSyncLosses: 1,
      maxEnvChanges: 2,
    },
    50_000,
    { members: { counts: [0, 2] } },
  );
});

Deno.test("replicated group model with a spare node: the operator raises or lowers the count, a write, a lost etcd reply: invariants and liveness hold", () => {
  holds(
    "replicated: replica count changes, lost reply",
    {
      spares: 1,
      maxLostReplies: 1,
      maxEnvChanges: 2,
    },
    5_000,
    { members: { counts: [0, 2] } },
  );
});

Deno.test("replicated group model: a planner that adds a new member in sync (not seeded) is caught", () => {
  const eager: MembershipEnvOptions["plan"] = (i) => {
    const p = planMembership(i);
    if (!p.change) return p;
    const r = p.change.record;
    const { phase: _p, ...rest } = { ...r, inSync: [...r.inSync, ...p.change.added].sort() };
    const record = { ...rest, phase: phaseOf(rest) };
    return { ...p, change: { ...p.change, record } };
  };
  const o = run("replicated: member added in sync", {
    spares: 1,
    maxCrashes: 1,
    maxEnvChanges: 1,
  }, { members: { plan: eager } });
  assert(o.violation, "the checker missed a member added in sync");
  // deno-lint-ignore no-console
  console.log(`counterexample: ${o.violation.message}\n${o.violation.trace.join("\n")}`);
  assert(o.violation.message.includes("which the record lists in sync"), o.violation.message);
});

Deno.test("replicated group model: a handover confirmed before the old master's export is closed is caught (stale read: the new master does not wait out its lease)", () => {
  caughtHandover();
});
