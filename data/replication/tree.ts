/**
 * The comparison tree over a copy's region hashes (hash_state.ts): level 0 is the region
 * hashes, each node above hashes the concatenated hashes of its FANOUT children (fewer for the
 * last), and the top level is a single node, the root. Two copies are compared from the roots
 * down (resync.ts): equal copies cost one comparison, k differing regions about
 * k * FANOUT * log_FANOUT(n) hashes.
 * @module
 */

import { createXXHash128, type IHasher } from "hash-wasm";
import { HASH_BYTES } from "./wire.ts";

/** Children per node of the comparison tree. */
export const FANOUT = 64;

let folder: Promise<IHasher> | undefined;

/** Levels of a tree over `leaves` leaves. */
export function treeLevels(leaves: number): number {
  let levels = 1;
  for (let w = leaves; w > 1; w = Math.ceil(w / FANOUT)) levels++;
  return levels;
}

/** Nodes at `level` of a tree over `leaves` leaves. */
export function nodesAt(leaves: number, level: number): number {
  let w = leaves;
  for (let l = 0; l < level; l++) w = Math.ceil(w / FANOUT);
  return w;
}

/** One level up: each node hashes its (up to FANOUT) children's hashes. */
export async function foldRow(row: Uint8Array): Promise<Uint8Array> {
  const h = await (folder ??= createXXHash128());
  const n = row.length / HASH_BYTES;
  const up = Math.ceil(n / FANOUT);
  const out = new Uint8Array(up * HASH_BYTES);
  for (let i = 0; i < up; i++) {
    h.init();
    h.update(row.subarray(i * FANOUT * HASH_BYTES, Math.min(n, (i + 1) * FANOUT) * HASH_BYTES));
    out.set(h.digest("binary"), i * HASH_BYTES);
  }
  return out;
}
