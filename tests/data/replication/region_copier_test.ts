/**
 * RegionCopier (resync.ts): the blocks of one region that differ on a member are sent, and a
 * request that fails while the rate limit holds the next one back ends the copy with that
 * error, never as an unhandled rejection (which ends the node's process: a master died when a
 * replica it was resyncing at a --resync-rate was killed).
 */
import { silentLogger } from "../../../control/common/mod.ts";
import { assertEquals, assertRejects } from "../../_assert.ts";
import { HashState } from "../../../data/replication/hash_state.ts";
import { hashRegions } from "../../../data/replication/hashes.ts";
import { REGION_BYTES } from "../../../data/replication/regions.ts";
import {
  FINE,
  RateLimit,
  RegionCopier,
  type ResyncProgress,
} from "../../../data/replication/resync.ts";
import { F_DEEP, T_HASHES, T_WRITE } from "../../../data/replication/wire.ts";
import { FileBlockStore } from "../../../data/store/mod.ts";

function progress(): ResyncProgress {
  return {
    replica: "n2",
    comparedBytes: 0,
    totalBytes: REGION_BYTES,
    sentBytes: 0,
    zeroedBytes: 0,
    hashBytes: 0,
    regionsToCopy: 1,
    regionsCopied: 0,
    pass: 1,
    startedAt: 0,
  };
}

Deno.test("RegionCopier: a WRITE that fails while the rate limit holds the next back fails the copy; nothing is left unsettled", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ballast-copier-" });
  const path = `${dir}/copy.vol`;
  const store = FileBlockStore.create(path, REGION_BYTES);
  // Two runs of data the member lacks (blocks 0 and 2): two WRITEs, each rate-limited.
  await store.write(new Uint8Array(FINE).fill(1), 0);
  await store.write(new Uint8Array(FINE).fill(2), 2 * FINE);
  const hs = await HashState.open(path, silentLogger(), { fresh: true });
  try {
    const zeros = { size: REGION_BYTES, read: (into: Uint8Array) => into.fill(0) };
    const theirs = await hashRegions(zeros, 0, REGION_BYTES / FINE, FINE);
    let release = () => {};
    const sleeping = new Promise<void>((r) => release = r);
    let sleeps = 0; // the first WRITE goes at once, the second waits for `release`
    const clock = { now: () => 0, sleep: () => sleeps++ === 0 ? Promise.resolve() : sleeping };
    const rate = new RateLimit(FINE, clock); // one block per second: the second WRITE waits
    const writes: number[] = [];
    const ask = (r: Record<string, unknown>): Promise<Uint8Array> => {
      if (r.type === T_HASHES) return Promise.resolve(theirs);
      if (r.type === T_WRITE) writes.push(r.offset as number);
      // The member is gone: the first WRITE fails at once, while the copier sleeps.
      const failed = Promise.reject(new Error("replica n2 closed the connection"));
      queueMicrotask(() => setTimeout(release, 0));
      return failed;
    };
    const copier = new RegionCopier(hs, ask, rate, progress());
    await assertRejects(() => copier.copy(0), Error, "replica n2 closed the connection");
    assertEquals(writes, [0], "no WRITE after the failure");
  } finally {
    await hs.close();
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("RegionCopier: every block equal under differing region hashes (a damaged hash list): both sides rehash the region, nothing is sent", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ballast-copier-" });
  const path = `${dir}/copy.vol`;
  const store = FileBlockStore.create(path, 2 * REGION_BYTES);
  await store.write(new Uint8Array(FINE).fill(7), REGION_BYTES + 3 * FINE);
  const hs = await HashState.open(path, silentLogger(), { fresh: true });
  try {
    await hs.keepAll();
    const data = new Uint8Array(REGION_BYTES);
    hs.read(data, REGION_BYTES);
    const view = {
      size: REGION_BYTES,
      read: (into: Uint8Array, at: number) => into.set(data.subarray(at, at + into.length)),
    };
    const theirs = await hashRegions(view, 0, REGION_BYTES / FINE, FINE); // the member's blocks: equal
    const asked: Record<string, unknown>[] = [];
    const ask = (r: Record<string, unknown>): Promise<Uint8Array> => {
      asked.push(r);
      return Promise.resolve(
        r.type === T_HASHES && r.regionBytes === FINE ? theirs : new Uint8Array(17),
      );
    };
    const copier = new RegionCopier(hs, ask, new RateLimit(0), progress());
    assertEquals(await copier.copy(1), 0);
    assertEquals(asked.map((r) => [r.type, r.flags, r.first, r.count]), [
      [T_HASHES, 0, REGION_BYTES / FINE, REGION_BYTES / FINE],
      [T_HASHES, F_DEEP, 1, 1],
    ]);
    assertEquals(asked.some((r) => r.type === T_WRITE), false);
  } finally {
    await hs.close();
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
