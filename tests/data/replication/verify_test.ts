/**
 * After a deep verification (data/replication/verify.ts, control/cli/_verify_view.ts): which
 * members the master takes out of sync so that their resync repairs them, never when its
 * own copy is corrupt, and what `volume verify` then tells the operator.
 */

import { assert, assertEquals } from "../../_assert.ts";
import {
  type MemberVerdict,
  outvoted,
  resyncAfterVerify,
  resyncAgainAfterVerify,
  suspectMaster,
  verifyCopies,
  type VerifyReport,
} from "../../../data/replication/verify.ts";
import { HashState } from "../../../data/replication/hash_state.ts";
import { REGION_BYTES } from "../../../data/replication/regions.ts";
import { T_HASHES, T_TREE } from "../../../data/replication/wire.ts";
import { FileBlockStore } from "../../../data/store/mod.ts";
import { silentLogger } from "../../../control/common/mod.ts";
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

Deno.test("resyncAfterVerify(): an in-sync replica found different by --deep is resynced; none after a quick verify; while the master's copy is corrupt only a corrupt replica leaves the in-sync set", () => {
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
  // The master's copy corrupt: nothing is repaired from it, but a replica whose own copy is
  // corrupt (n3) leaves the in-sync set, so that no drain or failover makes it the master.
  assertEquals(resyncAfterVerify(report(true, badMaster), inSync), ["n3"]);
  assertEquals(suspectMaster(report(true, badMaster)), "its own copy is corrupt in 1 region(s)");
  assertEquals(suspectMaster(report(false, badMaster)), undefined, "quick: no verdict");
  assertEquals(suspectMaster(report(true, members)), undefined);
});

Deno.test("outvoted(): where every in-sync replica (two or more) differs from the master, nothing is repaired from it and verify says to move the master; one replica, or one being resynced, has no such vote", () => {
  const two = () => [
    verdict("n1", "master"),
    verdict("n2", "replica", { ...differs, differing: [5, 7], differingCount: 2 }),
    verdict("n3", "replica", differs),
  ];
  const r = report(true, two());
  outvoted(r, ["n1", "n2", "n3"]);
  const master = r.members[0];
  assertEquals([master.equal, master.differing, master.differingCount], [false, [5], 1]);
  assertEquals(resyncAfterVerify(r, ["n1", "n2", "n3"]), [], "not copied over the replicas");
  const text = verifyText({ ...r, name: "v1", node: "n1", ok: false });
  assert(text.includes("1 region outvoted by every replica"), text);
  assert(text.includes("the master's copy is suspect, so nothing was resynced"), text);
  assert(text.includes("`ballast node drain n1`"), text);
  // A replica whose own copy is corrupt as well leaves the in-sync set (the drain must not
  // pick it), and verify says so.
  const both = report(true, [
    verdict("n1", "master"),
    verdict("n2", "replica", { ...differs, differing: [5, 9], corrupt: [9], corruptCount: 1 }),
    verdict("n3", "replica", differs),
  ]);
  outvoted(both, ["n1", "n2", "n3"]);
  assertEquals(suspectMaster(both), "every in-sync replica differs from it in 1 region(s)");
  assertEquals(resyncAfterVerify(both, ["n1", "n2", "n3"]), ["n2"]);
  const told = verifyText({ ...both, name: "v1", node: "n1", ok: false });
  assert(told.includes("n2 has a corrupt copy too and was taken out of sync"), told);
  // n3 is being resynced (not in sync): only n2 votes, and n2 alone does not outvote.
  const resyncing = report(true, two());
  outvoted(resyncing, ["n1", "n2"]);
  assertEquals(resyncing.members[0].differingCount, 0);
  assertEquals(resyncAfterVerify(resyncing, ["n1", "n2"]), ["n2"]);
  // The replicas differ in different regions: each is repaired from the master.
  const apart = report(true, [
    verdict("n1", "master"),
    verdict("n2", "replica", { ...differs, differing: [7] }),
    verdict("n3", "replica", differs),
  ]);
  outvoted(apart, ["n1", "n2", "n3"]);
  assertEquals(apart.members[0].differingCount, 0);
  assertEquals(resyncAfterVerify(apart, ["n1", "n2", "n3"]), ["n2", "n3"]);
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

Deno.test("a quick verification does not report a write on its way (the region is compared again once it has landed everywhere); a real difference stays", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ballast-verify-" });
  const size = 64 * REGION_BYTES; // several tree levels
  const open = async (name: string) => {
    const path = `${dir}/${name}.vol`;
    const store = FileBlockStore.create(path, size);
    return { store, hashes: await HashState.open(path, silentLogger(), { fresh: true }) };
  };
  const a = await open("master");
  const b = await open("replica");
  try {
    let leafLevel: () => void = () => {};
    const readLeaves = new Promise<void>((r) => (leafLevel = r));
    // The replica's answers, as replica.ts gives them (T_TREE, T_HASHES without F_DEEP).
    const ask = (r: Record<string, unknown>): Promise<Uint8Array> => {
      const { first, count } = r as { first: number; count: number };
      if (r.type === T_TREE) {
        if (r.level === 0) leafLevel();
        return b.hashes.nodes(r.level as number, first, count);
      }
      assertEquals(r.type, T_HASHES);
      return b.hashes.leaves(first, count);
    };
    // A write on its way: applied on the master, in flight (its region entered) until the
    // replica has applied it too.
    const off = 5 * REGION_BYTES + 4096;
    const data = new Uint8Array(4096).fill(7);
    await a.hashes.writer.enter(off, data.length);
    a.store.write(data, off);
    const verifying = verifyCopies("m", a.hashes, new Map([["r", ask]]), false);
    await readLeaves; // the trees were read while the copies differed
    await b.hashes.writer.enter(off, data.length);
    b.store.write(data, off);
    b.hashes.writer.leave(off, data.length);
    a.hashes.writer.leave(off, data.length);
    const report = await verifying;
    const r = report.members.find((m) => m.node === "r")!;
    assertEquals([r.equal, r.differingCount, r.differing], [true, 0, []]);

    // A difference that stays (the replica missed a write) is reported.
    await a.hashes.writer.enter(off, data.length);
    a.store.write(new Uint8Array(4096).fill(9), off);
    a.hashes.writer.leave(off, data.length);
    const again = await verifyCopies("m", a.hashes, new Map([["r", ask]]), false);
    const r2 = again.members.find((m) => m.node === "r")!;
    assertEquals([r2.equal, r2.differingCount, r2.differing], [false, 1, [5]]);

    // A member being resynced: its resync holds the region while it copies it (for long
    // under --resync-rate). A quick verification reports the difference without waiting.
    await a.hashes.table.lockWaiting(5);
    try {
      const asks = new Map([["r", ask]]);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stuck = new Promise<"stuck">((r) => timer = setTimeout(() => r("stuck"), 20_000));
      const quick = await Promise.race([
        verifyCopies("m", a.hashes, asks, false, new Set(["r"])),
        stuck,
      ]);
      clearTimeout(timer);
      assert(quick !== "stuck", "a quick verification waited for a resyncing member's region");
      const r3 = quick.members.find((m) => m.node === "r")!;
      assertEquals([r3.equal, r3.differing], [false, [5]]);
    } finally {
      a.hashes.table.unlock(5);
    }

    // A deep verification waiting for a region a resync holds (region 3) holds none of the
    // others meanwhile: a client write to region 0 goes through at once.
    await a.hashes.table.lockWaiting(3);
    const deep = verifyCopies("m", a.hashes, new Map([["r", ask]]), true);
    try {
      await new Promise((r) => setTimeout(r, 50)); // the verification reaches its first batch
      let timer: ReturnType<typeof setTimeout> | undefined;
      const blocked = new Promise<"blocked">((r) => timer = setTimeout(() => r("blocked"), 10_000));
      const wrote = await Promise.race([
        Promise.resolve(a.hashes.writer.enter(0, 4096)).then(() => "wrote" as const),
        blocked,
      ]);
      clearTimeout(timer);
      assertEquals(wrote, "wrote", "a write waited for the verification's wait on region 3");
      a.hashes.writer.leave(0, 4096);
    } finally {
      a.hashes.table.unlock(3);
    }
    // It goes on once the region is let go (this fake replica answers no deep hashes).
    assertEquals((await deep).deep, true);
  } finally {
    for (const c of [a, b]) {
      await c.hashes.close();
      c.store.close();
    }
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("verifyText(): an OK verification whose roots differ (read at different moments under writes) says why", () => {
  const r = report(false, [
    verdict("n1", "master", { root: "aa" }),
    verdict("n2", "replica", { root: "bb" }),
  ]);
  const text = verifyText({ ...r, name: "v1", node: "n1", ok: true });
  assert(text.includes("OK: every member holds the master's data."), text);
  assert(text.includes("The root hashes differ because each was read at its own moment"), text);
  const same = verifyText({
    ...report(false, [verdict("n1", "master"), verdict("n2", "replica")]),
    name: "v1",
    node: "n1",
    ok: true,
  });
  assert(!same.includes("root hashes differ"), same);
});
