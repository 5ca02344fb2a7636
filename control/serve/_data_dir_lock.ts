/**
 * An exclusive lock on a data directory: an `flock` on DIR/ballast.lock, held by the open
 * file for as long as the server runs. The kernel drops it when the process ends however it
 * ends (kill -9, out of memory, power loss), so a lock is never stale and nothing has to guess
 * whether a pid still runs (a pid guess refused to start a container whose new process had
 * the dead one's pid, 1, for ever). The file holds the owner's pid, only to name it in the
 * refusal.
 * @module
 */

import { FailedPreconditionError } from "../../mod/errors.ts";

export const LOCK_FILE = "ballast.lock";

/** A held lock; release() removes the file and lets the lock go. */
export interface DataDirLock {
  readonly path: string;
  /**
   * The data directory's permission bits when they let others than its owner in (the
   * directory existed already, made by someone else or by an older version), else undefined.
   */
  readonly openMode: number | undefined;
  release(): void;
}

/**
 * Takes the lock, creating the directory (mode 0700: only the service user may enter it, and
 * so reach the local-attach socket inside) if needed.
 * @throws FailedPreconditionError when another process holds it.
 */
export function lockDataDir(dir: string): DataDirLock {
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const mode = Deno.statSync(dir).mode;
  const openMode = mode !== null && (mode & 0o077) !== 0 ? mode & 0o777 : undefined;
  const path = `${dir.replace(/\/+$/, "")}/${LOCK_FILE}`;
  for (let attempt = 0; attempt < 3; attempt++) {
    const file = Deno.openSync(path, { read: true, write: true, create: true, mode: 0o644 });
    if (!file.tryLockSync(true)) {
      const holder = readLock(file).pid;
      file.close();
      throw new FailedPreconditionError(
        `data directory ${dir} is in use by another ballast server` +
          `${holder === undefined ? "" : ` (pid ${holder}`}, lock file ${path}` +
          `${holder === undefined ? "" : ")"}; stop it first, or use another --data-dir`,
        { pid: holder, lockFile: path },
      );
    }
    // A holder that was releasing may have removed the file between our open and our lock:
    // then this lock is on a file nobody else can find, and the path must be opened again.
    if (!samePath(file, path)) {
      file.close();
      continue;
    }
    const before = readLock(file);
    if (before.legacy && before.pid !== undefined && legacyHolderRuns(before.pid)) {
      file.close();
      throw new FailedPreconditionError(
        `data directory ${dir} is in use by an older ballast server (pid ${before.pid}, ` +
          `lock file ${path}); stop it first, or use another --data-dir`,
        { pid: before.pid, lockFile: path },
      );
    }
    try {
      file.truncateSync(0);
      file.seekSync(0, Deno.SeekMode.Start);
      file.writeSync(new TextEncoder().encode(`${Deno.pid}\n`));
    } catch (err) {
      file.close();
      // A full disk, most likely: say which file and where to make room.
      throw new FailedPreconditionError(
        `cannot write the lock file ${path}: ${(err as Error).message}; free space on the ` +
          `disk of ${dir} (its volumes stay unavailable until this node starts)`,
        { lockFile: path },
      );
    }
    return {
      path,
      openMode,
      release() {
        try {
          Deno.removeSync(path); // removed while still locked: see samePath() above
        } catch {
          // already gone
        }
        file.close();
      },
    };
  }
  throw new FailedPreconditionError(`cannot take the lock ${path}: it keeps changing`, {
    lockFile: path,
  });
}

/**
 * The pid written into the lock file by its holder, if it reads as one; `legacy` when the
 * file is in the format of versions before the flock ("PID UUID"), whose servers did not
 * take the flock.
 */
function readLock(file: Deno.FsFile): { pid: number | undefined; legacy: boolean } {
  try {
    const buf = new Uint8Array(128);
    const n = file.readSync(buf) ?? 0;
    const words = new TextDecoder().decode(buf.subarray(0, n)).trim().split(/\s+/);
    const pid = Number(words[0]);
    return { pid: Number.isInteger(pid) && pid > 0 ? pid : undefined, legacy: words.length > 1 };
  } catch {
    return { pid: undefined, legacy: false };
  }
}

/**
 * Whether the pid of an older version's lock file still runs a Deno (ballast) process. This
 * process is not that server, whatever its pid.
 */
function legacyHolderRuns(pid: number): boolean {
  if (pid === Deno.pid) return false;
  try {
    return /deno|ballast/.test(Deno.readTextFileSync(`/proc/${pid}/cmdline`));
  } catch {
    return false;
  }
}

/** Whether `path` still names the open `file` (same device and inode). */
function samePath(file: Deno.FsFile, path: string): boolean {
  try {
    const held = file.statSync();
    const named = Deno.statSync(path);
    return held.dev === named.dev && held.ino === named.ino;
  } catch {
    return false;
  }
}
