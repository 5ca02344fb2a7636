/**
 * The table of volumes this node exports over NBD, shared by every connection.
 * @module
 */

import type { Logger } from "pino";
import type { BlockStore } from "./store/mod.ts";
import type { ExportCatalog, ExportView } from "./nbd/handshake.ts";
import { VolumeStats } from "./stats.ts";
import type { ReplicaReasons, Replicator } from "./replication/replicator.ts";
import type { WriteTracker } from "./replication/tracker.ts";
import { LeaseView } from "./replication/lease.ts";
import { ForwarderFences } from "./forwarder_fences.ts";
export type { ForwarderFence } from "./forwarder_fences.ts";

export type { ReplicaReasons };

/**
 * What a refusal of a volume nobody can serve now says after its name, in the NBD handshake:
 * a forwarding node tells a fenced master's refusal by it (data/proxy/forwarder.ts).
 */
export const UNAVAILABLE = "is unavailable";

/** Why a fenced master serves nothing (the handshake's refusal, the requests' ESHUTDOWN). */
export const FENCED_WHY = "a member has seen a newer epoch than this master's (another " +
  "member was promoted, or the group record is behind: docs/OPERATIONS.md)";

/** Something that can be disconnected when its export goes away. */
export interface Attachment {
  abort(reason: string): void;
  /** Serial of the client certificate, for a connection made with one. */
  readonly clientSerial?: string;
}

/** A request as a forwarding node relays it to the volume's master (data/proxy/). */
export interface ForwardedRequest {
  type: number;
  flags: number;
  offset: number;
  length: number;
  /** A WRITE's payload (a copy: the connection's buffer is reused). */
  data?: Uint8Array;
  /** Where a READ's data is to go (the client's reply buffer), `length` bytes. */
  into?: Uint8Array;
}

/** The master's answer: `error` is the NBD error value (0: success), `data` a READ's. */
export interface ForwardedReply {
  error: number;
  data?: Uint8Array;
  /** Why, when the forwarding node itself failed the request. */
  message?: string;
}

/** Relays one client connection's requests to the volume's current master. */
export interface RequestForwarder {
  /**
   * Sends `req` on; `done` gets the master's reply. Returns a promise when the client must
   * be held back (too much in flight) until it resolves.
   */
  submit(req: ForwardedRequest, done: (r: ForwardedReply) => void): Promise<void> | undefined;
  close(): void;
}

/** A volume being exported: its store, statistics and attached connections. */
export class LiveExport implements ExportView {
  readonly stats: VolumeStats;
  readonly attachments = new Set<Attachment>();
  readOnly = false;
  #gate: (() => Promise<void>) | undefined;
  #passing: Promise<void> | undefined;
  /**
   * This thread's write tracking of the copy (data/replication/tracker.ts): every change
   * enters the regions it touches first. Absent for stores without a file (tests).
   */
  tracker: WriteTracker | undefined;
  /**
   * A group master's read lease (data/replication/lease.ts): requests wait while it has
   * lapsed and fail once the master was replaced. Always valid for other volumes.
   */
  lease: LeaseView = new LeaseView();
  /** The forwarding nodes' connections to this volume, fenced by generation (shared). */
  forwarders: ForwarderFences = new ForwarderFences();
  /** A group master's replication of this volume (data/replication/), when it has replicas. */
  replicator: Replicator | undefined;
  /**
   * Called when replicas failed to apply a request: resolves once the group record shows
   * them out of sync (only then may the request be acknowledged); rejects when this node
   * can no longer say so (it lost its mastership or its lease). Set by the data plane.
   * `reasons`: why each failed, in words (shown as the member's out-of-sync reason).
   */
  onReplicasFailed: ((nodes: string[], reasons?: ReplicaReasons) => Promise<void>) | undefined;
  /**
   * A volume served by another node (its master): each connection gets a forwarder that
   * relays its requests there (data/proxy/), and nothing touches `store`.
   */
  forwarder: ((log: Logger) => RequestForwarder) | undefined;

  constructor(
    readonly name: string,
    readonly uuid: string,
    public description: string,
    readonly store: BlockStore,
    stats?: VolumeStats,
  ) {
    this.stats = stats ?? new VolumeStats(name);
  }

  /** Set while this node, the group's master, is fenced: it serves nothing (ExportView). */
  get unavailable(): string | undefined {
    if (this.lease.state() !== "fenced") return undefined;
    return `volume "${this.name}" ${UNAVAILABLE} on this node: ${FENCED_WHY}`;
  }

  /**
   * Set while the first data-changing request must wait for the control plane (see
   * DataPlane.openVolume): called once, shared by every connection; cleared when it
   * resolves. A rejection fails the waiting requests with EIO and keeps the gate.
   */
  get writeGate(): (() => Promise<void>) | undefined {
    return this.#gate;
  }
  set writeGate(gate: (() => Promise<void>) | undefined) {
    this.#gate = gate;
  }

  get size(): number {
    return this.store.size;
  }
  get canTrim(): boolean {
    return this.store.canTrim;
  }
  get canFastZero(): boolean {
    return this.store.canFastZero;
  }

  /** See onReplicasFailed; without one, a replica failure fails the request. */
  replicasFailed(nodes: string[], reasons?: ReplicaReasons): Promise<void> {
    if (!this.onReplicasFailed) {
      return Promise.reject(new Error(`replicas ${nodes.join(", ")} failed`));
    }
    return this.onReplicasFailed(nodes, reasons);
  }

  /** Resolves once the write gate is open (at once if there is none). */
  passWriteGate(): Promise<void> {
    const gate = this.writeGate;
    if (gate === undefined) return Promise.resolve();
    this.#passing ??= gate().then(
      () => {
        if (this.writeGate === gate) this.writeGate = undefined;
        this.#passing = undefined;
      },
      (err) => {
        this.#passing = undefined;
        throw err;
      },
    );
    return this.#passing;
  }

  attach(a: Attachment): void {
    this.attachments.add(a);
    this.stats.setConnections(this.attachments.size);
  }

  detach(a: Attachment): void {
    this.attachments.delete(a);
    this.stats.setConnections(this.attachments.size);
  }
}

export class ExportTable implements ExportCatalog {
  #exports = new Map<string, LiveExport>();
  /**
   * Volumes this node does not serve but forwards (attach anywhere, data/proxy/): asked
   * when a name is not exported here. Never part of list(); listed() names them.
   */
  remote: ((name: string) => LiveExport | undefined) | undefined;
  /** The names of the volumes `remote` can give (the directory's), for NBD_OPT_LIST. */
  remoteNames: (() => string[]) | undefined;
  /** Why a volume the directory knows cannot be attached now (ExportCatalog.absent). */
  remoteAbsent: ((name: string) => { uuid: string; reason: string } | undefined) | undefined;
  /** The forwarded exports clients attached to (their connections, for cutRevoked()). */
  remoteAttached: (() => Iterable<LiveExport>) | undefined;

  add(e: LiveExport): void {
    this.#exports.set(e.name, e);
  }

  /** Removes an export; existing connections keep their reference until they close. */
  remove(name: string): LiveExport | undefined {
    const e = this.#exports.get(name);
    this.#exports.delete(name);
    return e;
  }

  /** The export of a volume this node serves itself (never a forwarded one). */
  lookup(name: string): LiveExport | undefined {
    return this.#exports.get(name);
  }

  /** Why volume `name`, which find() does not give, cannot be attached now, if it exists. */
  absent(name: string): { uuid: string; reason: string } | undefined {
    return this.#exports.has(name) ? undefined : this.remoteAbsent?.(name);
  }

  /** What a client attaching to `name` gets: the local export, else a forwarded one. */
  find(name: string): LiveExport | undefined {
    return this.#exports.get(name) ?? this.remote?.(name);
  }

  list(): LiveExport[] {
    return [...this.#exports.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * What a client's NBD_OPT_LIST shows: every volume it can attach to here, the local
   * exports and the forwarded ones (attach anywhere), by name.
   */
  listed(): LiveExport[] {
    const remote = (this.remoteNames?.() ?? []).filter((n) => !this.#exports.has(n))
      .map((n) => this.remote?.(n)).filter((e): e is LiveExport => e !== undefined);
    return [...this.#exports.values(), ...remote].sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * Cuts every connection whose client certificate is among `serials`, forwarded ones too
   * (the master sees only this node's certificate); returns how many.
   */
  cutRevoked(serials: ReadonlySet<string>): number {
    let n = 0;
    for (const e of [...this.#exports.values(), ...(this.remoteAttached?.() ?? [])]) {
      for (const a of [...e.attachments]) {
        if (a.clientSerial !== undefined && serials.has(a.clientSerial)) {
          a.abort(`client certificate ${a.clientSerial} was revoked`);
          n++;
        }
      }
    }
    return n;
  }
}
