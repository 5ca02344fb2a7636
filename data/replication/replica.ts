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
import type { CopyHashes } from "./copies.ts";
import type { CopyEpochs } from "./epochs.ts";
import type { HashState } from "./hash_state.ts";
import { hashRegions } from "./hashes.ts";
import { REGION_BYTES } from "./regions.ts";
import {
  decodeRequest,
  encodePingStatuses,
  encodeReply,
  encodeSession,
  encodeSize,
  F_CHEAP,
  F_DEEP,
  F_FUA,
  F_NO_HOLE,
  nextSession,
  type Request,
  sessionOlder,
  STATUS_BAD_REQUEST,
  STATUS_BUSY,
  STATUS_IO,
  STATUS_NO_COPY,
  STATUS_OK,
  STATUS_RANGE,
  STATUS_STALE_EPOCH,
  STATUS_STALE_SESSION,
  T_FENCE,
  T_FLUSH,
  T_HASHES,
  T_PING,
  T_PINGS,
  T_SESSION,
  T_SIZE,
  T_TREE,
  T_TRIM,
  T_WRITE,
  T_ZERO,
} from "./wire.ts";

/** Where this node's copies live: the file of a copy by uuid, if it holds one. */
export interface CopyLocator {
  /** The path of the copy of volume `uuid`, or undefined when this node has none. */
  pathOf(uuid: string): string | undefined;
  /** The copies' hash lists (shared with the data plane). */
  hashes: CopyHashes;
}

const UUID = /^[0-9a-f-]{36}$/;
/** Most regions a F_CHEAP question may have to read. */
export const CHEAP_REGIONS = 64;
/** Copies kept open after use; more are closed, least recently used first. */
const MAX_OPEN = 64;
/** Replies given to the connection and not yet written before serve() waits for them. */
const MAX_UNSENT_REPLIES = 1024;

/** A copy open here: its store and its hash state (write tracking, hash list). */
interface OpenCopy {
  store: BlockStore;
  hashes: HashState;
  path: string;
}

export class ReplicaService {
  readonly #locate: CopyLocator;
  readonly #log: Logger;
  readonly #open = new Map<string, Promise<OpenCopy>>();
  /** The copies of #open whose opening finished (the fast path's lookup). */
  readonly #ready = new Map<string, OpenCopy>();
  readonly #epochs: CopyEpochs;
  /**
   * The session of each copy (by volume uuid) at the epoch that issued it (wire.ts,
   * "Sessions"); none until a master asks for one. Kept in memory only: a restart of this
   * node ends every connection that could hold a frame of an older session.
   */
  readonly #sessions = new Map<string, { epoch: number; session: number; refused: number }>();
  /** The last reason a lease PING of each volume could not be answered (logged once). */
  readonly #pingErrors = new Map<string, string>();

  constructor(locate: CopyLocator, epochs: CopyEpochs, log: Logger) {
    this.#locate = locate;
    this.#epochs = epochs;
    this.#log = log;
  }

  /**
   * Serves one peer connection until it ends. Requests are applied one after the other in
   * the order they arrived, each completed before the next starts; the common ones (a WRITE,
   * TRIM or ZERO without FUA to a copy open here, at the epoch it knows) complete at once, so
   * a batch of pipelined requests is applied in one go and its replies leave together (the
   * connection coalesces sends). Replies are not awaited one by one: only when many are
   * still unsent (the master does not read) does this stop taking requests.
   */
  async serve(conn: PeerConnection): Promise<void> {
    const log = this.#log.child({ peer: conn.peerNode });
    let unsent = 0;
    const sent = () => void unsent--;
    try {
      for await (const batch of conn.batches()) {
        for (const frame of batch) {
          if (frame[0] === T_FENCE) {
            // A new master's FENCE of one copy need not wait for those of other copies (a
            // master taking over many groups at once sends dozens, and each raises an epoch
            // on disk). The next request of the same copy still finds the new epoch, or
            // raises it too (CopyEpochs.raise() orders raises of one copy).
            unsent++;
            Promise.resolve(this.handle(frame, log)).then((reply) => {
              conn.recycle(frame);
              conn.send(reply).then(sent, sent);
            });
            continue;
          }
          const handled = this.handle(frame, log);
          const reply = handled instanceof Uint8Array ? handled : await handled;
          conn.recycle(frame); // applied: nothing refers to a WRITE's data any more
          const sending = conn.send(reply);
          unsent++;
          sending.then(sent, sent);
          if (unsent > MAX_UNSENT_REPLIES) await sending;
        }
      }
    } catch (err) {
      log.info({ reason: (err as Error).message }, "replication connection ended");
    }
  }

  /** One request frame in, its reply frame out (at once when it could be applied at once). */
  handle(frame: Uint8Array, log: Logger): Uint8Array | Promise<Uint8Array> {
    let r: Request;
    try {
      r = decodeRequest(frame);
    } catch (err) {
      const id = frame.length >= 8 ? new DataView(frame.buffer, frame.byteOffset).getUint32(4) : 0;
      return encodeReply(id, STATUS_BAD_REQUEST, (err as Error).message);
    }
    try {
      const now = this.#applyNow(r);
      if (now instanceof Promise) return now.catch((err) => this.#failed(r, err, log));
      if (now !== undefined) return now;
    } catch (err) {
      return this.#failed(r, err, log);
    }
    return this.#apply(r, log).catch((err) => this.#failed(r, err, log));
  }

  #failed(r: Request, err: unknown, log: Logger): Uint8Array {
    if (err instanceof RangeError) return encodeReply(r.id, STATUS_RANGE, err.message);
    const errno = err instanceof BlockStoreError ? err.errno : "EIO";
    log.error({ volume: r.volume, type: r.type, errno, err }, "replica store failed");
    return encodeReply(r.id, STATUS_IO, `${errno}: ${(err as Error).message}`);
  }

  /**
   * The common case without looking anything up: a WRITE, TRIM or ZERO without FUA, to a
   * copy open here at the epoch it knows. Its reply (at once, unless a region must be waited
   * for), or undefined when anything else is the case (then #apply() does it all).
   */
  #applyNow(r: Request): Uint8Array | Promise<Uint8Array> | undefined {
    if (r.type !== T_WRITE && r.type !== T_TRIM && r.type !== T_ZERO) return undefined;
    if ((r.flags & F_FUA) !== 0) return undefined;
    const copy = this.#ready.get(r.volume);
    if (copy === undefined || this.#epochs.known(copy.path) !== r.epoch) return undefined;
    const { store, hashes } = copy;
    const length = r.type === T_WRITE ? r.data.length : r.length;
    if (r.offset + length > store.size) return undefined;
    this.#touch(r.volume);
    // Marked in the activity log before the copy changes (tracker.ts); a region not marked
    // yet, or busy, is waited for.
    const entering = hashes.writer.enter(r.offset, length);
    const change = () => {
      try {
        // Checked with the change, not before the wait: a SESSION may come in meanwhile.
        const stale = this.#sessions.size > 0 ? this.#stale(r) : undefined;
        if (stale !== undefined) return stale;
        applyChange(r, store);
      } finally {
        hashes.writer.leave(r.offset, length);
      }
      this.#epochs.granted(copy.path);
      return encodeReply(r.id, STATUS_OK);
    };
    return entering === undefined ? change() : entering.then(change);
  }

  /**
   * The epoch check every request of a copy passes: the copy's path, or the reply refusing
   * it (no copy here; an epoch older than the newest seen). A newer epoch is recorded first.
   */
  async #admit(
    r: { id: number; volume: string; epoch: number },
    log: Logger,
  ): Promise<{ path: string } | { refused: Uint8Array; status: number }> {
    const path = UUID.test(r.volume) ? this.#locate.pathOf(r.volume) : undefined;
    if (path === undefined) {
      const message = `no copy of volume ${r.volume} on this node (not made yet, or it ` +
        `could not be made: a full disk? this node's log says)`;
      return { refused: encodeReply(r.id, STATUS_NO_COPY, message), status: STATUS_NO_COPY };
    }
    const newest = await this.#epochs.get(path);
    if (r.epoch < newest) {
      log.warn(
        { volume: r.volume, epoch: r.epoch, newest },
        "refused a request from an old epoch (fenced master)",
      );
      const message = `epoch ${r.epoch} is older than ${newest}: this master was replaced`;
      return {
        refused: encodeReply(r.id, STATUS_STALE_EPOCH, message),
        status: STATUS_STALE_EPOCH,
      };
    }
    if (r.epoch > newest) await this.#epochs.raise(path, r.epoch);
    return { path };
  }

  /**
   * PINGS: each entry is answered as its own PING would be (the same epoch check, the same
   * grant), one status byte each. An entry whose check fails (its disk, say) is STATUS_IO,
   * without failing the others.
   */
  async #pings(r: Request & { type: typeof T_PINGS }, log: Logger): Promise<Uint8Array> {
    const statuses = await Promise.all(r.entries.map(async (e) => {
      try {
        const admitted = await this.#admit({ id: r.id, ...e }, log);
        if ("refused" in admitted) return admitted.status;
        this.#epochs.granted(admitted.path);
        this.#pingErrors.delete(e.volume);
        return STATUS_OK;
      } catch (err) {
        // Once per volume and reason (a full disk fails every second): the master reports
        // this member failed after two (lease.ts).
        const reason = (err as Error).message;
        if (this.#pingErrors.get(e.volume) !== reason) {
          log.error({ volume: e.volume, reason }, "replica could not answer a lease PING");
        }
        this.#pingErrors.set(e.volume, reason);
        return STATUS_IO;
      }
    }));
    return encodeReply(r.id, STATUS_OK, encodePingStatuses(statuses));
  }

  async #apply(r: Request, log: Logger): Promise<Uint8Array> {
    if (r.type === T_PINGS) return await this.#pings(r, log);
    const admitted = await this.#admit(r, log);
    if ("refused" in admitted) return admitted.refused;
    const { path } = admitted;
    if (r.type === T_FENCE || r.type === T_PING) {
      // Answering a master at its epoch grants it its lease (lease.ts).
      this.#epochs.granted(path);
      return encodeReply(r.id, STATUS_OK);
    }
    if (r.type === T_SESSION) return this.#newSession(r, log);
    const copy = await this.#copy(r.volume, path);
    const { store, hashes } = copy;
    let reply: Uint8Array;
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
        // Marked in the activity log before the copy changes (tracker.ts).
        await hashes.writer.enter(r.offset, length);
        try {
          const stale = this.#stale(r, log);
          if (stale !== undefined) return stale;
          applyChange(r, store);
        } finally {
          hashes.writer.leave(r.offset, length);
        }
        if (r.flags & F_FUA) await store.flush();
        reply = encodeReply(r.id, STATUS_OK);
        break;
      }
      case T_FLUSH:
        await store.flush();
        reply = encodeReply(r.id, STATUS_OK);
        break;
      case T_SIZE:
        reply = encodeReply(r.id, STATUS_OK, encodeSize(store.size));
        break;
      case T_HASHES:
        reply = encodeReply(
          r.id,
          STATUS_OK,
          r.regionBytes !== REGION_BYTES
            ? await hashRegions(store, r.first, checkFine(r, store.size), r.regionBytes)
            : (r.flags & F_DEEP) !== 0
            ? await hashes.verify(r.first, checkDeep(r.first, r.count, hashes.regions), {
              markCorrupt: true, // so that a resync repairs them (hash_state.ts)
            })
            : await hashes.leaves(r.first, checkCount(r.first, r.count, hashes.regions)),
        );
        break;
      case T_TREE:
        if ((r.flags & F_CHEAP) !== 0 && hashes.unknownLeaves() > CHEAP_REGIONS) {
          return encodeReply(r.id, STATUS_BUSY, "many regions changed lately: not hashed now");
        }
        reply = encodeReply(r.id, STATUS_OK, await hashes.nodes(r.level, r.first, r.count));
        break;
      default:
        return encodeReply(r.id, STATUS_BAD_REQUEST, `unknown request`);
    }
    this.#epochs.granted(path);
    return reply;
  }

  /**
   * SESSION: a master about to resync this copy starts a new session of it; every WRITE,
   * TRIM and ZERO of an older one is refused from now on (#stale).
   */
  #newSession(r: Request, log: Logger): Uint8Array {
    const was = this.#sessions.get(r.volume);
    const session = was === undefined || r.epoch > was.epoch ? 1 : nextSession(was.session);
    this.#sessions.set(r.volume, { epoch: r.epoch, session, refused: 0 });
    log.info(
      { volume: r.volume, epoch: r.epoch, session },
      "new replication session: changes sent before it are refused",
    );
    return encodeReply(r.id, STATUS_OK, encodeSession(session));
  }

  /**
   * The refusal of change `r` when it belongs to an older session of its copy than the
   * newest at its epoch: a frame of a link its master gave up (wire.ts, "Sessions"), or of
   * an epoch older than the session's. Undefined: apply it. A newer epoch forgets the old
   * epoch's session.
   */
  #stale(r: Request, log?: Logger): Uint8Array | undefined {
    const s = this.#sessions.get(r.volume);
    if (s === undefined) return undefined;
    if (r.epoch < s.epoch) {
      // It passed the epoch check while a newer master's session began (it waited for its
      // region meanwhile): fenced as that check would have.
      const message = `epoch ${r.epoch} is older than ${s.epoch}: this master was replaced`;
      return encodeReply(r.id, STATUS_STALE_EPOCH, message);
    }
    if (r.epoch > s.epoch) {
      this.#sessions.delete(r.volume);
      return undefined;
    }
    const session = r.session ?? 0;
    if (!sessionOlder(session, s.session)) return undefined;
    if (s.refused++ % 1000 === 0) {
      (log ?? this.#log).warn(
        { volume: r.volume, epoch: r.epoch, session, current: s.session, refused: s.refused },
        "refused a change of an older replication session (a link its master gave up)",
      );
    }
    return encodeReply(
      r.id,
      STATUS_STALE_SESSION,
      `session ${session} of epoch ${r.epoch} is older than ${s.session}: a link given up`,
    );
  }

  #copy(uuid: string, path: string): Promise<OpenCopy> {
    const known = this.#open.get(uuid);
    if (known) {
      this.#touch(uuid);
      return known;
    }
    const opening = (async () => {
      const store = FileBlockStore.open(path);
      try {
        return { store, hashes: await this.#locate.hashes.acquire(path), path };
      } catch (err) {
        store.close();
        throw err;
      }
    })();
    this.#open.set(uuid, opening);
    opening.then(
      (copy) => this.#open.get(uuid) === opening && this.#ready.set(uuid, copy),
      () => this.#open.delete(uuid),
    );
    if (this.#open.size > MAX_OPEN) {
      const [oldest] = this.#open.keys();
      this.#let(oldest);
    }
    return opening;
  }

  /** Copy `uuid` was used: most recently used last. */
  #touch(uuid: string): void {
    const known = this.#open.get(uuid);
    if (known === undefined) return;
    this.#open.delete(uuid);
    this.#open.set(uuid, known);
  }

  /** Closes copy `uuid` here (its store flushed first) and lets go of its hash state. */
  #let(uuid: string, flush = true): void {
    const c = this.#open.get(uuid);
    this.#open.delete(uuid);
    this.#ready.delete(uuid);
    c?.then(async (copy) => {
      try {
        if (flush) await copy.store.flush();
      } finally {
        copy.store.close();
        await this.#locate.hashes.release(copy.path);
      }
    }).catch(() => {});
  }

  /** The copy was deleted or moved elsewhere: forget its open descriptor. */
  forget(uuid: string): void {
    this.#sessions.delete(uuid);
    this.#let(uuid, false);
  }

  /** The copy grew (the data plane resized it): the open descriptor sees the new size. */
  grown(uuid: string): void {
    this.#open.get(uuid)?.then((c) => c.store.resize(Deno.statSync(c.path).size)).catch(() => {});
  }

  close(): void {
    for (const uuid of [...this.#open.keys()]) this.#let(uuid);
  }
}

function applyChange(
  r: Request & { type: typeof T_WRITE | typeof T_TRIM | typeof T_ZERO },
  store: BlockStore,
): void {
  if (r.type === T_WRITE) store.write(r.data, r.offset);
  else if (r.type === T_TRIM) store.trim(r.offset, r.length);
  else store.writeZeroes(r.offset, r.length, (r.flags & F_NO_HOLE) === 0);
}

/**
 * A HASHES of blocks smaller than a region (a resync's compare inside one region): blocks of
 * 4 KiB or more, at most one region's worth, inside the copy. Unbounded, one frame could make
 * this thread hash for minutes and allocate gigabytes (a peer's u32 count, or 1-byte blocks).
 */
function checkFine(r: { first: number; count: number; regionBytes: number }, size: number) {
  const { first, count, regionBytes } = r;
  // Blocks of 4 KiB at least (a resync's), so one region is at most 256 hashes.
  const small = regionBytes < 4096 || count * regionBytes > REGION_BYTES;
  if (small || first * regionBytes >= Math.max(size, 1)) {
    throw new RangeError(`${count} blocks of ${regionBytes} bytes at block ${first}`);
  }
  return count;
}

/** A deep HASHES rereads its regions: a verification asks 16 at a time (verify.ts). */
function checkDeep(first: number, count: number, regions: number): number {
  if (count > MAX_DEEP_REGIONS) {
    throw new RangeError(`${count} regions to rehash at once (at most ${MAX_DEEP_REGIONS})`);
  }
  return checkCount(first, count, regions);
}
const MAX_DEEP_REGIONS = 64;

function checkCount(first: number, count: number, regions: number): number {
  if (first + count > regions) {
    throw new RangeError(`regions ${first}+${count} of ${regions}`);
  }
  return count;
}
