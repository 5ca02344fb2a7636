/**
 * Human-readable sizes: "10GiB", "512MiB", "1.5TiB", "4096" (bytes).
 * Binary units only (KiB = 1024); "K", "KB", "k" are accepted as KiB since
 * block-storage operators mean powers of two.
 * @module
 */

import { InvalidArgumentError } from "./errors.ts";

const UNITS: ReadonlyArray<readonly [string, number]> = [
  ["TiB", 2 ** 40],
  ["GiB", 2 ** 30],
  ["MiB", 2 ** 20],
  ["KiB", 2 ** 10],
];

const MULTIPLIER: Readonly<Record<string, number>> = {
  "": 1,
  b: 1,
  k: 2 ** 10,
  kb: 2 ** 10,
  kib: 2 ** 10,
  m: 2 ** 20,
  mb: 2 ** 20,
  mib: 2 ** 20,
  g: 2 ** 30,
  gb: 2 ** 30,
  gib: 2 ** 30,
  t: 2 ** 40,
  tb: 2 ** 40,
  tib: 2 ** 40,
  p: 2 ** 50,
  pb: 2 ** 50,
  pib: 2 ** 50,
};

/**
 * Parses a size such as "10GiB" into bytes.
 * @throws InvalidArgumentError naming the bad value.
 */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!m) {
    throw new InvalidArgumentError(
      `invalid size "${text}": expected a number with an optional unit (KiB, MiB, GiB, TiB)`,
    );
  }
  const mult = MULTIPLIER[m[2].toLowerCase()];
  if (mult === undefined) {
    throw new InvalidArgumentError(
      `invalid size "${text}": unknown unit "${m[2]}" (use KiB, MiB, GiB or TiB)`,
    );
  }
  const bytes = Number(m[1]) * mult;
  if (!Number.isSafeInteger(bytes)) {
    throw new InvalidArgumentError(`invalid size "${text}": not a whole number of bytes`);
  }
  return bytes;
}

/** Formats bytes with the largest binary unit that keeps the number >= 1, e.g. "10 GiB". */
export function formatSize(bytes: number): string {
  for (const [unit, mult] of UNITS) {
    if (bytes >= mult) {
      const v = bytes / mult;
      const s = Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 2 : 1).replace(/\.?0+$/, "");
      return `${s} ${unit}`;
    }
  }
  return `${bytes} B`;
}
