/**
 * Durations, one set of rules for every flag, environment variable, config file value and
 * API field that takes one (`--cert-ttl`, `ca issue --ttl`, `ca rotate --overlap`,
 * `cluster join-token --ttl`, the API's `ttl` and `overlap`): whole seconds, or a whole
 * number with a unit: "90s", "15m", "12h", "30d".
 * @module
 */

import { InvalidArgumentError, typeName } from "./errors.ts";

const UNITS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** Longest duration accepted: 3650 days (a CA's own lifetime caps its certificates anyway). */
export const MAX_DURATION_SECONDS = 3650 * 86_400;

/**
 * Parses a duration into whole seconds, from 1 second to 3650 days: a number of seconds, or a
 * string of digits with an optional unit s, m, h or d ("30d", "12h", "15m", "90s", "3600";
 * blanks around the number and the unit are ignored).
 *
 * `what` names the value in errors: a flag ("--cert-ttl"), an environment variable or a body
 * field ("ttl"); `field` is the error's `details.field` (default: `what` without dashes).
 * @throws InvalidArgumentError naming `what` and the value.
 */
export function parseDuration(
  value: unknown,
  what: string,
  field: string = what.replace(/^--/, ""),
): number {
  let seconds: number;
  if (typeof value === "number") seconds = value;
  else if (typeof value === "string") {
    const m = /^\s*(\d+)\s*([smhd]?)\s*$/.exec(value);
    if (!m) {
      throw new InvalidArgumentError(
        `invalid ${what} ${
          JSON.stringify(value)
        }: expected seconds or a duration such as 30d, 12h, 15m or 90s`,
        { field },
      );
    }
    seconds = Number(m[1]) * UNITS[m[2] || "s"];
  } else {
    throw new InvalidArgumentError(
      `invalid ${what}: expected seconds or a duration string, got ${typeName(value)}`,
      { field },
    );
  }
  if (!Number.isInteger(seconds) || seconds <= 0 || seconds > MAX_DURATION_SECONDS) {
    throw new InvalidArgumentError(
      `invalid ${what} ${JSON.stringify(value)}: expected 1 second to 3650 days`,
      { field },
    );
  }
  return seconds;
}
