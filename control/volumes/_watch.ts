/**
 * The volume record watch of cluster mode: list `/ballast/volumes/`, then watch from
 * the list revision + 1; a compacted watch re-lists, a failed one retries with
 * backoff (store/follow_prefix.ts). One per node, shared by every volume (idle volumes cost
 * nothing).
 * @module
 */

import type { Logger } from "../common/mod.ts";
import { followPrefix, type KeyValue, type StateStore } from "../store/mod.ts";
import { VOLUME_PREFIX } from "./_record.ts";

export interface VolumeWatchHandlers {
  /** A record as listed or as put; called one at a time, in revision order. */
  put(kv: KeyValue): Promise<void>;
  /** A record was deleted. */
  deleted(name: string): Promise<void>;
  /** After each (re-)listing: every name that exists (deletes a compaction hid are gone). */
  listed?(names: Set<string>): Promise<void>;
}

/** Runs until `stop` aborts. */
export function watchVolumeRecords(
  store: StateStore,
  log: Logger,
  handlers: VolumeWatchHandlers,
  stop: AbortSignal,
): Promise<void> {
  const nameOf = (kv: KeyValue) => kv.key.slice(VOLUME_PREFIX.length);
  return followPrefix(store, VOLUME_PREFIX, {
    async onList(kvs) {
      for (const kv of kvs) {
        if (stop.aborted) return;
        await handlers.put(kv);
      }
      await handlers.listed?.(new Set(kvs.map(nameOf)));
    },
    async onEvents(events) {
      for (const ev of events) {
        if (stop.aborted) return;
        if (ev.type === "put") await handlers.put(ev.kv);
        else await handlers.deleted(nameOf(ev.kv));
      }
    },
  }, { signal: stop, logger: log, what: "volume", logCompaction: true });
}
