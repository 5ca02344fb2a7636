/**
 * How this copy of Ballast was built. In a source checkout (`deno run main.ts`) it says
 * "source"; `deno task compile` (scripts/compile.ts) rewrites this file in its staging copy
 * with the kind of build, the git commit and the build time, so the built program reports
 * them through `ballast version` and GET /v1/version.
 * @module
 */

/** source: deno run from a checkout; deno-compile: `deno compile`; self-extracting: see README. */
export type BuildKind = "source" | "deno-compile" | "self-extracting";

/** What the build baked in (null fields: not known at build time). */
export interface BuildInfo {
  kind: BuildKind;
  /** Git commit the build was made from, with "-dirty" when the tree had uncommitted changes. */
  commit: string | null;
  /** When the build was made (ISO 8601). */
  builtAt: string | null;
}

/** This copy's build. */
// scripts/compile.ts replaces this line (keep it on one line).
export const BUILD: BuildInfo = { kind: "source", commit: null, builtAt: null };
