/**
 * Child process of hash_state_test.ts: writes to a copy through its hash state as a replica
 * would (enter, write, leave), moving its hot regions along so that the hash keeper makes
 * others clean, until it is killed. Prints "writing" once it has started.
 *
 *     deno run -A churn.ts <copy path> <seed>
 */

import { silentLogger } from "../../../../control/common/mod.ts";
import { HashState } from "../../../../data/replication/hash_state.ts";
import { REGION_BYTES } from "../../../../data/replication/regions.ts";
import { FileBlockStore } from "../../../../data/store/mod.ts";

const [path, seedText] = Deno.args;
let seed = Number(seedText) >>> 0 || 1;
const rand = () => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 2 ** 32;
};
const hs = await HashState.open(path, silentLogger());
const store = FileBlockStore.open(path);
const block = new Uint8Array(4096);
let started = false;
for (let i = 0;; i++) {
  // The hot set: 4 regions, moving by one every 50 writes.
  const r = (Math.floor(i / 50) + Math.floor(rand() * 4)) % hs.regions;
  const off = r * REGION_BYTES + Math.floor(rand() * (REGION_BYTES / 4096)) * 4096;
  crypto.getRandomValues(block);
  const entering = hs.writer.enter(off, block.length);
  if (entering) await entering;
  store.write(block, off);
  hs.writer.leave(off, block.length);
  if (i % 25 === 0) await hs.keep();
  if (!started) {
    started = true;
    // deno-lint-ignore no-console
    console.log("writing");
  }
}
