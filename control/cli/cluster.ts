/**
 * `ballast cluster join-token`: a single-use, expiring token for a new node (admin
 * certificate required). The new node starts with `ballast serve --etcd ... --join TOKEN`;
 * see docs/TLS.md, "Joining a cluster".
 * @module
 */

import { errorMessage } from "../../mod/errors.ts";
import { parseDuration } from "../../mod/duration.ts";
import { MAX_TOKEN_TTL } from "../cluster/mod.ts";
import {
  type Command,
  type CommandSpec,
  groupCommand,
  requirePositionals,
  UsageError,
  usageHint,
} from "./_command.ts";
import { clientFromFlags } from "./_credentials.ts";
import { fields, json } from "./_output.ts";

export const CLUSTER_SPECS: Record<string, CommandSpec> = {
  "join-token": {
    path: "cluster join-token",
    args: "[--ttl DURATION]",
    summary: "Make a single-use join token for a new node. It carries the SHA-256 pin of the " +
      "cluster CA, so the new node checks the cluster before it sends anything. Only a hash " +
      "of its secret is stored; the token is shown once.",
    flags: [
      {
        name: "ttl",
        value: "DURATION",
        help: "how long the token stays valid, e.g. 15m, 1h, 2d (at most 7d)",
        default: "1h",
      },
    ],
    client: true,
    examples: [
      "ballast cluster join-token",
      "ballast cluster join-token --ttl 15m -o json",
      "ballast serve --data-dir /var/lib/ballast --etcd http://10.0.0.5:2379 --join TOKEN   # on the new node",
    ],
  },
};

export const CLUSTER_GROUP: CommandSpec = {
  path: "cluster",
  args: "COMMAND [flags]",
  summary: "Cluster membership: tokens for new nodes to join (cluster mode, --etcd).",
  flags: [],
  client: true,
  examples: ["ballast cluster join-token --ttl 1h"],
  subcommands: [["join-token", "make a single-use, expiring token for a new node"]],
};

/** Entry point of `ballast cluster ...`. */
export const clusterCommand: Command = groupCommand(
  CLUSTER_GROUP,
  CLUSTER_SPECS,
  async ({ spec, p }, io) => {
    requirePositionals(spec, p, []);
    const ttl = p.values.ttl as string | undefined;
    if (ttl !== undefined) {
      try {
        parseDuration(ttl, "--ttl", "ttl", MAX_TOKEN_TTL);
      } catch (err) {
        throw new UsageError(errorMessage(err), usageHint(spec));
      }
    }
    using client = await clientFromFlags(p, io);
    const t = await client.createJoinToken(ttl);
    if (p.output === "json") {
      io.out(json(t));
      return 0;
    }
    io.out(fields([["Token", t.token], ["Id", t.id], ["Expires", t.expiresAt]]));
    io.out(
      "\nSingle use. On the new node (empty data dir, same --etcd and --etcd-prefix):\n" +
        `  ballast serve --data-dir DIR --etcd URL --join ${t.token}\n` +
        "or set BALLAST_JOIN_TOKEN (keeps the token out of the process list).\n",
    );
    return 0;
  },
);
