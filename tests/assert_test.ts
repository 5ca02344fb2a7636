/** The test helpers themselves: equality must not hide a difference a caller would see. */
import { assertEquals, assertNotEquals, assertThrows, equal } from "./_assert.ts";

Deno.test("equal() tells a key holding undefined from an absent key", () => {
  assertEquals(equal({ k: undefined }, {}), false);
  assertEquals(equal({}, { k: undefined }), false);
  assertEquals(equal({ k: undefined }, { k: undefined }), true);
  assertNotEquals({ a: 1, k: undefined }, { a: 1 });
  assertThrows(() => assertEquals({ k: undefined }, {}), Error, "k: unexpected");
});

Deno.test("equal() compares structure: NaN, typed arrays, Maps, Sets, Dates, null prototypes", () => {
  assertEquals(equal(NaN, NaN), true);
  assertEquals(equal(new Uint8Array([1, 2]), new Uint8Array([1, 2])), true);
  assertEquals(equal(new Uint8Array([1, 2]), new Uint8Array([1, 3])), false);
  assertEquals(equal(new Map([[1, { a: 1 }]]), new Map([[1, { a: 1 }]])), true);
  assertEquals(equal(new Set([1, 2]), new Set([2, 1])), true);
  assertEquals(equal(new Date(5), new Date(5)), true);
  assertEquals(equal(Object.assign(Object.create(null), { a: 1 }), { a: 1 }), true);
  assertEquals(equal([1, [2]], [1, [3]]), false);
});
