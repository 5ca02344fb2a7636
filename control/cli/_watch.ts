/**
 * `ballast volume get NAME --watch`: polls the volume until every member is in sync. On a
 * terminal it redraws one frame in place (a progress bar per resyncing member); otherwise
 * it prints one line per change (one compact JSON document with `-o json`), so logs and
 * scripts read it. Exit codes: 0 healthy, 1 error (say, the volume is gone), 3 not healthy
 * within --timeout, 130 Ctrl-C.
 * @module
 */

import { BallastError, errorMessage } from "../../mod/errors.ts";
import type { Volume } from "../../mod/types.ts";
import { isHealthy, watchFrame, watchLine } from "./_members_view.ts";
import type { Io } from "./_output.ts";
import { abortableSleep } from "../common/mod.ts";

export const WATCH_EXIT = { healthy: 0, timeout: 3, interrupted: 130 } as const;

export interface WatchOptions {
  /** One read of the volume (GET /v1/volumes/{name}). */
  fetch: () => Promise<Volume>;
  io: Io;
  json: boolean;
  intervalMs: number;
  /** Give up (exit 3) when not healthy after this long. */
  timeoutMs?: number;
  now?: () => number;
  /** Waits `ms`, or less when `signal` aborts. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

/** Runs the watch; returns the exit code. Errors other than "unavailable" are thrown. */
export async function watchVolume(o: WatchOptions): Promise<number> {
  const now = o.now ?? Date.now;
  const sleep = o.sleep ?? abortableSleep;
  const stop = new AbortController();
  const off = o.io.onInterrupt?.(() => stop.abort()) ?? (() => {});
  const aborted = new Promise<"aborted">((r) =>
    stop.signal.addEventListener("abort", () => r("aborted"))
  );
  const term = o.json ? undefined : o.io.terminal?.();
  const started = now();
  let drawnLines = 0;
  let last = "";
  let lastWarning = "";
  try {
    while (!stop.signal.aborted) {
      const reading = o.fetch();
      reading.catch(() => {}); // an interrupted watch leaves it behind
      let v: Volume | undefined;
      try {
        const got = await Promise.race([reading, aborted]);
        if (got === "aborted") break;
        v = got;
      } catch (err) {
        if (!(err instanceof BallastError && err.code === "UNAVAILABLE")) throw err;
        const warning = `warning: ${errorMessage(err)}; still watching\n`;
        if (warning !== lastWarning && !term) o.io.err(warning);
        lastWarning = warning;
      }
      if (v) {
        lastWarning = "";
        if (term) {
          const frame = fit(watchFrame(v, now()), term.columns);
          const up = drawnLines > 0 ? `\x1b[${drawnLines}A\x1b[J` : "";
          o.io.out(up + frame);
          drawnLines = frame.split("\n").length - 1;
        } else {
          const line = o.json ? JSON.stringify(v) : watchLine(v, now());
          // A change is what counts, not the clock: compare without the timestamp.
          const key = o.json ? jsonChangeKey(v) : line.slice(line.indexOf(" "));
          if (key !== last) o.io.out(line + "\n");
          last = key;
        }
        if (isHealthy(v)) return WATCH_EXIT.healthy;
      }
      if (o.timeoutMs !== undefined && now() - started >= o.timeoutMs) {
        o.io.err(
          `error: volume not healthy within ${waitText(o.timeoutMs)} ` +
            `(every member in sync); giving up\n`,
        );
        return WATCH_EXIT.timeout;
      }
      await sleep(o.intervalMs, stop.signal);
    }
    return WATCH_EXIT.interrupted;
  } finally {
    off();
  }
}

/** A wait as given in ms, in words: "500 ms", "1.5 s", "90 s". */
function waitText(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${Math.round(ms / 100) / 10} s`;
}

/** Fields of a volume that move with the clock alone: left out when looking for a change. */
const CLOCK_FIELDS = new Set(["observedAt", "lagSeconds"]);

/** What a JSON watch compares between readings: the volume without its clock-driven fields. */
export function jsonChangeKey(v: Volume): string {
  return JSON.stringify(v, (k, x) => CLOCK_FIELDS.has(k) ? undefined : x);
}

/**
 * Cuts each line of `frame` to the terminal's width, so redrawing counts lines right (a
 * terminal that reports no width, say a bare pty, gets the lines whole).
 */
export function fit(frame: string, columns: number): string {
  if (!(columns > 0)) return frame;
  const width = Math.max(20, columns - 1);
  return frame.split("\n").map((l) => l.length > width ? l.slice(0, width) : l).join("\n");
}
