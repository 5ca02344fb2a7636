/**
 * Placement of a volume group: a master and N replicas on distinct nodes.
 *
 * Pure: the caller passes the nodes it knows (state and free bytes as last seen) and
 * gets either a placement with the reasoning behind it or a reason it cannot be done.
 * Rules, in order:
 *
 * 1. only nodes that are "ready" (not cordoned, unreachable or down), carry the
 *    failure-domain label and whose disk is not full (MIN_FREE_BYTES) are candidates.
 *    Beyond that free space is no condition: every volume is thin (a sparse file; nothing
 *    is reserved), so a group is placed where a volume without replicas would be created
 *    (docs/CLUSTER.md, "Thin provisioning"); free bytes order the candidates (rule 3). A
 *    member added to a group must also have room for what it is sent (`needBytes`);
 * 2. every chosen node is in a distinct failure domain (a distinct value of the
 *    `spreadBy` label; by default every node is its own domain);
 * 3. within a domain the node holding the fewest copies of groups represents it (then
 *    the one with the most free bytes); domains are taken by their representative in
 *    the same order; ties go to the smaller node name, so the same input always gives
 *    the same placement;
 * 4. the chosen node that masters the fewest groups is the master (ties: the first chosen).
 *
 * Copies and masters come from the volume records, which the creator follows live; free
 * bytes only from the node records, written every 30 s, and thin volumes do not lower
 * them. Ordering by free bytes alone put every volume created within those 30 s on the
 * same nodes (and on one machine, where all nodes share a disk, on whichever node last
 * saw the disk a little emptier).
 *
 * `sizeBytes` is checked (a whole number > 0) and shown in the reasoning, never compared with
 * free bytes (thin: the data written, `needBytes`, is).
 * @module
 */

import { InvalidArgumentError } from "../../mod/errors.ts";
import type { NodeState } from "../../mod/types.ts";
import { formatSize } from "../../mod/size.ts";

export interface PlacementRequest {
  /** Replicas besides the master. */
  replicas: number;
  /** Failure-domain label key (e.g. "zone"); default: the node itself. */
  spreadBy?: string;
  sizeBytes: number;
  /** Bytes a new member is sent (the master's allocated bytes): it needs that much free. */
  needBytes?: number;
}

/** A node with less free than this is full: it takes no new copy (thin or not). */
export const MIN_FREE_BYTES = 16 * 1024 * 1024;

export interface PlacementNode {
  name: string;
  labels: Record<string, string>;
  state: NodeState;
  freeBytes: number;
  /** Copies of volume groups the node holds, as the volume records say (default 0). */
  copies?: number;
  /** Groups the node is the master of, as the volume records say (default 0). */
  masters?: number;
}

export type Placement =
  | { ok: true; master: string; replicas: string[]; reasoning: string[] }
  | { ok: false; reason: string };

/** Chooses a master and `request.replicas` replicas; see the module doc for the rules. */
export function place(request: PlacementRequest, nodes: readonly PlacementNode[]): Placement {
  checkRequest(request);
  const spreadBy = request.spreadBy;
  const need = request.replicas + 1;
  const domainOf = (n: PlacementNode) => spreadBy === undefined ? n.name : n.labels[spreadBy];
  const domainText = (n: PlacementNode) =>
    spreadBy === undefined ? n.name : `${spreadBy}=${n.labels[spreadBy]}`;

  const candidates: PlacementNode[] = [];
  const excluded: string[] = [];
  for (const n of [...nodes].sort((a, b) => compareNames(a.name, b.name))) {
    const why = exclusion(n, spreadBy);
    if (why === undefined) candidates.push(n);
    else excluded.push(`${n.name} (${why})`);
  }
  // Best first: fewest copies, then most free bytes, then smaller name.
  candidates.sort((a, b) =>
    (a.copies ?? 0) - (b.copies ?? 0) || b.freeBytes - a.freeBytes || compareNames(a.name, b.name)
  );

  const domains = new Map<string, PlacementNode[]>();
  for (const n of candidates) {
    const key = domainOf(n);
    domains.set(key, [...(domains.get(key) ?? []), n]);
  }
  if (domains.size < need) {
    const unit = spreadBy === undefined ? "eligible nodes" : `nodes in distinct ${spreadBy} values`;
    const have = [...domains.entries()]
      .sort(([a], [b]) => compareNames(a, b))
      .map(([key, ns]) =>
        spreadBy === undefined
          ? key
          : `${spreadBy}=${key} (${ns.map((n) => n.name).sort(compareNames).join(",")})`
      );
    return {
      ok: false,
      reason: `need ${need} ${unit}, have ${domains.size}` +
        (have.length > 0 ? `: ${have.join(", ")}` : "") +
        (excluded.length > 0 ? `; not eligible: ${excluded.join(", ")}` : ""),
    };
  }

  // Map iteration follows insertion order, i.e. each domain's best node, best first.
  const best = [...domains.values()].slice(0, need).map((ns) => ns[0]);
  const master = best.reduce((m, n) => (n.masters ?? 0) < (m.masters ?? 0) ? n : m);
  const chosen = [master, ...best.filter((n) => n !== master)];
  const reasoning = [
    `need ${need} nodes in distinct ${spreadBy ?? "node"} values for ${
      formatSize(request.sizeBytes)
    } (thin); ${domains.size} available`,
    ...excluded.map((e) => `not eligible: ${e}`),
    ...chosen.map((n, i) => {
      const others = domains.get(domainOf(n))!.length - 1;
      return `${i === 0 ? "master" : "replica"} ${n.name}: ${domainText(n)}, ${
        formatSize(n.freeBytes)
      } free` + loadText(n) + (others > 0 ? ` (best of ${others + 1} in its domain)` : "");
    }),
  ];
  return {
    ok: true,
    master: chosen[0].name,
    replicas: chosen.slice(1).map((n) => n.name),
    reasoning,
  };
}

/** What placeAdditional() chose: up to `count` nodes, and why not more when fewer. */
export interface AdditionalPlacement {
  nodes: string[];
  reasoning: string[];
  /** Set when fewer than `count` nodes could be chosen: what was missing. */
  short?: string;
}

/**
 * Chooses up to `request.replicas` more nodes for a group that keeps the members `keep`
 * (a replacement, or a raised replica count), by the same rules as place(): ready nodes
 * with the label and room for `needBytes`, each in a failure domain that no kept member (nor
 * another chosen node) is in, best first. Nodes in `keep` or `exclude` are never chosen.
 */
export function placeAdditional(
  request: PlacementRequest,
  nodes: readonly PlacementNode[],
  keep: readonly string[],
  exclude: readonly string[] = [],
): AdditionalPlacement {
  checkRequest(request);
  const { spreadBy, replicas: count } = request;
  const domainOf = (n: PlacementNode) => spreadBy === undefined ? n.name : n.labels[spreadBy];
  const taken = new Set<string>();
  for (const m of keep) {
    const n = nodes.find((x) => x.name === m);
    taken.add(n ? domainOf(n) ?? m : m);
  }
  const excluded: string[] = [];
  const candidates: PlacementNode[] = [];
  for (const n of [...nodes].sort((a, b) => compareNames(a.name, b.name))) {
    if (keep.includes(n.name) || exclude.includes(n.name)) continue;
    const why = exclusion(n, spreadBy, request.needBytes) ??
      (taken.has(domainOf(n))
        ? (spreadBy === undefined
          ? "a member already"
          : `${spreadBy}=${domainOf(n)} holds a member already`)
        : undefined);
    if (why === undefined) candidates.push(n);
    else excluded.push(`${n.name} (${why})`);
  }
  // As place(): fewest copies (where known), then most free bytes, then smaller name.
  candidates.sort((a, b) =>
    (a.copies ?? 0) - (b.copies ?? 0) || b.freeBytes - a.freeBytes || compareNames(a.name, b.name)
  );
  const chosen: PlacementNode[] = [];
  for (const n of candidates) {
    if (chosen.length === count) break;
    if (chosen.some((c) => domainOf(c) === domainOf(n))) {
      excluded.push(`${n.name} (${spreadBy}=${domainOf(n)} chosen already)`);
      continue;
    }
    chosen.push(n);
  }
  const unit = (n: number) =>
    spreadBy === undefined
      ? `eligible node${n === 1 ? "" : "s"}`
      : `node${n === 1 ? "" : "s"} in a new ${spreadBy} value`;
  const reasoning = [
    `need ${count} more ${unit(count)} for ${formatSize(request.sizeBytes)} (thin) besides ${
      keep.join(", ") || "nothing"
    }`,
    ...excluded.map((e) => `not eligible: ${e}`),
    ...chosen.map((n) =>
      `new member ${n.name}: ${spreadBy === undefined ? n.name : `${spreadBy}=${domainOf(n)}`}, ${
        formatSize(n.freeBytes)
      } free`
    ),
  ];
  if (chosen.length === count) return { nodes: chosen.map((n) => n.name), reasoning };
  return {
    nodes: chosen.map((n) => n.name),
    reasoning,
    short: `need ${count} more ${unit(count)}, found ${chosen.length}` +
      (chosen.length > 0 ? ` (${chosen.map((n) => n.name).join(", ")})` : "") +
      (excluded.length > 0 ? `; not eligible: ${excluded.join(", ")}` : ""),
  };
}

/** Readable form of a placement for tests and logs. */
export function describePlacement(p: Placement): string {
  if (!p.ok) return `impossible: ${p.reason}`;
  return [
    `master ${p.master}, replicas [${p.replicas.join(", ")}]`,
    ...p.reasoning.map((r) => `  ${r}`),
  ]
    .join("\n");
}

function loadText(n: PlacementNode): string {
  if (n.copies === undefined && n.masters === undefined) return "";
  return `, ${n.copies ?? 0} copies, master of ${n.masters ?? 0}`;
}

/**
 * Why a node is no candidate (undefined: it is one): not ready, no domain label, a full
 * disk, or (a member added) no room for the `needBytes` it would be sent.
 */
function exclusion(n: PlacementNode, spreadBy?: string, needBytes = 0): string | undefined {
  if (n.state !== "ready") return n.state;
  if (spreadBy !== undefined && n.labels[spreadBy] === undefined) return `no ${spreadBy} label`;
  if (n.freeBytes < MIN_FREE_BYTES) return `disk full: ${formatSize(n.freeBytes)} free`;
  if (n.freeBytes < needBytes + MIN_FREE_BYTES) {
    return `${formatSize(n.freeBytes)} free, its copy would take ${formatSize(needBytes)}`;
  }
  return undefined;
}

function checkRequest(r: PlacementRequest): void {
  if (!Number.isSafeInteger(r.replicas) || r.replicas < 0) {
    throw new InvalidArgumentError(
      `invalid replicas ${r.replicas}: must be a whole number >= 0`,
      { field: "replicas" },
    );
  }
  if (!Number.isSafeInteger(r.sizeBytes) || r.sizeBytes <= 0) {
    throw new InvalidArgumentError(
      `invalid size ${r.sizeBytes}: must be a whole number of bytes > 0`,
      { field: "sizeBytes" },
    );
  }
  if (r.spreadBy !== undefined && r.spreadBy.trim() === "") {
    throw new InvalidArgumentError(`invalid spreadBy "${r.spreadBy}": empty label key`, {
      field: "spreadBy",
    });
  }
}

/** Code-unit order, independent of locale. */
function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
