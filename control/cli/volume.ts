/**
 * `ballast volume create|list|get|update|resize|delete|verify|events`.
 * @module
 */

import { errorMessage } from "../../mod/errors.ts";
import { parseDurationMs } from "../../mod/duration.ts";
import { clientFromFlags } from "./_credentials.ts";
import { formatSize } from "../../mod/size.ts";
import { checkVolumeSize } from "../volumes/mod.ts";
import type { Volume } from "../../mod/types.ts";
import {
  type Command,
  type CommandSpec,
  groupCommand,
  requirePositionals,
  UsageError,
  usageHint,
} from "./_command.ts";
import { age, fields, json, table } from "./_output.ts";
import { memberTable } from "./_members_view.ts";
import { watchVolume } from "./_watch.ts";
import { EXIT_DIFFERENT, verifyText } from "./_verify_view.ts";
import { eventsTable } from "./_drain_view.ts";
import { checkRelabel, parseLabels } from "./_labels.ts";

const SIZE_HELP =
  "size, a multiple of 512 bytes from 1 MiB to 1 PiB: 10GiB or 10Gi = 10 x 2^30 bytes, 10G or 10GB " +
  "= 10 x 10^9 (kubectl's units: KiB MiB GiB TiB PiB any case; k M G T P, kB MB GB TB PB exactly so)";

export const VOLUME_SPECS: Record<string, CommandSpec> = {
  create: {
    path: "volume create",
    args: "NAME --size SIZE [flags]",
    summary: "Create a thin-provisioned volume, exported over NBD with NAME as export name.",
    flags: [
      { name: "size", value: "SIZE", help: `${SIZE_HELP}; required` },
      {
        name: "replicas",
        value: "N",
        help: "copies besides the master, each on a distinct node (cluster mode)",
        default: "0",
      },
      {
        name: "spread-by",
        value: "LABEL",
        help: "node label whose values are failure domains (e.g. zone); needs --replicas",
        default: "every node its own domain",
      },
      { name: "description", value: "TEXT", help: "free-form description", default: '""' },
      {
        name: "label",
        value: "KEY=VALUE[,...]",
        help: "labels, comma-separated or repeated (a value cannot hold a comma here)",
        multiple: true,
      },
    ],
    client: true,
    examples: [
      "ballast volume create db1 --size 10GiB --label team=storage,tier=gold",
      "ballast volume create db2 --size 10GiB --replicas 2 --spread-by zone",
    ],
  },
  list: {
    path: "volume list",
    args: "",
    summary: "List volumes.",
    flags: [],
    client: true,
    examples: ["ballast volume list", "ballast volume list -o json"],
  },
  get: {
    path: "volume get",
    args: "NAME [--watch [--interval D] [--timeout D]]",
    summary: "Show one volume; for a replicated one each member's role, state (in sync, " +
      "resyncing with progress, out of sync and why, down) and root hash. With --watch, " +
      "follow it until every member is in sync. Exit codes: 0 (with --watch: healthy), " +
      "1 error, 2 usage, 3 --timeout passed, 130 Ctrl-C.",
    flags: [
      {
        name: "watch",
        short: "w",
        help: "poll until every member is in sync, then exit 0: a live progress bar on a " +
          "terminal, else one line per change (one JSON document per change with -o json)",
      },
      {
        name: "interval",
        value: "D",
        help: "with --watch: time between polls, e.g. 500ms, 1.5s, 5s or 1m (at least 100ms)",
        default: "1s",
      },
      {
        name: "timeout",
        value: "D",
        help: "with --watch: give up with exit code 3 when not healthy after D, e.g. 90s, " +
          "1.5m or 30m",
        default: "none",
      },
    ],
    client: true,
    examples: [
      "ballast volume get db1",
      "ballast volume get db1 -o json",
      "ballast volume get db1 --watch --timeout 1h",
      "ballast volume get db1 --watch --interval 500ms",
    ],
  },
  update: {
    path: "volume update",
    args: "NAME [--replicas N] [--size SIZE] [--description TEXT] [--label K=V] " +
      "[--remove-label K]",
    summary: "Change a volume. --replicas N changes the number of copies besides the master " +
      "of a replicated volume: raising places new members by the create rules (refused with " +
      "the reason when the cluster cannot) and seeds them by Delta Sync (follow with `volume " +
      "get NAME --watch`); lowering removes members, down and out-of-sync ones first, never " +
      "the master, and each removed node deletes its copy.",
    flags: [
      { name: "replicas", value: "N", help: "copies besides the master, 0 to 8" },
      { name: "size", value: "SIZE", help: `new ${SIZE_HELP} (grow only)` },
      { name: "description", value: "TEXT", help: "new description" },
      {
        name: "label",
        value: "KEY=VALUE[,...]",
        help: "set labels (the others are kept), comma-separated or repeated",
        multiple: true,
      },
      { name: "remove-label", value: "KEY[,...]", help: "remove labels", multiple: true },
    ],
    client: true,
    examples: [
      "ballast volume update db2 --replicas 2",
      "ballast volume update db1 --label tier=gold --remove-label team",
      "ballast volume update db2 --replicas 2 && ballast volume get db2 --watch",
      "ballast volume update db2 --replicas 1 -o json",
    ],
  },
  resize: {
    path: "volume resize",
    args: "NAME --size SIZE",
    summary: "Grow a volume (shrinking is refused). New NBD connections see the new size.",
    flags: [{ name: "size", value: "SIZE", help: `new ${SIZE_HELP}; required` }],
    client: true,
    examples: ["ballast volume resize db1 --size 20GiB"],
  },
  verify: {
    path: "volume verify",
    args: "NAME [--deep]",
    summary: "Compare every member's copy of a replicated volume with its master's: the " +
      "roots of their hash trees, and where they differ, which regions. With --deep, " +
      "rehash every region of every copy from the data (reads all of it; client writes to " +
      "a region wait a moment while it is compared), which also finds silent corruption " +
      "and repairs a replica found different: the master takes it out of sync and its " +
      "resync copies the differing blocks (not while the master's own copy is corrupt). " +
      "Exit codes: 0 every copy equal, 1 error, 2 usage, 3 a copy differs, is corrupt or " +
      "could not be compared.",
    flags: [{
      name: "deep",
      help: "rehash all the data instead of comparing the persisted hash lists",
    }],
    client: true,
    examples: ["ballast volume verify db2", "ballast volume verify db2 --deep -o json"],
  },
  events: {
    path: "volume events",
    args: "NAME",
    summary: "Show the recent history of a replicated volume's group, oldest first (the " +
      "last 100): creation, epochs and masters (promotions, drain handovers), members going " +
      "down and up, leaving and rejoining the in-sync set with the reason, resyncs started " +
      "and finished.",
    flags: [],
    client: true,
    examples: ["ballast volume events db2", "ballast volume events db2 -o json"],
  },
  delete: {
    path: "volume delete",
    args: "NAME [--force]",
    summary: "Delete a volume and its data. Refused while NBD clients are connected, or (a " +
      "replicated volume) while members are down, unless --force. Exit codes: 0 deleted, " +
      "1 error (refused: nothing changed), 2 usage, 3 accepted but not finished (a member " +
      "that went down meanwhile removes its copy when it comes back; the volume stays " +
      "deleting until then).",
    flags: [{
      name: "force",
      help: "disconnect connected NBD clients, and leave out members that are down (they " +
        "remove their copies when they come back); delete anyway",
    }],
    client: true,
    examples: ["ballast volume delete db1", "ballast volume delete db1 --force"],
  },
};

export const VOLUME_GROUP: CommandSpec = {
  path: "volume",
  args: "COMMAND [flags]",
  summary: "Manage volumes (block devices served over NBD).",
  flags: [],
  client: true,
  examples: ["ballast volume create db1 --size 10GiB", "ballast volume list"],
  subcommands: [
    ["create", "create a volume"],
    ["list", "list volumes"],
    ["get", "show one volume"],
    ["update", "change replicas, size, labels or description"],
    ["resize", "grow a volume"],
    ["verify", "compare the copies of a replicated volume"],
    ["events", "show a replicated volume's recent history"],
    ["delete", "delete a volume"],
  ],
};

/** Entry point of `ballast volume ...`. */
export const volumeCommand: Command = groupCommand(
  VOLUME_GROUP,
  VOLUME_SPECS,
  async ({ sub, spec, p }, io) => {
    using client = await clientFromFlags(p, io);
    switch (sub) {
      case "create": {
        const [name] = requirePositionals(spec, p, ["NAME"]);
        const size = requireSize(spec, p.values.size);
        const labels = parseLabels(spec, (p.values.label as string[] | undefined) ?? []);
        const replicas = parseReplicas(spec, p.values.replicas);
        const spreadBy = p.values["spread-by"] as string | undefined;
        const v = await client.createVolume({
          name,
          size,
          ...(replicas !== undefined ? { replicas } : {}),
          ...(spreadBy !== undefined ? { spreadBy } : {}),
          labels,
          description: (p.values.description as string | undefined) ?? "",
        });
        io.out(
          p.output === "json" ? json(v) : `volume "${v.name}" created (${formatSize(v.sizeBytes)}` +
            (v.members ? `, master ${v.master}, members ${v.members.join(",")}` : "") +
            ")\n",
        );
        return 0;
      }
      case "list": {
        requirePositionals(spec, p, []);
        const items = await client.listVolumes();
        io.out(p.output === "json" ? json({ items }) : volumeTable(items));
        return 0;
      }
      case "get": {
        const [name] = requirePositionals(spec, p, ["NAME"]);
        const watch = parseWatch(spec, p.values);
        if (watch) {
          return await watchVolume({
            fetch: () => client.getVolume(name),
            io,
            json: p.output === "json",
            ...watch,
          });
        }
        const v = await client.getVolume(name);
        io.out(p.output === "json" ? json(v) : volumeFields(v));
        return 0;
      }
      case "resize": {
        const [name] = requirePositionals(spec, p, ["NAME"]);
        const size = requireSize(spec, p.values.size);
        const before = (await client.getVolume(name)).sizeBytes;
        const v = await client.resizeVolume(name, size);
        io.out(
          p.output === "json"
            ? json(v)
            : v.sizeBytes === before
            ? `volume "${v.name}" is already ${formatSize(v.sizeBytes)}: nothing changed\n`
            : `volume "${v.name}" resized to ${formatSize(v.sizeBytes)}\n`,
        );
        return 0;
      }
      case "update": {
        const [name] = requirePositionals(spec, p, ["NAME"]);
        const replicas = parseReplicas(spec, p.values.replicas);
        const size = p.values.size === undefined ? undefined : requireSize(spec, p.values.size);
        const description = p.values.description as string | undefined;
        const set = parseLabels(spec, (p.values.label as string[] | undefined) ?? []);
        const remove = ((p.values["remove-label"] as string[] | undefined) ?? [])
          .flatMap((k) => k.split(",")).filter((k) => k !== "");
        const relabel = Object.keys(set).length > 0 || remove.length > 0;
        if (
          replicas === undefined && size === undefined && description === undefined && !relabel
        ) {
          throw new UsageError(
            "nothing to change: give --replicas, --size, --description, --label or " +
              "--remove-label",
            usageHint(spec),
          );
        }
        checkRelabel(spec, set, remove);
        const before = await client.getVolume(name);
        // Keys set and removed by the node on the record as it is then: a label another
        // client sets meanwhile is kept.
        const rest = {
          ...(replicas !== undefined ? { replicas } : {}),
          ...(size !== undefined ? { size } : {}),
          ...(description !== undefined ? { description } : {}),
        };
        const edits = {
          ...(Object.keys(set).length > 0 ? { setLabels: set } : {}),
          ...(remove.length > 0 ? { removeLabels: remove } : {}),
        };
        const v = await client.updateVolume(name, { ...rest, ...edits }).catch((err) => {
          // A node of an older version (a rolling upgrade) knows only the whole label set.
          if (!/unknown field "(set|remove)Labels"/.test(String(err?.message))) throw err;
          io.err(
            "warning: the node runs an older version: labels sent as a whole set (a label " +
              "change made by someone else meanwhile may be undone)\n",
          );
          const labels = { ...before.labels, ...set };
          for (const k of remove) delete labels[k];
          return client.updateVolume(name, { ...rest, labels });
        });
        io.out(p.output === "json" ? json(v) : updateText(v, replicas, before));
        return 0;
      }
      case "verify": {
        const [name] = requirePositionals(spec, p, ["NAME"]);
        const report = await client.verifyVolume(name, { deep: p.values.deep === true });
        io.out(p.output === "json" ? json(report) : verifyText(report));
        return report.ok ? 0 : EXIT_DIFFERENT;
      }
      case "events": {
        const [name] = requirePositionals(spec, p, ["NAME"]);
        const items = await client.volumeEvents(name);
        io.out(p.output === "json" ? json({ items }) : eventsTable(items));
        return 0;
      }
      default: {
        const [name] = requirePositionals(spec, p, ["NAME"]);
        const force = p.values.force === true;
        const pending = (await client.deleteVolume(name, { force }))?.pending;
        if (pending !== undefined) {
          io.out(
            p.output === "json"
              ? json({ name, deleted: false, pending })
              : `volume "${name}" is being deleted, not finished: ${pending}; it finishes on ` +
                `its own (\`ballast volume get ${name}\`)\n`,
          );
          return EXIT_DIFFERENT;
        }
        io.out(p.output === "json" ? json({ name, deleted: true }) : `volume "${name}" deleted\n`);
        return 0;
      }
    }
  },
);

/** What `volume update` prints: the new count and what the members are doing. */
function updateText(v: Volume, replicas: number | undefined, before: Volume): string {
  const same = (a: Volume) =>
    JSON.stringify([a.sizeBytes, a.replicas, a.description, Object.entries(a.labels).sort()]);
  let line = same(v) === same(before)
    ? `volume "${v.name}": nothing changed (it was so already)`
    : `volume "${v.name}" updated`;
  if (replicas !== undefined && v.members) {
    const want = replicas + 1;
    const seeding = v.members.filter((m) => !v.inSync?.includes(m));
    line += `: replicas ${v.replicas}, members ${v.members.join(",")}`;
    if (v.members.length !== want) {
      line += ` (the master is changing the members: ${want} wanted)`;
    }
    if (seeding.length > 0) {
      line += `; not in sync yet: ${seeding.join(",")} (follow with ` +
        `\`ballast volume get ${v.name} --watch\`)`;
    }
  }
  return line + "\n";
}

/** Parses --size locally so a typo is a usage error before any request. */
function requireSize(spec: CommandSpec, value: unknown): number {
  if (typeof value !== "string") {
    throw new UsageError("missing flag --size (e.g. --size 10GiB)", usageHint(spec));
  }
  try {
    return checkVolumeSize(value, "--size");
  } catch (err) {
    throw new UsageError(errorMessage(err), usageHint(spec));
  }
}

/** --watch with its --interval and --timeout (milliseconds), or undefined without --watch. */
function parseWatch(
  spec: CommandSpec,
  values: Record<string, unknown>,
): { intervalMs: number; timeoutMs?: number } | undefined {
  const duration = (flag: string) => {
    const value = values[flag];
    if (value === undefined) return undefined;
    if (values.watch !== true) {
      throw new UsageError(`--${flag} goes with --watch`, usageHint(spec));
    }
    try {
      // A poll asks the master for live status: not more often than every 100 ms.
      return parseDurationMs(value, `--${flag}`, { minMs: flag === "interval" ? 100 : 1 });
    } catch (err) {
      throw new UsageError(errorMessage(err), usageHint(spec));
    }
  };
  const intervalMs = duration("interval");
  const timeoutMs = duration("timeout");
  if (values.watch !== true) return undefined;
  return { intervalMs: intervalMs ?? 1000, ...(timeoutMs !== undefined ? { timeoutMs } : {}) };
}

function parseReplicas(spec: CommandSpec, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (typeof value !== "string" || !/^\d+$/.test(value) || !Number.isSafeInteger(n)) {
    throw new UsageError(`invalid --replicas "${value}": expected a whole number`, usageHint(spec));
  }
  return n;
}

/** The `volume list` table. */
export function volumeTable(items: Volume[], now = Date.now()): string {
  if (items.length === 0) return "No volumes.\n";
  return table(
    [
      "NAME",
      "SIZE",
      "ALLOCATED",
      "STATE",
      "CONNS",
      "REPLICAS",
      "MASTER",
      "EPOCH",
      "IN-SYNC",
      "PHASE",
      "AGE",
    ],
    items.map((v) => [
      v.name,
      formatSize(v.sizeBytes),
      v.allocatedBytes === undefined ? "-" : formatSize(v.allocatedBytes),
      v.state,
      v.connections === undefined ? "-" : String(v.connections),
      String(v.replicas),
      v.master,
      String(v.epoch),
      v.inSync ? v.inSync.join(",") : "-",
      v.phase ?? "-",
      age(v.createdAt, now),
    ]),
  );
}

function volumeFields(v: Volume): string {
  const labels = Object.entries(v.labels).map(([k, val]) => `${k}=${val}`).join(", ");
  const live = v.live === undefined ? [] : [[
    "Live status",
    v.live.error
      ? `unavailable: ${v.live.error}`
      : `from node ${v.live.node} at ${v.live.observedAt}`,
  ] as [string, string]];
  const members = v.memberStatus ? `\n${memberTable(v.memberStatus)}` : "";
  return fields([
    ["Name", v.name],
    ["UUID", v.uuid],
    ["State", v.state + (v.stateReason ? ` (${v.stateReason})` : "")],
    ["Size", `${formatSize(v.sizeBytes)} (${v.sizeBytes} bytes)`],
    [
      "Allocated",
      v.allocatedBytes === undefined
        ? "-"
        : `${formatSize(v.allocatedBytes)} (${v.allocatedBytes} bytes)`,
    ],
    ["Connections", v.connections === undefined ? "-" : String(v.connections)],
    ["Replicas", String(v.replicas)],
    ["Master", v.master],
    ["Epoch", String(v.epoch)],
    ...(v.members
      ? [
        ["Phase", (v.phase ?? "-") + (v.phaseReason ? ` (${v.phaseReason})` : "")],
        ["Members", v.members.join(", ")],
        ["In sync", v.inSync?.join(", ") || "<none>"],
        ["Down", v.down?.join(", ") || "<none>"],
        ["Spread by", v.spreadBy ?? "node"],
      ] as [string, string][]
      : []),
    ...(v.membershipBlocked
      ? [[
        "Membership",
        `blocked since ${v.membershipBlocked.since}: ${v.membershipBlocked.reason}`,
      ] as [string, string]]
      : []),
    ["Labels", labels || "<none>"],
    ["Description", v.description || "<none>"],
    ["Created", `${v.createdAt} (${age(v.createdAt)} ago)`],
    ["Updated", v.updatedAt],
    ...live,
  ]) + members;
}
