/**
 * `ballast version`: the client's version and, when the node answers, the server's.
 * @module
 */

import { clientFromFlags } from "./_credentials.ts";
import { BallastError } from "../../mod/errors.ts";
import type { VersionInfo } from "../../mod/types.ts";
import { VERSION } from "../../mod/version.ts";
import { type Command, command, type CommandSpec, requirePositionals } from "./_command.ts";
import { json } from "./_output.ts";

export const VERSION_SPEC: CommandSpec = {
  path: "version",
  args: "",
  summary: "Print the client version and the version of the node at --api " +
    "(the server part is omitted, with a note, when the node cannot be reached).",
  flags: [],
  client: true,
  examples: ["ballast version", "ballast version -o json"],
};

/** Entry point of `ballast version`. */
export const versionCommand: Command = command(VERSION_SPEC, async (p, io) => {
  requirePositionals(VERSION_SPEC, p, []);
  const client: VersionInfo = {
    version: VERSION,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    apiVersion: "v1",
  };
  let server: VersionInfo | null = null;
  let at = p.api;
  let note = "";
  try {
    using api = await clientFromFlags(p, io, { timeoutMs: 5_000 });
    at = api.baseUrl;
    server = await api.version();
  } catch (err) {
    if (!(err instanceof BallastError)) throw err;
    note = err.message;
  }
  if (p.output === "json") {
    io.out(json({ client, server }));
  } else {
    io.out(`Client: ${client.version} (deno ${client.deno})\n`);
    if (server) {
      io.out(
        `Server: ${server.version} (deno ${server.deno}, api ${server.apiVersion}) at ${at}\n`,
      );
    }
  }
  if (note) io.err(`note: server version unknown: ${note}\n`);
  return 0;
});
