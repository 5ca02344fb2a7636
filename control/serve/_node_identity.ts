/**
 * The node name a data directory belongs to. A node's name is its identity in the cluster:
 * the volume records list their members by it, its certificate carries it, its lease is
 * registered under it. A data directory started under another name (a host renamed, since the
 * name defaults to the host name; a typo in --node-name; one node's directory copied to
 * another machine) would come up as a new, empty node: every copy in it would belong to a
 * node that looks down, and its volumes would fail over away from the data it holds.
 *
 * So the first start, once the node is up, records the name in DIR/node-name, and later starts
 * keep it: without an explicit name (--node-name, BALLAST_NODE_NAME, the config file) the
 * recorded one is used, whatever the host is called now; an explicit name that differs is
 * refused. A directory made before this file existed names its node in its node certificate
 * (pki/node.crt), which is read instead. As etcd does with a member's data directory.
 *
 * The directory also gets an id of its own (DIR/node-id, a random UUID), which the node puts in
 * its liveness key: a second process started under the same name from another directory (a
 * copied environment file, a node moved while the old machine still runs) finds the name held
 * by another id and is refused, where it would otherwise have taken over the first one's
 * identity while both ran (control/nodes/registry.ts). The same directory started again after a
 * crash, its old lease not yet expired, has the same id and goes on.
 * @module
 */

import { join } from "node:path";
import { parseCertificates, PUBLIC_MODE, readIdentity, writeAtomic } from "../../ca/mod.ts";
import { FailedPreconditionError } from "../../mod/errors.ts";

export const NODE_NAME_FILE = "node-name";
export const NODE_ID_FILE = "node-id";

/** The name `dataDir` belongs to and where that was read, or undefined for a new directory. */
export function recordedNodeName(dataDir: string): { name: string; where: string } | undefined {
  const file = join(dataDir, NODE_NAME_FILE);
  const name = readTrimmed(file);
  if (name !== undefined) return { name, where: file };
  const cert = join(dataDir, "pki", "node.crt");
  let pem: string;
  try {
    pem = Deno.readTextFileSync(cert);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
  try {
    const identity = readIdentity(parseCertificates(pem, cert)[0]);
    if (typeof identity !== "string" && identity.role === "node") {
      return { name: identity.name, where: cert };
    }
  } catch {
    // not a certificate Ballast can read: the TLS setup says so when it loads it
  }
  return undefined;
}

/**
 * Refuses to run `dataDir` as `name` when it belongs to another node. Returns the directory's
 * id (made on first use). Call with the directory's lock held; recordNodeName() once the node
 * has started under that name.
 */
export async function claimNodeName(dataDir: string, name: string): Promise<string> {
  const recorded = recordedNodeName(dataDir);
  if (recorded !== undefined && recorded.name !== name) {
    throw new FailedPreconditionError(
      conflictMessage(dataDir, recorded, name, "the name this server was started with"),
      { recorded: recorded.name, requested: name },
    );
  }
  const idFile = join(dataDir, NODE_ID_FILE);
  let id = readTrimmed(idFile);
  if (id === undefined) {
    id = crypto.randomUUID();
    await writeAtomic(idFile, `${id}\n`, PUBLIC_MODE);
  }
  return id;
}

/** Whether a node has started from `dataDir` before (it records its name once started). */
export function hasStarted(dataDir: string): boolean {
  return readTrimmed(join(dataDir, NODE_NAME_FILE)) !== undefined;
}

/**
 * Records `name` as the node `dataDir` belongs to, unless it names one already. After the node
 * started: a first start that failed (its name refused by the cluster, say) binds nothing.
 */
export async function recordNodeName(dataDir: string, name: string): Promise<void> {
  const file = join(dataDir, NODE_NAME_FILE);
  if (readTrimmed(file) === undefined) await writeAtomic(file, `${name}\n`, PUBLIC_MODE);
}

/** A file's content without surrounding white space; undefined when missing or empty. */
function readTrimmed(path: string): string | undefined {
  try {
    const text = Deno.readTextFileSync(path).trim();
    return text === "" ? undefined : text;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw err;
  }
}

/** Why `dataDir` cannot run as `requested` (asked for by `source`). */
export function conflictMessage(
  dataDir: string,
  recorded: { name: string; where: string },
  requested: string,
  source: string,
): string {
  return `data directory ${dataDir} belongs to node "${recorded.name}" (${recorded.where}), ` +
    `not "${requested}" (${source}): a node keeps its name, since the volumes' members, its ` +
    `certificate and its lease are registered under it. Start it as ${recorded.name} ` +
    `(--node-name ${recorded.name}, or no name at all), or give a new node an empty --data-dir.`;
}

/** DIR/api-url: the URL this node's API was last served on, read by the CLI (_credentials.ts). */
export const API_URL_FILE = "api-url";

/**
 * Records the API's URL in the data directory at every start, so that `ballast --data-dir
 * DIR ...` on the node reaches it wherever --api-listen put it (a wildcard address as
 * 127.0.0.1, which the node certificate names).
 */
export async function recordApiUrl(dataDir: string, url: string): Promise<void> {
  const local = url.replace(/^(https?:\/\/)(0\.0\.0\.0|\[::\])(:\d+)/, "$1127.0.0.1$3");
  if (readTrimmed(join(dataDir, API_URL_FILE)) !== local) {
    await writeAtomic(join(dataDir, API_URL_FILE), `${local}\n`, PUBLIC_MODE);
  }
}
