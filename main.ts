/**
 * The `ballast` command: picks the command word and dispatches. Everything else
 * lives in control/cli/.
 * @module
 */

import {
  COMMANDS,
  helpCommand,
  type Io,
  processIo,
  rootUsage,
  splitCommandWord,
} from "./control/cli/mod.ts";

/** Runs the CLI and returns its exit code. */
export function main(args: string[], io: Io = processIo): Promise<number> {
  const { word, rest, globals } = splitCommandWord(args);
  if (word === "help") return helpCommand([...rest, ...globals], io);
  const command = word === undefined
    ? undefined
    : Object.hasOwn(COMMANDS, word)
    ? COMMANDS[word]
    : undefined;
  if (!command) return Promise.resolve(rootUsage(word, io));
  return command([...rest, ...globals], io);
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
