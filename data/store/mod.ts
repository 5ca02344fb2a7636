/**
 * Block stores: the byte-addressed backing of a volume (one interface with capability
 * queries, block_store.ts), a sparse file (file_store.ts) and memory (memory_store.ts).
 * @module
 */

export { type BlockStore, BlockStoreError, type Extent, readBulk } from "./block_store.ts";
export { FileBlockStore } from "./file_store.ts";
export { MEMORY_PAGE_BYTES, MemoryBlockStore } from "./memory_store.ts";
export { filesystemSpace } from "./_libc.ts";
