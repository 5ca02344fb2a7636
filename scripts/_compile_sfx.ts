/**
 * The self-extracting kind of build, for machines without a `deno compile` runtime base: one
 * file that is a short POSIX sh script followed by a gzip'd tar of the pinned Deno runtime,
 * the staged program source and its npm packages (_compile_stage.ts). On first start the
 * script checks the payload's SHA-256, unpacks it into a fresh temporary directory beside
 * the cache directory and renames that into place (atomic: of two processes starting at once
 * one rename wins, the other drops its copy); later starts go straight to the runtime, which
 * runs main.ts with the baked flags and without any network fetch (--cached-only).
 * @module
 */

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { ENTRY, RUN_FLAGS, type Stage, WORKER_ENTRIES } from "./_compile_stage.ts";

/** Exit codes of the sh header (sysexits.h): the payload is damaged / the cache cannot be made. */
export const EXIT_DAMAGED = 65;
export const EXIT_CANT_CREATE = 73;

/** Facts the header is made from. */
export interface HeaderFacts {
  version: string;
  /** SHA-256 (hex) of the payload. */
  digest: string;
  /** 1-based byte position of the payload in the file (for `tail -c +N`). */
  offset: number;
}

/** Single-quotes `s` for sh. */
function q(s: string): string {
  return `'${s.replaceAll("'", `'"'"'`)}'`;
}

/** The sh script at the head of the file. Needs sh, tail, sha256sum, gzip, tar, mktemp, mv -T. */
export function header(f: HeaderFacts): string {
  const run = [...RUN_FLAGS, "--cached-only", "--frozen", "--no-remote"].map(q).join(" ");
  const warm = ["cache", "--quiet", "--frozen", "--no-remote"].map(q).join(" ");
  const workers = WORKER_ENTRIES.map((w) => `"$dir/app/${w}"`).join(" ");
  return `#!/bin/sh
# Ballast ${f.version}, self-extracting build (README "Building one file"). The payload after
# this script is a gzip'd tar of the Deno runtime, the program and its npm packages. It is
# unpacked once into \${BALLAST_CACHE_DIR:-\${XDG_CACHE_HOME:-$HOME/.cache}/ballast}/VERSION-DIGEST.
set -eu
version=${q(f.version)}
digest=${f.digest}
offset=${f.offset}

die() { code=$1; shift; echo "ballast: $*" >&2; exit "$code"; }

self=$0
[ -f "$self" ] || self=$(command -v -- "$0" 2>/dev/null) || true
[ -f "$self" ] || die 1 "cannot find my own file (\\$0 is $0); run me by path"

if [ -n "\${BALLAST_CACHE_DIR:-}" ]; then base=$BALLAST_CACHE_DIR
elif [ -n "\${XDG_CACHE_HOME:-}" ]; then base=$XDG_CACHE_HOME/ballast
elif [ -n "\${HOME:-}" ]; then base=$HOME/.cache/ballast
else die ${EXIT_CANT_CREATE} "neither BALLAST_CACHE_DIR, XDG_CACHE_HOME nor HOME is set: set BALLAST_CACHE_DIR to a writable directory to unpack into"
fi
case $base in /*) ;; *) base=$(pwd)/$base ;; esac
dir=$base/$version-$(printf %s "$digest" | cut -c1-16)

if [ ! -f "$dir/.unpacked" ]; then
  mkdir -p "$base" 2>/dev/null && [ -w "$base" ] ||
    die ${EXIT_CANT_CREATE} "cannot unpack into $base: it is not a writable directory (set BALLAST_CACHE_DIR to one)"
  tmp=$(mktemp -d "$base/.unpack-XXXXXXXX" 2>/dev/null) ||
    die ${EXIT_CANT_CREATE} "cannot create a directory in $base (set BALLAST_CACHE_DIR to a writable directory)"
  trap 'rm -rf "$tmp"' EXIT
  trap 'exit 130' INT TERM
  echo "ballast: first start of this build: unpacking into $dir" >&2
  sum=$(tail -c +$offset "$self" | sha256sum | cut -d' ' -f1)
  [ "$sum" = "$digest" ] ||
    die ${EXIT_DAMAGED} "$self is damaged: its payload has SHA-256 $sum, expected $digest; download it again"
  # tar's own complaints (one per file on a full disk: thousands) are kept to the first.
  err=$(tail -c +$offset "$self" | gzip -dc | tar -x -C "$tmp" -f - 2>&1) ||
    die ${EXIT_CANT_CREATE} "unpacking into $tmp failed (disk full?): $(printf '%s\\n' "$err" | head -n 1)"
  "$tmp/deno" --version >/dev/null 2>&1 ||
    die ${EXIT_CANT_CREATE} "the unpacked runtime $tmp/deno does not run: is $base on a noexec mount? (set BALLAST_CACHE_DIR)"
  chmod 755 "$tmp"
  printf '%s\\n' "$digest" >"$tmp/.unpacked"
  if mv -T "$tmp" "$dir" 2>/dev/null; then
    # Compile the modules once where they now live (and record that the npm packages'
    # install scripts were seen), so that later starts are quick and quiet.
    DENO_DIR="$dir/deno_dir" DENO_NO_UPDATE_CHECK=1 "$dir/deno" ${warm} \\
      --config "$dir/app/deno.json" "$dir/app/${ENTRY}" ${workers} >/dev/null 2>&1 || true
  else
    [ -f "$dir/.unpacked" ] ||
      die ${EXIT_CANT_CREATE} "cannot move the unpacked files to $dir (it exists but is incomplete: remove it)"
  fi
  rm -rf "$tmp"
  trap - EXIT INT TERM
fi

[ -x "$dir/deno" ] && [ -f "$dir/app/${ENTRY}" ] ||
  die ${EXIT_DAMAGED} "$dir is incomplete (files were removed from it): remove the directory and start again"

DENO_DIR="$dir/deno_dir" DENO_NO_UPDATE_CHECK=1 DENO_NO_PROMPT=1 \\
  exec "$dir/deno" run ${run} --config "$dir/app/deno.json" "$dir/app/${ENTRY}" "$@"
`;
}

/** SHA-256 (hex) of a file. */
async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Uint8Array);
  return hash.digest("hex");
}

/** The header for `facts` with its own length as the payload offset. */
function sizedHeader(version: string, digest: string): Uint8Array {
  let offset = 1;
  for (;;) {
    const bytes = new TextEncoder().encode(header({ version, digest, offset }));
    if (bytes.length + 1 === offset) return bytes;
    offset = bytes.length + 1; // the offset's digits change the length at most once or twice
  }
}

/** Packs the stage (plus the running Deno binary) into the self-extracting file `output`. */
export async function packSelfExtracting(
  st: Stage,
  version: string,
  output: string,
): Promise<{ payloadBytes: number; digest: string }> {
  const denoBin = await Deno.realPath(Deno.execPath());
  await Deno.copyFile(denoBin, `${st.dir}/deno`);
  await Deno.chmod(`${st.dir}/deno`, 0o755);
  const payload = `${st.dir}.payload.tgz`;
  const mtime = `@${Math.floor(Date.parse(st.builtAt) / 1000)}`;
  const tar = [
    "tar",
    "-C",
    st.dir,
    "--sort=name",
    "--owner=0",
    "--group=0",
    "--numeric-owner",
    `--mtime=${mtime}`,
    "-cf",
    "-",
    "deno",
    "app",
    "deno_dir",
  ].map(q).join(" ");
  const out = await new Deno.Command("bash", {
    args: ["-o", "pipefail", "-c", `${tar} | gzip -6 -n > ${q(payload)}`],
    stdin: "null",
  }).output();
  if (!out.success) {
    throw new Error(`packing ${st.dir} failed:\n${new TextDecoder().decode(out.stderr)}`);
  }
  try {
    const digest = await sha256File(payload);
    const head = sizedHeader(version, digest);
    const tmp = `${output}.tmp`;
    await Deno.writeFile(tmp, head, { mode: 0o755 });
    {
      using file = await Deno.open(tmp, { append: true });
      const src = await Deno.open(payload); // its readable closes it
      await src.readable.pipeTo(file.writable, { preventClose: true });
    }
    await Deno.chmod(tmp, 0o755);
    await Deno.rename(tmp, output);
    return { payloadBytes: (await Deno.stat(payload)).size, digest };
  } finally {
    await Deno.remove(payload).catch(() => {});
  }
}
