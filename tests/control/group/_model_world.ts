/**
 * The group model's worlds (_model.ts), apart from how they change: the canonical form and
 * key the explorer deduplicates by, the invariants over a state and over a step, and the
 * one-line description a counterexample trace shows.
 * @module
 */

import { describeRecord, type GroupRecord, phaseOf } from "../../../control/group/record.ts";
import { watchSeesDown } from "./_leases.ts";
import type { DataModel, World } from "./_model.ts";

/** Renumbers revisions 1..k keeping their order: the actors only compare them. */
export function canonWorld<D>(w: World<D>): World<D> {
  const revs = new Set<number>([w.record.revision]);
  for (const a of w.actors) {
    if (a?.known) revs.add(a.known.revision);
    if (a?.op?.kind === "cas") revs.add(a.op.expectedRevision);
  }
  for (const p of w.pending) if (p?.type === "cas") revs.add(p.expectedRevision);
  const sorted = [...revs].sort((a, b) => a - b);
  if (sorted.every((r, i) => r === i + 1)) return w;
  const map = new Map(sorted.map((r, i) => [r, i + 1]));
  const rev = (r: number) => map.get(r)!;
  return {
    ...w,
    record: { ...w.record, revision: rev(w.record.revision) },
    actors: w.actors.map((a) =>
      a && {
        ...a,
        known: a.known && { ...a.known, revision: rev(a.known.revision) },
        op: a.op?.kind === "cas" ? { ...a.op, expectedRevision: rev(a.op.expectedRevision) } : a.op,
      }
    ),
    pending: w.pending.map((p) =>
      p?.type === "cas" ? { ...p, expectedRevision: rev(p.expectedRevision) } : p
    ),
  };
}

/** A compact key of a canonical world: records are numbered once and referred to. */
export function worldKey<D>(data: DataModel<D>): (w: World<D>) => string {
  const ids = new Map<string, number>();
  const byObject = new WeakMap<GroupRecord, number>();
  const rec = (r: GroupRecord) => {
    let id = byObject.get(r);
    if (id === undefined) {
      const json = JSON.stringify(r);
      id = ids.get(json);
      if (id === undefined) ids.set(json, id = ids.size);
      byObject.set(r, id);
    }
    return id;
  };
  return (w) => {
    let k = `${w.record.revision}:${
      rec(w.record.record)
    }/${w.crashes}${w.partitions}${w.syncLosses}${w.lostReplies}${w.envChanges}${w.handovers}${w.lapses}/${
      data.key(w.data)
    }`;
    for (let i = 0; i < w.alive.length; i++) {
      k += `|${+w.alive[i]}${+w.lease[i]}${+w.partitioned[i]}${+w.timer[i]},${w.serving[i]},`;
      k += `${w.watched[i]}${+w.syncDue[i]},`;
      const p = w.pending[i];
      k += p === undefined
        ? "-"
        : p.type === "cas"
        ? `c${p.expectedRevision}:${rec(p.record)}`
        : p.type;
      const a = w.actors[i];
      if (a === undefined) continue;
      k += `;${a.known ? `${a.known.revision}:${rec(a.known.record)}` : "-"};${a.op?.kind}`;
      k += `;${a.leaseDown};${a.serving};${a.holding};${a.holdFor};${a.stopping};`;
      for (const r of a.reports) k += `${r.replica}${+r.inSync}${r.epoch}`;
    }
    return k + (w.flaw ?? "");
  };
}

export function stateInvariant(w: World, names: string[]): string | undefined {
  if (w.flaw) return w.flaw;
  const r = w.record.record;
  const claims = new Map<number, Set<string>>([[r.epoch, new Set([r.master])]]);
  const claim = (epoch: number | undefined, who: string) => {
    if (epoch === undefined) return;
    claims.set(epoch, (claims.get(epoch) ?? new Set()).add(who));
  };
  names.forEach((m, i) => {
    claim(w.serving[i], m);
    claim(w.actors[i]?.serving, m);
  });
  for (const [epoch, who] of claims) {
    if (who.size > 1) return `two masters at epoch ${epoch}: ${[...who].join(", ")}`;
  }
  if (r.phase !== phaseOf(r)) return `record phase ${r.phase}, should be ${phaseOf(r)}`;
  if (!r.inSync.includes(r.master)) return `master ${r.master} not in its own in-sync set`;
  for (let i = 0; i < names.length; i++) {
    const a = w.actors[i];
    const p = w.pending[i];
    const opKind = a?.op?.kind === "retry-wait" ? undefined : a?.op?.kind;
    if (opKind !== p?.type) return `${names[i]}: actor op ${opKind}, driver has ${p?.type}`;
    if ((a?.op?.kind === "retry-wait") !== w.timer[i]) return `${names[i]}: timer mismatch`;
  }
  return undefined;
}

export function transitionInvariant(
  from: World,
  to: World,
  names: string[],
  ruleChecks: boolean,
): string | undefined {
  const a = from.record.record;
  const b = to.record.record;
  if (b.epoch < a.epoch) return `record epoch went back from ${a.epoch} to ${b.epoch}`;
  if (a.master !== b.master) {
    if (b.epoch <= a.epoch) return `master ${a.master} -> ${b.master} without an epoch bump`;
    if (ruleChecks && !a.inSync.includes(b.master)) {
      return `${b.master} promoted while not in sync (in-sync [${a.inSync}])`;
    }
  } else if (a.epoch !== b.epoch) return `epoch ${a.epoch} -> ${b.epoch} with the same master`;
  for (let i = 0; i < names.length; i++) {
    const x = from.actors[i];
    const y = to.actors[i];
    if (!x || !y) continue; // crashed or restarted: a new incarnation
    if (x.known && (!y.known || y.known.record.epoch < x.known.record.epoch)) {
      return `${names[i]}: known epoch went back`;
    }
    const s0 = from.serving[i];
    const s1 = to.serving[i];
    if (s0 !== undefined && s1 !== undefined && s1 < s0) {
      return `${names[i]}: serving epoch went back`;
    }
  }
  return undefined;
}

export function describeWorld<D>(w: World<D>, names: string[], data: DataModel<D>): string {
  const nodes = names.map((m, i) => {
    const a = w.actors[i];
    const flags = [
      w.alive[i] ? "" : "crashed",
      w.lease[i] ? "" : "no-lease",
      w.partitioned[i] ? "cut-off" : "",
      w.serving[i] !== undefined ? `serving e${w.serving[i]}` : "",
      ...data.describeNode(w, i),
      a?.op ? a.op.kind : "",
      a && a.stopping > 0 ? `closing export` : "",
      a && a.leaseDown.length > 0 ? `sees-down [${a.leaseDown}]` : "",
      w.watched[i] ? `watch-down [${names.filter((_, j) => watchSeesDown(w, i, j))}]` : "",
      w.syncDue[i] ? "lease-sync-due" : "",
    ].filter(Boolean);
    return `${m}{${flags.join(" ")}}`;
  });
  return `record r${w.record.revision} ${describeRecord(w.record.record)} | ${nodes.join(" ")}${
    data.summary(w, names)
  }`;
}
