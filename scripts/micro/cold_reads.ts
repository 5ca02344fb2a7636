// deno-lint-ignore-file no-console
/**
 * `deno task bench:cold-reads`: what the store's own reads of a volume's data leave behind in
 * the page cache for the client writes that follow.
 *
 *   deno task bench:cold-reads [--size-mib 512] [--writes 200000] [--rounds 3] [--dir DIR]
 *
 * Hashing a region, a resync copying one and `volume verify --deep` read whole regions of a
 * copy. Read from the disk through an ordinary open file, such reads come in by readahead, in
 * large folios, and a later 4 KiB write into a large folio costs several times the CPU of one
 * into a 4 KiB folio (ext4 walks every block of the folio; data/store/file_store.ts). The store
 * reads them with readBulk() instead: a second open file advised POSIX_FADV_RANDOM, whose reads
 * fill the cache in 4 KiB folios. Each round, for `read` and then `readBulk`:
 *
 * 1. the copy (written once with 1 MiB writes, made durable) is dropped from the page cache
 *    (POSIX_FADV_DONTNEED, by python3);
 * 2. the whole copy is read in 1 MiB pieces through that method (MiB/s and CPU per GiB);
 * 3. 4 KiB writes at random offsets (the same offsets for both): CPU per write.
 *
 * CPU is this process's (user + system). Run it on a quiet machine; needs python3.
 * @module
 */

import process from "node:process";
import { parseArgs } from "node:util";
import { FileBlockStore } from "../../data/store/mod.ts";

const USAGE = `usage: deno task bench:cold-reads [options]
  --size-mib N   size of the copy in MiB (default 512)
  --writes N     4 KiB writes after each read (default 200000)
  --rounds N     alternating rounds of read and readBulk (default 3; medians printed)
  --dir DIR      where the copy goes, on the file system to measure (default: .ballast/)`;

const BLOCK = 4096;
const MiB = 1024 * 1024;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** This process's CPU seconds so far. */
function cpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

function options() {
  const { values } = parseArgs({
    options: {
      "size-mib": { type: "string", default: "512" },
      writes: { type: "string", default: "200000" },
      rounds: { type: "string", default: "3" },
      dir: { type: "string", default: ".ballast" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    Deno.exit(0);
  }
  const n = (name: "size-mib" | "writes" | "rounds") => {
    const v = Number(values[name]);
    if (!Number.isInteger(v) || v <= 0) {
      console.error(`bench:cold-reads: --${name} must be a positive whole number\n${USAGE}`);
      Deno.exit(2);
    }
    return v;
  };
  return { sizeMiB: n("size-mib"), writes: n("writes"), rounds: n("rounds"), dir: values.dir };
}

/** Drops the file's clean pages from the page cache. */
async function dropCache(path: string): Promise<void> {
  const out = await new Deno.Command("python3", {
    args: [
      "-c",
      "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); " +
      "os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)",
      path,
    ],
  }).output();
  if (!out.success) {
    throw new Error(`could not drop the cache: ${new TextDecoder().decode(out.stderr)}`);
  }
}

async function main(): Promise<void> {
  const o = options();
  await Deno.mkdir(o.dir, { recursive: true });
  const dir = await Deno.makeTempDir({ dir: o.dir, prefix: "cold-reads-" });
  const path = `${dir}/copy`;
  const size = o.sizeMiB * MiB;
  const store = FileBlockStore.create(path, size);
  try {
    const chunk = new Uint8Array(MiB);
    for (let at = 0; at < size; at += MiB) {
      crypto.getRandomValues(chunk.subarray(0, 65536));
      store.write(chunk, at);
    }
    await store.flush();
    const offsets = Array.from(
      { length: o.writes },
      () => Math.floor(Math.random() * (size / BLOCK)) * BLOCK,
    );
    const block = new Uint8Array(BLOCK).fill(7);
    const results = { read: [] as number[][], readBulk: [] as number[][] };
    for (let round = 1; round <= o.rounds; round++) {
      for (const how of ["read", "readBulk"] as const) {
        await store.flush();
        await dropCache(path);
        const t0 = performance.now();
        const c0 = cpu();
        for (let at = 0; at < size; at += MiB) store[how](chunk, at);
        const readS = (performance.now() - t0) / 1000;
        const readCpu = cpu() - c0;
        const c1 = cpu();
        for (const at of offsets) store.write(block, at);
        const writeUs = (cpu() - c1) / o.writes * 1e6;
        const row = [o.sizeMiB / readS, readCpu / (size / 1024 / MiB), writeUs];
        results[how].push(row);
        console.log(
          `round ${round} ${how.padEnd(8)}: cold read ${row[0].toFixed(0)} MiB/s ` +
            `(${row[1].toFixed(2)} s CPU per GiB), then ${
              row[2].toFixed(2)
            } us CPU per 4 KiB write`,
        );
      }
    }
    const m = (how: "read" | "readBulk", i: number) => median(results[how].map((r) => r[i]));
    console.log(
      `\nmedians of ${o.rounds} round(s), ${o.sizeMiB} MiB copy, ${o.writes} writes:\n` +
        `  read     : cold read ${m("read", 0).toFixed(0)} MiB/s, ${
          m("read", 1).toFixed(2)
        } s/GiB; ` +
        `4 KiB write after it ${m("read", 2).toFixed(2)} us\n` +
        `  readBulk : cold read ${m("readBulk", 0).toFixed(0)} MiB/s, ${
          m("readBulk", 1).toFixed(2)
        } s/GiB; ` +
        `4 KiB write after it ${m("readBulk", 2).toFixed(2)} us (${
          (m("read", 2) / m("readBulk", 2)).toFixed(1)
        }x cheaper)`,
    );
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
