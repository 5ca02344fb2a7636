/**
 * How the members of a replicated volume read on a terminal: the member table of `volume
 * get`, and the frames and lines of `volume get --watch`. Pure functions of a Volume (and
 * the time, for the watch's timestamps), so they are tested without a cluster.
 * @module
 */

import { formatSize } from "../../mod/size.ts";
import type { MemberResync, MemberState, Volume, VolumeMember } from "../../mod/types.ts";
import { table } from "./_output.ts";

/** Width of the progress bar between its brackets. */
export const BAR_WIDTH = 20;
/** Hex digits of a root hash shown in tables (`-o json` has all of it). */
export const ROOT_DIGITS = 16;

const STATE_WORDS: Record<MemberState, string> = {
  "in-sync": "in sync",
  "resyncing": "resyncing",
  "out-of-sync": "out of sync",
  "down": "down",
};

/** "[########------------]" for `percent` (0 to 100) of `width` cells. */
export function progressBar(percent: number, width = BAR_WIDTH): string {
  const p = Math.min(100, Math.max(0, Number.isFinite(percent) ? percent : 0));
  const filled = Math.floor(p / 100 * width);
  return `[${"#".repeat(filled)}${"-".repeat(width - filled)}]`;
}

/** A duration for people: 45s, 2m05s, 1h02m, 3d04h. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const two = (n: number) => String(n).padStart(2, "0");
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${two(s % 60)}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${two(Math.floor(s % 3600 / 60))}m`;
  return `${Math.floor(s / 86_400)}d${two(Math.floor(s % 86_400 / 3600))}h`;
}

/** "20 MiB/s"; "-" when unknown (0). */
export function formatRate(bytesPerSecond: number): string {
  return bytesPerSecond > 0 ? `${formatSize(Math.round(bytesPerSecond))}/s` : "-";
}

/** "45.2%"; always one decimal, so a column of them lines up. */
export function formatPercent(percent: number): string {
  return `${percent.toFixed(1)}%`;
}

/**
 * "45.2% [#########-----------] 140 MiB left (130 of 150 differing regions), 20 MiB/s, ETA 7s,
 * sent 12 MiB at 1.2 MiB/s (limit 8 MiB/s)": the rate before the ETA is the volume compared per
 * second, the ETA the differing regions left at the rate they were copied ("estimating" until
 * there is enough to go by), the rate after "sent" what crossed the network, which `serve
 * --resync-rate` caps.
 */
export function resyncDetail(r: MemberResync, bar = true): string {
  const limit = r.rateLimitBytesPerSecond
    ? ` (limit ${formatRate(r.rateLimitBytesPerSecond)})`
    : "";
  if (r.finishedAt) {
    return `${formatPercent(100)}${bar ? ` ${progressBar(100)}` : ""} done, sent ` +
      `${formatSize(r.sentBytes)}; being marked in sync`;
  }
  // Not answered yet: a node just back, or one the master cannot reach.
  if (r.waiting) return `waiting for the member to answer (asked at ${r.startedAt})`;
  return [
    `${formatPercent(r.percent)}${bar ? ` ${progressBar(r.percent)}` : ""}`,
    `${formatSize(r.bytesLeft)} left${regionsLeft(r)},`,
    `${formatRate(r.rateBytesPerSecond)},`,
    `ETA ${r.etaSeconds === undefined ? "estimating" : formatDuration(r.etaSeconds)},`,
    `sent ${formatSize(r.sentBytes)}` +
    (r.sendRateBytesPerSecond > 0 ? ` at ${formatRate(r.sendRateBytesPerSecond)}` : "") + limit,
    ...(r.pass > 1 ? [`(pass ${r.pass})`] : []),
  ].join(" ");
}

/** " (130 of 150 differing regions)": the regions the pass has still to copy, when known. */
function regionsLeft(r: MemberResync): string {
  if (r.regionsToCopy === undefined) return "";
  const left = r.regionsToCopy - (r.regionsCopied ?? 0);
  return ` (${left} of ${r.regionsToCopy} differing region${r.regionsToCopy === 1 ? "" : "s"})`;
}

/** The DETAIL cell of a member: progress, or how long and why it is out of sync or down. */
export function memberDetail(m: VolumeMember): string {
  if (m.state === "resyncing" && m.resync) {
    // Not answered yet: why it left the in-sync set and why the last try failed too.
    const why = m.resync.waiting && m.reason ? `; ${m.reason}` : "";
    return resyncDetail(m.resync) + why;
  }
  if (m.state === "in-sync") return "-";
  const since = m.lagSeconds !== undefined && m.lagSeconds > 0
    ? `out of sync for ${formatDuration(m.lagSeconds)}; `
    : "";
  return `${since}${m.reason ?? "-"}`;
}

/** The members table of `volume get`. */
export function memberTable(members: VolumeMember[]): string {
  return table(
    ["MEMBER", "ROLE", "STATE", "ROOT HASH", "DETAIL"],
    members.map((m) => [
      m.node,
      m.role,
      STATE_WORDS[m.state],
      m.rootHash ? m.rootHash.slice(0, ROOT_DIGITS) : "-",
      memberDetail(m),
    ]),
  );
}

const NO_REPLICAS = "no replicas: nothing to bring in sync";

/** Whether a watch is over: every member in sync (a volume without replicas always is). */
export function isHealthy(v: Volume): boolean {
  if (v.memberStatus) return v.memberStatus.every((m) => m.state === "in-sync");
  return v.members === undefined || v.phase === "healthy";
}

/** The heading of a watch frame and line: name, phase or "healthy", epoch and master. */
function heading(v: Volume): string {
  const phase = isHealthy(v) ? "healthy" : v.phase ?? "-";
  return `${v.name} ${phase} (epoch ${v.epoch}, master ${v.master})`;
}

/** One line per update when stdout is not a terminal. */
export function watchLine(v: Volume, now: number): string {
  const members = (v.memberStatus ?? []).map((m) => {
    const what = m.state === "resyncing" && m.resync
      ? `resyncing ${resyncDetail(m.resync, false)}`
      : STATE_WORDS[m.state];
    return `${m.node} ${m.role} ${what}`;
  });
  const live = v.live?.error ? [`live status unavailable: ${v.live.error}`] : [];
  // Without the growing "absent for N s", so that a blocked change prints once.
  const blocked = v.membershipBlocked
    ? [`membership blocked: ${v.membershipBlocked.reason.replace(/absent for \d+ s/g, "absent")}`]
    : [];
  const parts = [...members, ...live, ...blocked];
  return `${new Date(now).toISOString()} ${heading(v)}: ${parts.join("; ") || NO_REPLICAS}`;
}

/** The frame a terminal redraws in place. */
export function watchFrame(v: Volume, now: number): string {
  const time = new Date(now).toISOString().slice(11, 19);
  const live = v.live?.error ? `live status unavailable: ${v.live.error}\n` : "";
  const members = v.memberStatus ? memberTable(v.memberStatus) : `${NO_REPLICAS}\n`;
  const blocked = v.membershipBlocked
    ? `membership blocked since ${v.membershipBlocked.since}: ${v.membershipBlocked.reason}\n`
    : "";
  return `${heading(v)}   ${time} UTC\n${live}${blocked}${members}`;
}
