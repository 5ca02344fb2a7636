/**
 * Exports for volumes another node serves: what a client attaching here to such a volume
 * gets (ExportTable.remote). Each is described by its directory entry (name, size) and gives
 * every connection a Forwarder to the volume's master; its store is never touched. When a
 * volume leaves the directory (deleted), its forwarded connections are cut.
 * @module
 */

import type { Logger } from "pino";
import { LiveExport, UNAVAILABLE } from "../exports.ts";
import type { BlockStore, Extent } from "../store/mod.ts";
import type { Directory, DirectoryEntry } from "./directory.ts";
import { type ConnectUpstream, Forwarder } from "./forwarder.ts";

/** Stands in for the store of a forwarded volume: only its size is read. */
class RemoteStore implements BlockStore {
  readonly canTrim = true;
  // As its master's file store: a FAST_ZERO it cannot do there fails with ENOTSUP there.
  readonly canFastZero = true;
  readonly canExtents = false;
  readonly canFlush = true;
  constructor(public size: number) {}
  read(): void {
    this.#served();
  }
  write(): void {
    this.#served();
  }
  trim(): void {
    this.#served();
  }
  writeZeroes(): void {
    this.#served();
  }
  extents(): Extent[] {
    this.#served();
  }
  flush(): Promise<void> {
    return Promise.resolve();
  }
  resize(size: number): void {
    this.size = size;
  }
  allocatedBytes(): number {
    return 0;
  }
  close(): void {}
  #served(): never {
    throw new Error("a forwarded volume's data is on its master");
  }
}

/** Keeps one forwarded export per volume of the directory that clients attached to. */
export class RemoteExports {
  readonly #dir: Directory;
  readonly #connect: ConnectUpstream;
  #exports = new Map<string, LiveExport>();

  constructor(directory: Directory, connect: ConnectUpstream) {
    this.#dir = directory;
    this.#connect = connect;
  }

  /** Every forwarded export made so far (clients attached to them, or did). */
  attached(): LiveExport[] {
    return [...this.#exports.values()];
  }

  /** The export a client attaching to `name` gets, if the directory knows the volume. */
  lookup(name: string): LiveExport | undefined {
    const entry = this.#dir.get(name);
    // Nobody can serve it now (its master is down, no member in sync, or its master refuses
    // it: fenced): nothing to attach to.
    if (!entry || entry.unavailable || this.#dir.refusal(name)) return undefined;
    let e = this.#exports.get(name);
    if (e && e.uuid !== entry.uuid) {
      this.#cut(e, "the volume was deleted and created again");
      e = undefined;
    }
    if (!e) {
      e = new LiveExport(name, entry.uuid, "", new RemoteStore(entry.sizeBytes));
      e.forwarder = (log: Logger) =>
        new Forwarder({ name, directory: this.#dir, connect: this.#connect, log });
      this.#exports.set(name, e);
    }
    if (entry.sizeBytes > e.store.size) e.store.resize(entry.sizeBytes);
    return e;
  }

  /**
   * Why a volume the directory knows cannot be attached now: its group has no member that
   * can serve it. Undefined for a volume it can serve, or does not know.
   */
  absent(name: string): { uuid: string; reason: string } | undefined {
    const entry = this.#dir.get(name);
    const refused = this.#dir.refusal(name);
    if (entry && refused) {
      return { uuid: entry.uuid, reason: `volume "${name}" ${UNAVAILABLE}: ${refused}` };
    }
    if (!entry?.unavailable) return undefined;
    return {
      uuid: entry.uuid,
      reason: `volume "${name}" ${UNAVAILABLE}: ` + (entry.why ??
        "no member of its group that holds every acknowledged write is up") +
        ` (\`ballast volume get ${name}\`)`,
    };
  }

  /** The volumes a client can attach to through this node now (lookup() gives them). */
  names(): string[] {
    return this.#dir.list().filter((e) => !e.unavailable && !this.#dir.refusal(e.name))
      .map((e) => e.name);
  }

  /** After a directory change: cut the connections of volumes that are gone. */
  update(): void {
    for (const [name, e] of this.#exports) {
      const entry: DirectoryEntry | undefined = this.#dir.get(name);
      if (!entry) this.#cut(e, `volume "${name}" was deleted`);
      else if (entry.uuid !== e.uuid) this.#cut(e, "the volume was deleted and created again");
      else if (entry.sizeBytes > e.store.size) e.store.resize(entry.sizeBytes);
    }
  }

  #cut(e: LiveExport, reason: string): void {
    this.#exports.delete(e.name);
    for (const a of [...e.attachments]) a.abort(reason);
  }
}
