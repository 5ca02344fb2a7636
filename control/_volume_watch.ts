/**
 * The volume record watch of cluster mode: list `/ballast/volumes/`, then watch from
 * the list revision + 1; a compacted watch re-lists, a failed one retries with
 * backoff. One per node, shared by every volume (idle volumes cost nothing).
 * @module
 */

import type { Logger } from "./log.ts";
import type { KeyValue, StateStore, Watch } from "./state_store.ts";
import { abortableSleep, VOLUME_PREFIX } from "./_volume_record.ts";

const WATCH_BACKOFF_MS = [100, 5_000] as const;

export interface VolumeWatchHandlers {
  /** A record as listed or as put; called one at a time, in revision order. */
  put(kv: KeyValue): Promise<void>;
  /** A record was deleted. */
  deleted(name: string): Promise<void>;
  /** After each (re-)listing: every name that exists (deletes a compaction hid are gone). */
  listed?(names: Set<string>): Promise<void>;
}

/** Runs until `stop` aborts. */
export async function watchVolumeRecords(
  store: StateStore,
  log: Logger,
  handlers: VolumeWatchHandlers,
  stop: AbortSignal,
): Promise<void> {
  let backoff: number = WATCH_BACKOFF_MS[0];
  while (!stop.aborted) {
    let watch: Watch | undefined;
    const cancel = () => watch?.cancel();
    stop.addEventListener("abort", cancel);
    try {
      const { kvs, revision } = await store.list(VOLUME_PREFIX);
      for (const kv of kvs) {
        if (stop.aborted) return;
        await handlers.put(kv);
      }
      await handlers.listed?.(new Set(kvs.map((kv) => kv.key.slice(VOLUME_PREFIX.length))));
      if (stop.aborted) return;
      watch = store.watch(VOLUME_PREFIX, { startRevision: revision + 1 });
      for await (const msg of watch) {
        backoff = WATCH_BACKOFF_MS[0];
        if (msg.kind === "compacted") {
          log.info(
            { compactRevision: msg.compactRevision },
            "volume watch compacted; listing again",
          );
          break;
        }
        for (const ev of msg.events) {
          if (stop.aborted) return;
          if (ev.type === "put") await handlers.put(ev.kv);
          else await handlers.deleted(ev.kv.key.slice(VOLUME_PREFIX.length));
        }
      }
    } catch (err) {
      if (stop.aborted) return;
      log.warn({ err: String(err), retryMs: backoff }, "volume watch failed; retrying");
      await abortableSleep(backoff, stop);
      backoff = Math.min(backoff * 2, WATCH_BACKOFF_MS[1]);
    } finally {
      stop.removeEventListener("abort", cancel);
      watch?.cancel();
    }
  }
}
