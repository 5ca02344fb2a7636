/**
 * The newest epoch each local copy has seen, kept beside the copy (`<copy>.epoch`) and in
 * memory: a replica refuses requests of older epochs, and a new master records its epoch in
 * its own copy before it serves, so that the master it replaced cannot use it either. One
 * instance per node (the main thread), shared by the data plane and the replica service.
 * @module
 */

export class CopyEpochs {
  readonly #known = new Map<string, number>();
  readonly #granted = new Map<string, number>();
  /** The raise under way of each copy, if any. */
  readonly #raising = new Map<string, Promise<boolean>>();

  /** The newest epoch of the copy at `path` (read from disk the first time). */
  async get(path: string): Promise<number> {
    const known = this.#known.get(path);
    if (known !== undefined) return known;
    let e = 0;
    try {
      e = Number((await Deno.readTextFile(`${path}.epoch`)).trim()) || 0;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    // Another call may have raised it meanwhile: keep the larger.
    const now = Math.max(e, this.#known.get(path) ?? 0);
    this.#known.set(path, now);
    return now;
  }

  /** The newest epoch of the copy at `path` if it was read already (no disk access). */
  known(path: string): number | undefined {
    return this.#known.get(path);
  }

  /**
   * Records `epoch` durably (written, synced, renamed) if it is newer than the known one;
   * returns whether it was. Raises of one copy run one after the other (they share a
   * temporary file); raises of different copies run at once.
   */
  raise(path: string, epoch: number): Promise<boolean> {
    const before = this.#raising.get(path);
    const run = (before ?? Promise.resolve(false)).catch(() => false)
      .then(() => this.#raise(path, epoch));
    this.#raising.set(path, run);
    const forget = () => {
      if (this.#raising.get(path) === run) this.#raising.delete(path);
    };
    run.then(forget, forget);
    return run;
  }

  async #raise(path: string, epoch: number): Promise<boolean> {
    if (epoch <= await this.get(path)) return false;
    const tmp = `${path}.epoch.tmp`;
    const f = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
    try {
      await f.write(new TextEncoder().encode(`${epoch}\n`));
      await f.syncData();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, `${path}.epoch`);
    this.#known.set(path, Math.max(epoch, this.#known.get(path) ?? 0));
    return true;
  }

  /** The copy is gone (deleted): forget it. */
  forget(path: string): void {
    this.#known.delete(path);
    this.#granted.delete(path);
  }

  /**
   * This node just answered a master's request for the copy at `path` (a PING or any
   * other): that master may count on its lease until LEASE_MS after it sent the request
   * (lease.ts). Kept to know how long to wait before serving the copy at a newer epoch.
   */
  granted(path: string): void {
    this.#granted.set(path, performance.now());
  }

  /** When this node last answered a master's request for the copy (performance.now()). */
  lastGranted(path: string): number | undefined {
    return this.#granted.get(path);
  }
}
