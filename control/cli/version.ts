/**
 * `ballast version`: the client's version and, when the node answers, the server's.
 * @module
 */

import { clientFromFlags } from "./_credentials.ts";
import { BallastError } from "../../mod/errors.ts";
import type { VersionInfo } from "../../mod/types.ts";
import { versionInfo } from "../common/mod.ts";
import { type Command, command, type CommandSpec, requirePositionals } from "./_command.ts";
import { json } from "./_output.ts";

export const VERSION_SPEC: CommandSpec = {
  path: "version",
  args: "",
  summary: "Print the client's version, git commit, build time, Deno version and kind of " +
    "build (source, deno-compile or self-extracting), and the same of the node at --api " +
    "(the server part is omitted, with a note, when the node cannot be reached).",
  flags: [],
  client: true,
  examples: ["ballast version", "ballast version -o json"],
};

/** Entry point of `ballast version`. */
export const versionCommand: Command = command(VERSION_SPEC, async (p, io) => {
  requirePositionals(VERSION_SPEC, p, []);
  const client: VersionInfo = versionInfo();
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
    io.out(`Client: ${describe(client)}\n`);
    if (server) io.out(`Server: ${describe(server)}, api ${server.apiVersion} at ${at}\n`);
  }
  if (note) io.err(`note: server version unknown: ${note}\n`);
  return 0;
});

/** "0.1.0 (self-extracting, commit 1a2b3c4d5e6f, built 2026-12-05T02:00:00Z, deno 2.9.6)" */
function describe(v: VersionInfo): string {
  const parts = [
    v.build ?? "unknown build",
    v.commit ? `commit ${v.commit.slice(0, 12)}${v.commit.endsWith("-dirty") ? "-dirty" : ""}` : "",
    v.builtAt ? `built ${v.builtAt}` : "",
    `deno ${v.deno}`,
  ].filter(Boolean);
  return `${v.version} (${parts.join(", ")})`;
}
