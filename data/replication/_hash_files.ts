/**
 * The files beside a copy that hash_state.ts keeps: `<copy>.hashes` (a 64-byte header, then a
 * 16-byte hash per region) and `<copy>.al` (the activity log, a byte per region).
 * @module
 */

import { REGION_BYTES } from "./regions.ts";
import { HASH_BYTES } from "./wire.ts";

/** Bytes of the hash file's header. */
export const HEADER = 64;
const MAGIC = "ballast-hashes\0\0";
const VERSION = 1;

/** The header of a hash file for `regions` regions. */
export function header(regions: number): Uint8Array {
  const b = new Uint8Array(HEADER);
  b.set(new TextEncoder().encode(MAGIC), 0);
  const v = new DataView(b.buffer);
  v.setUint32(16, VERSION);
  v.setUint32(20, REGION_BYTES);
  v.setUint32(24, 1); // xxh128
  v.setBigUint64(32, BigInt(regions));
  return b;
}

/** The region count a header states, or -1 if it is not a header this code writes. */
export function parseHeader(b: Uint8Array): number {
  const want = header(0);
  for (let i = 0; i < 32; i++) if (b[i] !== want[i]) return -1;
  return Number(new DataView(b.buffer, b.byteOffset).getBigUint64(32));
}

export async function readFull(f: Deno.FsFile, into: Uint8Array): Promise<boolean> {
  let done = 0;
  while (done < into.length) {
    const n = await f.read(into.subarray(done));
    if (n === null) return false;
    done += n;
  }
  return true;
}

/**
 * Writes new files for `regions` regions: the activity log (all marked when `dirty`) first,
 * durably, then the hash list (zeros), then the header that makes it valid.
 */
export async function createFiles(path: string, regions: number, dirty: boolean): Promise<void> {
  {
    using al = await Deno.open(`${path}.al`, {
      write: true,
      create: true,
      truncate: true,
      mode: 0o600,
    });
    if (dirty) {
      const ones = new Uint8Array(Math.min(regions, 1 << 20)).fill(1);
      for (let at = 0; at < regions; at += ones.length) {
        let done = 0;
        const piece = ones.subarray(0, Math.min(ones.length, regions - at));
        while (done < piece.length) done += await al.write(piece.subarray(done));
      }
    } else {
      await al.truncate(regions);
    }
    await al.syncData();
  }
  using h = await Deno.open(`${path}.hashes`, {
    write: true,
    create: true,
    truncate: true,
    mode: 0o600,
  });
  await h.truncate(HEADER + regions * HASH_BYTES);
  const head = header(regions);
  let done = 0;
  while (done < head.length) done += await h.write(head.subarray(done));
  await h.syncData();
}
