/**
 * The replica side of replication: requests from a volume group's master arrive over the
 * peer channel and are applied to this node's copy of the volume, in the order they arrive
 * on each connection. Every request carries the group's epoch; the newest epoch seen for a
 * copy is kept on disk (`<uuid>.epoch` beside the copy, written before it is relied on), and
 * anything older is refused (STATUS_STALE_EPOCH): a new master fences the old one by
 * sending FENCE at its epoch to every member it can reach before it serves.
 *
 * A WRITE is acknowledged once applied (in the page cache, as a local write is); with F_FUA,
 * or on FLUSH, once `fdatasync` made it durable.
 * @module
 */

import type { Logger } from "pino";
import type { PeerConnection } from "../peer/mod.ts";
import { type BlockStore, BlockStoreError, FileBlockStore } from "../store/mod.ts";
import type { CopyEpochs } from "./epochs.ts";
import { hashRegions } from "./hashes.ts";
import {
  decodeRequest,
  encodeReply,
  encodeSize,
  F_FUA,
  F_NO_HOLE,
  type Request,
  STATUS_BAD_REQUEST,
  STATUS_IO,
  STATUS_NO_COPY,
  STATUS_OK,
  STATUS_RANGE,
  STATUS_STALE_EPOCH,
  T_FENCE,
  T_FLUSH,
  T_HASHES,
  T_SIZE,
  T_TRIM,
  T_WRITE,
  T_ZERO,
} from "./wire.ts";

/** Where this node's copies live: the file of a copy by uuid, if it holds one. */
export interface CopyLocator {
  /** The path of the copy of volume `uuid`, or undefined when this node has none. */
  pathOf(uuid: string): string | undefined;
}

const UUID = /^[0-9a-f-]{36}$/;
/** Copies kept open after use; more are closed, least recently used first. */
const MAX_OPEN = 64;

export class ReplicaService {
  readonly #locate: CopyLocator;
  readonly #log: Logger;
  readonly #open = new Map<string, BlockStore>();
  readonly #epochs: CopyEpochs;

  constructor(locate: CopyLocator, epochs: CopyEpochs, log: Logger) {
    this.#locate = locate;
    this.#epochs = epochs;
    this.#log = log;
  }

  /** Serves one peer connection until it ends. */
  async serve(conn: PeerConnection): Promise<void> {
    const log = this.#log.child({ peer: conn.peerNode });
    try {
      for await (const frame of conn.frames()) {
        const reply = await this.handle(frame, log);
        await conn.send(reply);
      }
    } catch (err) {
      log.info({ reason: (err as Error).message }, "replication connection ended");
    }
  }

  /** One request frame in, its reply frame out. Never throws. */
  async handle(frame: Uint8Array, log: Logger): Promise<Uint8Array> {
    let r: Request;
    try {
      r = decodeRequest(frame);
    } catch (err) {
      const id = frame.length >= 8 ? new DataView(frame.buffer, frame.byteOffset).getUint32(4) : 0;
      return encodeReply(id, STATUS_BAD_REQUEST, (err as Error).message);
    }
    try {
      return await this.#apply(r, log);
    } catch (err) {
      const errno = err instanceof BlockStoreError ? err.errno : "EIO";
      log.error({ volume: r.volume, type: r.type, errno, err }, "replica store failed");
      return encodeReply(r.id, STATUS_IO, `${errno}: ${(err as Error).message}`);
    }
  }

  async #apply(r: Request, log: Logger): Promise<Uint8Array> {
    const path = UUID.test(r.volume) ? this.#locate.pathOf(r.volume) : undefined;
    if (path === undefined) {
      return encodeReply(r.id, STATUS_NO_COPY, `no copy of volume ${r.volume} on this node`);
    }
    const newest = await this.#epochs.get(path);
    if (r.epoch < newest) {
      log.warn(
        { volume: r.volume, epoch: r.epoch, newest },
        "refused a request from an old epoch (fenced master)",
      );
      return encodeReply(
        r.id,
        STATUS_STALE_EPOCH,
        `epoch ${r.epoch} is older than ${newest}: this master was replaced`,
      );
    }
    if (r.epoch > newest) await this.#epochs.raise(path, r.epoch);
    if (r.type === T_FENCE) return encodeReply(r.id, STATUS_OK);
    const store = this.#store(r.volume, path);
    switch (r.type) {
      case T_WRITE:
      case T_TRIM:
      case T_ZERO: {
        const length = r.type === T_WRITE ? r.data.length : r.length;
        if (r.offset + length > store.size) {
          return encodeReply(
            r.id,
            STATUS_RANGE,
            `range ${r.offset}+${length} is past the copy's ${store.size} bytes`,
          );
        }
        if (r.type === T_WRITE) store.write(r.data, r.offset);
        else if (r.type === T_TRIM) store.trim(r.offset, r.length);
        else store.writeZeroes(r.offset, r.length, (r.flags & F_NO_HOLE) === 0);
        if (r.flags & F_FUA) await store.flush();
        return encodeReply(r.id, STATUS_OK);
      }
      case T_FLUSH:
        await store.flush();
        return encodeReply(r.id, STATUS_OK);
      case T_SIZE:
        return encodeReply(r.id, STATUS_OK, encodeSize(store.size));
      case T_HASHES: {
        const hashes = await hashRegions(store, r.first, r.count, r.regionBytes);
        return encodeReply(r.id, STATUS_OK, hashes);
      }
    }
    return encodeReply(r.id, STATUS_BAD_REQUEST, `unknown request`);
  }

  #store(uuid: string, path: string): BlockStore {
    let s = this.#open.get(uuid);
    if (s) {
      // Most recently used last.
      this.#open.delete(uuid);
      this.#open.set(uuid, s);
      return s;
    }
    s = FileBlockStore.open(path);
    this.#open.set(uuid, s);
    if (this.#open.size > MAX_OPEN) {
      const [oldest, store] = this.#open.entries().next().value!;
      this.#open.delete(oldest);
      store.flush().finally(() => store.close());
    }
    return s;
  }

  /** The copy was deleted or resized elsewhere: forget its open descriptor. */
  forget(uuid: string): void {
    const s = this.#open.get(uuid);
    this.#open.delete(uuid);
    s?.close();
  }

  close(): void {
    for (const s of this.#open.values()) {
      s.flush().finally(() => s.close());
    }
    this.#open.clear();
  }
}
