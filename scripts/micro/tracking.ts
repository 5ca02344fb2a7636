// deno-lint-ignore-file no-console
/**
 * `deno task bench:tracking` (issue 12): what Delta Sync's write tracking costs a write that
 * does not go to a replica, against the write itself.
 *
 *   deno task bench:tracking [--size-mib 512] [--writes 200000] [--rounds 5] [--dir DIR]
 *
 * Every data-changing request enters the regions it touches before it changes the copy and
 * leaves them after (data/replication/tracker.ts); that, plus a durable mark the first time a
 * clean region is written, is all the hash list asks of the write path (the hash keeper
 * rehashes regions only once they are quiet). This script times, in one process and in
 * alternating rounds over the same random offsets:
 *
 * - `tracking`: enter + leave of a 4 KiB write at a random offset, every region already marked
 *   (the steady state of random writes; a clean region's first mark is one fdatasync, once);
 * - `pwrite`: the copy's own write of the same 4 KiB at the same offset (FileBlockStore, one
 *   pwrite into the page cache), the least a write costs without any of Ballast's path;
 *
 * and prints the median of each per write and their ratio. A served write costs more than its
 * pwrite (the NBD request and reply, the socket), so tracking's share of it is smaller still.
 * Wall-clock time of one thread doing nothing else: run it on a quiet machine.
 * @module
 */

import { parseArgs } from "node:util";
import { FileBlockStore } from "../../data/store/mod.ts";
import { REGION_BYTES, RegionTable, WriteTracker } from "../../data/replication/mod.ts";

const USAGE = `usage: deno task bench:tracking [options]
  --size-mib N   size of the copy in MiB (default 512, as deno task bench)
  --writes N     4 KiB writes per round (default 200000)
  --rounds N     alternating rounds of each (default 5; the medians are printed)
  --dir DIR      where the copy and its activity log go (default: system temp dir)`;

const BLOCK = 4096;

/** The middle value (upper middle of an even count). */
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

function options() {
  const { values } = parseArgs({
    options: {
      "size-mib": { type: "string", default: "512" },
      writes: { type: "string", default: "200000" },
      rounds: { type: "string", default: "5" },
      dir: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const num = (name: "size-mib" | "writes" | "rounds") => {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < 1) {
      console.error(`bench:tracking: --${name} must be a positive integer, not "${values[name]}"`);
      Deno.exit(2);
    }
    return n;
  };
  return {
    sizeMib: num("size-mib"),
    writes: num("writes"),
    rounds: num("rounds"),
    dir: values.dir,
  };
}

/** Nanoseconds per call of `fn` over every offset. */
function timed(offsets: Float64Array, fn: (offset: number) => void): number {
  const t0 = performance.now();
  for (const offset of offsets) fn(offset);
  return (performance.now() - t0) * 1e6 / offsets.length;
}

async function main(): Promise<void> {
  const o = options();
  const size = o.sizeMib * 1024 * 1024;
  const dir = await Deno.makeTempDir({ prefix: "ballast-tracking-", dir: o.dir });
  try {
    const store = FileBlockStore.create(`${dir}/copy.vol`, size);
    const alPath = `${dir}/copy.al`;
    await Deno.writeFile(alPath, new Uint8Array(Math.ceil(size / REGION_BYTES)));
    const tracker = new WriteTracker(RegionTable.create(size), 1, alPath);
    // Mark every region once (what the first write to each clean region does).
    for (let at = 0; at < size; at += REGION_BYTES) {
      await tracker.enter(at, BLOCK);
      tracker.leave(at, BLOCK);
    }
    const offsets = new Float64Array(o.writes);
    for (let i = 0; i < offsets.length; i++) {
      offsets[i] = Math.floor(Math.random() * (size / BLOCK)) * BLOCK;
    }
    const data = new Uint8Array(BLOCK).fill(0x5a);
    let waited = 0;
    const track = (offset: number) => {
      if (tracker.enter(offset, BLOCK) !== undefined) waited++;
      tracker.leave(offset, BLOCK);
    };
    const write = (offset: number) => store.write(data, offset);
    timed(offsets, write); // fills the page cache: every round then writes over cached pages
    const t: number[] = [];
    const w: number[] = [];
    for (let round = 1; round <= o.rounds; round++) {
      t.push(timed(offsets, track));
      w.push(timed(offsets, write));
      console.log(
        `round ${round}: tracking ${t.at(-1)!.toFixed(0)} ns, pwrite ${w.at(-1)!.toFixed(0)} ns`,
      );
    }
    if (waited > 0) throw new Error(`${waited} enters waited: the regions were not all marked`);
    const [mt, mw] = [median(t), median(w)];
    console.log(
      `\n4 KiB random writes over ${o.sizeMib} MiB, ${o.writes} per round, medians of ` +
        `${o.rounds}:\n  tracking (enter + leave) ${mt.toFixed(0)} ns per write\n` +
        `  pwrite of the same block  ${mw.toFixed(0)} ns per write\n` +
        `  tracking / pwrite         ${(100 * mt / mw).toFixed(1)}%`,
    );
    store.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

await main();
