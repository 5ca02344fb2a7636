/**
 * How many data workers to run, and which one takes a new connection: pure functions over
 * what the pool measures once a second (each worker's busy ratio, from its thread's run and
 * run-queue times, and its connection count). The pool applies the decisions and logs their
 * reasons.
 *
 * - A worker's busy ratio is the share of the time it had a core in which it worked rather
 *   than waited for requests: run / (wall - run-queue wait) (busyRatio()). On an idle machine
 *   that is its CPU share. On a machine where other processes keep the cores busy, a worker
 *   that always has work but gets only part of a core still counts as fully busy (it is the
 *   bottleneck of its clients; one more worker adds a thread, which the kernel gives its own
 *   share), while a worker that mostly waits for requests stays low however long its
 *   wake-ups wait for a core (another worker would not shorten that wait).
 * - Grow by one when the workers' mean busy ratio has stayed at or above GROW_BUSY for
 *   GROW_AFTER_MS, up to the maximum.
 * - Shrink by one when the pool as a whole would stay below SHRINK_BUSY per worker with one
 *   fewer, for SHRINK_AFTER_MS, down to the minimum; only a worker with no connections is
 *   retired (a connection cannot move between threads, so a worker holding one stays until
 *   it is gone).
 * - No two resizes within COOLDOWN_MS, so one burst does not add several workers.
 * - New connections go to the worker with the fewest connections, then the least busy.
 * @module
 */

export const GROW_BUSY = 0.7;
export const GROW_AFTER_MS = 2_000;
export const SHRINK_BUSY = 0.3;
export const SHRINK_AFTER_MS = 30_000;
export const COOLDOWN_MS = 5_000;

/** One worker as measured. */
export interface WorkerSample {
  id: number;
  /** Its busy ratio over the last interval (busyRatio()), 0..1. */
  busy: number;
  connections: number;
}

/** The waits of the rules above; tests shorten them. */
export interface SizingTimings {
  growAfterMs: number;
  shrinkAfterMs: number;
  cooldownMs: number;
}

export const DEFAULT_TIMINGS: SizingTimings = {
  growAfterMs: GROW_AFTER_MS,
  shrinkAfterMs: SHRINK_AFTER_MS,
  cooldownMs: COOLDOWN_MS,
};

export interface SizingState {
  min: number;
  max: number;
  timings: SizingTimings;
  /** When the busy condition for growing began to hold (ms), if it holds. */
  highSince: number | undefined;
  /** When the idle condition for shrinking began to hold (ms), if it holds. */
  lowSince: number | undefined;
  lastResizeAt: number;
}

export type SizingAction =
  | { kind: "none" }
  | { kind: "grow"; reason: string }
  | { kind: "shrink"; worker: number; reason: string };

export function initialSizing(
  min: number,
  max: number,
  now: number,
  timings: SizingTimings = DEFAULT_TIMINGS,
): SizingState {
  if (!Number.isInteger(min) || !Number.isInteger(max) || min < 1 || max < min) {
    throw new RangeError(`pool bounds must be integers with 1 <= min <= max, got ${min}..${max}`);
  }
  return { min, max, timings, highSince: undefined, lowSince: undefined, lastResizeAt: now };
}

/**
 * A thread's busy ratio over an interval of `wall` seconds in which it ran `run` seconds and
 * waited `wait` seconds for a core: of the time it was not waiting for a core, the share it
 * worked. A thread that waited the whole interval had work all along: 1.
 */
export function busyRatio(run: number, wait: number, wall: number): number {
  if (!(wall > 0)) return 0;
  const r = Math.max(0, run);
  const w = Math.max(0, wait);
  const sleep = Math.max(0, wall - r - w);
  // Under a millisecond neither ran nor slept: it waited for a core all along.
  if (r + sleep < 0.001) return w > 0 ? 1 : 0;
  return Math.min(1, r / (r + sleep));
}

const pct = (x: number) => `${Math.round(x * 100)}%`;

/**
 * The decision for one sample of every active worker at time `now` (ms). `others`: workers
 * not sampled that still take a place (starting, or retiring): the pool never grows past
 * `max` counting them, nor while one is starting (it is about to take its share).
 */
export function decide(
  s: SizingState,
  workers: readonly WorkerSample[],
  now: number,
  others: { starting: number; leaving: number } = { starting: 0, leaving: 0 },
): { state: SizingState; action: SizingAction } {
  const n = workers.length;
  if (n === 0) return { state: s, action: { kind: "none" } };
  const total = workers.reduce((a, w) => a + w.busy, 0);
  const mean = total / n;
  const room = others.starting === 0 && n + others.leaving < s.max;
  const high = room && mean >= GROW_BUSY;
  const idle = workers.filter((w) => w.connections === 0).sort((a, b) => a.busy - b.busy)[0];
  const low = n > s.min && idle !== undefined && total <= (n - 1) * SHRINK_BUSY;
  let state: SizingState = {
    ...s,
    highSince: high ? (s.highSince ?? now) : undefined,
    lowSince: low ? (s.lowSince ?? now) : undefined,
  };
  const t = s.timings;
  const cooled = now - s.lastResizeAt >= t.cooldownMs;
  if (high && cooled && now - state.highSince! >= t.growAfterMs) {
    state = { ...state, highSince: undefined, lowSince: undefined, lastResizeAt: now };
    return {
      state,
      action: {
        kind: "grow",
        reason: `workers ${pct(mean)} busy on average for ${t.growAfterMs / 1000} s ` +
          `(grow at ${pct(GROW_BUSY)}); ${n} -> ${n + 1} of at most ${s.max}`,
      },
    };
  }
  if (low && cooled && now - state.lowSince! >= t.shrinkAfterMs) {
    state = { ...state, highSince: undefined, lowSince: undefined, lastResizeAt: now };
    return {
      state,
      action: {
        kind: "shrink",
        worker: idle.id,
        reason: `pool ${pct(total)} busy in all for ${t.shrinkAfterMs / 1000} s, fits in ` +
          `${n - 1} at under ${pct(SHRINK_BUSY)} each; worker ${idle.id} has no connections; ` +
          `${n} -> ${n - 1} of at least ${s.min}`,
      },
    };
  }
  return { state, action: { kind: "none" } };
}

/** The worker that takes the next connection: fewest connections, then least busy, then id. */
export function place(workers: readonly WorkerSample[]): number | undefined {
  let best: WorkerSample | undefined;
  for (const w of workers) {
    if (
      best === undefined || w.connections < best.connections ||
      (w.connections === best.connections &&
        (w.busy < best.busy || (w.busy === best.busy && w.id < best.id)))
    ) best = w;
  }
  return best?.id;
}

/** One line for logs and tests, e.g. "3 workers [1: 80% 4c, 2: 75% 3c, 3: 0% 0c]". */
export function describePool(workers: readonly WorkerSample[]): string {
  return `${workers.length} worker${workers.length === 1 ? "" : "s"} [` +
    workers.map((w) => `${w.id}: ${pct(w.busy)} ${w.connections}c`).join(", ") + "]";
}
