/** PayloadPool: the reused buffers of forwarded WRITE payloads (data/nbd/_forwarded.ts). */
import { assert, assertEquals } from "../../_assert.ts";
import { PayloadPool } from "../../../data/net/mod.ts";

Deno.test("PayloadPool: a buffer given back is handed out again, sized to the request", () => {
  const pool = new PayloadPool(1024 * 1024);
  const a = pool.take(4096);
  assertEquals(a.length, 4096);
  a.fill(7);
  pool.give(a);
  assertEquals(pool.spareBytes, 4096);
  const b = pool.take(100);
  assert(b.buffer === a.buffer, "the same buffer again");
  assertEquals(b.length, 100);
  assertEquals(pool.spareBytes, 0);
});

Deno.test("PayloadPool: sizes go by powers of two from 4 KiB", () => {
  const pool = new PayloadPool(8 * 1024 * 1024);
  assertEquals(pool.take(1).buffer.byteLength, 4096);
  assertEquals(pool.take(4097).buffer.byteLength, 8192);
  assertEquals(pool.take(1024 * 1024).buffer.byteLength, 1024 * 1024);
  const big = pool.take(1024 * 1024 + 1);
  assertEquals(big.buffer.byteLength, 2 * 1024 * 1024);
  pool.give(big);
  // A smaller request does not take a larger class's buffer.
  assert(pool.take(1024 * 1024).buffer !== big.buffer);
  assert(pool.take(2 * 1024 * 1024).buffer === big.buffer);
});

Deno.test("PayloadPool: keeps at most its bound, and ignores buffers it did not hand out", () => {
  const pool = new PayloadPool(64 * 1024);
  const taken = Array.from({ length: 20 }, () => pool.take(4096));
  for (const t of taken) pool.give(t);
  assertEquals(pool.spareBytes, 64 * 1024);
  // Larger than a quarter of the bound: exactly the size asked for, and not kept.
  const large = pool.take(20 * 1024);
  assertEquals(large.buffer.byteLength, 20 * 1024);
  pool.give(large);
  assertEquals(pool.spareBytes, 64 * 1024);
  const fresh = new PayloadPool(64 * 1024);
  fresh.give(new Uint8Array(new ArrayBuffer(8192), 4096, 4096)); // a view inside another buffer
  fresh.give(new Uint8Array(5000)); // not a pool size
  assertEquals(fresh.spareBytes, 0);
  assertEquals(fresh.take(4096).buffer.byteLength, 4096);
});
