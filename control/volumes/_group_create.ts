/**
 * The creator's side of a replicated volume (cluster mode): place the group, write its
 * record "creating" with `created: []`, wait (10 s) for every member to make its copy
 * and say so in the record (_groups.ts, through each member's record watch),
 * then flip it to "ready". A member failed or did not answer: the record goes
 * "deleting" with `remaining` = the members that made a copy (or is removed if none
 * did), each removes its copy, and the caller gets an error naming the node and why.
 * @module
 */

import { AlreadyExistsError, ConflictError, FailedPreconditionError } from "../../mod/errors.ts";
import type { NodeInfo } from "../../mod/types.ts";
import { newRecord, place } from "../group/mod.ts";
import { abandonCreate } from "./_group_transitions.ts";
import { abortableSleep, type Logger } from "../common/mod.ts";
import type { StateStore } from "../store/mod.ts";
import { casRecord, parseRecord, VOLUME_PREFIX, type VolumeRecord } from "./_record.ts";
import { withHistory } from "../events/mod.ts";

export const CREATE_WAIT_MS = 10_000;
const CLEANUP_WAIT_MS = 5_000;
const POLL_MS = 100;

/** What createGroup() needs besides placement. */
export type GroupCreate = Omit<VolumeRecord, "master" | "epoch" | "state" | "group"> & {
  spreadBy?: string;
};

export interface GroupCreateContext {
  store: StateStore;
  log: Logger;
  listNodes: () => Promise<NodeInfo[]>;
  /** Copies and masters each node holds, from the volume records (placement spreads by them). */
  load?: () => ReadonlyMap<string, NodeLoad>;
  createWaitMs?: number;
}

/** What a node holds, as the volume records say. */
export interface NodeLoad {
  copies: number;
  masters: number;
}

/** Copies and masters per node over the groups given (members and master of each). */
export function nodeLoad(
  groups: Iterable<{ members: readonly string[]; master: string }>,
): Map<string, NodeLoad> {
  const load = new Map<string, NodeLoad>();
  const of = (node: string) => {
    let l = load.get(node);
    if (!l) load.set(node, l = { copies: 0, masters: 0 });
    return l;
  };
  for (const g of groups) {
    for (const m of g.members) of(m).copies++;
    of(g.master).masters++;
  }
  return load;
}

/** Places and creates a replicated volume; returns the "ready" record. */
export async function createGroup(
  ctx: GroupCreateContext,
  input: GroupCreate,
): Promise<VolumeRecord> {
  const { name, replicas, sizeBytes, spreadBy } = input;
  const waitMs = ctx.createWaitMs ?? CREATE_WAIT_MS;
  const nodes = await ctx.listNodes();
  const load = ctx.load?.() ?? new Map<string, NodeLoad>();
  const placed = place(
    { replicas, sizeBytes, ...(spreadBy ? { spreadBy } : {}) },
    nodes.map((n) => ({
      name: n.name,
      labels: n.labels,
      state: n.state,
      freeBytes: n.freeBytes,
      copies: load.get(n.name)?.copies ?? 0,
      masters: load.get(n.name)?.masters ?? 0,
    })),
  );
  if (!placed.ok) {
    throw new FailedPreconditionError(
      `cannot place volume "${name}" with ${replicas} replica${replicas === 1 ? "" : "s"}: ` +
        placed.reason,
      { field: "replicas" },
    );
  }
  const group = newRecord(
    placed.master,
    placed.replicas,
    spreadBy ? { replicas, spreadBy } : { replicas },
  );
  const { spreadBy: _s, ...base } = input;
  const record: VolumeRecord = {
    ...base,
    master: group.master,
    epoch: group.epoch,
    state: "creating",
    group,
    created: [],
  };
  const key = VOLUME_PREFIX + name;
  const put = await ctx.store.txn(
    [{ key, target: "version", op: "==", value: 0 }],
    [{ type: "put", key, value: JSON.stringify(record) }],
  );
  if (!put.succeeded) throw new AlreadyExistsError("volume", name);
  const log = ctx.log.child({ volume: name, uuid: record.uuid, epoch: 1 });
  log.info({ members: group.members, reasoning: placed.reasoning }, "volume group placed");

  const deadline = Date.now() + waitMs;
  let reason: string | undefined;
  while (reason === undefined) {
    const kv = await ctx.store.get(key);
    const rec = kv && parseRecord(kv);
    if (!kv || !rec || rec.uuid !== record.uuid || rec.state !== "creating") {
      throw new ConflictError(`volume "${name}" changed while it was being created`);
    }
    if (rec.createFailed) {
      reason = rec.createFailed;
      break;
    }
    const missing = group.members.filter((m) => !rec.created?.includes(m));
    if (missing.length === 0) {
      const { created: _c, ...rest } = rec;
      const flipped = withHistory(rec, { ...rest, state: "ready" }, new Date());
      const ready = flipped.record as VolumeRecord;
      const flip = await ctx.store.txn(
        [{ key, target: "modRevision", op: "==", value: kv.modRevision }],
        [{ type: "put", key, value: JSON.stringify(ready) }, ...flipped.ops],
      );
      if (flip.succeeded) {
        log.info({ members: group.members, master: group.master }, "volume group created");
        return ready;
      }
      continue;
    }
    if (Date.now() > deadline) {
      reason = `node${missing.length > 1 ? "s" : ""} ${missing.join(", ")} did not create ` +
        `${missing.length > 1 ? "their copies" : "its copy"} within ${waitMs / 1000} s ` +
        `(down or unreachable?)`;
      break;
    }
    await abortableSleep(POLL_MS);
  }
  log.warn({ reason }, "volume group creation failed; removing every copy");
  const left = await abandon(ctx.store, name, record.uuid);
  throw new FailedPreconditionError(
    `cannot create volume "${name}": ${reason}` +
      (left.length === 0
        ? "; nothing was left behind"
        : `; copies on ${left.join(", ")} are being removed`),
    { field: "replicas" },
  );
}

/** Undoes a failed create; returns the members whose copy was not removed in time. */
async function abandon(store: StateStore, name: string, uuid: string): Promise<string[]> {
  await casRecord(store, name, uuid, abandonCreate);
  const deadline = Date.now() + CLEANUP_WAIT_MS;
  while (true) {
    const kv = await store.get(VOLUME_PREFIX + name);
    const rec = kv && parseRecord(kv);
    if (!rec || rec.uuid !== uuid) return [];
    if (Date.now() > deadline) return rec.remaining ?? [];
    await abortableSleep(POLL_MS);
  }
}
