/**
 * What `node drain` and `volume events` print: progress lines and the summary of a drain,
 * and the events table with relative times. Pure: text from the API's answers.
 * @module
 */

import type { DrainProgress, DrainReport, DrainVolume, VolumeEvent } from "../../mod/types.ts";
import { age, table } from "./_output.ts";

/** Exit code of a drain that was refused or did not move every master it should have. */
export const EXIT_NOT_DRAINED = 3;

/** "1 volume", "2 volumes". */
function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? "" : "s"}`;
}

function volumeLine(v: DrainVolume): string {
  switch (v.status) {
    case "planned":
      return `  ${v.volume}: master ${v.from} -> ${v.to}` + (v.reason ? ` (${v.reason})` : "");
    case "moved":
      return `  ${v.volume}: moved to ${v.to} (epoch ${v.epoch}` +
        (v.ms !== undefined ? `, ${(v.ms / 1000).toFixed(1)} s` : "") +
        (v.reason ? `, ${v.reason}` : "") + ")";
    case "refused":
      return `  ${v.volume}: cannot move: ${v.reason}`;
    case "skipped":
      return `  ${v.volume}: left on ${v.from} (--force): ${v.reason}`;
    case "failed":
      return `  ${v.volume}: FAILED: ${v.reason}`;
  }
}

/** One progress line of a drain, as it comes (human output); `first`: the first volume. */
export function drainProgressText(
  p: DrainProgress,
  options: { dryRun: boolean; first?: boolean },
): string {
  if (p.type === "plan") {
    const n = p.volumes.length;
    if (n === 0) return `node "${p.node}" masters no volume\n`;
    const head = `node "${p.node}" masters ${plural(n, "volume")}` +
      (options.dryRun ? " (dry run: nothing is changed)" : "") + ":\n";
    return head + p.volumes.map(volumeLine).join("\n") + "\n";
  }
  if (p.type === "volume") {
    return (options.first ? "\ndraining, one volume at a time:\n" : "") +
      volumeLine(p.volume) + "\n";
  }
  return "";
}

/** The summary after the progress lines, and the exit code. */
export function drainSummary(r: DrainReport): { text: string; code: number } {
  const count = (s: DrainVolume["status"]) => r.volumes.filter((v) => v.status === s).length;
  const secs = (r.ms / 1000).toFixed(1);
  if (r.dryRun) {
    const refused = count("refused");
    return {
      text: refused === 0
        ? `\ndry run: node "${r.node}" can be drained\n`
        : `\ndry run: ${plural(refused, "volume")} would be left without an ` +
          `in-sync copy; the drain would be refused without --force\n`,
      code: refused === 0 || r.force ? 0 : EXIT_NOT_DRAINED,
    };
  }
  if (r.result === "refused") {
    return {
      text: `\ndrain of node "${r.node}" refused: ${plural(count("refused"), "volume")} would be ` +
        "left without an in-sync copy (reasons above). Nothing was changed. Bring their " +
        "replicas in sync (`ballast volume get NAME`) or give them one as the reason says, " +
        "or use --force to move the others and leave these here.\n",
      code: EXIT_NOT_DRAINED,
    };
  }
  const parts = [`${count("moved")} moved`];
  if (count("skipped") > 0) parts.push(`${count("skipped")} left on the node (--force)`);
  if (count("failed") > 0) parts.push(`${count("failed")} failed`);
  const done = r.result === "drained";
  return {
    text: `\nnode "${r.node}" ${done ? "drained" : "NOT fully drained"} in ${secs} s: ` +
      `${parts.join(", ")}; it is cordoned (\`ballast node uncordon ${r.node}\` to take ` +
      "placements again)\n",
    code: done ? 0 : EXIT_NOT_DRAINED,
  };
}

/** The `volume events` table: newest last, times relative to `now`. */
export function eventsTable(items: VolumeEvent[], now = Date.now()): string {
  if (items.length === 0) {
    return "No events (a volume without replicas has none; events start with this version).\n";
  }
  return table(
    ["AGE", "TIME", "EPOCH", "MASTER", "EVENT", "MESSAGE"],
    items.map((e) => [
      age(e.at, now),
      e.at.replace(/\.\d+Z$/, "Z"),
      String(e.epoch),
      e.master,
      e.pending ? `${e.type} (pending)` : e.type,
      e.message,
    ]),
  );
}
