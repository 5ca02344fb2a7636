/**
 * The version report of this process (`ballast version`, GET /v1/version): the release, the
 * build baked in by scripts/compile.ts (mod/build.ts), and the Deno runtime. A source
 * checkout has no baked commit; it is read from git once, when git is at hand.
 * @module
 */

import { BUILD } from "../../mod/build.ts";
import type { VersionInfo } from "../../mod/types.ts";
import { VERSION } from "../../mod/version.ts";

let sourceCommit: string | null | undefined;

/** This process's version, build and runtime. */
export function versionInfo(): VersionInfo {
  return {
    version: VERSION,
    commit: BUILD.kind === "source" ? (sourceCommit ??= gitCommit()) : BUILD.commit,
    builtAt: BUILD.builtAt,
    build: BUILD.kind,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    apiVersion: "v1",
  };
}

/** HEAD of the checkout holding this file (+"-dirty" with uncommitted changes), or null. */
function gitCommit(): string | null {
  const root = new URL("../../", import.meta.url);
  if (root.protocol !== "file:") return null;
  const git = (args: string[]): string | null => {
    try {
      const out = new Deno.Command("git", {
        args: ["-C", root.pathname, ...args],
        stdin: "null",
        stdout: "piped",
        stderr: "null",
      }).outputSync();
      return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
    } catch {
      return null; // no git, or not allowed to run it
    }
  };
  const head = git(["rev-parse", "HEAD"]);
  if (!head) return null;
  const dirty = git(["status", "--porcelain", "--untracked-files=no"]);
  return dirty ? `${head}-dirty` : head;
}
