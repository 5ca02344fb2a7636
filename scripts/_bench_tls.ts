/**
 * libnbd's default certificate directory for scripts/bench.ts --tls. fio's nbd engine refuses
 * `?tls-certificates=` in URIs (local file access is not allowed), so libnbd falls back to
 * /etc/pki/libnbd (root) or $HOME/.pki/libnbd; the bench installs its client certificate there
 * for the run and puts back what was there before.
 * @module
 */

import { dirname } from "node:path";

const FILES = ["ca-cert.pem", "client-cert.pem", "client-key.pem"] as const;

/** Where libnbd looks for certificates when a nbds:// URI names none. */
export function libnbdCertDir(): string {
  if (Deno.uid() === 0) return "/etc/pki/libnbd";
  const home = Deno.env.get("HOME");
  if (!home) throw new Error("HOME is not set; cannot find libnbd's certificate directory");
  return `${home}/.pki/libnbd`;
}

type Original =
  | { kind: "absent" }
  | { kind: "file"; data: Uint8Array; mode: number }
  | { kind: "symlink"; target: string };

export interface InstalledCerts {
  /** The libnbd directory the certificates were written to. */
  dir: string;
  /** Copies of the files that were there before (for manual recovery after a SIGKILL). */
  backupDir: string;
  /** Names of the files that existed before and will be put back. */
  replaced: string[];
  /** Puts the original files back (idempotent, synchronous so it works in signal handlers). */
  restore(): void;
}

/**
 * Two benches at once would back up each other's certificates; a lock file (with the owner's
 * pid, taken over when that process is gone) keeps them apart.
 */
function lock(): string {
  const path = `${Deno.env.get("TMPDIR") || "/tmp"}/ballast-bench-libnbd.lock`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      Deno.writeTextFileSync(path, `${Deno.pid}\n`, { createNew: true });
      return path;
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      const owner = Number(Deno.readTextFileSync(path).trim());
      if (owner > 0 && exists(`/proc/${owner}`)) {
        throw new Error(
          `another bench (pid ${owner}) has its certificates in libnbd's directory (${path})`,
        );
      }
      Deno.removeSync(path); // stale
    }
  }
  throw new Error(`could not take ${path}`);
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Backs up ca-cert.pem, client-cert.pem and client-key.pem of libnbd's directory (in memory
 * and in `backupDir`), then writes those of `clientDir` in their place. Creates the directory
 * when missing and removes it again on restore if it is empty then.
 */
export function installLibnbdCerts(clientDir: string, backupDir: string): InstalledCerts {
  const dir = libnbdCertDir();
  const lockPath = lock();
  const created: string[] = [];
  for (let d = dir; !exists(d); d = dirname(d)) created.push(d);
  Deno.mkdirSync(backupDir, { recursive: true, mode: 0o700 });
  const originals = new Map<string, Original>();
  for (const f of FILES) {
    const path = `${dir}/${f}`;
    let st: Deno.FileInfo;
    try {
      st = Deno.lstatSync(path);
    } catch {
      originals.set(f, { kind: "absent" });
      continue;
    }
    if (st.isSymlink) {
      const target = Deno.readLinkSync(path);
      originals.set(f, { kind: "symlink", target });
      Deno.writeTextFileSync(`${backupDir}/${f}.symlink`, target + "\n");
    } else {
      const data = Deno.readFileSync(path);
      originals.set(f, { kind: "file", data, mode: (st.mode ?? 0o600) & 0o7777 });
      Deno.writeFileSync(`${backupDir}/${f}`, data, { mode: 0o600 });
    }
  }
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    const errors: string[] = [];
    for (const f of FILES) {
      const path = `${dir}/${f}`;
      try {
        if (exists(path)) Deno.removeSync(path);
        const o = originals.get(f)!;
        if (o.kind === "file") {
          Deno.writeFileSync(path, o.data, { mode: o.mode });
          Deno.chmodSync(path, o.mode);
        } else if (o.kind === "symlink") Deno.symlinkSync(o.target, path);
      } catch (err) {
        errors.push(`${path}: ${(err as Error).message}`);
      }
    }
    for (const d of created) {
      try {
        Deno.removeSync(d); // only when empty
      } catch { /* not empty or gone */ }
    }
    if (errors.length > 0) {
      throw new Error(
        `could not restore libnbd certificates (originals are in ${backupDir}):\n  ${
          errors.join("\n  ")
        }`,
      );
    }
    Deno.removeSync(lockPath);
  };
  try {
    Deno.mkdirSync(dir, { recursive: true, mode: 0o755 });
    for (const f of FILES) {
      const path = `${dir}/${f}`;
      if (exists(path)) Deno.removeSync(path);
      const mode = f === "client-key.pem" ? 0o600 : 0o644;
      Deno.writeFileSync(path, Deno.readFileSync(`${clientDir}/${f}`), { mode });
    }
  } catch (err) {
    restore();
    throw err;
  }
  const replaced = FILES.filter((f) => originals.get(f)!.kind !== "absent");
  return { dir, backupDir, replaced, restore };
}
