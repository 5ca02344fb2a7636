/**
 * Logging: pino JSON lines by default, or a compact human format with
 * `--log-format pretty`. Library code never uses console.*; it receives a pino
 * logger and makes child loggers carrying context (node, volume, conn, req).
 *
 * Errors are logged as `{ err }`: pino's err serializer keeps the type, the message with
 * its causes, the stack and fields such as `code`. An expected, client-caused condition
 * may be logged as `reason: errorMessage(err)` instead (mod/errors.ts).
 * @module
 */

import pino from "pino";
import type { Logger } from "pino";

export type { Logger };
export type LogFormat = "json" | "pretty";
export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
export type LogLevel = typeof LOG_LEVELS[number];

const STANDARD_FIELDS = new Set(["level", "lvl", "time", "pid", "hostname", "msg"]);

/** An error as pino's err serializer wrote it, or undefined for anything else. */
function serializedError(v: unknown): { message: string; stack?: string } | undefined {
  if (typeof v !== "object" || v === null) return undefined;
  const { message, stack } = v as { message?: unknown; stack?: unknown };
  if (typeof message !== "string") return undefined;
  return { message, ...(typeof stack === "string" ? { stack } : {}) };
}

/** A pino destination that rewrites each JSON line as "time LEVEL msg key=value ...". */
function prettyDestination(write: (line: string) => void): { write(s: string): void } {
  return {
    write(s: string) {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(s);
      } catch {
        write(s);
        return;
      }
      const time = String(rec.time ?? "").slice(11, 23);
      const level = String(rec.level ?? "").toUpperCase().padEnd(5);
      const err = serializedError(rec.err);
      const ctx = Object.entries(rec)
        .filter(([k]) => !STANDARD_FIELDS.has(k))
        .map(([k, v]) =>
          k === "err" && err
            ? `err=${JSON.stringify(err.message)}`
            : `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`
        )
        .join(" ");
      // The stack (pino's err serializer keeps it) goes below the line, indented.
      const stack = err?.stack?.split("\n").slice(1).map((l) => `    ${l.trim()}`).join("\n");
      write(
        `${time} ${level} ${rec.msg ?? ""}${ctx ? " " + ctx : ""}\n${stack ? stack + "\n" : ""}`,
      );
    },
  };
}

/** Writes synchronously to stderr so nothing is lost on exit or crash. */
function stderrWrite(line: string): void {
  const bytes = new TextEncoder().encode(line);
  let off = 0;
  while (off < bytes.length) off += Deno.stderr.writeSync(bytes.subarray(off));
}

/** Creates the root logger. Logs go to stderr; stdout is for command output. */
export function createLogger(
  options: { level?: LogLevel; format?: LogFormat; base?: Record<string, unknown> } = {},
): Logger {
  const dest = options.format === "pretty"
    ? prettyDestination(stderrWrite)
    : { write: stderrWrite };
  return pino(
    {
      level: options.level ?? "info",
      base: options.base ?? {},
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label: string, number: number) => ({ level: label, lvl: number }) },
    },
    dest,
  );
}

/** A logger that discards everything (tests, embedded use). */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
