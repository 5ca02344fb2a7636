/**
 * Runs of the replicated group model (_model.ts with _replication.ts) for the tests: one
 * that must hold (invariants and liveness over every reachable state) and one with a
 * deliberate fault that the checker must catch, its counterexample printed.
 * @module
 */

import { assert } from "../../_assert.ts";
import { step } from "../../../control/group/machine.ts";
import { explore, type Outcome } from "./_explore.ts";
import { type Bounds, groupModel, type StepFn } from "./_model.ts";
import { replication, type ReplicationFaults } from "./_replication.ts";
import { membershipEnv, type MembershipEnvOptions } from "./_membership_env.ts";

export interface Variant {
  step?: StepFn;
  faults?: ReplicationFaults;
  ruleChecks?: boolean;
  /** Membership changes by the master and the operator (_membership_env.ts). */
  members?: MembershipEnvOptions;
}

/** Master + 1 replica, one write, no faults: the bounds a run starts from. */
export const NONE: Bounds = {
  replicas: 1,
  maxCrashes: 0,
  maxPartitions: 0,
  maxSyncLosses: 0,
  maxLostReplies: 0,
  maxWrites: 1,
};

/** Explores the model within `bounds` (over NONE) and prints the counts. */
export function run(name: string, bounds: Partial<Bounds>, v: Variant = {}): Outcome {
  const o = explore(groupModel({ ...NONE, ...bounds }, {
    step: v.step ?? step,
    data: replication(v.faults),
    ruleChecks: v.ruleChecks,
    ...(v.members ? { environment: membershipEnv(v.members) } : {}),
  }));
  // deno-lint-ignore no-console
  console.log(
    `${name}: explored ${o.states} states, ${o.transitions} transitions in ${
      (o.ms / 1000).toFixed(1)
    } s`,
  );
  return o;
}

/** Asserts that every invariant and liveness hold over at least `minStates` states. */
export function holds(
  name: string,
  bounds: Partial<Bounds>,
  minStates: number,
  v: Variant = {},
): void {
  const o = run(name, bounds, v);
  if (o.violation) assert(false, `${o.violation.message}\n${o.violation.trace.join("\n")}`);
  if (o.stuck) assert(false, `cannot become healthy again:\n${o.stuck.trace.join("\n")}`);
  assert(o.states >= minStates, `explored only ${o.states} states, expected >= ${minStates}`);
}

/** Runs a broken variant and expects the checker to catch it (`expected` in the message). */
export function caught(name: string, bounds: Partial<Bounds>, v: Variant, expected: string): void {
  const o = run(name, bounds, v);
  if (!o.violation) {
    const stuck = o.stuck ? `\n(stuck instead:\n${o.stuck.trace.join("\n")})` : "";
    assert(false, `the checker missed the fault "${name}"${stuck}`);
  }
  const trace = `${o.violation.message}\n${o.violation.trace.join("\n")}`;
  // deno-lint-ignore no-console
  console.log(`counterexample: ${trace}`);
  assert(o.violation.message.includes(expected), `unexpected violation: ${trace}`);
  assert(o.violation.trace[0].startsWith("initial state"), trace);
}
