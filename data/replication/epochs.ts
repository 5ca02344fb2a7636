/**
 * The newest epoch each local copy has seen, kept beside the copy (`<copy>.epoch`) and in
 * memory: a replica refuses requests of older epochs, and a new master records its epoch in
 * its own copy before it serves, so that the master it replaced cannot use it either. One
 * instance per node (the main thread), shared by the data plane and the replica service.
 * @module
 */

export class CopyEpochs {
  readonly #known = new Map<string, number>();
  /** The epoch each copy was last served at as master (`<copy>.served`), once read. */
  readonly #served = new Map<string, number>();
  readonly #granted = new Map<string, number>();
  /** The raise under way of each copy, if any. */
  readonly #raising = new Map<string, Promise<boolean>>();

  /** The newest epoch of the copy at `path` (read from disk the first time). */
  async get(path: string): Promise<number> {
    const known = this.#known.get(path);
    if (known !== undefined) return known;
    const e = await readEpoch(`${path}.epoch`);
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
    await writeDurably(`${path}.epoch`, epoch);
    this.#known.set(path, Math.max(epoch, this.#known.get(path) ?? 0));
    return true;
  }

  /**
   * The epoch at which this node last completed a takeover of the copy as master (the older
   * masters' leases waited out), 0 if none is recorded: a copy whose epoch is newer was
   * claimed and never served at it (the process died in between).
   */
  async served(path: string): Promise<number> {
    const known = this.#served.get(path);
    if (known !== undefined) return known;
    const e = await readEpoch(`${path}.served`);
    this.#served.set(path, e);
    return e;
  }

  /** Records durably that this node completed its takeover of the copy at `epoch`. */
  async markServed(path: string, epoch: number): Promise<void> {
    if (await this.served(path) === epoch) return;
    await writeDurably(`${path}.served`, epoch);
    this.#served.set(path, epoch);
  }

  /** The copy is gone (deleted): forget it. */
  forget(path: string): void {
    this.#known.delete(path);
    this.#served.delete(path);
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

/**
 * The epoch in `file`, 0 when there is none. Content that is no epoch (damaged from outside:
 * writeDurably never leaves a partial file) throws: taken as 0 it would let any stale master's
 * requests through, the fencing this file exists for.
 */
export async function readEpoch(file: string): Promise<number> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return 0;
    throw err;
  }
  if (!/^\d{1,15}\n?$/.test(text)) {
    throw new Error(
      `${file} holds no epoch (${JSON.stringify(text.slice(0, 40))}): the copy's fencing ` +
        "state is damaged, so it is not used; remove the copy (its volume's master seeds a " +
        "new one) or write the group's epoch into the file",
    );
  }
  return Number(text);
}

/** Writes `epoch` to `file` durably: a synced temporary file renamed over it. */
async function writeDurably(file: string, epoch: number): Promise<void> {
  const tmp = `${file}.tmp`;
  const f = await Deno.open(tmp, { write: true, create: true, truncate: true, mode: 0o600 });
  try {
    try {
      await f.write(new TextEncoder().encode(`${epoch}\n`));
      await f.syncData();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, file);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {}); // a full disk, say: leave no stray file
    throw err;
  }
  // The rename is durable once its directory is: a power cut must not bring back the old epoch.
  const slash = file.lastIndexOf("/");
  using dir = await Deno.open(slash < 0 ? "." : file.slice(0, slash) || "/", { read: true });
  await dir.sync();
}
