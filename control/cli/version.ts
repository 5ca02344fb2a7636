/**
 * `ballast version`: the client's version and the server's (`--client`: the client's alone).
 * Like `kubectl version`, a server that cannot be reached is a failure (exit 1) after the
 * client's part is printed: scripts that check an install use `--client`.
 * @module
 */

import { clientFromFlags } from "./_credentials.ts";
import { BallastError } from "../../mod/errors.ts";
import type { VersionInfo } from "../../mod/types.ts";
import { versionInfo } from "../common/mod.ts";
import {
  type Command,
  command,
  type CommandSpec,
  EXIT_FAILED,
  requirePositionals,
} from "./_command.ts";
import { json } from "./_output.ts";

export const VERSION_SPEC: CommandSpec = {
  path: "version",
  args: "[--client]",
  summary: "Print the client's version, git commit, build time, Deno version and kind of " +
    "build (source, deno-compile or self-extracting), and the same of the node at --api. " +
    "A node that cannot be reached is an error (exit 1, after the client's part); " +
    "--client prints the client's part alone and contacts nothing.",
  flags: [{ name: "client", help: "the client's version only; no node is contacted" }],
  client: true,
  examples: ["ballast version", "ballast version --client -o json"],
};

/** Entry point of `ballast version`. */
export const versionCommand: Command = command(VERSION_SPEC, async (p, io) => {
  requirePositionals(VERSION_SPEC, p, []);
  const client: VersionInfo = versionInfo();
  let server: VersionInfo | null = null;
  let at = p.api;
  let failure = "";
  const clientOnly = p.values.client === true;
  if (!clientOnly) {
    try {
      using api = await clientFromFlags(p, io, { timeoutMs: 5_000 });
      at = api.baseUrl;
      server = await api.version();
    } catch (err) {
      // A mistake in the flags is a usage error (exit 2), not an unknown server version.
      if (!(err instanceof BallastError) || err.code === "INVALID_ARGUMENT") throw err;
      failure = err.message;
    }
  }
  if (p.output === "json") {
    io.out(json(clientOnly ? { client } : { client, server }));
  } else {
    io.out(`Client: ${describe(client)}\n`);
    if (server) io.out(`Server: ${describe(server)}, api ${server.apiVersion} at ${at}\n`);
  }
  if (!failure) return 0;
  io.err(`error: server version unknown: ${failure} (--client for the client's alone)\n`);
  return EXIT_FAILED;
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
