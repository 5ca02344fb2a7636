/**
 * After a deep verification (data/replication/verify.ts, control/cli/_verify_view.ts): which
 * members the master takes out of sync so that their resync repairs them, never when its
 * own copy is corrupt, and what `volume verify` then tells the operator.
 */

import { assert, assertEquals } from "../../_assert.ts";
import {
  type MemberVerdict,
  resyncAfterVerify,
  resyncAgainAfterVerify,
  type VerifyReport,
} from "../../../data/replication/verify.ts";
import { verifyText } from "../../../control/cli/_verify_view.ts";

const MiB = 2 ** 20;

function verdict(
  node: string,
  role: "master" | "replica",
  fields: Partial<MemberVerdict> = {},
): MemberVerdict {
  return {
    node,
    role,
    root: "aa",
    equal: true,
    differing: [],
    differingCount: 0,
    corrupt: [],
    corruptCount: 0,
    ...fields,
  };
}

function report(deep: boolean, members: MemberVerdict[]): VerifyReport {
  return { deep, regionBytes: MiB, regions: 32, ms: 10, members };
}

const differs = { root: "bb", equal: false, differing: [5], differingCount: 1 };

Deno.test("resyncAfterVerify(): an in-sync replica found different by --deep is resynced; none after a quick verify, none while the master's copy is corrupt", () => {
  const members = [
    verdict("n1", "master"),
    verdict("n2", "replica"),
    verdict("n3", "replica", { ...differs, corrupt: [5], corruptCount: 1 }),
    verdict("n4", "replica", differs), // differs, but not in sync: its resync runs anyway
    verdict("n5", "replica", { equal: undefined, error: "no answer" }),
  ];
  const inSync = ["n1", "n2", "n3", "n5"];
  assertEquals(resyncAfterVerify(report(true, members), inSync), ["n3"]);
  assertEquals(resyncAfterVerify(report(false, members), inSync), [], "quick: may be in flight");
  const badMaster = [
    verdict("n1", "master", { corrupt: [5], corruptCount: 1 }),
    ...members.slice(1),
  ];
  assertEquals(resyncAfterVerify(report(true, badMaster), inSync), []);
});

Deno.test("resyncAgainAfterVerify(): a member being resynced with a corruption found by --deep is resynced again; not one that merely differs, not after a quick verify, not from a corrupt master", () => {
  const members = [
    verdict("n1", "master"),
    verdict("n2", "replica", { ...differs, corrupt: [5], corruptCount: 1 }), // resynced, CAS pending
    verdict("n3", "replica", differs), // its resync copies the difference anyway
    verdict("n4", "replica", { ...differs, corrupt: [5], corruptCount: 1 }), // in sync: the other rule
    verdict("n5", "replica", { equal: undefined, error: "no answer" }),
  ];
  const resyncing = ["n2", "n3", "n5"];
  assertEquals(resyncAgainAfterVerify(report(true, members), resyncing), ["n2"]);
  assertEquals(resyncAfterVerify(report(true, members), ["n1", "n4"]), ["n4"]);
  assertEquals(resyncAgainAfterVerify(report(false, members), resyncing), [], "quick");
  const badMaster = [
    verdict("n1", "master", { corrupt: [5], corruptCount: 1 }),
    ...members.slice(1),
  ];
  assertEquals(resyncAgainAfterVerify(report(true, badMaster), resyncing), []);
});

Deno.test("verifyText(): says which members the master resyncs, or to move a corrupt master away first", () => {
  const volume = (members: MemberVerdict[]) => ({
    ...report(true, members),
    name: "v1",
    node: "n1",
    ok: false,
  });
  const resynced = verifyText(volume([
    verdict("n1", "master"),
    verdict("n3", "replica", { ...differs, resyncing: true }),
  ]));
  assert(/n3 +replica +bb +1 region differs, resyncing +-/.test(resynced), resynced);
  assert(
    resynced.endsWith(
      "NOT OK: n3 is being resynced: the resync copies the differing blocks; follow it with " +
        "`ballast volume get v1 --watch`, then verify --deep again.\n",
    ),
    resynced,
  );
  // A quick verification during a resync: the differences are the resync's, not a mystery.
  const quick = verifyText({
    ...volume([verdict("n1", "master"), verdict("n3", "replica", { ...differs, resyncing: true })]),
    deep: false,
  });
  assert(quick.endsWith("then verify again.\n"), quick);
  const unexplained = verifyText({
    ...volume([
      verdict("n1", "master"),
      verdict("n2", "replica", differs),
      verdict("n3", "replica", { ...differs, resyncing: true }),
    ]),
    deep: false,
  });
  assert(unexplained.endsWith("run with --deep to rehash the data.\n"), unexplained);
  const corruptMaster = verifyText(volume([
    verdict("n1", "master", { corrupt: [5], corruptCount: 1 }),
    verdict("n3", "replica", differs),
  ]));
  assert(
    corruptMaster.includes(
      "the master's own copy is corrupt, so nothing was resynced (that would copy it): move " +
        "the master to an in-sync replica with `ballast node drain n1`",
    ),
    corruptMaster,
  );
});
