/**
 * Cluster mode: how a node follows the volume records. One record watch per node
 * (watchVolumeRecords() below: list `/ballast/volumes/`, then watch from the list revision
 * + 1; a compacted watch re-lists, a failed one retries with backoff, store/follow_prefix.ts;
 * idle volumes cost nothing) only dispatches; each change is applied on the volume's own serial
 * lane (_queue.ts), so one volume's slow or failing step never holds up another
 * volume, and a failed step is retried from a fresh read of its record.
 * @module
 */

import type { Logger } from "../common/mod.ts";
import { followPrefix, freshGet, type KeyValue, type StateStore } from "../store/mod.ts";
import type { VolumeGroups } from "./_groups.ts";
import { type RecordChange, RecordQueues } from "./_queue.ts";
import { parseRecord, VOLUME_PREFIX, type VolumeRecord } from "./_record.ts";

export interface FollowOptions {
  store: StateStore;
  log: Logger;
  /** Replicated volumes (cluster mode). */
  groups: VolumeGroups | undefined;
  /** An unreplicated volume's record changed (this node applies it if it is the master). */
  unreplicated(rec: VolumeRecord): Promise<void>;
  /** [first, cap] of the retry backoff; default RETRY_BACKOFF_MS. */
  retryBackoffMs?: readonly [number, number];
}

/** Follows the records until stop(), which waits for the changes being applied. */
export function followVolumeRecords(o: FollowOptions): { stop(): Promise<void> } {
  const stop = new AbortController();
  const apply = async (name: string, change: RecordChange): Promise<void> => {
    if (change.type === "deleted") return await o.groups?.deleted(name);
    const rec = parseRecord(change.kv);
    if (rec.group && o.groups) return await o.groups.handle(change.kv, rec);
    // The name now holds an unreplicated volume: a group this node knew is gone.
    if (o.groups?.hosted().includes(name)) await o.groups.deleted(name);
    await o.unreplicated(rec);
  };
  const queues = new RecordQueues({
    apply,
    read: (name) => freshGet(o.store, VOLUME_PREFIX + name),
    logger: o.log,
    backoffMs: o.retryBackoffMs,
  });
  o.groups?.start((name) => queues.kick(name));
  const nameOf = (kv: KeyValue) => kv.key.slice(VOLUME_PREFIX.length);
  const loop = watchVolumeRecords(o.store, o.log, {
    put: (kv) => Promise.resolve(queues.push(nameOf(kv), { type: "put", kv })),
    deleted: (name) => Promise.resolve(queues.push(name, { type: "deleted" })),
    listed: (names) => {
      for (const name of o.groups?.hosted() ?? []) {
        if (!names.has(name)) queues.push(name, { type: "deleted" });
      }
      return Promise.resolve();
    },
  }, stop.signal);
  return {
    async stop() {
      stop.abort();
      await loop;
      await queues.stop();
      await o.groups?.stop();
    },
  };
}

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
