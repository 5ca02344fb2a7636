/**
 * MemoryBlockStore: the same block store contract as the file store, plus what is its
 * own: allocation in whole pages, and refusing use after close.
 * @module
 */

import { BlockStoreError, MEMORY_PAGE_BYTES, MemoryBlockStore } from "../../../data/store/mod.ts";
import { assertEquals, assertThrows } from "../../_assert.ts";
import { defineBlockStoreContract, pattern } from "./block_store_contract.ts";

defineBlockStoreContract("MemoryBlockStore", (size) => {
  const store = new MemoryBlockStore(size);
  return Promise.resolve({ store, cleanup: () => Promise.resolve(store.close()) });
});

const PAGE = MEMORY_PAGE_BYTES;

Deno.test("MemoryBlockStore allocates whole pages on write and frees them on trim", () => {
  const s = new MemoryBlockStore(8 * PAGE);
  assertEquals(s.allocatedBytes(), 0);
  s.write(pattern(10, 1), PAGE - 5); // straddles pages 0 and 1
  assertEquals(s.allocatedBytes(), 2 * PAGE);
  assertEquals(s.extents(0, 4 * PAGE).map((e) => [e.offset, e.length, e.hole]), [
    [0, 2 * PAGE, false],
    [2 * PAGE, 2 * PAGE, true],
  ]);
  s.trim(PAGE, PAGE); // a whole page goes; a partial one would only be cleared
  assertEquals(s.allocatedBytes(), PAGE);
  s.writeZeroes(4 * PAGE, PAGE, false); // NO_HOLE keeps the range allocated
  assertEquals(s.allocatedBytes(), 2 * PAGE);
});

Deno.test("MemoryBlockStore refuses use after close with EBADF and bad sizes with RangeError", () => {
  const s = new MemoryBlockStore(PAGE);
  s.close();
  const err = assertThrows(() => s.read(new Uint8Array(1), 0), BlockStoreError);
  assertEquals(err.errno, "EBADF");
  for (const bad of [-1, 1.5, 2 ** 53]) {
    assertThrows(() => new MemoryBlockStore(bad), RangeError);
  }
});
