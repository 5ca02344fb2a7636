/**
 * The drain's side of a planned handover (`ballast node drain`), pure: which in-sync member
 * a group's master can hand over to, or why none can. The master's side is in record.ts
 * (plan(): close the export, then hand over at the next epoch) and machine.ts.
 * @module
 */

import { formatSize } from "../../mod/size.ts";
import { MIN_FREE_BYTES } from "./placement.ts";
import type { GroupRecord } from "./record.ts";

/** A node as the drain sees it (NodeInfo's name, derived state and free bytes). */
export interface HandoverNode {
  name: string;
  state: "ready" | "cordoned" | "unreachable" | "down";
  /** Free bytes on its data disk as last reported; a full one could not serve (its epoch). */
  freeBytes?: number;
}

/**
 * Where a group mastered by `from` can go (`cordoned`: only a cordoned member could take it),
 * or why it cannot (an in-sync copy would be lost).
 */
export type HandoverChoice = { to: string; cordoned?: true } | { refused: string };

/**
 * The member `from` should hand `r` over to: an in-sync member that is up and whose disk is
 * not full, a ready node first (cordoned ones only when no ready one is left), the one sorted
 * first among equals.
 * `notes` says why members are out of sync (the volume record's outOfSync), for the refusal.
 */
export function handoverTarget(
  r: GroupRecord,
  from: string,
  nodes: readonly HandoverNode[],
  notes: Record<string, { reason: string }> = {},
): HandoverChoice {
  const state = new Map(nodes.map((n) => [n.name, n.state]));
  const free = new Map(nodes.map((n) => [n.name, n.freeBytes ?? Infinity]));
  const full = (m: string) => (free.get(m) ?? Infinity) < MIN_FREE_BYTES;
  const others = r.members.filter((m) => m !== from);
  if (others.length === 0) {
    return {
      refused: `it has no replica: its only copy is on ${from} (\`ballast volume update NAME ` +
        "--replicas 1` adds one)",
    };
  }
  const usable = (m: string, ok: string[]) =>
    r.inSync.includes(m) && !r.down.includes(m) && ok.includes(state.get(m) ?? "down") &&
    !full(m);
  const ready = others.find((m) => usable(m, ["ready"]));
  if (ready !== undefined) return { to: ready };
  const cordoned = others.find((m) => usable(m, ["cordoned"]));
  if (cordoned !== undefined) return { to: cordoned, cordoned: true };
  const why = others.map((m) => {
    const st = state.get(m) ?? "unknown";
    if (r.down.includes(m) || st === "down") return `${m} is down`;
    if (!r.inSync.includes(m)) {
      const note = notes[m]?.reason;
      return `${m} is out of sync` + (note ? ` (${note})` : "");
    }
    if (full(m)) {
      return `${m}'s disk is full (${formatSize(free.get(m)!)} free: it could not serve)`;
    }
    return `${m} is ${st}`;
  });
  return {
    refused: `no in-sync replica could take over: ${why.join("; ")}; moving the master would ` +
      `leave no in-sync copy`,
  };
}
