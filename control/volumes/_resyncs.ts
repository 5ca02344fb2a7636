/**
 * The resyncs this node runs as a group master, as the control plane sees them: which are
 * under way (from the moment the data plane's resync is called, before it reports any
 * progress) and the last failure of each member's resync. In memory only: it is live
 * status, asked for by `volume get` and /metrics, never written to the store.
 * @module
 */

import { errorMessage } from "../../mod/errors.ts";

/** Member -> value, per volume. */
type PerMember<T> = Map<string, Map<string, T>>;

/** A resync that succeeded: when, and what it returned (the data plane's ResyncResult). */
export interface FinishedResync {
  member: string;
  startedAt: number;
  at: number;
  result: unknown;
}

export class ResyncTracker {
  readonly #running: PerMember<number> = new Map();
  readonly #failed: PerMember<{ message: string; at: number }> = new Map();
  readonly #finished: PerMember<Omit<FinishedResync, "member">> = new Map();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /**
   * Runs `fn`, the resync of `member`'s copy of `volume`: under way meanwhile; a failure
   * (thrown) is kept until a later resync of that member succeeds.
   */
  async run<T>(volume: string, member: string, fn: () => Promise<T>): Promise<T> {
    const startedAt = this.#now();
    put(this.#running, volume, member, startedAt);
    drop(this.#finished, volume, member);
    try {
      const result = await fn();
      drop(this.#failed, volume, member);
      put(this.#finished, volume, member, { startedAt, at: this.#now(), result });
      return result;
    } catch (err) {
      this.fail(volume, member, errorMessage(err));
      throw err;
    } finally {
      drop(this.#running, volume, member);
    }
  }

  /** A resync of `member` could not even start (say, no peer address). */
  fail(volume: string, member: string, message: string): void {
    put(this.#failed, volume, member, { message, at: this.#now() });
    drop(this.#finished, volume, member);
  }

  /**
   * The last successful resync of each member of `volume` (kept until its next resync or a
   * failure): between its end and the record listing the member in sync, `volume get` shows
   * it finished rather than out of sync (control/volumes/_live.ts).
   */
  finished(volume: string): FinishedResync[] {
    return [...(this.#finished.get(volume) ?? [])].map(([member, f]) => ({ member, ...f }));
  }

  /** Resyncs of `volume` under way: member and start (ms since the epoch). */
  running(volume: string): Array<{ member: string; startedAt: number }> {
    return [...(this.#running.get(volume) ?? [])].map(([member, startedAt]) => ({
      member,
      startedAt,
    }));
  }

  /** The last failure of each member of `volume` whose resync has not succeeded since. */
  failures(volume: string): Array<{ member: string; message: string; at: number }> {
    return [...(this.#failed.get(volume) ?? [])].map(([member, f]) => ({ member, ...f }));
  }

  /** `volume` is gone or no longer served here. */
  forget(volume: string): void {
    this.#failed.delete(volume);
    this.#finished.delete(volume);
  }
}

function put<T>(map: PerMember<T>, volume: string, member: string, value: T): void {
  let m = map.get(volume);
  if (!m) map.set(volume, m = new Map());
  m.set(member, value);
}

function drop<T>(map: PerMember<T>, volume: string, member: string): void {
  const m = map.get(volume);
  if (!m) return;
  m.delete(member);
  if (m.size === 0) map.delete(volume);
}
