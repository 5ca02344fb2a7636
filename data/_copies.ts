/**
 * Copy files of the local data plane (local_plane.ts): listing the copies under
 * `<data-dir>/volumes`, moving one aside with its sidecars, and taking a copy over as a
 * group's new master (fencing and the previous master's lease).
 * @module
 */

import type { Logger } from "pino";
import type { CopyInfo } from "./plane.ts";
import { type CopyEpochs, type CopyHashes, promotionWait } from "./replication/mod.ts";

/** The copies (`<uuid>.vol`) in `dir`, by uuid. */
export async function listCopyFiles(dir: string): Promise<CopyInfo[]> {
  const copies: CopyInfo[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const m = /^([0-9a-f-]{36})\.vol$/.exec(entry.name);
    if (!entry.isFile || !m) continue;
    try {
      const st = await Deno.stat(`${dir}/${entry.name}`);
      copies.push({ uuid: m[1], sizeBytes: st.size, mtime: st.mtime ?? new Date(0) });
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  return copies.sort((a, b) => a.uuid.localeCompare(b.uuid));
}

/**
 * The copies in `<data-dir>/orphaned/` and the bytes every file there takes on disk
 * (allocated blocks: copies are sparse; sidecar files included). Nothing there: zeros.
 */
export function orphanedUsage(dataDir: string): { copies: number; bytes: number } {
  const dir = `${dataDir}/orphaned`;
  let copies = 0;
  let bytes = 0;
  try {
    for (const entry of Deno.readDirSync(dir)) {
      if (!entry.isFile) continue;
      try {
        const st = Deno.statSync(`${dir}/${entry.name}`);
        bytes += (st.blocks ?? Math.ceil(st.size / 512)) * 512;
        if (entry.name.endsWith(".vol")) copies++;
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return { copies, bytes };
}

/**
 * Moves the copy at `path` and its sidecar files to `<data-dir>/orphaned/` (an atomic rename
 * on the same file system); returns where, relative to the data dir, or undefined if it is gone.
 */
export async function moveAside(
  dataDir: string,
  path: string,
  uuid: string,
  epochs: CopyEpochs,
  hashes: CopyHashes,
): Promise<string | undefined> {
  const dir = `${dataDir}/orphaned`;
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  const to = `${dir}/${uuid}.vol`;
  try {
    await Deno.rename(path, to);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
  epochs.forget(path);
  await hashes.move(path, to);
  return `orphaned/${uuid}.vol`;
}

/**
 * This node's takeovers of copies as a group's master at a new epoch, in two steps. claim()
 * records the epoch in the copy first (from then on this node's replica service refuses older
 * masters, as any replica would), before the other members are fenced; complete(), before
 * the volume is served, waits until the previous master's read lease has lapsed, counted from
 * the last answer this node gave any master for the copy (lease.ts). Claiming first means
 * this node grants the old master nothing more while the members are asked, which would
 * lengthen that wait.
 */
export class Takeovers {
  readonly #epochs: CopyEpochs;
  readonly #log: Logger;
  /**
   * Copies claimed and not completed yet: the epoch, whether it succeeds a master, and
   * whether the copy had that epoch already (this node serves it again at an epoch it served).
   */
  readonly #claims = new Map<string, { epoch: number; succeeds: boolean; resumed: boolean }>();

  constructor(epochs: CopyEpochs, log: Logger) {
    this.#epochs = epochs;
    this.#log = log;
  }

  /** Claims the copy at `path` for `epoch`. */
  async claim(path: string, epoch: number): Promise<void> {
    // A copy that never saw an epoch never answered a master: nobody to wait for. One that
    // had this epoch was claimed at it before, by this node: if the takeover was completed
    // (served), this is a restart of its master; if not, the process died between claiming
    // and serving, and the older master's lease may not have lapsed yet.
    const previous = await this.#epochs.get(path);
    const raised = await this.#epochs.raise(path, epoch);
    const unfinished = previous === epoch && await this.#epochs.served(path) !== epoch;
    this.#claims.set(path, {
      epoch,
      succeeds: previous !== 0 && (raised || unfinished),
      resumed: previous !== 0 && previous === epoch,
    });
  }

  /**
   * Completes the takeover of the copy at `path` (claiming it now if it was not), waiting out
   * the previous master's lease; returns whether this node succeeds another master (then the
   * members' copies are compared, see replication/master.ts) and whether it serves the copy
   * again at an epoch it had (then it starts new replication sessions: sessions.ts resume).
   * A planned handover waits for nothing: the previous master closed its export before
   * handing over, and the masters before it were waited out when it took over. Without `r`
   * (a volume without replication) there is nothing to take over.
   */
  async complete(
    path: string,
    r: { epoch: number; handedOver?: boolean } | undefined,
  ): Promise<{ succeeds: boolean; resumed: boolean }> {
    if (!r) return { succeeds: false, resumed: false };
    if (this.#claims.get(path)?.epoch !== r.epoch) await this.claim(path, r.epoch);
    const { succeeds, resumed } = this.#claims.get(path)!;
    this.#claims.delete(path);
    const wait = succeeds && !r.handedOver ? promotionWait(this.#epochs.lastGranted(path)) : 0;
    if (wait > 0) {
      this.#log.info(
        { copy: path, epoch: r.epoch, waitMs: Math.round(wait) },
        "waiting for the previous master's lease to lapse before serving",
      );
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
    // Lost, it costs the next restart at this epoch a lease wait (the safe side): a full disk
    // must not keep a master from serving what it served before.
    await this.#epochs.markServed(path, r.epoch).catch((err) =>
      this.#log.warn(
        { copy: path, epoch: r.epoch, err: (err as Error).message },
        "could not record the epoch served; a restart at it will wait out the lease again",
      )
    );
    return { succeeds, resumed };
  }
}
