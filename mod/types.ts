/**
 * Resource types of the Ballast API (v1). These are the JSON shapes the API serves
 * and the typed client returns.
 * @module
 */

import type { Grant, IssuedRecord } from "../ca/mod.ts";

/** Lifecycle state of a volume. */
export type VolumeState = "creating" | "ready" | "deleting" | "failed";

/** A block volume, exported over NBD under its name. */
export interface Volume {
  /** Unique name; also the NBD export name. */
  name: string;
  /** Immutable identity; names may be reused after delete, uuids never. */
  uuid: string;
  /** Size in bytes, a multiple of 512. */
  sizeBytes: number;
  /** Number of replicas besides the master (0 on a single node). */
  replicas: number;
  /** Node holding the master copy. */
  master: string;
  /** Group epoch: increases with every change of master (fences stale masters). */
  epoch: number;
  state: VolumeState;
  /** State "failed": why (its node could not open its copy at its last start). */
  stateReason?: string;
  labels: Record<string, string>;
  description: string;
  createdAt: string;
  updatedAt: string;
  /** Bytes actually allocated on the master's disk (thin provisioning); absent if unknown. */
  allocatedBytes?: number;
  /** Open NBD connections on the master; absent if unknown. */
  connections?: number;
  /** Replicated volumes (replicas > 0): every node holding a copy, master included. */
  members?: string[];
  /** Members holding every write acknowledged at `epoch` (always includes the master). */
  inSync?: string[];
  /** Members whose liveness lease expired, as recorded in the group. */
  down?: string[];
  /**
   * How the group is doing: healthy, degraded, failing-over or unavailable. A volume without
   * replicas has none, but `unavailable` while its node is down (cluster mode).
   */
  phase?: "healthy" | "degraded" | "failing-over" | "unavailable";
  /**
   * A get of one replicated volume whose phase is not healthy: why, in a line (which member
   * is out of sync or down and why; whether an in-sync member is up to take over). Also for
   * a volume without replicas whose node is down (listed too).
   */
  phaseReason?: string;
  /** The failure-domain label the group was spread by, if any. */
  spreadBy?: string;
  /**
   * Replicated volumes, in the answer to a get of one volume: each member's role, state,
   * replication lag, resync progress and root hash, master first.
   */
  memberStatus?: VolumeMember[];
  /**
   * A get of one volume in cluster mode, or of a replicated one: where the live fields
   * (allocatedBytes, connections, resync progress, root hashes) came from, the node serving
   * the volume, as of `observedAt`; `error` says why they are missing.
   */
  live?: { node: string; observedAt?: string; error?: string };
  /**
   * Replicated volumes, from the master: a membership change it wants but cannot make now
   * (a member to replace or a replica to add, and no eligible node), why, and since when.
   */
  membershipBlocked?: { reason: string; since: string };
}

/**
 * State of a member of a replicated volume: in the in-sync set; being brought back by Delta
 * Sync; out of the in-sync set and not being resynced; its node's liveness lease gone.
 */
export type MemberState = "in-sync" | "resyncing" | "out-of-sync" | "down";

/** One member of a replicated volume as `volume get` shows it. */
export interface VolumeMember {
  node: string;
  role: "master" | "replica";
  state: MemberState;
  /** Why the member is out of sync or down (the best the cluster knows; docs/CLUSTER.md). */
  reason?: string;
  /** When the member left the in-sync set (ISO 8601), when the group change recorded it. */
  outOfSyncSince?: string;
  /**
   * Replication lag in bytes: 0 in sync; while resyncing, the bytes of the volume the
   * current pass has still to compare; otherwise the volume's size (none is known equal).
   */
  lagBytes: number;
  /** Seconds since the member was last in sync (0 in sync); absent when not recorded. */
  lagSeconds?: number;
  /** The resync under way (state "resyncing"). */
  resync?: MemberResync;
  /** Root hash (hex) of the member's copy as the master sees it; absent when unknown. */
  rootHash?: string;
}

/** A resync (Delta Sync) of one member, as its master reports it. */
export interface MemberResync {
  /** Pass (the first compares the whole volume, later ones catch racing writes); 0 before. */
  pass: number;
  /** The member has not answered yet (a node just back, or one the master cannot reach). */
  waiting?: boolean;
  /** Share of the volume compared in this pass, 0 to 100, rounded down to 0.1. */
  percent: number;
  comparedBytes: number;
  totalBytes: number;
  /** Bytes of the volume this pass has still to compare. */
  bytesLeft: number;
  /** Bytes sent as data so far (every pass); zeroed ranges are counted in zeroedBytes. */
  sentBytes: number;
  zeroedBytes: number;
  /** Bytes of the volume compared per second since the resync started (every pass). */
  rateBytesPerSecond: number;
  /** Bytes sent (data and zeroed ranges) per second since the resync started. */
  sendRateBytesPerSecond: number;
  /** The master's `serve --resync-rate` that caps the sending; absent: unlimited. */
  rateLimitBytesPerSecond?: number;
  /**
   * Regions (1 MiB) the current pass found different and has copied (absent from masters of
   * older versions).
   */
  regionsToCopy?: number;
  regionsCopied?: number;
  /**
   * Seconds until the current pass ends, whole: the regions it has still to copy at the rate
   * it has copied regions so far (a region's cost, not its bytes, sets the pace: scattered
   * 4 KiB changes cost a round trip per region). Absent while estimating: until the pass has
   * copied a few regions for a few seconds (resyncEta()).
   */
  etaSeconds?: number;
  startedAt: string;
  /** It finished (the copies are equal) and the master is marking the member in sync. */
  finishedAt?: string;
}

/**
 * GET /v1/peer/volumes/{name}: what the node serving a volume knows of it first-hand
 * (asked by the other nodes, so that `volume get` works on any node).
 */
export interface VolumeLiveStatus {
  name: string;
  uuid: string;
  node: string;
  /** When this node answered (ISO 8601, its clock). */
  observedAt: string;
  allocatedBytes: number;
  connections: number;
  /** Group master: resyncs of members under way here. */
  resyncs: LiveResync[];
  /** Group master: members whose last resync failed (cleared when one succeeds). */
  resyncFailures: Array<{ member: string; message: string; at: string }>;
  /** Group master, when offered: each member's root hash (hex; null: could not be asked). */
  roots?: Record<string, string | null>;
  /** Group master: a membership change it cannot make now, and why (Volume.membershipBlocked). */
  membershipBlocked?: { reason: string; since: string };
  /**
   * Group master: replicas the record lists in sync that it found failing (replication to
   * them failed) and has not yet recorded out of sync, and whether writes wait for that record
   * (they wait until etcd takes it: no write is acknowledged with a copy missing).
   */
  unrecorded?: { members: string[]; writesHeld: boolean };
  /** Group master refused by a member that has seen a newer epoch: it serves nothing. */
  fenced?: boolean;
  /** Group master that could not export the volume (a full disk): why; it tries again. */
  exportFailed?: string;
}

/**
 * POST /v1/volumes/{name}/verify: every member's copy compared with the master's (`deep`:
 * rehashed from the data, which also finds silent corruption of a member's own copy).
 */
export interface VolumeVerifyReport {
  name: string;
  /** The master that compared (the node serving the volume). */
  node: string;
  epoch?: number;
  deep: boolean;
  /** The unit of the region numbers below, and how many regions the volume has. */
  regionBytes: number;
  regions: number;
  members: VolumeMemberVerdict[];
  /** Whether every member answered and holds the master's data (and, deep, no corruption). */
  ok: boolean;
  ms: number;
}

export interface VolumeMemberVerdict {
  node: string;
  role: "master" | "replica";
  /** Root hash (hex) of the member's hash tree, when it answered. */
  root?: string;
  equal?: boolean;
  /** Regions that differ from the master's (at most 1000 listed; the count is exact). */
  differing: number[];
  differingCount: number;
  /** Deep: clean regions whose persisted hash is not the data's (silent corruption). */
  corrupt: number[];
  corruptCount: number;
  error?: string;
  /** A resync of it is under way (its differences are what it has still to copy). */
  resyncing?: boolean;
  /** The master: why a deep verification found its copy suspect (it resyncs nobody). */
  suspect?: string;
}

/** A resync under way on the master (the data plane's progress of it). */
export interface LiveResync {
  member: string;
  startedAt: string;
  /** 0 until the first batch of regions was compared (no progress reported yet). */
  pass: number;
  /** The member has not answered yet. */
  waiting?: boolean;
  comparedBytes: number;
  totalBytes: number;
  sentBytes: number;
  zeroedBytes: number;
  hashBytes: number;
  /**
   * Regions (1 MiB) this pass found different and how many of them it has copied, and since
   * when it copies them (ISO 8601, the master's clock); absent before the first comparison
   * (and from masters of older versions).
   */
  regionsToCopy?: number;
  regionsCopied?: number;
  copyingSince?: string;
  /** The master's `serve --resync-rate` (bytes per second); absent: unlimited. */
  rateLimitBytesPerSecond?: number;
  /** Set when it finished and the master is marking the member in sync. */
  finishedAt?: string;
}

/** Body of POST /v1/volumes. */
export interface CreateVolumeRequest {
  name: string;
  /** Bytes (number) or a human size string such as "10GiB". */
  size: number | string;
  replicas?: number;
  /** Node label whose values are the failure domains to spread over (default: the node). */
  spreadBy?: string;
  labels?: Record<string, string>;
  description?: string;
}

/** Body of PATCH /v1/volumes/{name}. */
export interface UpdateVolumeRequest {
  /** New size (grow only). */
  size?: number | string;
  /**
   * Replicated volumes: the new number of copies besides the master (0 to 8); the master adds
   * members (placed like a create, seeded by Delta Sync) or removes them.
   */
  replicas?: number;
  /** The whole set of labels, replacing the volume's. */
  labels?: Record<string, string>;
  /** Labels to set and keys to remove, on the labels as they are then; not with `labels`. */
  setLabels?: Record<string, string>;
  removeLabels?: string[];
  description?: string;
}

/** Health of a node as seen by the cluster. */
export type NodeState = "ready" | "unreachable" | "down" | "cordoned";

/** A storage node. */
export interface NodeInfo {
  name: string;
  state: NodeState;
  /** Why the node is in that state (empty when ready). */
  reason: string;
  apiAddress: string;
  nbdAddress: string;
  /** The peer channel (replication), "host:port"; absent when the node has none. */
  peerAddress?: string;
  version: string;
  labels: Record<string, string>;
  capacityBytes: number;
  freeBytes: number;
  /** Volumes it exports over NBD now: live for the node asked, else as of its last record. */
  volumes: number;
  /** Volumes whose master is this node, from the volume records (the API fills it in). */
  masters?: number;
  /** Copies of volumes this node holds (master or replica), from the volume records. */
  copies?: number;
  /**
   * Copies in the node's DATA/orphaned/ (no volume record has their uuid) and their bytes on
   * disk (docs/CLUSTER.md, "Orphaned copies"): live for the node asked, else as last recorded.
   */
  orphaned?: { copies: number; bytes: number };
  /** The data worker pool serving NBD (size now, bounds), live or as of its last record. */
  dataWorkers?: { size: number; min: number; max: number };
  startedAt: string;
  lastSeen: string;
  /**
   * Set by a clean stop just before the node revokes its liveness lease, cleared at its next
   * start: a node `down` with it stopped, one without lost its lease (crashed, frozen, cut off).
   */
  stoppedAt?: string;
}

/** DELETE /v1/nodes/{name}: a node that is gone for good, forgotten by the cluster. */
export interface NodeRemoval {
  /** The node's record as it was (its state `down`). */
  node: NodeInfo;
  /** Deleted volumes whose copy on it was still to be removed (their tombstones named it). */
  forgottenCopies: string[];
}

/** GET /v1/health. */
export interface Health {
  status: "ok" | "degraded" | "unavailable";
  node: string;
  checks: Record<string, { ok: boolean; message: string }>;
}

/** GET /v1/version. */
export interface VersionInfo {
  version: string;
  /** Git commit of the build ("-dirty": uncommitted changes); null when unknown. */
  commit: string | null;
  /** When the program was built (ISO 8601); null for a source checkout. */
  builtAt: string | null;
  /** source (deno run main.ts), deno-compile or self-extracting (README "Building one file"). */
  build: "source" | "deno-compile" | "self-extracting";
  deno: string;
  v8: string;
  typescript: string;
  apiVersion: "v1";
}

/** A list response. */
export interface List<T> {
  items: T[];
}

/** One CA certificate as GET /v1/ca describes it. */
export interface CaCertificateInfo {
  subject: string;
  issuer: string;
  serial: string;
  notBefore: string;
  notAfter: string;
  /** Upper-case hex, colon separated. */
  sha256Fingerprint: string;
}

/** GET /v1/ca. */
export interface CaInfo {
  /** internal: Ballast's own root; intermediate: an operator's CA key; external: no CA key. */
  mode: "internal" | "intermediate" | "external";
  /** The issuing CA certificate(s). */
  certificates: CaCertificateInfo[];
  /** Every CA trusted now (includes a rotated-out root during its overlap). */
  trusted: CaCertificateInfo[];
  /** The trust bundle clients should use (ca-bundle.crt). */
  bundlePem: string;
  /** Local certificates waiting for an externally signed certificate (external mode). */
  pending: Array<"node" | "admin">;
}

/** One line of the issued-certificate index (the CA library's record, as the API serves it). */
export type IssuedCertificate = IssuedRecord;

/** POST /v1/ca/certificates. The private key never leaves the client. */
export interface SignCertificateRequest {
  /** PKCS#10 PEM made with the ca library's createCsr (role and volumes in its SANs). */
  csr: string;
  role: "admin" | "nbd-client";
  name: string;
  /**
   * nbd-client: volumes it may open, or ["*"]; `NAME:ro` (or `*:ro`) may only read. Must
   * match the CSR.
   */
  volumes?: string[];
  /** Lifetime: seconds or "30d", "12h" (default: the node's leaf TTL). */
  ttl?: string | number;
  /**
   * Bind every grant by name: it opens whatever volume has the name, also one created after
   * the granted one was deleted. Default false: grants of volumes that exist are bound to
   * them (their uuids).
   */
  anyIncarnation?: boolean;
}

/** The answer to POST /v1/ca/certificates. */
export interface SignedCertificate {
  certificatePem: string;
  caBundlePem: string;
  serial: string;
  role: "admin" | "nbd-client" | "node";
  name: string;
  volumes: string[];
  /** The grants as written in the certificate, with the uuids of the volumes bound to. */
  grants: Grant[];
  notAfter: string;
}

/** A revocation record. */
export interface Revocation {
  serial: string;
  revokedAt: string;
  reason?: string;
  /** The serial was revoked already; this is the first revocation. */
  alreadyRevoked?: boolean;
  /** Cluster mode, etcd unreachable: refused on this node now, on the others once shared. */
  sharePending?: boolean;
}

/** POST /v1/cluster/join-tokens: a single-use join token (shown once, never stored). */
export interface JoinTokenInfo {
  token: string;
  id: string;
  expiresAt: string;
}

/** What happened to a replicated volume's group (`ballast volume events`). */
export type VolumeEventType =
  | "created"
  | "handover-requested"
  | "handover-abandoned"
  | "handover"
  | "promoted"
  | "down"
  | "up"
  | "out-of-sync"
  | "resync-started"
  | "resync-interrupted"
  | "in-sync"
  | "member-added"
  | "member-removed"
  | "deleting"
  | "delete-refused"
  | "resumed";

/**
 * One entry of a replicated volume's recent history (GET /v1/volumes/{name}/events),
 * written with the group change it describes.
 */
export interface VolumeEvent {
  /** Increases by one per event of this volume. */
  seq: number;
  /** When the change was written (ISO 8601, the writing node's clock). */
  at: string;
  type: VolumeEventType;
  /** The group's epoch and master after the change. */
  epoch: number;
  master: string;
  /** The member the event is about, if one. */
  node?: string;
  /** The event in words, with its reason. */
  message: string;
  /**
   * Seen by the node that answered but not written yet (seq 0, `at` = when it answered): no
   * live member could record it, e.g. every member of the group is down.
   */
  pending?: boolean;
}

/** What a drain did (or would do, or refused to do) with one volume the node masters. */
export interface DrainVolume {
  volume: string;
  /** moved: handed to `to`; refused: would be left without an in-sync copy (nothing done
   * without --force); skipped: left where it is (--force); failed: the handover did not
   * complete; planned: what a dry run would do. */
  status: "planned" | "moved" | "refused" | "skipped" | "failed";
  from: string;
  to?: string;
  /** The epoch at which `to` became master. */
  epoch?: number;
  reason?: string;
  /** How long the handover took, from the request to the record naming `to`. */
  ms?: number;
}

/** The outcome of POST /v1/nodes/{name}/drain (the last line of its stream). */
export interface DrainReport {
  node: string;
  dryRun: boolean;
  force: boolean;
  /** drained: the node masters nothing that could move; refused: nothing was done (see the
   * refused volumes); incomplete: some handovers failed. */
  result: "drained" | "refused" | "incomplete";
  /** Whether the node is cordoned now. */
  cordoned: boolean;
  volumes: DrainVolume[];
  ms: number;
}

/** One line of POST /v1/nodes/{name}/drain's application/x-ndjson stream. */
export type DrainProgress =
  | { type: "plan"; node: string; volumes: DrainVolume[] }
  | { type: "volume"; volume: DrainVolume }
  | { type: "summary"; report: DrainReport };
