/**
 * Where each volume of the cluster is served: its current master's NBD address and epoch,
 * as the control plane last saw the volume records (control/volumes/directory_feed.ts). A
 * node forwards clients of volumes it does not serve itself to that address, and follows it
 * when it changes (forwarder.ts). Every thread that serves NBD has its own copy, replaced
 * whole on every change.
 * @module
 */

/** One volume's entry. */
export interface DirectoryEntry {
  name: string;
  uuid: string;
  sizeBytes: number;
  /** The node serving the volume (its group's master). */
  master: string;
  /** That node's NBD listener, "host:port". */
  address: string;
  epoch: number;
  /** The master's liveness lease expired: a failover is due (or no member can take over). */
  masterDown: boolean;
  /**
   * The master is down and no in-sync member can take over (the group's phase
   * "unavailable"), or its node could not open its copy (state "failed"): new clients are
   * refused until that changes.
   */
  unavailable?: boolean;
  /** Why, when it is not the group's phase (a failed copy: the record's stateReason). */
  why?: string;
}

/** Whether two entries send a forwarder to the same place. */
export function sameMaster(a: DirectoryEntry | undefined, b: DirectoryEntry | undefined): boolean {
  return a !== undefined && b !== undefined && a.master === b.master &&
    a.address === b.address && a.epoch === b.epoch && a.uuid === b.uuid;
}

export class Directory {
  #entries = new Map<string, DirectoryEntry>();
  #listeners = new Map<string, Set<() => void>>();
  /** A master's refusal of its volume as unavailable (a fenced master), heard by a forwarder. */
  #refusals = new Map<string, { entry: DirectoryEntry; why: string }>();

  /**
   * A forwarder heard `entry`'s master refuse the volume as unavailable (`why`), or, with
   * undefined, serve it: new clients are told while that entry stands (RemoteExports).
   */
  refused(entry: DirectoryEntry, why: string | undefined): void {
    if (why === undefined) this.#refusals.delete(entry.name);
    else this.#refusals.set(entry.name, { entry, why });
  }

  /** The refusal heard from `name`'s current master, if any. */
  refusal(name: string): string | undefined {
    const r = this.#refusals.get(name);
    return r && sameMaster(r.entry, this.#entries.get(name)) ? r.why : undefined;
  }

  /** Replaces every entry; listeners of the volumes whose entry changed are called. */
  set(entries: readonly DirectoryEntry[]): void {
    const old = this.#entries;
    this.#entries = new Map(entries.map((e) => [e.name, e]));
    for (const [name, ls] of this.#listeners) {
      const a = old.get(name);
      const b = this.#entries.get(name);
      if (
        a === b ||
        (a && b && sameMaster(a, b) && a.masterDown === b.masterDown &&
          a.unavailable === b.unavailable)
      ) continue;
      for (const l of ls) l();
    }
  }

  get(name: string): DirectoryEntry | undefined {
    return this.#entries.get(name);
  }

  list(): DirectoryEntry[] {
    return [...this.#entries.values()];
  }

  /** Calls `listener` whenever `name`'s entry changes; returns the unsubscribe. */
  watch(name: string, listener: () => void): () => void {
    let ls = this.#listeners.get(name);
    if (!ls) this.#listeners.set(name, ls = new Set());
    ls.add(listener);
    return () => {
      ls!.delete(listener);
      if (ls!.size === 0) this.#listeners.delete(name);
    };
  }
}
