/**
 * `ballast node drain NAME`: cordon a node and move every master off it, one group at a
 * time, by planned handovers (group/handover.ts picks the in-sync member, the master's
 * group machine closes its export and hands over at the next epoch, record.ts).
 *
 * Before anything is changed, each volume the node masters is planned: a group goes to an
 * in-sync member that is up; a volume that would be left without an in-sync copy (no
 * replica, replicas out of sync or down) is refused with the reason, and then nothing is
 * done unless `force` (those volumes stay where they are: "skipped"). A handover asked is
 * waited for (the record names the new master) up to HANDOVER_WAIT_MS; one that does not
 * complete is withdrawn (the master serves again) and reported "failed".
 *
 * The drain runs on the node that was asked, as an async generator of progress lines
 * (the API streams them); the store is the only channel to the master's driver.
 *
 * `ballast node remove NAME`, for a node retired after its drain, is at the end.
 * @module
 */

import { FailedPreconditionError } from "../../mod/errors.ts";
import type {
  DrainProgress,
  DrainReport,
  DrainVolume,
  NodeInfo,
  NodeRemoval,
} from "../../mod/types.ts";
import { handoverTarget, withHandover } from "../group/mod.ts";
import { abortableSleep, type Logger } from "../common/mod.ts";
import { freshGet, type StateStore } from "../store/mod.ts";
import { casRecord, parseRecord, VOLUME_PREFIX, type VolumeRecord } from "./_record.ts";
import { clearTombstone, tombstonesOf } from "./_tombstones.ts";

/** How long one handover may take, from the request to the record naming the new master. */
export const HANDOVER_WAIT_MS = 30_000;
const POLL_MS = 100;

/** What a drain needs of the node registry. */
export interface DrainNodes {
  list(): Promise<NodeInfo[]>;
  cordon(name: string, reason?: string): Promise<NodeInfo>;
  get(name: string): Promise<NodeInfo>;
}

export interface DrainContext {
  store: StateStore;
  nodes: DrainNodes;
  log: Logger;
  handoverWaitMs?: number;
}

export interface DrainOptions {
  force?: boolean;
  dryRun?: boolean;
  /** How long each handover may take (default HANDOVER_WAIT_MS; tests shorten it). */
  handoverWaitMs?: number;
}

/** The volumes `node` masters, each planned (pure). */
export function planDrain(
  node: string,
  records: readonly VolumeRecord[],
  nodes: readonly NodeInfo[],
): DrainVolume[] {
  const out: DrainVolume[] = [];
  for (const rec of [...records].sort((a, b) => a.name < b.name ? -1 : 1)) {
    const g = rec.group;
    const master = g ? g.master : rec.master;
    if (master !== node || rec.state === "deleting") continue;
    const base = { volume: rec.name, from: node };
    if (!g) {
      out.push({
        ...base,
        status: "refused",
        reason: `it is not replicated: its only copy is on ${node} (to move it, copy its data ` +
          "to a volume created with --replicas)",
      });
      continue;
    }
    if (rec.state !== "ready") {
      out.push({ ...base, status: "refused", reason: `it is still being created; retry` });
      continue;
    }
    const choice = handoverTarget(g, node, nodes, rec.outOfSync);
    out.push(
      "to" in choice
        ? {
          ...base,
          status: "planned",
          to: choice.to,
          ...(choice.cordoned
            ? { reason: `${choice.to} is cordoned too: no ready in-sync member with room is left` }
            : {}),
        }
        : { ...base, status: "refused", reason: choice.refused },
    );
  }
  return out;
}

/** Drains `node`; yields the plan, each volume as it is done, and the summary. */
export async function* drainNode(
  ctx: DrainContext,
  node: string,
  options: DrainOptions = {},
): AsyncGenerator<DrainProgress> {
  const started = performance.now();
  const force = options.force ?? false;
  const dryRun = options.dryRun ?? false;
  const log = ctx.log.child({ drain: node });
  await ctx.nodes.get(node); // NotFoundError for an unknown node
  const [{ kvs }, nodes] = await Promise.all([ctx.store.list(VOLUME_PREFIX), ctx.nodes.list()]);
  const plan = planDrain(node, kvs.map(parseRecord), nodes);
  yield { type: "plan", node, volumes: plan };
  const refused = plan.filter((v) => v.status === "refused");
  const report = (result: DrainReport["result"], volumes: DrainVolume[], cordoned: boolean) => ({
    type: "summary" as const,
    report: {
      node,
      dryRun,
      force,
      result,
      cordoned,
      volumes,
      ms: Math.round(performance.now() - started),
    },
  });
  const cordonedNow = async () => (await ctx.nodes.get(node)).state === "cordoned";
  if (dryRun || (refused.length > 0 && !force)) {
    const result = refused.length > 0 && !force ? "refused" : "drained";
    if (!dryRun) {
      log.warn({ refused: refused.map((v) => v.volume) }, "drain refused: nothing done");
    }
    yield report(result, plan, await cordonedNow());
    return;
  }
  await ctx.nodes.cordon(node, "drain");
  log.info({ volumes: plan.length, skipped: refused.length }, "node cordoned; draining");
  const done: DrainVolume[] = [];
  for (const v of plan) {
    const outcome: DrainVolume = v.status === "refused"
      ? { ...v, status: "skipped" }
      : await handOver(
        { ...ctx, handoverWaitMs: options.handoverWaitMs ?? ctx.handoverWaitMs },
        node,
        v.volume,
        log,
      );
    done.push(outcome);
    yield { type: "volume", volume: outcome };
  }
  const failed = done.some((v) => v.status === "failed");
  yield report(failed ? "incomplete" : "drained", done, true);
}

/**
 * Asks the master (`node`) of `volume` to hand it over, re-planned on the fresh record
 * and node list, and waits until the record names another master; withdraws the request
 * if that does not happen in time.
 */
async function handOver(
  ctx: DrainContext,
  node: string,
  volume: string,
  log: Logger,
): Promise<DrainVolume> {
  const t0 = performance.now();
  const base = { volume, from: node };
  const nodes = await ctx.nodes.list();
  let to: string | undefined;
  let refusal: string | undefined;
  let epoch = 0;
  let uuid = "";
  const asked = await casRecord(ctx.store, volume, undefined, (rec) => {
    const g = rec.group;
    if (!g || rec.state !== "ready" || g.master !== node) return undefined; // moved meanwhile
    epoch = g.epoch;
    uuid = rec.uuid;
    if (g.handover) {
      to = g.handover.to; // asked already (an earlier drain): wait for it
      return undefined;
    }
    const choice = handoverTarget(g, node, nodes, rec.outOfSync);
    if ("refused" in choice) {
      refusal = choice.refused;
      return undefined;
    }
    to = choice.to;
    return { ...rec, group: withHandover(g, { to, reason: `drain of node ${node}` }) };
  });
  if (refusal !== undefined) return { ...base, status: "failed", reason: refusal };
  if (asked === undefined && to === undefined) {
    const now = await freshGet(ctx.store, VOLUME_PREFIX + volume);
    const g = now && parseRecord(now).group;
    return g && g.master !== node
      ? { ...base, status: "moved", to: g.master, epoch: g.epoch, reason: "moved meanwhile" }
      : { ...base, status: "failed", reason: "the volume is gone or not ready" };
  }
  log.info({ volume, to, epoch }, "handover asked");
  const deadline = Date.now() + (ctx.handoverWaitMs ?? HANDOVER_WAIT_MS);
  while (true) {
    const kv = await freshGet(ctx.store, VOLUME_PREFIX + volume);
    const rec = kv && parseRecord(kv);
    const g = rec?.uuid === uuid ? rec.group : undefined;
    if (!g) return { ...base, status: "failed", reason: "the volume was deleted" };
    const ms = Math.round(performance.now() - t0);
    if (g.master !== node) {
      log.info({ volume, to: g.master, epoch: g.epoch, ms }, "handover done");
      return { ...base, status: "moved", to: g.master, epoch: g.epoch, ms };
    }
    if (!g.handover) {
      const why = !g.inSync.includes(to!) || g.down.includes(to!)
        ? `${to} is no longer in sync or is down`
        : "it was withdrawn";
      return { ...base, status: "failed", to, reason: `the handover was given up: ${why}`, ms };
    }
    if (Date.now() > deadline) break;
    await abortableSleep(POLL_MS);
  }
  // Withdrawn: the master serves again (unless it handed over just now).
  await casRecord(ctx.store, volume, uuid, (rec) => {
    const g = rec.group;
    if (!g || g.master !== node || !g.handover) return undefined;
    return { ...rec, group: withHandover(g, undefined) };
  });
  const waited = (ctx.handoverWaitMs ?? HANDOVER_WAIT_MS) / 1000;
  log.warn({ volume, to }, "handover did not complete in time; withdrawn");
  return {
    ...base,
    status: "failed",
    to,
    reason: `${node} did not hand over within ${waited} s (is its group driver reaching ` +
      `etcd?); the request was withdrawn and ${node} serves it again`,
    ms: Math.round(performance.now() - t0),
  };
}

/*
 * `ballast node remove NAME`: the cluster forgets a node that is gone for good (docs/CLUSTER.md,
 * "Retiring a node"). Refused while the node runs (NodeRegistry.forget guards on its liveness
 * key) and while any volume record still counts on a copy there: as master, member, or member
 * of a delete under way. Those must move first (the replacement after --replace-after, `volume
 * update --replicas`, or a delete), or the copy would be forgotten with the node while the
 * group still waits for it. Deleted volumes whose copy on it was left to remove when it came
 * back (tombstones of forced deletes, _tombstones.ts) are taken off: it will not come back.
 */

/** What a removal needs of the node registry. */
export interface RemoveNodes {
  /** Refuses a node that runs, then runs `check`, then deletes its keys (NodeRegistry). */
  forget(name: string, check: () => Promise<void>): Promise<NodeInfo>;
}

/** The volumes (sorted) whose records count on a copy on `node`, each with its role there. */
function holdingsOf(node: string, records: readonly VolumeRecord[]): string[] {
  const out: string[] = [];
  for (const rec of records) {
    const g = rec.group;
    const members = rec.state === "deleting"
      ? rec.remaining ?? g?.members ?? [rec.master]
      : g?.members ?? [rec.master];
    if (!members.includes(node)) continue;
    const master = (g?.master ?? rec.master) === node;
    out.push(
      `${rec.name} (${rec.state === "deleting" ? "deleting" : master ? "master" : "replica"})`,
    );
  }
  return out.sort();
}

/** Refuses the removal of `node` while a volume record counts on a copy there. */
async function refuseIfHeld(store: StateStore, node: string): Promise<void> {
  const { kvs } = await store.list(VOLUME_PREFIX);
  const held = holdingsOf(node, kvs.map(parseRecord));
  if (held.length > 0) {
    const shown = held.length > 10 ? [...held.slice(0, 10), `and ${held.length - 10} more`] : held;
    throw new FailedPreconditionError(
      `node ${node} still holds copies of ${held.length} volume${held.length === 1 ? "" : "s"}: ` +
        `${shown.join(", ")}; a replica is replaced elsewhere after --replace-after ` +
        `(or \`ballast volume update NAME --replicas N\`), a volume without replicas on it ` +
        `has no other copy (\`ballast volume delete NAME --force\` to give it up)`,
      { volumes: held.map((h) => h.split(" ")[0]) },
    );
  }
}

/** Removes `node` from the cluster; what it was and the deleted volumes' copies forgotten. */
export async function removeNode(
  ctx: { store: StateStore; nodes: RemoveNodes; log: Logger },
  node: string,
): Promise<NodeRemoval> {
  const removed = await ctx.nodes.forget(node, () => refuseIfHeld(ctx.store, node));
  const forgotten = [...(await tombstonesOf(ctx.store, node)).values()];
  for (const t of forgotten) await clearTombstone(ctx.store, t.uuid, node, ctx.log);
  const forgottenCopies = forgotten.map((t) => t.name).sort();
  if (forgottenCopies.length > 0) {
    ctx.log.info({ removed: node, forgottenCopies }, "removed node's deleted copies forgotten");
  }
  return { node: removed, forgottenCopies };
}
