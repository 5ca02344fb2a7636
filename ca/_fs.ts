/**
 * File primitives for the PKI directory: atomic replace (temp file in the same directory,
 * fsync, rename, fsync of the directory) and durable appends.
 * @module
 */
import { dirname, join } from "node:path";

/** Mode of private key files. */
export const KEY_MODE = 0o600;
/** Mode of certificates, bundles and indexes. */
export const PUBLIC_MODE = 0o644;

async function syncDir(dir: string): Promise<void> {
  try {
    const d = await Deno.open(dir, { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch {
    // Some filesystems refuse fsync on directories; the rename itself is still atomic.
  }
}

/**
 * Replaces `path` with `data` atomically: readers see the old or the new content, never a
 * mix, and a crash leaves at most a stray `.tmp-*` file. The temp file is created with
 * `mode` (O_EXCL), so a key is never readable by others, not even briefly.
 */
export async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
  const dir = dirname(path);
  const rand = crypto.getRandomValues(new Uint32Array(2)).join("");
  const tmp = join(dir, `.${path.slice(dir.length + 1)}.tmp-${rand}`);
  const f = await Deno.open(tmp, { write: true, createNew: true, mode });
  try {
    try {
      await Deno.chmod(tmp, mode); // in case the umask stripped bits we asked for
      const bytes = new TextEncoder().encode(data);
      let off = 0;
      while (off < bytes.length) off += await f.write(bytes.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  await syncDir(dir);
}

/**
 * Appends one line durably (O_APPEND, then fsync). A torn last line left by a crash is
 * terminated first so that it cannot swallow the new one.
 */
export async function appendLine(path: string, line: string, mode = PUBLIC_MODE): Promise<void> {
  const f = await Deno.open(path, { read: true, append: true, create: true, mode });
  try {
    let prefix = "";
    if ((await f.stat()).size > 0) {
      await f.seek(-1, Deno.SeekMode.End);
      const last = new Uint8Array(1);
      await f.read(last);
      if (last[0] !== 0x0a) prefix = "\n";
    }
    await f.write(new TextEncoder().encode(prefix + line.trimEnd() + "\n"));
    await f.sync();
  } finally {
    f.close();
  }
}

/** The file's text, or undefined if it does not exist. */
export async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
}

/** Parses JSON lines, skipping blank lines and a torn last line (crash during append). */
export function parseJsonLines<T>(text: string | undefined): T[] {
  const out: T[] = [];
  const lines = (text ?? "").split("\n");
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].trim()) continue;
    try {
      out.push(JSON.parse(lines[i]) as T);
    } catch (err) {
      if (i < lines.length - 1 && lines.slice(i + 1).some((l) => l.trim())) throw err;
    }
  }
  return out;
}

/** Files of the PKI directory that hold a secret: private keys and the cluster KEK. */
const SECRET = /\.(key|kek)(\.pending|\.next)?$/;

/**
 * Takes back what others may read of PKI directory `dir`: the directory itself to 0700 and
 * every key (and the KEK) to 0600. Returns one line per change ("ca.key was 0644"), for a
 * warning: a key that was readable may have been read.
 */
export async function tightenPrivateModes(dir: string): Promise<string[]> {
  const changed: string[] = [];
  const tighten = async (path: string, name: string, mode: number) => {
    const was = (await Deno.stat(path)).mode! & 0o777;
    if ((was & 0o077) === 0) return;
    await Deno.chmod(path, mode);
    changed.push(`${name} was 0${was.toString(8)}`);
  };
  try {
    await tighten(dir, "the directory", 0o700);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return changed;
    throw err;
  }
  for await (const e of Deno.readDir(dir)) {
    // A symlinked key is the file it points to (Deno.stat and chmod follow the link).
    if ((e.isFile || e.isSymlink) && SECRET.test(e.name)) {
      await tighten(join(dir, e.name), e.name, KEY_MODE);
    }
  }
  return changed;
}
