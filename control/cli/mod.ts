/**
 * The `ballast` command line: the command table and the top-level help. main.ts
 * picks the command word and dispatches here.
 * @module
 */

import { VERSION } from "../../mod/version.ts";
import {
  type Command,
  type CommandSpec,
  GLOBAL_FLAGS,
  helpText,
  splitCommandWord,
  UsageError,
  usageHint,
} from "./_command.ts";
import type { Io } from "./_output.ts";
import { caCommand } from "./ca.ts";
import { clusterCommand } from "./cluster.ts";
import { completionCommand } from "./completion.ts";
import { nodeCommand } from "./node.ts";
import { serveCommand } from "./serve.ts";
import { systemdUnitCommand } from "./systemd_unit.ts";
import { versionCommand } from "./version.ts";
import { volumeCommand } from "./volume.ts";

export { captureIo, processIo } from "./_output.ts";
export type { Io } from "./_output.ts";
export { type Command, splitCommandWord };

export const COMMANDS: Readonly<Record<string, Command>> = {
  serve: serveCommand,
  volume: volumeCommand,
  node: nodeCommand,
  ca: caCommand,
  cluster: clusterCommand,
  version: versionCommand,
  "systemd-unit": systemdUnitCommand,
  completion: completionCommand,
};

export const ROOT_SPEC: CommandSpec = {
  path: "",
  args: "COMMAND [flags]",
  summary: `Ballast ${VERSION}: replicated block storage served over NBD.\n\n` +
    "Exit codes: 0 success; 2 the command as typed is invalid (a usage mistake or an " +
    "INVALID_ARGUMENT, whether the CLI or the server finds it); 1 a valid request failed; " +
    "3 a check that ran and said no (volume verify: a copy differs; node drain: refused or not " +
    "every master moved; volume get --watch: --timeout passed; volume delete: accepted but " +
    "not finished); 130 interrupted (Ctrl-C).",
  flags: [],
  client: true,
  examples: [
    "ballast serve --data-dir ./data                             # in one terminal",
    "ballast volume create db1 --size 10GiB --data-dir ./data   # admin credentials from ./data/pki",
    "nbdinfo 'nbd+unix:///db1?socket=./data/nbd.sock'           # local attach (Unix socket)",
    "ballast ca issue vm1 --role nbd-client --volumes db1 --out ~/vm1-tls --data-dir ./data",
    'nbdinfo "nbds://127.0.0.1:10809/db1?tls-certificates=$HOME/vm1-tls"   # TLS (port 10809)',
  ],
  subcommands: [
    ["serve", "run a node (API + NBD server)"],
    ["volume", "create, list, get, resize and delete volumes"],
    ["node", "list, inspect, cordon, drain and remove nodes"],
    ["ca", "certificate authority: issue, list, revoke client certificates, rotate"],
    ["cluster", "cluster membership: join tokens for new nodes"],
    ["version", "print client and server versions, commits, build times and kinds of build"],
    ["systemd-unit", "print a systemd unit running `ballast serve` (docs/OPERATIONS.md)"],
    ["completion", "print a bash or zsh completion script"],
  ],
};

/**
 * `ballast help [COMMAND [SUBCOMMAND]]`: the same as `ballast COMMAND [SUBCOMMAND] --help`;
 * bare `ballast help` prints the top-level help, an unknown COMMAND is a usage error.
 */
export function helpCommand(args: string[], io: Io): Promise<number> {
  const [word, ...rest] = args;
  if (word !== undefined && Object.hasOwn(COMMANDS, word)) {
    return COMMANDS[word]([...rest, "--help"], io);
  }
  return Promise.resolve(rootUsage(word ?? "help", io));
}

/** Prints the top-level help (exit 0) or a usage error for a missing/unknown command (exit 2). */
export function rootUsage(word: string | undefined, io: Io): number {
  if (word === "-h" || word === "--help" || word === "help") {
    io.out(helpText(ROOT_SPEC).replace("ballast  COMMAND", "ballast COMMAND"));
    return 0;
  }
  const hint = usageHint(ROOT_SPEC).replace("ballast  ", "ballast ").replace(
    "'ballast  --help'",
    "'ballast --help'",
  );
  const err = new UsageError(
    word === undefined
      ? "missing command"
      : word.startsWith("-")
      ? `unknown flag ${word.replace(/=.*/s, "")} (the flags before a command are the global ` +
        `ones: ${GLOBAL_FLAGS.map((f) => f.short ? `-${f.short}` : `--${f.name}`).join(", ")})`
      : `unknown command "${word}"`,
    hint,
  );
  io.err(`error: ${err.message}\n${err.usage}\n`);
  return 2;
}
