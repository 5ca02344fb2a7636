/**
 * An exclusive lock on a data directory: DIR/ballast.lock holds the owner's pid.
 * A second server on the same directory is refused with a clear error; a lock left
 * by a process that no longer runs (kill -9, crash) is detected as stale and taken.
 * @module
 */

import { FailedPreconditionError } from "../../mod/errors.ts";

export const LOCK_FILE = "ballast.lock";

/** A held lock; release() removes the file if it is still ours. */
export interface DataDirLock {
  readonly path: string;
  release(): void;
}

/**
 * Takes the lock, creating the directory if needed.
 * @throws FailedPreconditionError when a live process holds it.
 */
export function lockDataDir(dir: string): DataDirLock {
  Deno.mkdirSync(dir, { recursive: true });
  const path = `${dir.replace(/\/+$/, "")}/${LOCK_FILE}`;
  const token = `${Deno.pid} ${crypto.randomUUID()}\n`;
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      Deno.writeTextFileSync(path, token, { createNew: true, mode: 0o644 });
      return {
        path,
        release() {
          try {
            if (Deno.readTextFileSync(path) === token) Deno.removeSync(path);
          } catch {
            // already gone
          }
        },
      };
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    }
    let holder = "";
    try {
      holder = Deno.readTextFileSync(path);
    } catch {
      continue; // removed meanwhile: try again
    }
    const pid = Number(holder.split(" ")[0]);
    if (Number.isInteger(pid) && pid > 0 && processAlive(pid)) {
      throw new FailedPreconditionError(
        `data directory ${dir} is in use by another ballast server (pid ${pid}, lock file ${path}); ` +
          `stop it first, or use another --data-dir`,
        { pid, lockFile: path },
      );
    }
    // Stale: its owner is gone. Remove only if it still holds the same content.
    try {
      if (Deno.readTextFileSync(path) === holder) Deno.removeSync(path);
    } catch {
      // someone else cleaned it up
    }
  }
  throw new FailedPreconditionError(`cannot take the lock ${path}: it keeps changing`, {
    lockFile: path,
  });
}

/** Whether `pid` runs a Deno (ballast) process; a reused pid of another program is not ours. */
function processAlive(pid: number): boolean {
  if (pid === Deno.pid) return true;
  try {
    const cmdline = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
    return /deno|ballast/.test(cmdline);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    // No /proc (not Linux) or no permission: assume it runs, to be safe.
    return true;
  }
}
