/**
 * A small explicit-state model checker: breadth-first search over every interleaving,
 * with a visited set of canonical states, invariants checked on every state and every
 * transition, and a liveness check (every reachable state can still reach a goal state)
 * by reverse reachability over the explored graph. Stands in for TLC.
 *
 * Only keys, parents and edges are kept; a trace is rebuilt by replaying from the
 * initial state along the parents, so counterexamples are shortest paths.
 * @module
 */

export interface Spec<S> {
  init: S;
  /** Every successor of a (canonical) state, with a label for traces. */
  next(s: S): { label: string; state: S }[];
  /** A canonical form: equal behaviour, equal form (e.g. revisions renumbered). */
  canon(s: S): S;
  /** A string that identifies a canonical state. */
  key(s: S): string;
  /** A violated state invariant, or undefined. */
  invariant(s: S): string | undefined;
  /** A violated transition invariant (checked on the raw successor), or undefined. */
  transition(from: S, to: S): string | undefined;
  /** Goal states for the liveness check. */
  goal(s: S): boolean;
  describe(s: S): string;
}

export interface Outcome {
  states: number;
  transitions: number;
  /** The first violation found, with the trace leading to it. */
  violation?: { message: string; trace: string[] };
  /** A reachable state from which no goal state is reachable, with its trace. */
  stuck?: { trace: string[] };
  ms: number;
}

/** A growable Int32 array. */
class Ints {
  data = new Int32Array(1 << 16);
  length = 0;
  push(v: number): void {
    if (this.length === this.data.length) {
      const d = new Int32Array(this.data.length * 2);
      d.set(this.data);
      this.data = d;
    }
    this.data[this.length++] = v;
  }
}

/** Explores everything reachable from spec.init (up to maxStates). */
export function explore<S>(spec: Spec<S>, maxStates = 3_000_000): Outcome {
  const t0 = performance.now();
  const index = new Map<string, number>();
  const keys: string[] = [];
  const parent = new Ints();
  const frontier: (S | undefined)[] = [];
  const edgeFrom = new Ints();
  const edgeTo = new Ints();
  const goal = new Ints();
  let transitions = 0;

  /** The path from the initial state to state `id`, replayed; `extra` appended. */
  const traceTo = (id: number, extra: string[] = []): string[] => {
    const path: number[] = [];
    for (let j = id; j >= 0; j = parent.data[j]) path.unshift(j);
    let s = spec.canon(spec.init);
    const out = [`initial state\n      => ${spec.describe(s)}`];
    for (const j of path.slice(1)) {
      const step = spec.next(s).find((t) => spec.key(spec.canon(t.state)) === keys[j])!;
      s = spec.canon(step.state);
      out.push(`${step.label}\n      => ${spec.describe(s)}`);
    }
    return [...out, ...extra];
  };
  const add = (c: S, from: number): number => {
    const key = spec.key(c);
    const known = index.get(key);
    if (known !== undefined) return known;
    const id = keys.length;
    index.set(key, id);
    keys.push(key);
    parent.push(from);
    goal.push(spec.goal(c) ? 1 : 0);
    frontier.push(c);
    return id;
  };
  const done = (o: Partial<Outcome>): Outcome => ({
    states: keys.length,
    transitions,
    ms: performance.now() - t0,
    ...o,
  });

  add(spec.canon(spec.init), -1);
  for (let i = 0; i < keys.length; i++) {
    const s = frontier[i]!;
    frontier[i] = undefined;
    const bad = spec.invariant(s);
    if (bad) return done({ violation: { message: bad, trace: traceTo(i) } });
    for (const { label, state } of spec.next(s)) {
      transitions++;
      const badStep = spec.transition(s, state);
      if (badStep) {
        const last = `${label}\n      => ${spec.describe(state)}`;
        return done({ violation: { message: badStep, trace: traceTo(i, [last]) } });
      }
      edgeFrom.push(i);
      edgeTo.push(add(spec.canon(state), i));
    }
    if (keys.length > maxStates) throw new Error(`model too big: over ${maxStates} states`);
  }

  // Liveness: walk the edges backwards from the goal states (compressed adjacency).
  const n = keys.length;
  const start = new Int32Array(n + 1);
  for (let e = 0; e < edgeTo.length; e++) start[edgeTo.data[e] + 1]++;
  for (let v = 0; v < n; v++) start[v + 1] += start[v];
  const fill = start.slice(0, n);
  const from = new Int32Array(edgeTo.length);
  for (let e = 0; e < edgeTo.length; e++) from[fill[edgeTo.data[e]]++] = edgeFrom.data[e];
  const canReach = new Uint8Array(n);
  const queue = new Int32Array(n);
  let tail = 0;
  for (let v = 0; v < n; v++) {
    if (goal.data[v]) {
      canReach[v] = 1;
      queue[tail++] = v;
    }
  }
  for (let q = 0; q < tail; q++) {
    const v = queue[q];
    for (let e = start[v]; e < start[v + 1]; e++) {
      if (!canReach[from[e]]) {
        canReach[from[e]] = 1;
        queue[tail++] = from[e];
      }
    }
  }
  const stuck = canReach.indexOf(0);
  return done({ stuck: stuck >= 0 ? { trace: traceTo(stuck) } : undefined });
}
