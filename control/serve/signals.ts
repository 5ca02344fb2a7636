/**
 * How `ballast serve` answers SIGINT and SIGTERM: the first starts a clean shutdown, a later
 * one exits at once. One Ctrl-C can arrive twice: the terminal sends SIGINT to every process of
 * the foreground group, so under `deno task start` both `deno task` and the node get it, and
 * `deno task` passes its copy on to the node a few milliseconds later. The same signal again
 * within {@link SAME_SIGNAL_MS} is therefore that copy, not a second request. The decision is
 * the pure {@link signalAction}; {@link exitOnSignal} is its shell.
 * @module
 */

import type { Server } from "./serve.ts";

/** Within this many ms, a repeat of the first signal is a copy of it (see the module doc). */
export const SAME_SIGNAL_MS = 500;

/** The first signal received, when. */
export interface FirstSignal {
  signal: Deno.Signal;
  atMs: number;
}

/** What to do on a signal: begin the shutdown, ignore a copy of the first, or exit at once. */
export type SignalAction = "shutdown" | "ignore-copy" | "exit-now";

/** What `signal` received at `nowMs` means, given the first signal (undefined if none yet). */
export function signalAction(
  first: FirstSignal | undefined,
  signal: Deno.Signal,
  nowMs: number,
): SignalAction {
  if (first === undefined) return "shutdown";
  if (signal === first.signal && nowMs - first.atMs < SAME_SIGNAL_MS) return "ignore-copy";
  return "exit-now";
}

/**
 * Runs until SIGINT or SIGTERM, then shuts down cleanly and exits 0 (1 if the shutdown
 * failed). A second signal exits at once with code 130, except a copy of the first (above).
 * The listeners are in place before the node starts, so that a signal sent right after its
 * ready line (a supervisor's stop) finds them: serve() logs that line and resolves in one
 * go, and its result is taken (a microtask) before any signal is handled (a task). A signal
 * that arrives while the node starts exits at once, as without listeners: nothing is served
 * yet. Rejects with the startup's error when it fails.
 */
export function exitOnSignal(starting: Promise<Server>): Promise<never> {
  return new Promise<never>((_, reject) => {
    let server: Server | undefined;
    let first: FirstSignal | undefined;
    const shutdown = (s: Server, signal: Deno.Signal) => {
      s.logger.info({ signal }, "signal received");
      s.shutdown().then(
        () => Deno.exit(0),
        (err) => {
          s.logger.error({ err }, "shutdown failed");
          Deno.exit(1);
        },
      );
    };
    const onSignal = (signal: Deno.Signal) => {
      if (server === undefined) Deno.exit(signal === "SIGINT" ? 130 : 143); // still starting
      const now = Date.now();
      const action = signalAction(first, signal, now);
      if (action === "ignore-copy") {
        server.logger.debug({ signal }, "the same signal again at once (a copy): ignored");
        return;
      }
      if (action === "exit-now") {
        server.logger.warn({ signal }, "second signal: exiting immediately");
        Deno.exit(130);
      }
      first = { signal, atMs: now };
      shutdown(server, signal);
    };
    const listeners = (["SIGINT", "SIGTERM"] as const).map((sig) => {
      const listener = () => onSignal(sig);
      Deno.addSignalListener(sig, listener);
      return [sig, listener] as const;
    });
    starting.then(
      (s) => {
        server = s;
      },
      (err) => {
        for (const [sig, listener] of listeners) Deno.removeSignalListener(sig, listener);
        reject(err);
      },
    );
  });
}
