/**
 * Who holds a node's name. A node's liveness key carries the id of the data directory it runs
 * from (control/serve/_node_identity.ts); a node starting under a name whose key is live with
 * another id would be a second process acting as the same node, and is refused.
 *
 * A holder that cannot be running is waited for instead, until its lease has expired (at most
 * HOLDER_WAIT_MS, or two of this node's TTLs if longer): one whose record names this node's own
 * API address (this process has bound it, so the old one is gone: a data directory replaced on
 * the same machine), or one whose API does not answer a health check (a node moved off a
 * machine that is down).
 * @module
 */

import { FailedPreconditionError } from "../../mod/errors.ts";
import type { NodeInfo } from "../../mod/types.ts";
import type { Logger } from "../common/mod.ts";
import type { KeyValue, StateStore } from "../store/mod.ts";
import type { NodeProbe } from "./probe.ts";

const HOLDER_WAIT_MS = 60_000;
const POLL_MS = 250;

export interface NameHolderCheck {
  store: StateStore;
  nodeName: string;
  /** This node's data directory id. */
  instance: string;
  /** The node's liveness key and record key. */
  aliveKey: string;
  recordKey: string;
  /** This node's own API address ("" while unknown). */
  apiAddress: string;
  probe?: NodeProbe;
  leaseTtlSeconds: number;
  logger: Logger;
}

/** The data directory id in a liveness key's value (undefined: none, or not this version's). */
function holderOf(kv: KeyValue | undefined): string | undefined {
  if (kv === undefined) return undefined;
  try {
    const id = (JSON.parse(kv.value) as { instance?: unknown }).instance;
    return typeof id === "string" ? id : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Returns the liveness key as read once it is free or this directory's own (undefined: none);
 * throws FailedPreconditionError while another running node holds the name.
 */
export async function checkNameHolder(c: NameHolderCheck): Promise<KeyValue | undefined> {
  let current = await c.store.get(c.aliveKey);
  let holder = holderOf(current);
  if (holder === undefined || holder === c.instance) return current;
  const rec = await record(c);
  const address = rec?.apiAddress ?? "";
  const gone = address !== "" && address === c.apiAddress
    ? "its record names this node's own API address, which this process now holds"
    : address !== "" && c.probe
    ? await c.probe.check(address)
    : undefined;
  if (gone !== undefined) {
    c.logger.info(
      { holder, apiAddress: address, why: gone },
      "this node's name is held by an earlier data directory that is not running: waiting for " +
        "its liveness lease to expire",
    );
    const deadline = Date.now() + Math.max(HOLDER_WAIT_MS, 2000 * c.leaseTtlSeconds);
    while (holder !== undefined && holder !== c.instance && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, POLL_MS));
      current = await c.store.get(c.aliveKey);
      holder = holderOf(current);
    }
    if (holder === undefined || holder === c.instance) return current;
  }
  const where = address ? ` (its API: ${address}; started ${rec?.startedAt})` : "";
  throw new FailedPreconditionError(
    `node name "${c.nodeName}" is in use by another running node${where}: its liveness lease ` +
      `is held from another data directory (id ${holder}). Each node needs a name of its own ` +
      `(--node-name); if that node is this one's old machine, stop it first.`,
    { node: c.nodeName, holder },
  );
}

/** The stored record of the node, if any (undefined when unreadable). */
async function record(c: NameHolderCheck): Promise<Partial<NodeInfo> | undefined> {
  try {
    const kv = await c.store.get(c.recordKey);
    return kv && (JSON.parse(kv.value) as Partial<NodeInfo>);
  } catch {
    return undefined;
  }
}
