/**
 * Membership changes as the group model's environment (_model.ts): the serving master's
 * membership keeper (control/volumes/_membership.ts) writing what planMembership() decides as
 * one atomic CAS, and an operator changing the replica count (`volume update --replicas`), in
 * any order with everything else the model does. The keeper's clock is abstract: a member
 * whose lease is gone (or that the record lists down) counts as absent for longer than
 * `--replace-after`, so it may be replaced at any moment after it went.
 * @module
 */

import {
  type MembershipInput,
  type MembershipPlan,
  planMembership,
} from "../../../control/group/membership.ts";
import { type GroupRecord, phaseOf } from "../../../control/group/record.ts";
import type { EnvContext, Environment, World } from "./_model.ts";

export interface MembershipEnvOptions {
  /** The planner under test (default the real one). */
  plan?: (i: MembershipInput) => MembershipPlan;
  /** Replica counts the operator may ask for (default none: replacements only). */
  counts?: number[];
}

/** The environment: the master's membership changes and, optionally, the operator's. */
export function membershipEnv<D>(o: MembershipEnvOptions = {}): Environment<D> {
  const plan = o.plan ?? planMembership;
  return (w: World<D>, ctx: EnvContext<D>) => {
    const { names, bounds } = ctx;
    if (w.envChanges >= (bounds.maxEnvChanges ?? 0)) return;
    const r = w.record.record;
    // The operator: a CAS on the record's desired count, from any node.
    for (const k of o.counts ?? []) {
      if (k === r.desired.replicas) continue;
      const x = ctx.clone(w);
      x.envChanges++;
      ctx.write(x, withDesired(r, k));
      ctx.push(`operator sets replicas to ${k}`, x);
    }
    // The master's keeper: only while it serves the record's epoch and holds its lease.
    const i = names.indexOf(r.master);
    const actor = w.actors[i];
    if (!w.alive[i] || !w.lease[i] || w.partitioned[i] || actor?.serving !== r.epoch) return;
    const absent = names.filter((m, j) =>
      r.members.includes(m) && (!w.lease[j] || r.down.includes(m))
    );
    const p = plan({
      record: r,
      self: r.master,
      sizeBytes: 1,
      nodes: names.map((m, j) => ({
        name: m,
        labels: {},
        state: w.alive[j] && w.lease[j] ? "ready" : "down",
        freeBytes: 2 ** 40, // room: placement leaves full disks out
      })),
      absentSince: Object.fromEntries(absent.map((m) => [m, 0])),
      now: 1,
      replaceAfterMs: 1,
    });
    const c = p.change;
    // The CAS is guarded by the master's lease and every new member's.
    if (!c || !c.added.every((m) => w.lease[names.indexOf(m)])) return;
    const x = ctx.clone(w);
    x.envChanges++;
    ctx.write(x, c.record);
    const what = [...c.added.map((m) => `+${m}`), ...c.removed.map((m) => `-${m}`)].join(" ");
    ctx.push(`${r.master} changes the members: ${what}`, x);
  };
}

function withDesired(r: GroupRecord, replicas: number): GroupRecord {
  const base = { ...r, desired: { ...r.desired, replicas } };
  const { phase: _p, ...rest } = base;
  return { ...rest, phase: phaseOf(rest) };
}
