/**
 * The hash states of this node's copies (main thread), shared by the data plane (the copies
 * it exports) and the replica service (the copies it applies a master's requests to): one
 * HashState per copy however many users, closed when the last lets go.
 * @module
 */

import type { Logger } from "pino";
import { HashState, sidecars } from "./hash_state.ts";

export class CopyHashes {
  readonly #log: Logger;
  readonly #open = new Map<string, { state: Promise<HashState>; users: number }>();

  constructor(log: Logger) {
    this.#log = log;
  }

  /**
   * The hash state of the copy at `path`, opened on first use (`fresh`: the copy was just
   * created, all zeros). Each acquire() needs a release().
   */
  acquire(path: string, options: { fresh?: boolean } = {}): Promise<HashState> {
    let entry = this.#open.get(path);
    if (!entry) {
      const state = HashState.open(path, this.#log, options);
      entry = { state, users: 0 };
      this.#open.set(path, entry);
      state.catch(() => this.#open.delete(path));
    }
    entry.users++;
    return entry.state;
  }

  /** The hash state of `path` if it is open (and ready). */
  async get(path: string): Promise<HashState | undefined> {
    return await this.#open.get(path)?.state.catch(() => undefined);
  }

  async release(path: string): Promise<void> {
    const entry = this.#open.get(path);
    if (!entry || --entry.users > 0) return;
    this.#open.delete(path);
    const s = await entry.state.catch(() => undefined);
    await s?.close();
  }

  /** Removes the sidecar files of a deleted copy (the state must be released). */
  async remove(path: string): Promise<void> {
    for (const f of sidecars(path)) {
      try {
        await Deno.remove(f);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }
  }

  /** Moves the sidecar files of a copy along with it (quarantine). */
  async move(from: string, to: string): Promise<void> {
    const dest = sidecars(to);
    const src = sidecars(from);
    for (let i = 0; i < src.length; i++) {
      try {
        await Deno.rename(src[i], dest[i]);
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }
  }

  async closeAll(): Promise<void> {
    const all = [...this.#open.values()];
    this.#open.clear();
    for (const e of all) await (await e.state.catch(() => undefined))?.close();
  }
}
