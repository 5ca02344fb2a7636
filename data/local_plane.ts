/**
 * The single-node data plane: volume files under `<data-dir>/volumes/<uuid>.vol`,
 * exported over NBD. Implements the DataPlane interface the control plane drives.
 * @module
 */

import type { Logger } from "pino";
import { FailedPreconditionError, InvalidArgumentError, NotFoundError } from "../mod/errors.ts";
import { storeError } from "./_store_error.ts";
import { ExportTable, type LiveExport } from "./exports.ts";
import type { PoolStatus } from "./pool/pool.ts";
import { serveOnMainThread, serveOnWorkers, type Serving } from "./serving.ts";
import { listCopyFiles, moveAside, orphanedUsage, Takeovers } from "./_copies.ts";
import type { DataPlaneOptions, RunningDataPlane } from "./options.ts";
import type { CopyInfo, OpenOptions, VolumeSpec, VolumeStatus } from "./plane.ts";
import {
  CopyEpochs,
  CopyHashes,
  type HashState,
  MasterReplication,
  ReplicaService,
  type ReplicaTarget,
  type ResyncProgress,
  type VerifyReport,
} from "./replication/mod.ts";
import type { DirectoryEntry } from "./proxy/mod.ts";
import { OP_TRIM, OP_WRITE, OP_WRITE_ZEROES, type VolumeStats } from "./stats.ts";
import { type BlockStore, BlockStoreError, FileBlockStore, filesystemSpace } from "./store/mod.ts";

export type { DataPlaneOptions, RunningDataPlane };

/** What a resync asked of this plane may be told. */
type ResyncCall = { rateBytesPerSecond?: number; onStarted?: () => void };

class LocalDataPlane implements RunningDataPlane {
  readonly exports: ExportTable;
  /** The newest epoch each local copy has seen (shared with the replica service). */
  readonly epochs = new CopyEpochs();
  /** The hash lists of the local copies (shared with the replica service). */
  readonly hashes: CopyHashes;
  readonly nbdAddress: string;
  readonly resyncRateBytesPerSecond: number;
  /** The plaintext local-attach listener, the Unix socket, the read-only one (when there are). */
  readonly nbdLocalAddress: string | undefined;
  readonly nbdUnixPath: string | undefined;
  readonly nbdUnixRoPath: string | undefined;
  #dataDir: string;
  #dir: string;
  #serving: Serving;
  #log: Logger;
  #replication: MasterReplication<LiveExport>;
  /** Names of volumes being created (their hash list is being written). */
  readonly #creating = new Set<string>();
  readonly #takeovers: Takeovers;

  constructor(opts: DataPlaneOptions, exports: ExportTable, serving: Serving) {
    this.exports = exports;
    this.#dataDir = opts.dataDir;
    this.#dir = `${opts.dataDir}/volumes`;
    this.#serving = serving;
    this.#log = opts.logger;
    this.hashes = new CopyHashes(opts.logger);
    this.#takeovers = new Takeovers(this.epochs, opts.logger);
    this.#replication = new MasterReplication({
      exports,
      apply: (e, epoch, targets) => serving.replication(e, epoch, targets),
      connectNode: opts.connectNode,
      hashesOf: (e) => this.hashes.get(this.#path(e.uuid)),
      self: opts.nodeName,
      resyncRateBytesPerSecond: opts.resyncRateBytesPerSecond,
      log: this.#log,
    });
    this.nbdAddress = serving.addresses.nbd;
    this.resyncRateBytesPerSecond = opts.resyncRateBytesPerSecond ?? 0;
    this.nbdLocalAddress = serving.addresses.local;
    this.nbdUnixPath = serving.addresses.unix;
    this.nbdUnixRoPath = serving.addresses.unixRo;
  }

  /**
   * Adds an export for `store` (after `prepare`) and starts serving it. `hashes`: the copy's
   * hash state, acquired for the export (released when it goes).
   */
  #export(
    spec: VolumeSpec,
    store: BlockStore,
    hashes: HashState,
    prepare?: (e: LiveExport) => void,
  ): LiveExport {
    const e = this.#serving.makeExport(
      spec.name,
      spec.uuid,
      spec.description,
      store,
      this.#path(spec.uuid),
      hashes,
    );
    prepare?.(e);
    this.exports.add(e);
    this.#serving.exported(e);
    return e;
  }

  #path(uuid: string): string {
    if (!/^[0-9a-f-]{36}$/.test(uuid)) {
      throw new InvalidArgumentError(`invalid volume uuid "${uuid}"`);
    }
    return `${this.#dir}/${uuid}.vol`;
  }

  async createVolume(spec: VolumeSpec, options: { export?: boolean } = {}): Promise<void> {
    if (this.exports.lookup(spec.name) || this.#creating.has(spec.name)) {
      throw new FailedPreconditionError(`volume "${spec.name}" is already exported`);
    }
    const path = this.#path(spec.uuid);
    let store: FileBlockStore;
    try {
      store = FileBlockStore.create(path, spec.sizeBytes);
    } catch (err) {
      // A copy of this uuid (uuids are never reused) made before a crash: keep it.
      if (options.export === false && err instanceof BlockStoreError && err.errno === "EEXIST") {
        this.#log.info({ volume: spec.name, uuid: spec.uuid }, "volume copy already exists; kept");
        await this.resizeVolume(spec.name, spec.sizeBytes, { uuid: spec.uuid });
        return;
      }
      throw storeError(err, `create volume "${spec.name}"`, spec.sizeBytes);
    }
    this.#creating.add(spec.name);
    let hashes: HashState;
    try {
      // A new copy is all zeros: its hash list starts clean.
      hashes = await this.hashes.acquire(path, { fresh: true });
    } catch (err) {
      this.#creating.delete(spec.name);
      store.close();
      await this.#removeCopy(path).catch(() => {}); // its sidecars too: nothing left behind
      throw storeError(err, `create the hash list of volume "${spec.name}"`);
    }
    this.#creating.delete(spec.name);
    if (options.export === false) {
      store.close();
      await this.hashes.release(path);
      this.#log.debug({ volume: spec.name, uuid: spec.uuid }, "volume copy created (not exported)");
      return;
    }
    this.#export(spec, store, hashes);
    this.#log.debug(
      { volume: spec.name, uuid: spec.uuid, size: spec.sizeBytes },
      "volume file created",
    );
  }

  async openVolume(spec: VolumeSpec, options: OpenOptions = {}): Promise<{ resumed: boolean }> {
    const open = this.exports.lookup(spec.name);
    // Fencing and the old master's lease (lease.ts) before anything is served.
    const r = options.replication;
    const { succeeds, resumed } = await this.#takeovers.complete(this.#path(spec.uuid), r);
    // Served again at an epoch it served before: new sessions first (replication/sessions.ts).
    if (r && resumed && !open) await this.#replication.resume(spec, r.epoch, r.targets);
    if (open) {
      open.writeGate = options.writeGate;
      if (options.replication) {
        this.#replication.open(open, options.replication, { reconcile: succeeds || resumed });
      }
      return { resumed: false };
    }
    let store: FileBlockStore;
    const path = this.#path(spec.uuid);
    try {
      store = FileBlockStore.open(path);
    } catch (err) {
      throw storeError(err, `open volume "${spec.name}"`);
    }
    let hashes: HashState;
    try {
      hashes = await this.hashes.acquire(path);
    } catch (err) {
      store.close();
      throw storeError(err, `open the hash list of volume "${spec.name}"`);
    }
    if (this.exports.lookup(spec.name)) { // opened meanwhile by another call
      store.close();
      await this.hashes.release(path);
      return this.openVolume(spec, options);
    }
    if (store.size !== spec.sizeBytes) {
      // A crash between the file resize and the record update: the record is the truth
      // for growth already acknowledged; never shrink data silently.
      this.#log.warn(
        { volume: spec.name, file: store.size, record: spec.sizeBytes },
        "size mismatch",
      );
      if (store.size < spec.sizeBytes) {
        await hashes.grow(spec.sizeBytes);
        store.resize(spec.sizeBytes);
      }
    }
    // Gate and replication are in place before any thread may serve the volume.
    this.#export(spec, store, hashes, (e) => {
      e.writeGate = options.writeGate;
      if (options.replication) {
        this.#replication.open(e, options.replication, { reconcile: succeeds || resumed });
      }
    });
    return { resumed };
  }

  /**
   * A new master's fencing, its own copy first: from then on this node refuses the old
   * master's requests too, so it grants that master no lease while the members are asked
   * (each answer it gave would lengthen the wait of waitOutPreviousMaster).
   */
  async fence(uuid: string, epoch: number, members: ReplicaTarget[]): Promise<void> {
    await this.#takeovers.claim(this.#path(uuid), epoch);
    return this.#replication.fence(uuid, epoch, members);
  }

  setReplication(name: string, epoch: number, targets: ReplicaTarget[]): void {
    this.#replication.set(name, epoch, targets);
  }

  resync(name: string, replica: ReplicaTarget, epoch: number, options: ResyncCall = {}) {
    return this.#replication.resync(name, replica, epoch, options);
  }

  stopResyncs(reason: string): void {
    this.#replication.stopResyncs(reason);
  }

  verifyVolume(name: string, options: { deep: boolean }): Promise<VerifyReport> {
    return this.#replication.verify(name, options.deep);
  }

  memberRoots(name: string): Promise<Record<string, string | undefined>> {
    return this.#replication.roots(name);
  }

  resyncStatus(name: string): ResyncProgress[] {
    return this.#replication.status(name);
  }

  copyPath(uuid: string): string | undefined {
    let path: string;
    try {
      path = this.#path(uuid);
    } catch {
      return undefined;
    }
    try {
      return Deno.statSync(path).isFile ? path : undefined;
    } catch {
      return undefined;
    }
  }

  /** The export of `name` if it is the copy `uuid` (whatever its uuid when none is given). */
  #exported(name: string, uuid: string | undefined): LiveExport | undefined {
    const e = this.exports.lookup(name);
    return uuid === undefined || e?.uuid === uuid ? e : undefined;
  }

  /** Called when a copy is deleted, moved or resized here (the replica service lets go of it). */
  #copyChanged: ((uuid: string, how: "gone" | "resized") => void) | undefined;

  /**
   * The replica side of replication on this node: applies masters' requests to the local
   * copies, sharing this plane's epochs and hash lists; told when a copy goes or grows.
   */
  replicaService(log: Logger): ReplicaService {
    const service = new ReplicaService(
      { pathOf: (uuid) => this.copyPath(uuid), hashes: this.hashes },
      this.epochs,
      log,
    );
    this.#copyChanged = (uuid, how) => how === "gone" ? service.forget(uuid) : service.grown(uuid);
    return service;
  }

  /** Takes `e` out of the export table and disconnects its clients. */
  async #unexport(e: LiveExport, reason: string): Promise<void> {
    this.exports.remove(e.name);
    this.#replication.forget(e.name);
    for (const a of [...e.attachments]) a.abort(reason);
    await this.#serving.unexported(e.name, reason);
    // Give aborted connections a turn to unwind before the file is closed or goes.
    await new Promise((r) => setTimeout(r, 0));
    await this.hashes.release(this.#path(e.uuid));
  }

  async resizeVolume(
    name: string,
    sizeBytes: number,
    options: { uuid?: string } = {},
  ): Promise<number> {
    const e = this.#exported(name, options.uuid);
    let store: BlockStore;
    if (e) {
      store = e.store;
    } else if (options.uuid === undefined) {
      throw new NotFoundError("volume", name);
    } else {
      try {
        store = FileBlockStore.open(this.#path(options.uuid)); // a copy not exported
      } catch (err) {
        if (err instanceof BlockStoreError && err.errno === "ENOENT") {
          throw new NotFoundError("volume", name);
        }
        throw storeError(err, `open "${name}"`);
      }
    }
    const path = this.#path(e?.uuid ?? options.uuid!);
    const before = store.size;
    try {
      if (sizeBytes > before) {
        // The hash list and region table first: no thread writes past the old end before.
        const hashes = await this.hashes.acquire(path);
        try {
          await hashes.grow(sizeBytes);
        } finally {
          await this.hashes.release(path);
        }
        store.resize(sizeBytes);
        if (e) this.#serving.resized(name, sizeBytes);
        this.#copyChanged?.(e?.uuid ?? options.uuid!, "resized");
      }
    } catch (err) {
      throw storeError(err, `resize volume "${name}"`, sizeBytes);
    } finally {
      if (!e) store.close();
    }
    return before;
  }

  async closeVolume(name: string): Promise<void> {
    const e = this.exports.lookup(name);
    if (!e) return;
    await this.#unexport(e, `volume "${name}" is no longer served here`);
    try {
      await e.store.flush();
    } finally {
      e.store.close();
    }
    this.#log.info({ volume: name, uuid: e.uuid }, "volume no longer exported");
  }

  async deleteVolume(name: string, options?: { force?: boolean; uuid?: string }): Promise<void> {
    // With a uuid, an export of another volume of that name is not this one's copy.
    const e = this.#exported(name, options?.uuid);
    if (!e) {
      if (options?.uuid === undefined) return;
      const path = this.#path(options.uuid);
      this.#copyChanged?.(options.uuid, "gone");
      await this.#removeCopy(path);
      this.#log.debug({ volume: name, uuid: options.uuid }, "volume copy file removed");
      return;
    }
    const connected = e.stats.connections;
    if (connected > 0 && !options?.force) {
      throw new FailedPreconditionError(
        `volume "${name}" has ${connected} NBD client(s) connected; disconnect them or use --force`,
        { connections: connected },
      );
    }
    await this.#unexport(e, `volume "${name}" deleted`);
    e.store.close();
    this.#copyChanged?.(e.uuid, "gone");
    await this.#removeCopy(this.#path(e.uuid));
    // The control plane says "volume deleted" once the record is gone too (one line at info).
    this.#log.debug({ volume: name, uuid: e.uuid }, "volume file removed");
  }

  /** Removes a copy and its sidecar files (hash list, activity log, epoch). */
  async #removeCopy(path: string): Promise<void> {
    try {
      await Deno.remove(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    this.epochs.forget(path);
    await this.hashes.remove(path);
  }

  listCopies(): Promise<CopyInfo[]> {
    return listCopyFiles(this.#dir);
  }

  async quarantineCopy(uuid: string): Promise<string | undefined> {
    const path = this.#path(uuid);
    const exported = this.exports.list().find((e) => e.uuid === uuid);
    if (exported) {
      throw new FailedPreconditionError(
        `volume copy ${uuid} is exported as "${exported.name}"; not moving it`,
      );
    }
    this.#copyChanged?.(uuid, "gone");
    return await moveAside(this.#dataDir, path, uuid, this.epochs, this.hashes);
  }

  volumeStatus(name: string): VolumeStatus | undefined {
    const e = this.exports.lookup(name);
    if (!e) return undefined;
    return {
      allocatedBytes: e.store.allocatedBytes(),
      sizeBytes: e.store.size,
      connections: e.stats.connections,
      writes: e.stats.ops[OP_WRITE] + e.stats.ops[OP_TRIM] + e.stats.ops[OP_WRITE_ZEROES],
      ...(this.#replication.fenced(name) ? { fenced: true } : {}),
    };
  }

  volumeStats(): VolumeStats[] {
    return this.exports.list().map((e) => e.stats);
  }

  openConnections(): number {
    return this.#serving.connections();
  }

  /** The data worker pool, when NBD is served on one. */
  workerPool(): PoolStatus | undefined {
    return this.#serving.pool();
  }

  /** Hidden debug hook (BALLAST_DEBUG_HOOKS=1): data worker `id` dies of an uncaught error. */
  crashWorker(id: number): boolean {
    return this.#serving.crashWorker(id);
  }

  tlsChanged(): void {
    this.#serving.tlsChanged();
  }

  revoked(serials: string[]): void {
    this.#serving.revoked(serials);
  }

  setDirectory(entries: DirectoryEntry[]): void {
    this.#serving.directory(entries);
  }

  capacity(): { capacityBytes: number; freeBytes: number } {
    return filesystemSpace(this.#dir);
  }

  orphaned(): { copies: number; bytes: number } {
    return orphanedUsage(this.#dataDir);
  }

  async close(): Promise<void> {
    await this.#serving.close();
    this.#replication.close();
    for (const e of this.exports.list()) {
      try {
        await e.store.flush();
        e.store.close();
      } catch (err) {
        this.#log.error({ volume: e.name, err: (err as Error).message }, "flush on close failed");
      }
    }
    await this.hashes.closeAll();
  }
}

/** Creates the volumes directory, starts the NBD listeners and returns the data plane. */
export async function startDataPlane(opts: DataPlaneOptions): Promise<RunningDataPlane> {
  await Deno.mkdir(`${opts.dataDir}/volumes`, { recursive: true, mode: 0o700 });
  const log = opts.logger.child({ node: opts.nodeName });
  const exports = new ExportTable();
  const common = {
    exports,
    logger: log,
    nbdListen: opts.nbdListen,
    nbdLocalListen: opts.nbdLocalListen,
    nbdUnix: opts.nbdUnix,
    nbdUnixRo: opts.nbdUnixRo,
    handshakeTimeoutMs: opts.handshakeTimeoutMs,
    requestTimeoutMs: opts.requestTimeoutMs,
    acceptAfter: opts.acceptAfter,
  };
  const serving = opts.dataWorkers
    ? await serveOnWorkers({
      ...common,
      nodeName: opts.nodeName,
      workers: opts.dataWorkers,
      logLevel: opts.logLevel ?? "info",
      logFormat: opts.logFormat ?? "json",
      tls: opts.workerTls,
      verifyClient: opts.verifyClient,
      verifyNode: opts.verifyNode,
    })
    : await serveOnMainThread({
      ...common,
      policy: opts.policy,
      startTls: opts.startTls,
      connectNode: opts.connectNode,
      upstreamTls: opts.workerTls,
      verifyNode: opts.verifyNode,
    });
  return new LocalDataPlane({ ...opts, logger: log }, exports, serving);
}
