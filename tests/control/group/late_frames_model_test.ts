/**
 * Exhaustive models of the two ways a request that its sender gave up on can still be run
 * late, after the sender has sent the same or newer data another way, at the same epoch
 * (nothing fences it by epoch), and of what stops each: replication sessions
 * (data/replication/sessions.ts, wire.ts) and forwarder fences (data/forwarder_fences.ts),
 * checked after the region wait (data/replication/regions.ts).
 * The group model (replication_model_test.ts) keeps one bit per write, where writes commute;
 * these keep the contents of one block, written by a client that sends each write only after
 * the one before it was acknowledged, so that an older write landing after a newer one shows.
 *
 * Invariant of both: every copy that must hold the acknowledged writes (the master's; a
 * replica while the record lists it in sync) holds the newest acknowledged write or a newer
 * one. Liveness: from every reachable state, one is reachable with every write acknowledged
 * (and the replica in sync again).
 *
 * Each model is run as built, where it must hold, and with the mechanism taken out or
 * weakened, where the checker must find the lost write.
 */

import { assert } from "../../_assert.ts";
import { explore, type Outcome, type Spec } from "./_explore.ts";

/** A spec over plain JSON-able states, with `goal` and `invariant` given. */
function spec<S>(
  init: S,
  next: (s: S) => { label: string; state: S }[],
  invariant: (s: S) => string | undefined,
  goal: (s: S) => boolean,
): Spec<S> {
  return {
    init,
    next,
    canon: (s) => s,
    key: (s) => JSON.stringify(s),
    invariant,
    transition: () => undefined,
    goal,
    describe: (s) => JSON.stringify(s),
  };
}

const copy = <S>(s: S): S => structuredClone(s);

function report(name: string, o: Outcome): void {
  // deno-lint-ignore no-console
  console.log(`${name}: explored ${o.states} states, ${o.transitions} transitions`);
}

function mustHold<S>(name: string, sp: Spec<S>, minStates: number): void {
  const o = explore(sp);
  report(name, o);
  if (o.violation) assert(false, `${o.violation.message}\n${o.violation.trace.join("\n")}`);
  if (o.stuck) assert(false, `cannot finish:\n${o.stuck.trace.join("\n")}`);
  assert(o.states >= minStates, `explored only ${o.states} states, expected >= ${minStates}`);
}

function mustCatch<S>(name: string, sp: Spec<S>, step: string): void {
  const o = explore(sp);
  report(name, o);
  assert(o.violation !== undefined, `the checker missed "${name}"`);
  const trace = o.violation.trace.join("\n");
  // deno-lint-ignore no-console
  console.log(`counterexample: ${o.violation.message}\n${trace}`);
  assert(o.violation.message.includes("lost acknowledged write"), o.violation.message);
  assert(trace.includes(step), `the counterexample has no "${step}" step:\n${trace}`);
}

// --- Replication sessions --------------------------------------------------------------------

/**
 * One master, one replica, one block. The master applies a write, sends it on its current
 * link to the replica (a FIFO queue of frames), and acknowledges it once the replica applied
 * it; or it gives the link up (no answer in time) and acknowledges once the record shows the
 * replica out of sync (the CAS). A link given up keeps its frames: the replica may still
 * apply them at any later moment (they were in its socket, behind a slow fdatasync, or the
 * process was frozen). A resync opens a new link, makes the replica a target (new writes go
 * to it), copies the block under the region lock (no write of the link in flight), and puts
 * the replica back in sync by CAS. The replica applies a frame and checks it in one step
 * (one thread serves the peer channel: replica.ts).
 */
interface SessionState {
  /** The master's block and the replica's (the id of the write that wrote it last). */
  m: number;
  r: number;
  /** The replica's newest session of the copy; the session the master tags frames with. */
  rs: number;
  ms: number;
  /** Frames [write, session] sent on each link, not yet applied; `link` is the current one. */
  links: [number, number][][];
  link: number;
  inSync: boolean;
  /** 0 none, 1 a target with the copy to do, 2 copied: the CAS to do. */
  resync: 0 | 1 | 2;
  next: number;
  pending: number;
  /** "sent" to the replica; "replied"; "failed" (waits for the CAS); "ready". */
  p: "" | "sent" | "replied" | "failed" | "ready";
  acked: number;
  failures: number;
  restarts: number;
}

interface SessionOptions {
  writes: number;
  failures: number;
  /** The replica refuses frames of an older session (false: as before sessions). */
  sessions: boolean;
  /** The session begins when the resync ends, not before the member is a target. */
  sessionAtEnd?: boolean;
  /** Master process restarts at the same epoch (its lease held: no member took over). */
  restarts?: number;
  /** A restarted master starts a new session with an in-sync replica before it serves. */
  resume?: boolean;
}

function sessionModel(o: SessionOptions): Spec<SessionState> {
  const init: SessionState = {
    m: 0,
    r: 0,
    rs: 0,
    ms: 0,
    links: [[]],
    link: 1,
    inSync: true,
    resync: 0,
    next: 1,
    pending: 0,
    p: "",
    acked: 0,
    failures: 0,
    restarts: 0,
  };
  const newSession = (s: SessionState) => {
    if (!o.sessions) return;
    s.rs++; // the replica's answer to SESSION, on the new link
    s.ms = s.rs;
  };
  const giveUp = (t: SessionState) => {
    t.link = 0;
    t.resync = 0;
    if (t.p === "sent") t.p = t.inSync ? "failed" : "ready";
  };
  const next = (s: SessionState) => {
    const out: { label: string; state: SessionState }[] = [];
    const go = (label: string, f: (t: SessionState) => void) => {
      const t = copy(s);
      f(t);
      out.push({ label, state: t });
    };
    const target = s.link > 0 && (s.inSync || s.resync > 0);
    if (s.pending === 0 && s.next <= o.writes) {
      go(`client writes w${s.next}: the master applies it${target ? ", sends it" : ""}`, (t) => {
        t.m = t.pending = t.next++;
        if (target) {
          t.links[t.link - 1].push([t.pending, t.ms]);
          t.p = "sent";
        } else {
          // Not sent: acknowledged once the record shows the replica out of sync.
          t.p = t.inSync ? "failed" : "ready";
        }
      });
    }
    s.links.forEach((q, i) => {
      if (q.length === 0) return;
      const [w, session] = q[0];
      const late = i + 1 !== s.link;
      go(
        `replica takes w${w} (session ${session}) from link ${i + 1}${late ? ", given up" : ""}`,
        (t) => {
          t.links[i].shift();
          if (o.sessions && session < t.rs) {
            // STATUS_STALE_SESSION, nothing applied; on the current link: a failed member.
            if (!late) giveUp(t);
            return;
          }
          t.r = w;
          if (!late && t.pending === w && t.p === "sent") t.p = "replied";
        },
      );
    });
    if (s.link > 0 && s.failures < o.failures) {
      go(`the master gives link ${s.link} up (no answer in time)`, (t) => {
        t.failures++;
        giveUp(t);
      });
    }
    if (s.restarts < (o.restarts ?? 0)) {
      go("the master's process dies and restarts at the same epoch", (t) => {
        t.restarts++;
        // Its links die with it (their frames stay on their way), so do its sessions and
        // the write in flight (never acknowledged; the client may send it again as a new one).
        t.pending = 0;
        t.p = "";
        t.ms = 0;
        t.resync = 0;
        t.link = 0;
        if (!t.inSync) return; // resynced later, with a session
        t.links.push([]);
        t.link = t.links.length;
        if (o.resume) newSession(t);
      });
    }
    if (s.link === 0 && s.inSync) {
      go("CAS: the record shows the replica out of sync", (t) => {
        t.inSync = false;
        if (t.p === "failed") t.p = "ready";
      });
    }
    if (s.p === "replied" || s.p === "ready") {
      go(`the master acknowledges w${s.pending}`, (t) => {
        t.acked = t.pending;
        t.pending = 0;
        t.p = "";
      });
    }
    if (!s.inSync && s.link === 0) {
      go(`resync: link ${s.links.length + 1}, the replica a target`, (t) => {
        t.links.push([]);
        t.link = t.links.length;
        if (!o.sessionAtEnd) newSession(t);
        t.resync = 1;
      });
    }
    if (s.resync === 1 && s.links[s.link - 1].length === 0 && s.p !== "sent") {
      go("resync copies the block (region locked)", (t) => {
        t.r = t.m;
        t.resync = 2;
      });
    }
    if (s.resync === 2) {
      go("CAS: the record shows the replica in sync", (t) => {
        if (o.sessionAtEnd) newSession(t);
        t.inSync = true;
        t.resync = 0;
      });
    }
    return out;
  };
  const invariant = (s: SessionState) => {
    if (s.m < s.acked) return `lost acknowledged write w${s.acked} on the master`;
    if (s.inSync && s.r < s.acked) {
      return `lost acknowledged write w${s.acked}: the replica, listed in sync, holds w${s.r}`;
    }
  };
  const goal = (s: SessionState) => s.next > o.writes && s.pending === 0 && s.inSync;
  return spec(init, next, invariant, goal);
}

Deno.test("late frames model, replication sessions: a link given up, its frames applied late, resyncs: invariant and liveness hold", () => {
  mustHold("sessions", sessionModel({ writes: 4, failures: 3, sessions: true }), 2_000);
});

Deno.test("late frames model, replication sessions: master processes restarted at the same epoch start new sessions before serving: invariant and liveness hold", () => {
  mustHold(
    "sessions, restarts",
    sessionModel({ writes: 3, failures: 2, sessions: true, restarts: 2, resume: true }),
    2_000,
  );
});

Deno.test("late frames model, replication sessions: a master restarted at the same epoch without new sessions lets its previous process's frame undo a newer write", () => {
  mustCatch(
    "restart without new sessions",
    sessionModel({ writes: 3, failures: 0, sessions: true, restarts: 1, resume: false }),
    "from link 1, given up",
  );
});

Deno.test("late frames model, replication sessions: without them a given-up link's frame undoes a newer write on a copy listed in sync", () => {
  mustCatch(
    "no sessions",
    sessionModel({ writes: 3, failures: 1, sessions: false }),
    "from link 1, given up",
  );
});

Deno.test("late frames model, replication sessions: begun only when the resync ends, a late frame lands between the copy and the CAS", () => {
  mustCatch(
    "session at the end",
    sessionModel({ writes: 3, failures: 1, sessions: true, sessionAtEnd: true }),
    "from link 1, given up",
  );
});

// --- Forwarder fences ------------------------------------------------------------------------

/**
 * A client writes one block through a forwarding node to the master, which replicates it to
 * one replica (always in sync here). The forwarder sends the write on its current connection
 * and acknowledges it to the client when the master answers there. Its connection may break
 * (on the forwarder's side only: the master still holds what it received); it then opens a
 * new one with the next generation, which registers with the master at negotiation, and
 * sends the unanswered write again. The master runs each connection's requests in order, each
 * connection on its own thread (the worst case), a change in steps: enter the block's region
 * (it waits while another thread has a change in flight there: data/replication/regions.ts),
 * check the fence, apply locally and send to the replica on the thread's own link, the
 * replica applies it (links are independent: any order between them), then the master
 * leaves the region and answers.
 */
interface FenceState {
  m: number;
  r: number;
  /** Per connection: generation, requests received (write ids), stage of the head one. */
  conns: { gen: number; queue: number[]; stage: 0 | 1 | 2 | 3 | 4 }[];
  /** Frames on each connection thread's replica link. */
  links: number[][];
  /** The newest generation registered. */
  fence: number;
  cur: number;
  next: number;
  pending: number;
  acked: number;
  breaks: number;
}

interface FenceOptions {
  writes: number;
  breaks: number;
  fences: boolean;
  /** Changes of two threads in one region wait for each other (false: they do not). */
  regionWait: boolean;
  /** The fence is checked before the region wait instead of after it. */
  checkFirst?: boolean;
}

// Stages of the head request of a connection.
const IDLE = 0;
const ENTERED = 1; // in the region (checkFirst: checked, not yet in)
const CHECKED = 2; // in the region and checked
const SENT = 3; // applied here, on the replica link
const REPLICATED = 4;

function fenceModel(o: FenceOptions): Spec<FenceState> {
  const init: FenceState = {
    m: 0,
    r: 0,
    conns: [{ gen: 1, queue: [], stage: IDLE }],
    links: [[]],
    fence: 1,
    cur: 0,
    next: 1,
    pending: 0,
    acked: 0,
    breaks: 0,
  };
  const next = (s: FenceState) => {
    const out: { label: string; state: FenceState }[] = [];
    const go = (label: string, f: (t: FenceState) => void) => {
      const t = copy(s);
      f(t);
      out.push({ label, state: t });
    };
    if (s.pending === 0 && s.next <= o.writes) {
      go(`client writes w${s.next}: the forwarder sends it on connection ${s.cur + 1}`, (t) => {
        t.pending = t.next++;
        t.conns[t.cur].queue.push(t.pending);
      });
    }
    if (s.breaks < o.breaks) {
      go(
        `connection ${s.cur + 1} breaks; connection ${s.conns.length + 1} registers, resends`,
        (t) => {
          t.breaks++;
          const gen = t.conns[t.cur].gen + 1;
          t.conns.push({ gen, queue: t.pending ? [t.pending] : [], stage: IDLE });
          t.links.push([]);
          t.cur = t.conns.length - 1;
          if (o.fences) t.fence = Math.max(t.fence, gen);
        },
      );
    }
    const busyElsewhere = (c: number) =>
      o.regionWait &&
      s.conns.some((d, i) => i !== c && d.stage !== IDLE && !(o.checkFirst && d.stage === ENTERED));
    const fenced = (c: number) => o.fences && s.conns[c].gen < s.fence;
    s.conns.forEach((c, i) => {
      const w = c.queue[0];
      const name = `connection ${i + 1}'s w${w}`;
      const refuse = (t: FenceState) => {
        t.conns[i].queue.shift();
        t.conns[i].stage = IDLE;
      };
      if (c.stage === IDLE && w !== undefined) {
        if (o.checkFirst) {
          go(`${name}: ${fenced(i) ? "fenced, refused" : "checked"}`, (t) => {
            if (fenced(i)) refuse(t);
            else t.conns[i].stage = ENTERED;
          });
        } else if (!busyElsewhere(i)) {
          go(`${name} enters the region`, (t) => t.conns[i].stage = ENTERED);
        }
      }
      if (c.stage === ENTERED) {
        if (o.checkFirst) {
          if (!busyElsewhere(i)) go(`${name} enters the region`, (t) => t.conns[i].stage = CHECKED);
        } else {
          go(`${name}: ${fenced(i) ? "fenced, refused" : "checked"}`, (t) => {
            if (fenced(i)) refuse(t);
            else t.conns[i].stage = CHECKED;
          });
        }
      }
      if (c.stage === CHECKED) {
        go(`${name} applied on the master, sent to the replica`, (t) => {
          t.m = w;
          t.links[i].push(w);
          t.conns[i].stage = SENT;
        });
      }
      if (s.links[i].length > 0) {
        go(`the replica applies w${s.links[i][0]} from connection ${i + 1}'s thread`, (t) => {
          t.r = t.links[i].shift()!;
          t.conns[i].stage = REPLICATED;
        });
      }
      if (c.stage === REPLICATED) {
        go(`${name} leaves the region, answered`, (t) => {
          t.conns[i].queue.shift();
          t.conns[i].stage = IDLE;
          if (i === t.cur && t.pending === w) {
            t.acked = w;
            t.pending = 0;
          }
        });
      }
    });
    return out;
  };
  const invariant = (s: FenceState) => {
    if (s.m < s.acked) return `lost acknowledged write w${s.acked}: the master holds w${s.m}`;
    if (s.r < s.acked) return `lost acknowledged write w${s.acked}: the replica holds w${s.r}`;
  };
  const goal = (s: FenceState) => s.next > o.writes && s.pending === 0;
  return spec(init, next, invariant, goal);
}

Deno.test("late frames model, forwarder fences: connections break and are replaced, old requests run late: invariant and liveness hold", () => {
  mustHold(
    "fences",
    fenceModel({ writes: 4, breaks: 3, fences: true, regionWait: true }),
    2_000,
  );
});

Deno.test("late frames model, forwarder fences: without them a replaced connection's write undoes a newer one", () => {
  mustCatch(
    "no fences",
    fenceModel({ writes: 2, breaks: 1, fences: false, regionWait: true }),
    "connection 1's w1 applied on the master",
  );
});

Deno.test("late frames model, forwarder fences: the check alone is not enough without the region wait (checked, then another thread runs the newer writes)", () => {
  mustCatch(
    "no region wait",
    fenceModel({ writes: 2, breaks: 1, fences: true, regionWait: false }),
    "connection 1's w1 applied on the master",
  );
});

Deno.test("late frames model, forwarder fences: checked before the region wait instead of after it, the check is stale", () => {
  mustCatch(
    "check before the wait",
    fenceModel({ writes: 2, breaks: 1, fences: true, regionWait: true, checkFirst: true }),
    "connection 1's w1 applied on the master",
  );
});
