/**
 * `ballast volume verify`'s output: one row per member (master first) with its root hash and
 * result, then the regions that differ or are corrupt, by byte range.
 * @module
 */

import type { VolumeVerifyReport } from "../../mod/types.ts";
import { formatSize } from "../../mod/size.ts";
import { table } from "./_output.ts";

/** Exit code of `volume verify` when a copy differs or a member could not be compared. */
export const EXIT_DIFFERENT = 3;

/** Regions listed per member in the text output (the JSON has up to 1000). */
const SHOWN = 20;

function result(m: VolumeVerifyReport["members"][number]): string {
  if (m.error) return "not compared";
  const parts: string[] = [];
  const n = (k: number, what: string) => `${k} ${k === 1 ? "region" : "regions"} ${what}`;
  if (m.role === "replica") {
    parts.push(
      m.equal ? "equal" : n(m.differingCount, m.differingCount === 1 ? "differs" : "differ"),
    );
  }
  if (m.role === "master" && m.differingCount > 0) {
    parts.push(n(m.differingCount, "outvoted by every replica"));
  }
  if (m.corruptCount > 0) parts.push(n(m.corruptCount, "corrupt"));
  if (m.resyncing) parts.push("resyncing");
  if (m.role === "master" && parts.length === 0) parts.push("reference");
  return parts.join(", ");
}

/** "region 3 (3 MiB..4 MiB)" for each listed region, up to SHOWN, then "and N more". */
function ranges(list: number[], count: number, unit: number): string {
  const shown = list.slice(0, SHOWN).map((r) =>
    `${r} (${formatSize(r * unit)}..${formatSize((r + 1) * unit)})`
  );
  const more = count - shown.length;
  return shown.join(", ") + (more > 0 ? `, and ${more} more` : "");
}

/** The text form of a report. */
export function verifyText(r: VolumeVerifyReport): string {
  const rows = r.members.map((m) => [
    m.node,
    m.role,
    m.root ?? "-",
    result(m),
    m.error ?? "-",
  ]);
  let out = `Volume "${r.name}": ${r.deep ? "deep" : "quick"} verification by master ${r.node}` +
    ` of ${r.regions} regions of ${formatSize(r.regionBytes)} in ${
      (r.ms / 1000).toFixed(1)
    } s\n\n` + table(["MEMBER", "ROLE", "ROOT HASH", "RESULT", "ERROR"], rows);
  for (const m of r.members) {
    if (m.differingCount > 0) {
      const what = m.role === "master"
        ? "regions in which every in-sync replica differs from it (the master's copy is suspect)"
        : "regions that differ from the master's";
      out += `\n${m.node}: ${what}: ${ranges(m.differing, m.differingCount, r.regionBytes)}\n`;
    }
    if (m.corruptCount > 0) {
      out += `\n${m.node}: regions whose data is not what their hash says (silent ` +
        `corruption): ${ranges(m.corrupt, m.corruptCount, r.regionBytes)}\n`;
    }
  }
  const away = r.members.filter((m) => m.error).map((m) => m.node);
  const differs = r.members.some((m) => !m.error && (m.equal === false || m.corruptCount > 0));
  const why = [
    ...(away.length > 0 ? [`${away.join(", ")} not compared (ERROR above)`] : []),
    ...(differs || away.length === 0 ? [advice(r)] : []),
  ];
  out += r.ok ? "\nOK: every member holds the master's data.\n" : `\nNOT OK: ${why.join("; ")}.\n`;
  const roots = new Set(r.members.filter((m) => m.root !== undefined).map((m) => m.root));
  if (r.ok && roots.size > 1) {
    // Each member's root is read when that member is asked, so writes in between show.
    out += "(The root hashes differ because each was read at its own moment while writes " +
      "went on; compared region by region, every member holds the master's data.)\n";
  }
  return out;
}

/** What to do about the differences of report `r` (what the master did already, deep). */
function advice(r: VolumeVerifyReport): string {
  const master = r.members.find((m) => m.role === "master");
  const bad = r.members.filter((m) => m.role === "replica" && m.corruptCount > 0)
    .map((m) => m.node);
  const alsoBad = bad.length === 0
    ? ""
    : `; ${bad.join(", ")} ${
      bad.length === 1 ? "has a corrupt copy too and was" : "have corrupt copies too and were"
    } taken out of sync, so that the drain picks another replica, which then repairs ${
      bad.length === 1 ? "it" : "them"
    }`;
  const move =
    `move the master to an in-sync replica with \`ballast node drain ${master?.node}\`, ` +
    `then verify --deep again${alsoBad}`;
  if (r.deep && master && master.corruptCount > 0) {
    return `the master's own copy is corrupt, so nothing was resynced (that would copy it): ` +
      move;
  }
  if (master && (master.differingCount > 0 || master.suspect)) {
    const why = master.differingCount > 0
      ? `every in-sync replica differs from the master in the same ${
        master.differingCount === 1 ? "region" : "regions"
      }`
      : `an earlier deep verification found the master's copy suspect (${master.suspect})`;
    return `${why}: the master's copy is suspect, so nothing was resynced (that would copy ` +
      `it over the replicas): ${move}`;
  }
  const resyncing = r.members.filter((m) => m.resyncing).map((m) => m.node);
  const unexplained = r.members.some((m) =>
    m.role === "replica" && !m.error && !m.resyncing && (m.equal === false || m.corruptCount > 0)
  );
  if (resyncing.length > 0 && !unexplained) {
    return `${resyncing.join(", ")} ${resyncing.length === 1 ? "is" : "are"} being resynced: ` +
      `the resync copies the differing blocks; follow it with \`ballast volume get ${r.name} ` +
      `--watch\`, then verify${r.deep ? " --deep" : ""} again`;
  }
  if (!r.deep) return "differences found from the hash lists; run with --deep to rehash the data";
  return "resync the members that differ (or replace them)";
}
