import { checkLabels, checkVolumeName, checkVolumeSize } from "../../../control/volumes/rules.ts";
import { InvalidArgumentError } from "../../../mod/errors.ts";
import { assert, assertEquals, assertThrows } from "../../_assert.ts";

Deno.test("checkVolumeName() says a name that is not a string is the wrong type", () => {
  for (const [name, got] of [[12, "number"], [null, "null"], [["db1"], "array"]] as const) {
    const e = assertThrows(() => checkVolumeName(name), InvalidArgumentError);
    assertEquals(e.message, `invalid volume name: expected a string, got ${got}`);
    assertEquals(e.details?.field, "name");
  }
  assertEquals(checkVolumeName("db1"), "db1");
});

Deno.test("checkVolumeName() does not echo a huge name whole", () => {
  const e = assertThrows(() => checkVolumeName("a".repeat(60_000)), InvalidArgumentError);
  assertEquals(
    e.message,
    `invalid volume name "${"a".repeat(64)}"... (60000 characters): use 1-63 characters of ` +
      'a-z, 0-9, ".", "_", "-", starting with a letter or digit',
  );
  const short = assertThrows(() => checkVolumeName("Bad!"), InvalidArgumentError);
  assertEquals(short.message.startsWith('invalid volume name "Bad!": use 1-63'), true);
});

Deno.test("checkVolumeSize() calls a huge whole number too large, not a fraction", () => {
  for (
    const [size, message] of [
      [1e300, "invalid size 1e+300: must be between 1 MiB and 1 PiB"],
      [2 ** 53, "invalid size 9007199254740992: must be between 1 MiB and 1 PiB"],
      [1.5, "invalid size 1.5: not a whole number of bytes"],
    ] as const
  ) {
    const e = assertThrows(() => checkVolumeSize(size), InvalidArgumentError);
    assertEquals(e.message, message);
  }
  assertEquals(checkVolumeSize(2 ** 30), 2 ** 30);
});

Deno.test("rule messages never echo a bidi override or line separator raw: the key is shown escaped", () => {
  const e = assertThrows(() => checkLabels({ "k\u202eevil": "x" }), InvalidArgumentError);
  assert(e.message.startsWith('invalid label key "k\\u202eevil"'), e.message);
  const v = assertThrows(() => checkLabels({ k: "a\u2028b" }), InvalidArgumentError);
  assert(!v.message.includes("\u2028"), v.message);
});
