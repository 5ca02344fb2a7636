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
 * This node serves the copy at `path` as master at `epoch` from now on. The copy records the
 * epoch first (from then on it refuses older masters, as a replica would). If it had seen an
 * earlier epoch, this node succeeds another master, which may still count on answers this node
 * gave it: the serving waits until that master's lease has lapsed (lease.ts). Returns whether
 * it succeeds an earlier master (then the members' copies are compared, see master.ts).
 */
export async function takeOver(
  epochs: CopyEpochs,
  path: string,
  epoch: number,
  log: Logger,
  options: { handedOver?: boolean } = {},
): Promise<boolean> {
  // A copy that never saw an epoch never answered a master: nobody to wait for.
  const previous = await epochs.get(path);
  const raised = await epochs.raise(path, epoch);
  if (previous === 0 || !raised) return false;
  // A planned handover: the previous master closed its export before handing over, and the
  // masters before it were waited out when it took over; nobody counts on an answer.
  const wait = options.handedOver ? 0 : promotionWait(epochs.lastGranted(path));
  if (wait > 0) {
    log.info(
      { copy: path, epoch, waitMs: Math.round(wait) },
      "waiting for the previous master's lease to lapse before serving",
    );
    await new Promise((r) => setTimeout(r, wait));
  }
  return true;
}
