/**
 * `ballast node list|get|cordon|uncordon|drain|remove`.
 * @module
 */

import { clientFromFlags } from "./_credentials.ts";
import { formatSize } from "../../mod/size.ts";
import type { NodeInfo } from "../../mod/types.ts";
import { type Command, type CommandSpec, groupCommand, requirePositionals } from "./_command.ts";
import { age, fields, json, table } from "./_output.ts";
import { drainProgressText, drainSummary } from "./_drain_view.ts";

export const NODE_SPECS: Record<string, CommandSpec> = {
  list: {
    path: "node list",
    args: "",
    summary: "List storage nodes with their state, masters and copies held, and capacity.",
    flags: [],
    client: true,
    examples: ["ballast node list"],
  },
  get: {
    path: "node get",
    args: "NAME",
    summary: "Show one node, with its orphaned copies (DATA/orphaned/) and their size.",
    flags: [],
    client: true,
    examples: ["ballast node get node1 -o json"],
  },
  cordon: {
    path: "node cordon",
    args: "NAME [--reason TEXT]",
    summary: "Stop new placements on a node; it keeps serving the volumes it holds.",
    flags: [{ name: "reason", value: "TEXT", help: "why, shown in node list" }],
    client: true,
    examples: ['ballast node cordon node1 --reason "disk replacement"'],
  },
  drain: {
    path: "node drain",
    args: "NAME [--force] [--dry-run]",
    summary: "Cordon a node and move every master off it, one volume at a time: each " +
      "replicated volume it masters is handed to an in-sync replica on another node at a new " +
      "epoch (the old master closes its export first; NBD clients attached to this node are " +
      "disconnected). Refused, with the reason per volume and nothing changed, when a volume " +
      "would be left without an in-sync copy (no replicas, replicas out of sync or down), " +
      "unless --force (those volumes stay here). The node keeps its copies as in-sync " +
      "replicas. Exit codes: 0 drained, 1 error, 2 usage, 3 refused or not every master moved.",
    flags: [
      {
        name: "force",
        help: "drain even though some volumes cannot move; they stay mastered here",
      },
      { name: "dry-run", help: "print the plan and what would be refused; change nothing" },
    ],
    client: true,
    examples: [
      "ballast node drain node1 --dry-run",
      "ballast node drain node1",
      "ballast node drain node1 --force -o json",
    ],
  },
  remove: {
    path: "node remove",
    args: "NAME",
    summary: "Forget a node that is gone for good (retired, or lost with its disks): its " +
      "record and cordon are deleted, so it leaves `node list`, the metrics and their " +
      "alerts. Refused, with the reason, while the node runs (stop it first) or while any " +
      "volume still has a copy there (wait for its replacement after --replace-after, " +
      "`volume update --replicas`, or delete the volume). A node removed by mistake " +
      "registers again when it starts.",
    flags: [],
    client: true,
    examples: ["ballast node remove node4", "ballast node remove node4 -o json"],
  },
  uncordon: {
    path: "node uncordon",
    args: "NAME",
    summary: "Let a cordoned (or drained) node take new placements again.",
    flags: [],
    client: true,
    examples: ["ballast node uncordon node1"],
  },
};

export const NODE_GROUP: CommandSpec = {
  path: "node",
  args: "COMMAND [flags]",
  summary: "Inspect storage nodes; cordon or drain them for maintenance; remove retired ones.",
  flags: [],
  client: true,
  examples: ["ballast node list"],
  subcommands: [
    ["list", "list nodes"],
    ["get", "show one node"],
    ["cordon", "stop new placements on a node"],
    ["drain", "cordon a node and move every master off it"],
    ["uncordon", "allow new placements again"],
    ["remove", "forget a node that is gone for good"],
  ],
};

/** Entry point of `ballast node ...`. */
export const nodeCommand: Command = groupCommand(
  NODE_GROUP,
  NODE_SPECS,
  async ({ sub, spec, p }, io) => {
    using client = await clientFromFlags(p, io);
    if (sub === "list") {
      requirePositionals(spec, p, []);
      const items = await client.listNodes();
      io.out(p.output === "json" ? json({ items }) : nodeTable(items));
      return 0;
    }
    const [name] = requirePositionals(spec, p, ["NAME"]);
    if (sub === "drain") {
      const dryRun = p.values["dry-run"] === true;
      let first = true;
      const report = await client.drainNode(name, {
        force: p.values.force === true,
        dryRun,
        onProgress: (line) => {
          if (p.output === "json") return;
          io.out(drainProgressText(line, { dryRun, first }));
          if (line.type === "volume") first = false;
        },
      });
      const { text, code } = drainSummary(report);
      io.out(p.output === "json" ? json(report) : text);
      return code;
    }
    if (sub === "remove") {
      const r = await client.removeNode(name);
      const copies = r.forgottenCopies.length === 0
        ? ""
        : `; copies of deleted volumes it still held forgotten: ${r.forgottenCopies.join(", ")}`;
      io.out(
        p.output === "json"
          ? json(r)
          : `node "${r.node.name}" removed (its last report ${r.node.lastSeen})${copies}\n`,
      );
      return 0;
    }
    if (sub === "cordon" || sub === "uncordon") {
      const reason = p.values.reason as string | undefined;
      const n = sub === "cordon"
        ? await client.cordonNode(name, reason)
        : await client.uncordonNode(name);
      io.out(p.output === "json" ? json(n) : `node "${n.name}" ${sub}ed (state ${n.state})\n`);
      return 0;
    }
    const n = await client.getNode(name);
    io.out(p.output === "json" ? json(n) : nodeFields(n));
    return 0;
  },
);

/**
 * STATE column: the state and, in brackets, why (docs/CLUSTER.md, "States"): for a cordon
 * the operator's reason, for a node down or unreachable the facts (`node get` has them too).
 */
function stateCell(n: NodeInfo): string {
  if (n.state === "ready" || !n.reason) return n.state;
  if (n.state !== "cordoned") {
    // The first fact, cut short for the table at a word (`node get` has all of it), its
    // times as the time of day (the date of a node down for days is in `node get`).
    const first = n.reason.split("; ")[0]
      .replace(/\b\d{4}-\d\d-\d\dT(\d\d:\d\d:\d\d)(?:\.\d+)?Z\b/g, "$1Z");
    if (first.length <= 72) return `${n.state} (${first})`;
    const cut = first.lastIndexOf(" ", 69);
    return `${n.state} (${first.slice(0, cut > 40 ? cut : 69)} ...)`;
  }
  const why = n.reason.replace(/^cordoned since [^ ]+?(: |$)/, "");
  return why ? `cordoned (${why})` : "cordoned";
}

/** The `node list` table. */
export function nodeTable(items: NodeInfo[], now = Date.now()): string {
  if (items.length === 0) return "No nodes.\n";
  return table(
    [
      "NAME",
      "STATE",
      "MASTERS",
      "COPIES",
      "CAPACITY",
      "FREE",
      "LABELS",
      "API",
      "NBD",
      "VERSION",
      "AGE",
    ],
    items.map((n) => [
      n.name,
      stateCell(n),
      String(n.masters ?? n.volumes),
      n.copies === undefined ? "-" : String(n.copies),
      formatSize(n.capacityBytes),
      formatSize(n.freeBytes),
      Object.entries(n.labels).map(([k, v]) => `${k}=${v}`).join(",") || "-",
      n.apiAddress,
      n.nbdAddress,
      n.version,
      age(n.startedAt, now),
    ]),
  );
}

/** `node get`'s text. What a node reports of itself is stale once it is down: said so. */
export function nodeFields(n: NodeInfo): string {
  const labels = Object.entries(n.labels).map(([k, v]) => `${k}=${v}`).join(", ");
  const stale = n.state === "down" ? ` (as last reported, ${n.lastSeen})` : "";
  return fields([
    ["Name", n.name],
    ["State", n.state + (n.reason ? ` (${n.reason})` : "")],
    ["API", n.apiAddress],
    ["NBD", n.nbdAddress],
    ["Peer", n.peerAddress ?? "-"],
    ["Version", n.version],
    ["Masters", String(n.masters ?? n.volumes)],
    ["Copies", n.copies === undefined ? "-" : String(n.copies)],
    ["Exported", `${n.volumes} (volumes served over NBD here)${stale}`],
    [
      "Orphaned",
      n.orphaned
        ? `${n.orphaned.copies} cop${n.orphaned.copies === 1 ? "y" : "ies"}, ` +
          `${formatSize(n.orphaned.bytes)} on disk` +
          (n.orphaned.copies > 0 ? " in DATA/orphaned/ (delete once sure)" : "")
        : "-",
    ],
    ["Capacity", `${formatSize(n.capacityBytes)} (${n.capacityBytes} bytes)`],
    ["Free", `${formatSize(n.freeBytes)} (${n.freeBytes} bytes)${stale}`],
    [
      "Data workers",
      (n.dataWorkers
        ? `${n.dataWorkers.size} (pool of ${n.dataWorkers.min}..${n.dataWorkers.max})`
        : "none (NBD on the main thread)") + stale,
    ],
    ["Labels", labels || "<none>"],
    ["Started", `${n.startedAt} (${age(n.startedAt)} ago)`],
    ["Last seen", n.lastSeen],
  ]);
}
