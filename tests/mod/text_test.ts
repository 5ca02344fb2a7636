import { quoted, UNPRINTABLE } from "../../mod/text.ts";
import { assert, assertEquals } from "../_assert.ts";

Deno.test("quoted() escapes every control, format and separator character, astral ones too; UNPRINTABLE finds them", () => {
  assertEquals(quoted("a\u202eb\u2028c\u200b\u0085\0"), '"a\\u202eb\\u2028c\\u200b\\u0085\\u0000"');
  assertEquals(quoted("tag\u{e0001}"), '"tag\\u{e0001}"');
  assertEquals(quoted('plain "q" \\'), '"plain \\"q\\" \\\\"');
  assertEquals(quoted(undefined), "undefined");
  for (const c of ["\u202e", "\u2066", "\u00ad", "\u{e0001}", "\x7f", "\n"]) {
    assert(UNPRINTABLE.test(`x${c}y`), JSON.stringify(c));
  }
  assert(!UNPRINTABLE.test("zone=a, rack r1, é, 東京"));
});
