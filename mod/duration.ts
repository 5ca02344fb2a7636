/**
 * Durations, one set of rules for every flag, environment variable, config file value and
 * API field that takes one (`--cert-ttl`, `ca issue --ttl`, `ca rotate --overlap`,
 * `cluster join-token --ttl`, `serve --node-lease-ttl`, the API's `ttl` and `overlap`): whole
 * seconds, or a number with a unit that comes to whole seconds: "90s", "15m", "1.5h", "30d".
 * Client-side waits (`volume get --watch
 * --interval/--timeout`) take the same units plus fractions and milliseconds (parseDurationMs):
 * "500ms", "1.5s", "2s", "1m".
 * @module
 */

import { InvalidArgumentError, typeName } from "./errors.ts";

const UNITS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600, d: 86_400 };

/** Longest duration accepted: 3650 days (a CA's own lifetime caps its certificates anyway). */
export const MAX_DURATION_SECONDS = 3650 * 86_400;

/**
 * Parses a duration into whole seconds, from 1 second to `max` (3650 days): a number of seconds, or a
 * string of a number with an optional unit s, m, h or d ("30d", "1.5h", "15m", "90s", "3600";
 * blanks around the number and the unit are ignored) that comes to whole seconds.
 *
 * `what` names the value in errors: a flag ("--cert-ttl"), an environment variable or a body
 * field ("ttl"); `field` is the error's `details.field` (default: `what` without dashes).
 * @throws InvalidArgumentError naming `what` and the value.
 */
export function parseDuration(
  value: unknown,
  what: string,
  field: string = what.replace(/^--/, ""),
  max: { seconds: number; said: string } = { seconds: MAX_DURATION_SECONDS, said: "3650 days" },
): number {
  let seconds: number;
  if (typeof value === "number") seconds = value;
  else if (typeof value === "string") {
    const m = /^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*$/.exec(value);
    if (!m) {
      throw new InvalidArgumentError(
        `invalid ${what} ${
          JSON.stringify(value)
        }: expected seconds or a duration such as 30d, 1.5h, 15m or 90s`,
        { field },
      );
    }
    seconds = Number(m[1]) * UNITS[m[2] || "s"];
    // A fraction that comes to whole seconds ("1.5h", "0.5m") is as good as its whole form.
    if (Math.abs(seconds - Math.round(seconds)) < 1e-6) seconds = Math.round(seconds);
    else {
      throw new InvalidArgumentError(
        `invalid ${what} ${JSON.stringify(value)}: ${seconds} s is not a whole number of ` +
          "seconds",
        { field },
      );
    }
  } else throw notADuration(value, what, field);
  if (!Number.isInteger(seconds) || seconds <= 0 || seconds > max.seconds) {
    throw new InvalidArgumentError(
      `invalid ${what} ${JSON.stringify(value)}: expected 1 second to ${max.said}`,
      { field },
    );
  }
  return seconds;
}

const MS_UNITS: Readonly<Record<string, number>> = { ms: 1, ...scaled(UNITS, 1000) };

function scaled(u: Readonly<Record<string, number>>, by: number): Record<string, number> {
  return Object.fromEntries(Object.entries(u).map(([k, v]) => [k, v * by]));
}

/**
 * Parses a duration into whole milliseconds, from `minMs` (default 1) to 3650 days: a number of
 * seconds, or a string of a number (fractions allowed) with an optional unit ms, s, m, h or d
 * ("500ms", "1.5s", "2s", "1m", "2" = 2 s; blanks around the number and the unit are ignored).
 * Zero, negative values and anything else are refused.
 * @throws InvalidArgumentError naming `what` and the value.
 */
export function parseDurationMs(
  value: unknown,
  what: string,
  options: { field?: string; minMs?: number } = {},
): number {
  const field = options.field ?? what.replace(/^--/, "");
  const minMs = options.minMs ?? 1;
  const shown = JSON.stringify(value);
  let ms: number;
  if (typeof value === "number") ms = value * 1000;
  else if (typeof value === "string") {
    const m = /^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|[smhd]?)\s*$/.exec(value);
    if (!m) {
      const negative = /^\s*-/.test(value);
      throw new InvalidArgumentError(
        `invalid ${what} ${shown}: ` +
          (negative
            ? "a duration cannot be negative"
            : "expected a duration such as 500ms, 1.5s, 2s or 1m (a bare number is seconds)"),
        { field },
      );
    }
    ms = Number(m[1]) * MS_UNITS[m[2] || "s"];
  } else throw notADuration(value, what, field);
  ms = Math.round(ms);
  if (!Number.isFinite(ms) || ms < minMs || ms > MAX_DURATION_SECONDS * 1000) {
    const least = minMs >= 1000 && minMs % 1000 === 0 ? `${minMs / 1000} s` : `${minMs} ms`;
    throw new InvalidArgumentError(
      `invalid ${what} ${shown}: expected ${least} to 3650 days` +
        (ms <= 0 ? ` (got ${ms < 0 ? "a negative duration" : "zero"})` : ""),
      { field },
    );
  }
  return ms;
}

/** A value of a type no duration has (neither number nor string). */
function notADuration(value: unknown, what: string, field: string): InvalidArgumentError {
  return new InvalidArgumentError(
    `invalid ${what}: expected seconds or a duration string, got ${typeName(value)}`,
    { field },
  );
}
