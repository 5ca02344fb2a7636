/**
 * Following a key prefix of the state store: list it, then watch from the list
 * revision + 1; a compacted watch (or one the store ended) lists again, a failed list,
 * watch or handler retries with backoff (100 ms, doubling to 5 s; reset by any watch
 * message), and the signal cancels the watch. Used by the volume record watch
 * (volumes/_watch.ts), the lease view (group/lease_watch.ts) and the revocation watch
 * (cluster/revocations.ts).
 * @module
 */

import { abortableSleep, type Logger } from "../common/mod.ts";
import type { KeyValue, StateStore, Watch, WatchEvent } from "./state_store.ts";

/** [first, cap] of the retry backoff, in ms. */
export const FOLLOW_BACKOFF_MS = [100, 5_000] as const;

export interface FollowHandlers {
  /** After each (re-)listing, before the watch starts; throwing counts as a failure. */
  onList(kvs: readonly KeyValue[], revision: number): Promise<void> | void;
  /** One watch message's events, in revision order. */
  onEvents(events: readonly WatchEvent[]): Promise<void> | void;
  /** The list, the watch or a handler failed; called before the backoff. */
  onError?(err: unknown): void;
}

export interface FollowOptions {
  signal: AbortSignal;
  logger: Logger;
  /** Names the loop in its logs: "<what> watch failed; retrying". */
  what: string;
  /** Log a compacted watch at info before listing again (default: silent). */
  logCompaction?: boolean;
}

/** Runs until `signal` aborts; never rejects. */
export async function followPrefix(
  store: StateStore,
  prefix: string,
  handlers: FollowHandlers,
  options: FollowOptions,
): Promise<void> {
  const { signal: stop, logger: log, what } = options;
  let backoff: number = FOLLOW_BACKOFF_MS[0];
  while (!stop.aborted) {
    let watch: Watch | undefined;
    const cancel = () => watch?.cancel();
    stop.addEventListener("abort", cancel);
    try {
      const { kvs, revision } = await store.list(prefix);
      await handlers.onList(kvs, revision);
      if (stop.aborted) return;
      watch = store.watch(prefix, { startRevision: revision + 1 });
      for await (const msg of watch) {
        backoff = FOLLOW_BACKOFF_MS[0];
        if (msg.kind === "compacted") {
          if (options.logCompaction) {
            log.info(
              { compactRevision: msg.compactRevision },
              `${what} watch compacted; listing again`,
            );
          }
          break;
        }
        await handlers.onEvents(msg.events);
      }
      // A watch that ended without an error (compacted, or closed by the store): list
      // again after a short pause, so a store that keeps closing watches cannot spin.
      if (!stop.aborted) await abortableSleep(FOLLOW_BACKOFF_MS[0], stop);
    } catch (err) {
      handlers.onError?.(err);
      if (stop.aborted) return;
      log.warn({ err, retryMs: backoff }, `${what} watch failed; retrying`);
      await abortableSleep(backoff, stop);
      backoff = Math.min(backoff * 2, FOLLOW_BACKOFF_MS[1]);
    } finally {
      stop.removeEventListener("abort", cancel);
      watch?.cancel();
    }
  }
}
