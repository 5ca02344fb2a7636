/**
 * Lease notices as a driver really gets them, for the group model (_model.ts) when its
 * bounds ask for `leaseWatch`:
 *
 * - each node has ONE lease watch (control/group/lease_watch.ts) that reports changes of its
 *   own view, edge-triggered: it sees nothing while the node is cut off from etcd, and a lease
 *   that went and came back between two of its deliveries (the grace period, a lagging watch)
 *   is never reported at all;
 * - a lost CAS brings lease facts read in its transaction, which step() takes in at once and
 *   which the watch may never contradict; the driver therefore brings the machine's view in
 *   line with the watch's a moment later (driver.ts, #syncLeasesSoon): a step here, on when
 *   the model's `leaseSync` is (a broken driver leaves it out);
 * - a node's lease does not come back when it reaches etcd again: the node registers again
 *   with a new lease (control/nodes/registry.ts), a step of its own, and a lease may lapse
 *   while the node is connected (frozen past its TTL).
 * @module
 */

import type { ActorState, GroupEvent } from "../../../control/group/machine.ts";
import type { DataContext, World } from "./_model.ts";

/** Whether node i's lease watch reports node j down. */
export function watchSeesDown(w: World, i: number, j: number): boolean {
  return (w.watched[i] & (1 << j)) !== 0;
}

/** The node's own steps: registering again after its lease went, its lease lapsing. */
export function registrySteps<D>(w: World<D>, i: number, ctx: DataContext<D>): void {
  const me = ctx.names[i];
  if (!w.alive[i] || w.partitioned[i]) return;
  if (!w.lease[i]) {
    const x = ctx.clone(w);
    x.lease[i] = true;
    ctx.push(`${me} registers again with a new lease`, x);
  } else if (w.lapses < (ctx.bounds.maxLapses ?? 0)) {
    const x = ctx.clone(w);
    x.lease[i] = false;
    x.lapses++;
    ctx.push(`${me}'s lease lapses (frozen past its TTL)`, x);
  }
}

/** What node i's lease watch and its driver's lease sync deliver to actor i. */
export function watchSteps<D>(
  w: World<D>,
  i: number,
  actor: ActorState,
  ctx: DataContext<D>,
): void {
  const { names } = ctx;
  const me = names[i];
  if (!w.partitioned[i]) {
    for (let j = 0; j < names.length; j++) {
      const down = !w.lease[j];
      if (down === watchSeesDown(w, i, j)) continue;
      const x = ctx.clone(w);
      x.watched[i] ^= 1 << j;
      const event: GroupEvent = { type: down ? "lease-expired" : "lease-restored", node: names[j] };
      ctx.push(
        `${me}'s lease watch reports ${event.type} of ${names[j]}`,
        ctx.deliver(x, i, event),
      );
    }
  }
  if (w.syncDue[i]) {
    let x = ctx.clone(w);
    x.syncDue[i] = false;
    for (let j = 0; j < names.length; j++) {
      const down = watchSeesDown(w, i, j);
      if (down === actor.leaseDown.includes(names[j])) continue;
      x = ctx.deliver(x, i, { type: down ? "lease-expired" : "lease-restored", node: names[j] });
    }
    ctx.push(`${me}'s driver brings the machine's lease view in line with its watch`, x);
  }
}
