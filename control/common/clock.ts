/**
 * Time as a dependency: control-plane code asks a Clock for the time so tests can
 * drive lease expiry and timeouts with a FakeClock instead of waiting.
 * @module
 */

import { InvalidArgumentError } from "../../mod/errors.ts";

/** A source of wall-clock time. */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number;
}

/** The real clock (Date.now()). */
export const systemClock: Clock = Object.freeze({ now: () => Date.now() });

/** A clock that only moves when told to; for tests. */
export class FakeClock implements Clock {
  #now: number;

  /** Starts at `startMs` (default 2026-01-01T00:00:00Z). */
  constructor(startMs = Date.UTC(2026, 0, 1)) {
    if (!Number.isFinite(startMs)) {
      throw new InvalidArgumentError(`FakeClock start must be a finite number, got ${startMs}`);
    }
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  /** Moves time forward by `ms` (>= 0). */
  advance(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) {
      throw new InvalidArgumentError(`FakeClock.advance() needs ms >= 0, got ${ms}`);
    }
    this.#now += ms;
  }
}
