/**
 * Seeded 64 KiB blocks written and checked through a real NBD client (python libnbd), for the
 * e2e tests that fill a volume, move it around the cluster and check that nothing was lost.
 * Block `i` of seed `s` holds the byte `1 + (s + i) % 250`: never zero, so a block that was
 * not copied (a hole) never passes for written data.
 */

import { assertEquals } from "../_assert.ts";
import { PYTHON } from "./_cluster.ts";
import { run } from "./_harness.ts";

const FILL_PY = `
import sys, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
n, seed, fua_every = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    fua = nbd.CMD_FLAG_FUA if fua_every and i % fua_every == 0 else 0
    h.pwrite(bytes([1 + (seed + i) % 250]) * 65536, i * 65536, fua)
h.flush()
print("ok")
`;

const CHECK_PY = `
import sys, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
n, seed = int(sys.argv[2]), int(sys.argv[3])
print(sum(1 for i in range(n) if h.pread(65536, i * 65536) != bytes([1 + (seed + i) % 250]) * 65536))
`;

/** Writes `n` seeded blocks from offset 0 (FUA on every `fuaEvery`-th, 0 for none), then FLUSH. */
export async function fillBlocks(uri: string, n: number, seed: number, fuaEvery = 0) {
  const w = await run(PYTHON, ["-c", FILL_PY, uri, String(n), String(seed), String(fuaEvery)], {
    timeoutMs: 120_000,
  });
  assertEquals(w.stdout.trim(), "ok", `writing ${n} blocks through ${uri}: ${w.stderr}`);
}

/** Reads the `n` blocks `fillBlocks(uri, n, seed)` wrote; returns how many differ. */
export async function badBlocks(uri: string, n: number, seed: number): Promise<number> {
  const r = await run(PYTHON, ["-c", CHECK_PY, uri, String(n), String(seed)], {
    timeoutMs: 60_000,
  });
  const bad = Number(r.stdout.trim());
  if (r.code !== 0 || !Number.isInteger(bad)) {
    throw new Error(`checking ${n} blocks through ${uri}: ${r.stdout} ${r.stderr}`);
  }
  return bad;
}
