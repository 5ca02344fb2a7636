/**
 * Human-readable sizes, with kubectl's units (Kubernetes resource quantities):
 *
 * - binary, powers of 1024: `Ki Mi Gi Ti Pi`, also spelled `KiB MiB GiB TiB PiB`, in any case
 *   (`10GiB`, `10Gi`, `10gib`): the `i` leaves no doubt;
 * - decimal (SI), powers of 1000: `k M G T P`, also `kB MB GB TB PB`, with exactly that case
 *   (`1G` = 10^9 bytes). Lower-case `m g t p` are refused (kubectl reads `m` as milli, other
 *   tools read `g` as 2^30), and so are `K` and `KB`: qemu-img, dd and truncate read `K` as
 *   1024, kubectl refuses it;
 * - none or `B`: bytes.
 *
 * Fractions are allowed when the result is a whole number of bytes (`1.5GiB`, `0.5KiB`).
 * @module
 */

import { InvalidArgumentError } from "./errors.ts";

const UNITS: ReadonlyArray<readonly [string, number]> = [
  ["PiB", 2 ** 50],
  ["TiB", 2 ** 40],
  ["GiB", 2 ** 30],
  ["MiB", 2 ** 20],
  ["KiB", 2 ** 10],
];

/** Binary units, looked up in lower case. */
const BINARY: Readonly<Record<string, bigint>> = {
  ki: 1n << 10n,
  mi: 1n << 20n,
  gi: 1n << 30n,
  ti: 1n << 40n,
  pi: 1n << 50n,
};

/** Decimal (SI) units, case-sensitive. */
const DECIMAL: Readonly<Record<string, bigint>> = {
  k: 10n ** 3n,
  M: 10n ** 6n,
  G: 10n ** 9n,
  T: 10n ** 12n,
  P: 10n ** 15n,
};

/** The units, for help texts and error messages. */
export const SIZE_UNITS_HELP = "binary KiB MiB GiB TiB PiB (or Ki Mi Gi Ti Pi, any case) = " +
  "powers of 1024; SI k M G T P (or kB MB GB TB PB) = powers of 1000, as kubectl";

/** The multiplier of a unit, or undefined if it is not one. */
function multiplier(unit: string): bigint | undefined {
  if (unit === "" || unit === "B" || unit === "b") return 1n;
  const lower = unit.toLowerCase();
  const bin = lower.endsWith("ib") ? lower.slice(0, -1) : lower;
  if (Object.hasOwn(BINARY, bin)) return BINARY[bin];
  const dec = unit.length === 2 && unit.endsWith("B") ? unit[0] : unit;
  return Object.hasOwn(DECIMAL, dec) ? DECIMAL[dec] : undefined;
}

function unknownUnit(what: string, text: string, unit: string): InvalidArgumentError {
  const upper = unit.replace(/b$/i, "").toUpperCase();
  const si = upper === "K" ? "k" : upper;
  const hint = /^[KMGTP]$/.test(upper)
    ? `: write ${si} or ${si}B for 10^${
      { K: 3, M: 6, G: 9, T: 12, P: 15 }[upper]
    } bytes, ${upper}i or ${upper}iB for 2^${{ K: 10, M: 20, G: 30, T: 40, P: 50 }[upper]}`
    : `; units: ${SIZE_UNITS_HELP}`;
  return new InvalidArgumentError(`invalid ${what} "${text}": unknown unit "${unit}"${hint}`);
}

/**
 * Parses a size such as "10GiB" or "1G" into bytes (see the module doc for the units);
 * `what` names it in errors ("--size"); a size above `max` is refused as too large.
 * @throws InvalidArgumentError naming the bad value.
 */
export function parseSize(
  text: string,
  what = "size",
  max: number = Number.MAX_SAFE_INTEGER,
): number {
  if (/^\s*-/.test(text)) {
    throw new InvalidArgumentError(`invalid ${what} "${text}": a size cannot be negative`);
  }
  const m = /^\s*(\d+)(?:\.(\d+))?\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!m) {
    throw new InvalidArgumentError(
      `invalid ${what} "${text}": expected a number with an optional unit such as 10GiB or 10G`,
    );
  }
  const [, whole, frac = "", unit] = m;
  const mult = multiplier(unit);
  if (mult === undefined) throw unknownUnit(what, text, unit);
  // Exact arithmetic: 1.1G is 1100000000 bytes, not 1100000000.0000002.
  const scale = 10n ** BigInt(frac.length);
  const scaled = (BigInt(whole) * scale + BigInt(frac || "0")) * mult;
  if (scaled % scale !== 0n) {
    throw new InvalidArgumentError(`invalid ${what} "${text}": not a whole number of bytes`);
  }
  const bytes = scaled / scale;
  if (bytes > BigInt(max)) {
    const most = max % 1024 === 0 ? formatSize(max) : `${max} bytes`;
    throw new InvalidArgumentError(`invalid ${what} "${text}": too large, the most is ${most}`);
  }
  return Number(bytes);
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
