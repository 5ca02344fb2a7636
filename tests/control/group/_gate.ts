/**
 * The data path of a master that does not replicate, for _model.ts: a client write waits at
 * the master's write gate ("data-changed") and is acknowledged when the machine releases
 * it; acknowledged writes are held by the acknowledging node alone, and by a replica only
 * once the master reports it resynced. The master's data path also reports replicas
 * leaving sync (a slow or crashed replica) and joining it again.
 *
 * Invariants: a write is acknowledged only by the master at the record's epoch with no
 * other member in sync, and no node missing an acknowledged write is ever promoted.
 * @module
 */

import type { Notice } from "../../../control/group/machine.ts";
import { describeRecord } from "../../../control/group/record.ts";
import type { DataContext, DataModel, World } from "./_model.ts";

export interface GateData {
  /** A client write waits at this node's write gate. */
  writeWaiting: boolean[];
  /** Writes acknowledged so far. */
  writes: number;
  /** Nodes holding every acknowledged write (sorted); undefined before the first one. */
  holders: string[] | undefined;
}

type W = World<GateData>;

/** The write gate of a master whose data is not replicated. */
export function writeGate(): DataModel<GateData> {
  return {
    init: (names) => ({ writeWaiting: names.map(() => false), writes: 0, holders: undefined }),
    clone: (d) => ({ ...d, writeWaiting: [...d.writeWaiting] }),
    notify,
    crash: (w, i) => {
      w.data.writeWaiting[i] = false;
    },
    next,
    key: (d) => `${d.writeWaiting.map(Number).join("")}${d.writes}${d.holders}`,
    invariant: () => undefined,
    transition: (from, to) => {
      const a = from.record.record;
      const b = to.record.record;
      const holders = to.data.holders;
      if (a.master !== b.master && holders !== undefined && !holders.includes(b.master)) {
        return `${b.master} promoted without an acknowledged write (held by [${holders}])`;
      }
      return undefined;
    },
    // A write held at the gate is acknowledged or refused in the end (issue 10).
    goal: (w) => !w.data.writeWaiting.some(Boolean),
    describeNode: (w, i) => [w.data.writeWaiting[i] ? "write-waiting" : ""],
    summary: (w) =>
      w.data.writes > 0 ? ` | ${w.data.writes} acked, held by [${w.data.holders}]` : "",
  };
}

function notify(w: W, i: number, n: Notice, ctx: DataContext<GateData>): void {
  if (n.kind === "release-writes") acknowledge(w, i, n.epoch, ctx.names);
  else if (n.kind === "refuse-writes") w.data.writeWaiting[i] = false;
}

/** The data path of node i acknowledges its waiting write at `epoch`. */
function acknowledge(w: W, i: number, epoch: number, names: string[]): void {
  const d = w.data;
  if (!d.writeWaiting[i]) {
    w.flaw ??= `${names[i]} released writes with none waiting`;
    return;
  }
  d.writeWaiting[i] = false;
  d.writes++;
  const r = w.record.record;
  const others = r.inSync.filter((m) => m !== names[i]);
  if (r.master !== names[i] || r.epoch !== epoch || others.length > 0) {
    w.flaw ??= `${names[i]} acknowledged a write at e${epoch} while the record is ` +
      describeRecord(r);
  }
  // Not replicated: the acknowledging node alone holds it (and every earlier write
  // only if it held those too).
  d.holders = d.holders === undefined || d.holders.includes(names[i]) ? [names[i]] : [];
}

/** The serving master's data path: sync reports and client writes at the gate. */
function next(w: W, i: number, ctx: DataContext<GateData>): void {
  const { names, bounds, deliver, push } = ctx;
  const actor = w.actors[i];
  const e = actor?.serving;
  if (e === undefined || !actor?.known) return;
  const me = names[i];
  for (let j = 0; j < names.length; j++) {
    if (j === i) continue;
    const r = names[j];
    const rep = actor.reports.find((x) => x.replica === r);
    const inSync = rep ? rep.inSync : actor.known.record.inSync.includes(r);
    if (!inSync && w.alive[j]) {
      // A resync brought r up to date: it holds what this master holds.
      const x = deliver(w, i, { type: "replica-in-sync", replica: r, epoch: e });
      const holders = x.data.holders;
      if (holders?.includes(me) && !holders.includes(r)) {
        x.data.holders = [...holders, r].sort();
      }
      push(`${me} reports ${r} in sync`, x);
    }
    if (inSync && (!w.alive[j] || w.syncLosses < bounds.maxSyncLosses)) {
      const x = deliver(w, i, { type: "replica-out-of-sync", replica: r, epoch: e });
      if (w.alive[j]) x.syncLosses++;
      push(`${me} reports ${r} out of sync`, x);
    }
  }
  // A client write arrives at the write gate.
  if (!w.data.writeWaiting[i] && w.data.writes < (bounds.maxWrites ?? 0)) {
    const x = ctx.clone(w);
    x.data.writeWaiting[i] = true;
    push(
      `a write waits at ${me}'s gate`,
      deliver(x, i, { type: "data-changed", epoch: e, waiting: true }),
    );
  }
}
