/**
 * Two behaviours of the data path on the replicated group model (_replication_runs.ts):
 *
 * - the failed-write repair (data/nbd/_change.ts repairThenFail): a WRITE that fails on the
 *   master midway (ENOSPC after part of it was applied) sends the in-sync replicas what the
 *   master's copy now holds in that range, and answers the error only once they applied it
 *   or the record shows them out of sync. Invariant: once the error is answered, the copies
 *   the record lists in sync hold the same in that range (at that epoch; a later master
 *   compares the copies itself, master.ts #reconcile, which is not modelled);
 * - `volume verify --deep` (data/replication/master.ts verify(), verify.ts; _verify.ts):
 *   a copy silently corrupted, a deep verification that marks it and takes a differing
 *   in-sync replica out of sync, the resync that copies the region back. Invariants: that
 *   replica comes back in sync only repaired; the repair never copies a corruption of the
 *   master's.
 *
 * Both hold with the faults of the other tests (crashes, cuts from etcd, slow replicas,
 * lost etcd replies, a drain's handover) within the bounds below, but one: a drain's
 * handover while a replica misses the repair (a gap in the product, pinned below). A
 * verification between a member's resync and its in-sync CAS was a second gap, fixed
 * (master.ts verify(), verify.ts resyncAgainAfterVerify). Each broken variant is caught.
 */

import { caught, holds } from "./_replication_runs.ts";

const FAILS = { maxFailedWrites: 1 };
const VERIFIES = { maxCorruptions: 1, maxVerifies: 1 };

Deno.test("failed-write repair model: master + 1 replica, 2 writes (one fails midway), a slow replica, a cut from etcd, a lost etcd reply: invariants and liveness hold", () => {
  holds("repair: 2 writes, slow replica, cut, lost reply", {
    ...FAILS,
    maxWrites: 2,
    maxPartitions: 1,
    maxSyncLosses: 1,
    maxLostReplies: 1,
  }, 250_000);
});

Deno.test("failed-write repair model: master + 1 replica, a write that may fail midway, a crash, a slow replica, a lost etcd reply: invariants and liveness hold", () => {
  holds("repair: crash, slow replica, lost reply", {
    ...FAILS,
    maxCrashes: 1,
    maxSyncLosses: 1,
    maxLostReplies: 1,
  }, 80_000);
});

Deno.test("failed-write repair model: master + 2 replicas, a write that may fail midway, a slow replica, a lost etcd reply: invariants and liveness hold", () => {
  holds("repair 3 nodes: slow replica, lost reply", {
    ...FAILS,
    replicas: 2,
    maxSyncLosses: 1,
    maxLostReplies: 1,
  }, 12_000);
});

Deno.test("failed-write repair model: master + 2 replicas, a write that may fail midway, a cut from etcd (a replica takes over): invariants and liveness hold", () => {
  holds("repair 3 nodes: cut", { ...FAILS, replicas: 2, maxPartitions: 1 }, 60_000);
});

Deno.test("failed-write repair model: master + 2 replicas, a drain's handover while a write may fail midway (the export's close waits for the repair), a lost etcd reply: invariants and liveness hold", () => {
  holds("repair 3 nodes: handover, lost reply", {
    ...FAILS,
    replicas: 2,
    maxHandovers: 1,
    maxLostReplies: 1,
  }, 10_000);
});

Deno.test("failed-write repair model: master + 1 replica, a drain's handover while a write may fail midway, a cut from etcd: invariants and liveness hold", () => {
  holds("repair: handover, cut", { ...FAILS, maxHandovers: 1, maxPartitions: 1 }, 10_000);
});

Deno.test("failed-write repair model (a gap the model found): a drain's handover while a replica misses the repair answers the error with copies listed in sync that differ", () => {
  // The master stops serving for the handover, so the replica's failure is refused
  // (refuse-writes) instead of taken to the record, and the close answers the error while
  // the record still lists the replica in sync; it then hands over to that replica, keeping
  // itself in sync. The new master's comparison of the copies (master.ts #reconcile, not
  // modelled) makes them equal afterwards. When this is fixed, make it a holds() test.
  caught(
    "handover during a repair, slow replica",
    { ...FAILS, maxHandovers: 1, maxSyncLosses: 1 },
    {},
    "copies listed in sync differ after w0's error was answered",
  );
});

Deno.test("failed-write repair model: answering a failed write's error without the repair is caught (in-sync copies differ)", () => {
  caught(
    "error without the repair",
    FAILS,
    { faults: { errorWithoutRepair: true } },
    "copies listed in sync differ after w0's error was answered",
  );
});

Deno.test("failed-write repair model: answering the error before the record shows a replica that missed the repair out of sync is caught", () => {
  caught(
    "error before the out-of-sync CAS",
    { ...FAILS, maxSyncLosses: 1 },
    { faults: { errorBeforeCas: true } },
    "copies listed in sync differ after w0's error was answered",
  );
});

Deno.test("deep verification model: master + 1 replica, a silent corruption of either copy, a verification, a write, a slow replica, a lost etcd reply: invariants and liveness hold", () => {
  holds("verify: corruption, write, slow replica, lost reply", {
    ...VERIFIES,
    maxSyncLosses: 1,
    maxLostReplies: 1,
  }, 10_000);
});

Deno.test("deep verification model: master + 1 replica, a silent corruption, a verification, a write, a cut from etcd (a frozen master verifies): invariants and liveness hold", () => {
  holds("verify: corruption, write, cut", { ...VERIFIES, maxPartitions: 1 }, 12_000);
});

Deno.test("deep verification model: master + 1 replica, a silent corruption, a verification, a write, a crash: invariants and liveness hold", () => {
  holds("verify: corruption, write, crash", { ...VERIFIES, maxCrashes: 1 }, 16_000);
});

Deno.test("deep verification model: master + 2 replicas, a silent corruption, a verification, a write, a slow replica: invariants and liveness hold", () => {
  holds("verify 3 nodes: corruption, write, slow replica", {
    ...VERIFIES,
    replicas: 2,
    maxSyncLosses: 1,
  }, 30_000);
});

Deno.test("deep verification model: a verification that does not mark the corrupt region for rehashing is caught (the resync copies nothing, the replica is back in sync corrupt)", () => {
  caught(
    "verify marks nothing",
    VERIFIES,
    { faults: { verifyMarksNothing: true } },
    "back in sync with the copy the deep verification found different, not repaired",
  );
});

Deno.test("deep verification model: a verification that resyncs the replicas from a corrupt master is caught", () => {
  caught(
    "verify repairs from a corrupt master",
    VERIFIES,
    { faults: { verifyRepairsFromCorruptMaster: true } },
    "repair copies n1's corrupt region",
  );
});

Deno.test("deep verification model: a resync after the verification that reports the replica in sync without copying is caught", () => {
  caught(
    "in sync again without the resync's copy",
    VERIFIES,
    { faults: { resyncWithoutCopy: true } },
    "back in sync with the copy the deep verification found different, not repaired",
  );
});

Deno.test("deep verification model: a member corrupted after its resync copied, verified before its in-sync CAS, is taken out again and repaired (a gap the model found, fixed)", () => {
  // The verification compares it (master.ts keeps it among the members being resynced until
  // the record lists it in sync) and marks its corruption; its resync has copied already, so
  // it is reported failed like an in-sync member that differs, and resynced again.
  holds(
    "verify: a resynced member before its in-sync CAS",
    { ...VERIFIES, maxSyncLosses: 1 },
    2_000,
    {
      faults: { holdResyncingToo: true },
    },
  );
});

Deno.test("deep verification model: a verification that takes out only in-sync members is caught (a member resynced, its in-sync CAS pending, comes back in sync corrupt)", () => {
  caught(
    "a resynced member verified before its in-sync CAS",
    { ...VERIFIES, maxSyncLosses: 1 },
    { faults: { holdResyncingToo: true, verifyLeavesResynced: true } },
    "back in sync with the copy the deep verification found different, not repaired",
  );
});
