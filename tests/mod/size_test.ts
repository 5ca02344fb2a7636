import { InvalidArgumentError } from "../../mod/errors.ts";
import { formatSize, parseSize } from "../../mod/size.ts";
import { assertEquals, assertThrows } from "../_assert.ts";

Deno.test("parseSize() reads binary units as powers of 1024 and SI units as powers of 1000 (kubectl)", () => {
  const cases: Array<[string, number]> = [
    ["0", 0],
    ["512", 512],
    ["4096b", 4096],
    ["4096B", 4096],
    ["1KiB", 1024],
    ["1Ki", 1024],
    ["1kib", 1024],
    ["10GiB", 10 * 2 ** 30],
    ["10Gi", 10 * 2 ** 30],
    ["10 GiB", 10 * 2 ** 30],
    ["1gib", 2 ** 30],
    ["1GIB", 2 ** 30],
    [" 2 mib ", 2 * 2 ** 20],
    ["1.5TiB", 1.5 * 2 ** 40],
    ["0.5KiB", 512],
    ["1PiB", 2 ** 50],
    ["7PiB", 7 * 2 ** 50],
    ["1k", 1000],
    ["1kB", 1000],
    ["1M", 10 ** 6],
    ["1MB", 10 ** 6],
    ["1G", 10 ** 9],
    ["1GB", 10 ** 9],
    ["1.1G", 1_100_000_000],
    ["2T", 2 * 10 ** 12],
    ["2TB", 2 * 10 ** 12],
    ["1P", 10 ** 15],
  ];
  for (const [text, bytes] of cases) assertEquals(parseSize(text), bytes, text);
});

Deno.test("parseSize() rejects malformed, fractional-byte and unsafe sizes, naming the value", () => {
  for (
    const bad of [
      "",
      "GiB",
      "-1GiB",
      "1e3",
      "1K",
      "2048KB",
      "1,5GiB",
      "10XB",
      "1 2",
      "0.1",
      "1.0001KiB",
      "8PiB",
    ]
  ) {
    assertThrows(() => parseSize(bad), InvalidArgumentError, `"${bad}"`, bad);
  }
});

Deno.test("parseSize() says a size is negative or too large instead of malformed", () => {
  assertThrows(
    () => parseSize("-1GiB"),
    InvalidArgumentError,
    '"-1GiB": a size cannot be negative',
  );
  assertThrows(() => parseSize("99999TiB"), InvalidArgumentError, '"99999TiB": too large');
  assertThrows(
    () => parseSize("2PiB", "--size", 2 ** 50),
    InvalidArgumentError,
    "the most is 1 PiB",
  );
  assertEquals(parseSize("1PiB", "--size", 2 ** 50), 2 ** 50);
});

Deno.test("parseSize() refuses lower-case SI units as ambiguous, saying what to write", () => {
  for (
    const [bad, hint] of [["1g", "G or GB"], ["1gb", "Gi or GiB"], ["1m", "M or MB"], [
      "5tb",
      "2^40",
    ], ["1Gb", "10^9"]]
  ) {
    assertThrows(() => parseSize(bad), InvalidArgumentError, hint, bad);
  }
  assertThrows(() => parseSize("1kb"), InvalidArgumentError, "write k or kB for 10^3", "1kb");
  assertThrows(() => parseSize("1g", "--size"), InvalidArgumentError, 'invalid --size "1g"');
});

Deno.test("formatSize() picks the largest unit keeping the number >= 1", () => {
  const cases: Array<[number, string]> = [
    [0, "0 B"],
    [1023, "1023 B"],
    [1024, "1 KiB"],
    [1536, "1.5 KiB"],
    [2 ** 20 - 1, "1024 KiB"],
    [10 * 2 ** 30, "10 GiB"],
    [1.25 * 2 ** 30, "1.25 GiB"],
    [12.5 * 2 ** 30, "12.5 GiB"],
    [2 ** 40, "1 TiB"],
    [2 ** 50, "1 PiB"],
    [2 ** 52, "4 PiB"],
  ];
  for (const [bytes, text] of cases) assertEquals(formatSize(bytes), text, String(bytes));
});

Deno.test("formatSize() output parses back to within rounding", () => {
  for (const bytes of [512, 4096, 3 * 2 ** 20, 10 * 2 ** 30, 7 * 2 ** 40]) {
    assertEquals(parseSize(formatSize(bytes).replace(" ", "")), bytes);
  }
});

Deno.test("parseSize() refuses K and KB (1000 here, 1024 to qemu-img and dd), saying what to write", () => {
  for (const bad of ["2048K", "2048KB", "1Kb"]) {
    assertThrows(
      () => parseSize(bad),
      InvalidArgumentError,
      "write k or kB for 10^3 bytes, Ki or KiB for 2^10",
    );
  }
  assertEquals(parseSize("2048k"), 2_048_000);
  assertEquals(parseSize("2048KiB"), 2048 * 1024);
});
