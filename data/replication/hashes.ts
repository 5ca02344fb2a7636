/**
 * Region hashes for Delta Sync: xxh128 (hash-wasm) over fixed-size regions of a copy, read
 * from the store. xxh128 runs at about 6.7 GB/s on 64 KiB and more here (PLATFORM.md,
 * "Hashing"): comparing hashes of two copies costs little more than reading them, and a 16-byte
 * hash per region is what crosses the network instead of the region.
 * @module
 */

import { createXXHash128, type IHasher } from "hash-wasm";
import { type BlockStore, readBulk } from "../store/mod.ts";
import { HASH_BYTES } from "./wire.ts";

let hasher: Promise<IHasher> | undefined;

/** One hasher per thread, reused (creating one costs about 44 us). */
function theHasher(): Promise<IHasher> {
  hasher ??= createXXHash128();
  return hasher;
}

/** Largest read while hashing: regions are hashed in pieces of this. */
const PIECE = 1024 * 1024;
/**
 * The one read buffer of this thread for hashing (allocated at the first use, not per copy:
 * 1 MiB per copy was about 0.5 MiB of RSS per copy, docs/BENCHMARKS.md). Sharing it is safe
 * for the reason sharing the hasher is: after its first await, a hashRegions() call runs
 * through without yielding (reads and hashing are synchronous), so two calls never use it at
 * once.
 */
let scratch: Uint8Array | undefined;

/**
 * The hashes of regions [first, first + count) of `regionBytes` each, concatenated (16 bytes
 * each). The last region of a copy may be shorter: it is hashed as far as the copy goes, and
 * a region wholly past the end hashes as empty.
 */
export async function hashRegions(
  store: Pick<BlockStore, "size" | "read" | "readBulk">,
  first: number,
  count: number,
  regionBytes: number,
): Promise<Uint8Array> {
  if (!Number.isInteger(regionBytes) || regionBytes <= 0 || regionBytes > 64 * 1024 * 1024) {
    throw new RangeError(`region size must be 1 byte to 64 MiB, got ${regionBytes}`);
  }
  const h = await theHasher();
  const out = new Uint8Array(count * HASH_BYTES);
  const want = Math.min(PIECE, regionBytes);
  scratch ??= new Uint8Array(PIECE);
  const buf = scratch.subarray(0, want);
  for (let i = 0; i < count; i++) {
    const start = (first + i) * regionBytes;
    const end = Math.min(start + regionBytes, store.size);
    h.init();
    for (let at = start; at < end; at += buf.length) {
      const n = Math.min(buf.length, end - at);
      const piece = n === buf.length ? buf : buf.subarray(0, n);
      readBulk(store, piece, at);
      h.update(piece);
    }
    out.set(h.digest("binary"), i * HASH_BYTES);
  }
  return out;
}

/** The indexes of the regions whose hashes differ between two lists of equal length. */
export function differingRegions(a: Uint8Array, b: Uint8Array, first = 0): number[] {
  const out: number[] = [];
  const n = Math.min(a.length, b.length) / HASH_BYTES;
  for (let i = 0; i < n; i++) {
    const at = i * HASH_BYTES;
    for (let k = 0; k < HASH_BYTES; k++) {
      if (a[at + k] !== b[at + k]) {
        out.push(first + i);
        break;
      }
    }
  }
  return out;
}
