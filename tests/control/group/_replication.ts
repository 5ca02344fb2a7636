/**
 * The replicated data path, for _model.ts: every node's copy of ONE region of the volume
 * (it survives a crash), the serving master's replication state (lost in a crash), client
 * writes and reads, and lease grants in abstract time. It stands for data/replication/ and
 * the NBD request path, plus the lease guard, as the protocol has them:
 *
 * - a copy is the set of write ids applied to it and the newest epoch it has seen; a
 *   replica refuses a request of an older epoch (STALE_EPOCH), else applies it and raises
 *   its epoch to the request's;
 * - told "serve" at e, a master raises its own copy to e; its targets T start as the known
 *   record's in-sync members and gain each member it is told to resync;
 * - a client write is applied by the master, then sent to every target: each applies it,
 *   refuses it (the write fails: the master was fenced) or fails (crashed, or slow: no
 *   answer in time), which drops it from T and reports "replicas-failed". A write that does
 *   not reach a member the master may still see listed in sync (G below, minus T: dropped
 *   by an earlier write) reports those members too, at its start. A write with a failed
 *   member is acknowledged only after "release-writes" (the record shows them out of sync,
 *   or they were resynced since); "refuse-writes", "stop-serving" or a crash fail it. One
 *   write is in flight per master at a time;
 * - a write may fail on the master midway (ENOSPC; maxFailedWrites): part of it is applied
 *   there, and the targets get what the master's copy now holds in the range (data/nbd/
 *   _change.ts repairThenFail: read back, sent as WRITEs) as they would get a write, the
 *   same failures and out-of-sync CAS included; its end is the error reply instead of an
 *   acknowledgement, also when the write is refused (no lease check on that path);
 * - the lease guard: a master serves a read, starts a write and acknowledges one only while
 *   it holds a grant from every member of G = the known record's in-sync members, T, and
 *   members it resynced whose in-sync CAS may have applied unseen (a reply lost, or still
 *   to be sent: see stepped()), and while no master at an older epoch holds a grant from
 *   it (it serves only once its own grants to older epochs have lapsed). A member grants
 *   to epoch e iff its copy's epoch is <= e, raising it to e: this is also how members are
 *   fenced (the best-effort fence at promotion does no more than a renewal, so it is not a
 *   separate step; one that fails is a renewal that does not happen);
 * - time: a master's grants lapse on its own clock at any moment (one step for all of
 *   them); a grant lapses on the granting member's clock later, which is modelled at the
 *   worst moment, as soon as no master holds it (its grants only ever hold a member back
 *   from serving). A restarted member must still wait out its grants, as if they were kept
 *   on disk or it waited a lease period at start;
 * - a resync: the member becomes a target at once; the copy makes its copy equal to the
 *   master's in one step (the per-region lock: no write interleaves), then "replica-in-
 *   sync" is reported. A member dropped mid-resync is restarted (from scratch) while the
 *   record shows it lagging: a resync never completes for a member that missed a write
 *   after it began;
 * - a read is served by the master from its own copy, at one instant (a real read checks
 *   the guard, then reads; a write acknowledged in between is concurrent with it);
 * - a frozen master is a master that takes no steps while the others do (its grants lapse
 *   all the same): every interleaving contains it;
 * - a planned handover (a drain): the old master's path ends at its "stop-serving" (its
 *   export closed on every thread before the machine hands over), and the member handed over
 *   to serves without waiting out grants to older epochs (told "serve" with handedOver). A
 *   repair in flight keeps the closing export open until its error is answered (a graceful
 *   close answers what it received), and the export is confirmed closed only then;
 * - silent corruption and `volume verify --deep`: _verify.ts.
 *
 * Invariants: every acknowledged write is on every member the record lists in sync, and on
 * every member promoted; no read misses a write acknowledged before it; no write is
 * acknowledged at an epoch older than one that already acknowledged a write; once a failed
 * write's error is answered, the members the record lists in sync at that epoch hold the
 * same in its range (a later master compares the copies itself: master.ts #reconcile, not
 * modelled); _verify.ts's.
 *
 * Not modelled: more regions or concurrent writes (so no reordering between them), write
 * contents and overwrites (a read is stale when the copy lacks an acknowledged write),
 * FLUSH and durability, the data workers' per-thread targets, a copy raised by a request
 * whose reply is lost, a replica that applied a write whose reply was lost (holding a write
 * more never breaks an invariant here), clocks beyond "the master's view lapses first", a
 * failed write whose read back fails too (repairThenFail then answers at once), a write in
 * flight when a non-handover stop-serving ends the old path (the epoch has moved on), the
 * new master's comparison of the copies after a change of master (#reconcile).
 * @module
 */

import type { Notice } from "../../../control/group/machine.ts";
import type { DataContext, DataModel, World } from "./_model.ts";
import {
  bit,
  copiesDiffer,
  type Copy,
  describeNode,
  key,
  type MasterPath,
  type ReplData,
  type ReplicationFaults,
  summary,
} from "./_repl_state.ts";
import { corruptionStep, resyncCopy, verifyStep, verifyTransition } from "./_verify.ts";

export type { ReplicationFaults } from "./_repl_state.ts";

type W = World<ReplData>;
type Ctx = DataContext<ReplData>;

const add = (xs: string[], x: string) => xs.includes(x) ? xs : [...xs, x].sort();
const remove = (xs: string[], x: string) => xs.filter((y) => y !== x);
const missing = (have: number, acked: number) => {
  const lacks = acked & ~have;
  return lacks === 0 ? undefined : `w${Math.log2(lacks & -lacks)}`;
};

/** The replicated data path, with `faults` if any. */
export function replication(faults: ReplicationFaults = {}): DataModel<ReplData> {
  /** The members whose grant master i needs to serve (G, without i). */
  const guardSet = (w: W, i: number, p: MasterPath, names: string[]): string[] => {
    const actor = w.actors[i];
    let g = [...(actor?.known?.record.inSync ?? []), ...p.targets];
    // A CAS whose reply was lost (or any request not settled yet) may have put a resynced
    // member in sync without this node knowing; it could then be promoted.
    if (!faults.guardKnownInSyncOnly) g = [...g, ...p.resynced];
    return [...new Set(g)].filter((m) => m !== names[i]).sort();
  };
  /**
   * Whether master i may serve: it holds every grant it needs, and no grant it gave to an
   * older epoch is still held there.
   */
  const guard = (w: W, i: number, p: MasterPath, names: string[]): boolean =>
    (faults.serveBeforeGrantsLapse || p.planned || !grantedBelow(w, names[i], p.epoch)) &&
    guardSet(w, i, p, names).every((m) => p.holds.includes(m));

  const setPath = (w: W, i: number, p: MasterPath | undefined) => {
    w.data.paths[i] = p;
  };
  /** `p` once its write in flight is over: a closing export is then closed. */
  const settled = (p: MasterPath) => p.closing ? undefined : { ...p, write: undefined };
  const setCopy = (w: W, j: number, c: Partial<Copy>) => {
    w.data.copies[j] = { ...w.data.copies[j], ...c };
  };
  /** The client gets the error of write `id`, which failed on the master at `epoch`. */
  const answerError = (w: W, id: number, epoch: number) => {
    w.data.errored = [...w.data.errored];
    w.data.errored[id] = epoch;
  };

  const notify = (w: W, i: number, n: Notice, ctx: Ctx): void => {
    const p = w.data.paths[i];
    switch (n.kind) {
      case "serve": {
        const me = ctx.names[i];
        const inSync = w.actors[i]?.known?.record.inSync ?? [];
        setCopy(w, i, { epoch: Math.max(w.data.copies[i].epoch, n.epoch) });
        setPath(w, i, {
          epoch: n.epoch,
          targets: inSync.filter((m) => m !== me),
          resyncing: [],
          resynced: [],
          holds: [],
          write: undefined,
          planned: n.handedOver === true,
          closing: false,
        });
        break;
      }
      case "stop-serving":
        // (The fault: a handing-over master's path goes on serving its epoch.)
        if (n.handover && faults.confirmBeforeClosed) break;
        // A handover's close waits for a repair in flight; otherwise the epoch moves on and
        // what the old path still does is not followed (see the module doc).
        if (n.handover && p?.write?.repair) setPath(w, i, { ...p, closing: true });
        else setPath(w, i, undefined);
        break;
      case "release-writes":
        if (p?.epoch === n.epoch && p.write?.failed) {
          setPath(w, i, { ...p, write: { ...p.write, released: true } });
        }
        break;
      case "refuse-writes":
        if (p?.epoch === n.epoch && p.write?.failed) {
          if (p.write.repair) answerError(w, p.write.id, p.epoch);
          setPath(w, i, settled(p));
        }
        break;
      case "resync":
        if (p?.epoch === n.epoch) {
          setPath(w, i, {
            ...p,
            resyncing: add(p.resyncing, n.replica),
            targets: add(p.targets, n.replica),
          });
        }
        break;
      case "fence": // a renewal raises a member's epoch as a fence does (see the module doc)
        break;
    }
  };

  /**
   * Forgets a resynced member once the machine has no request unsettled and no report
   * that it is in sync: the record it knows then says whether it is.
   */
  const stepped = (w: W, i: number) => {
    let p = w.data.paths[i];
    const a = w.actors[i];
    // A member that left the group (membership change) is no longer replicated to, as the
    // master's data path follows the record (setReplication); its resync stops.
    const members = a?.known?.record.members;
    const gone = (m: string) => members !== undefined && !members.includes(m);
    if (p && [...p.targets, ...p.resyncing, ...p.resynced].some(gone)) {
      const keep = (xs: string[]) => xs.filter((m) => !gone(m));
      p = {
        ...p,
        targets: keep(p.targets),
        resyncing: keep(p.resyncing),
        resynced: keep(p.resynced),
      };
      const wr = p.write;
      if (wr && wr.waiting.some(gone)) p = { ...p, write: { ...wr, waiting: keep(wr.waiting) } };
      setPath(w, i, p);
    }
    if (!p || !a || p.resynced.length === 0 || a.op !== undefined) return;
    const reported = a.reports.filter((r) => r.inSync).map((r) => r.replica);
    const resynced = p.resynced.filter((m) => reported.includes(m));
    if (resynced.length < p.resynced.length) setPath(w, i, { ...p, resynced });
  };

  const next = (w: W, i: number, ctx: Ctx): void => {
    const { names, bounds, push } = ctx;
    corruptionStep(w, i, ctx);
    const p = w.data.paths[i];
    if (p === undefined) return;
    const me = names[i];
    const e = p.epoch;
    const known = w.actors[i]?.known?.record;
    const copies = w.data.copies;
    const guarded = guard(w, i, p, names);
    const open = !p.closing;
    const change = (label: string, f: (x: W, q: MasterPath) => MasterPath | undefined) => {
      const x = ctx.clone(w);
      setPath(x, i, f(x, p));
      push(label, x);
    };

    // A client write: applied here, then sent to every target.
    if (open && p.write === undefined && w.data.issued < (bounds.maxWrites ?? 0) && guarded) {
      const id = w.data.issued;
      // Members the record may list in sync that this write will not reach (dropped
      // earlier, the record not yet seen without them): as if they failed it.
      const dropped = faults.skipDroppedMembers
        ? []
        : guardSet(w, i, p, names).filter((m) => !p.targets.includes(m));
      const start = (repair: boolean) => {
        const x = ctx.clone(w);
        x.data.issued++;
        setCopy(x, i, { data: copies[i].data | bit(id) });
        const label = `client writes w${id} to ${me}` +
          (repair ? ": it fails there midway (ENOSPC), part of it applied" : "");
        if (repair) x.data.failedWrites++;
        if (repair && faults.errorWithoutRepair) {
          answerError(x, id, e);
          return push(`${label}; ${me} answers the error`, x);
        }
        const failed = dropped.length > 0;
        const write = { id, waiting: p.targets, failed, released: false, repair };
        setPath(x, i, { ...p, write });
        if (!failed) push(label, x);
        else {
          push(
            `${label} (not reaching [${dropped}])`,
            ctx.deliver(x, i, { type: "replicas-failed", epoch: e, replicas: dropped }),
          );
        }
      };
      start(false);
      if (w.data.failedWrites < (bounds.maxFailedWrites ?? 0)) start(true);
    }
    const wr = p.write;
    if (wr) {
      const what = wr.repair ? `the repair of w${wr.id}` : `w${wr.id}`;
      for (const m of wr.waiting) {
        const j = names.indexOf(m);
        if (!w.alive[j]) continue;
        if (copies[j].epoch > e) {
          change(`${m} refuses ${what} (stale epoch e${e}): it fails`, (x, q) => {
            if (wr.repair) answerError(x, wr.id, e);
            return settled(q);
          });
        } else {
          // A repair carries what the master's copy holds in the range: its partial change.
          change(`${m} applies ${what} at e${e}`, (x, q) => {
            setCopy(x, j, { data: copies[j].data | bit(wr.id), epoch: e });
            return { ...q, write: { ...wr, waiting: remove(wr.waiting, m) } };
          });
        }
      }
      const mayAck = wr.waiting.length === 0 &&
        (!wr.failed || wr.released || faults.ackBeforeCas || (wr.repair && faults.errorBeforeCas));
      if (mayAck && wr.repair) {
        // The error reply: no lease check on this path (repairThenFail's fail()).
        change(`${me} answers w${wr.id}'s error to the client`, (x, q) => {
          answerError(x, wr.id, e);
          return settled(q);
        });
      } else if (mayAck && (guarded || faults.ackWithoutGuard)) {
        change(`${me} acknowledges w${wr.id} at e${e}`, (x, q) => {
          if (e < x.data.ackEpoch) {
            x.flaw ??= `${me} acknowledged w${wr.id} at e${e} after a write was ` +
              `acknowledged at e${x.data.ackEpoch}`;
          }
          x.data.acked |= bit(wr.id);
          x.data.ackEpoch = Math.max(x.data.ackEpoch, e);
          return { ...q, write: undefined };
        });
      }
    }
    // A target fails (crashed, or slow: no answer in time): dropped and reported.
    for (const m of open ? p.targets : wr?.waiting ?? []) {
      const j = names.indexOf(m);
      if (w.alive[j] && w.syncLosses >= bounds.maxSyncLosses) continue;
      const x = ctx.clone(w);
      if (w.alive[j]) x.syncLosses++;
      const failsWrite = wr?.waiting.includes(m) ?? false;
      setPath(x, i, {
        ...p,
        targets: remove(p.targets, m),
        write: wr && failsWrite
          ? { ...wr, waiting: remove(wr.waiting, m), failed: true, released: false }
          : wr,
      });
      push(
        `${m} fails ${me}${failsWrite ? ` during w${wr!.id}` : ""}`,
        ctx.deliver(x, i, { type: "replicas-failed", epoch: e, replicas: [m] }),
      );
    }
    // Lease grants: a renewal round, and this master's view of them lapsing.
    const grantors = guardSet(w, i, p, names).filter((m) => {
      const j = names.indexOf(m);
      return w.alive[j] && copies[j].epoch <= e && !p.holds.includes(m);
    });
    if (open && grantors.length > 0) {
      change(`${me} renews grants from [${grantors}] at e${e}`, (x, q) => {
        for (const m of grantors) setCopy(x, names.indexOf(m), { epoch: e });
        return { ...q, holds: [...new Set([...q.holds, ...grantors])].sort() };
      });
    }
    if (p.holds.length > 0) {
      change(`${me}'s grants lapse on its clock`, (_, q) => ({ ...q, holds: [] }));
    }
    if (!open) return;
    // Resyncs: retried after a failure while the record shows the member lagging; a copy
    // completes in one step.
    for (const m of p.resyncing) {
      const j = names.indexOf(m);
      if (!w.alive[j]) continue;
      if (!p.targets.includes(m)) {
        const lagging = known !== undefined && known.epoch === e && !known.inSync.includes(m) &&
          !known.down.includes(m);
        if (lagging) {
          change(`${me} restarts the resync of ${m}`, (_, q) => ({
            ...q,
            targets: add(q.targets, m),
          }));
        }
      } else if (copies[j].epoch <= e) {
        const x = ctx.clone(w);
        if (faults.resyncWithoutCopy) setCopy(x, j, { epoch: e });
        else resyncCopy(w, x, i, j, e, names[i]);
        setPath(x, i, {
          ...p,
          resyncing: remove(p.resyncing, m),
          resynced: add(p.resynced, m),
        });
        push(
          `${me} copies its region to ${m}: resync done`,
          ctx.deliver(x, i, { type: "replica-in-sync", replica: m, epoch: e }),
        );
      }
    }
    verifyStep(w, i, p, ctx, faults);
    // A read, served from this node's copy.
    if (guarded || faults.readWithoutGuard) {
      const lacks = missing(copies[i].data, w.data.acked);
      if (lacks) {
        const x = ctx.clone(w);
        x.flaw ??= `stale read: ${me} serves a read at e${e} without acknowledged ${lacks}`;
        push(`${me} serves a read`, x);
      }
    }
  };

  return {
    init: (names) => ({
      copies: names.map(() => ({ data: 0, epoch: 1, bad: 0 })),
      paths: names.map(() => undefined),
      issued: 0,
      acked: 0,
      ackEpoch: 0,
      failedWrites: 0,
      errored: [],
      corruptions: 0,
      verifies: 0,
      found: 0,
      foundEpoch: 0,
    }),
    clone: (d) => ({ ...d, copies: [...d.copies], paths: [...d.paths] }),
    notify,
    stepped,
    crash: (w, i) => setPath(w, i, undefined),
    closing: (w, i) => w.data.paths[i]?.closing === true,
    next,
    key,
    invariant: (w, names) => {
      for (const m of w.record.record.inSync) {
        const lacks = missing(w.data.copies[names.indexOf(m)].data, w.data.acked);
        if (lacks) return `acknowledged ${lacks} missing on ${m}, which the record lists in sync`;
      }
      return copiesDiffer(w, names);
    },
    transition: (from, to, names) => {
      const b = to.record.record;
      const bad = verifyTransition(from, to, names);
      if (bad) return bad;
      if (from.record.record.master === b.master) return undefined;
      const lacks = missing(to.data.copies[names.indexOf(b.master)].data, to.data.acked);
      return lacks ? `${b.master} promoted without acknowledged ${lacks}` : undefined;
    },
    goal: (w, names) => {
      const i = names.indexOf(w.record.record.master);
      const p = w.data.paths[i];
      return p !== undefined && p.write === undefined;
    },
    describeNode,
    summary,
  };
}

/**
 * Whether `node` still has a grant to an epoch below `epoch` running: a grant lapses on the
 * granting node's clock only after it lapsed on the master's, so as long as a master at an
 * older epoch holds it. (Letting it lapse at once after that is the worst case: a node's
 * own grants only ever hold it back from serving.)
 */
function grantedBelow(w: W, node: string, epoch: number): boolean {
  return w.data.paths.some((q) => q !== undefined && q.epoch < epoch && q.holds.includes(node));
}
