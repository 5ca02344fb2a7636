/**
 * Resource types of the Ballast API (v1). These are the JSON shapes the API serves
 * and the typed client returns.
 * @module
 */

import type { IssuedRecord } from "../ca/mod.ts";

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
  /** How the group is doing: healthy, degraded, failing-over or unavailable. */
  phase?: "healthy" | "degraded" | "failing-over" | "unavailable";
  /** The failure-domain label the group was spread by, if any. */
  spreadBy?: string;
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
  labels?: Record<string, string>;
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
  volumes: number;
  /**
   * The data worker pool serving NBD (size now, and its bounds), when the node runs one; as
   * of the last record write for other nodes (every 30 s), live for the node asked.
   */
  dataWorkers?: { size: number; min: number; max: number };
  startedAt: string;
  lastSeen: string;
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
  /** nbd-client: volumes it may open, or ["*"]. Must match the CSR. */
  volumes?: string[];
  /** Lifetime: seconds or "30d", "12h" (default: the node's leaf TTL). */
  ttl?: string | number;
}

/** The answer to POST /v1/ca/certificates. */
export interface SignedCertificate {
  certificatePem: string;
  caBundlePem: string;
  serial: string;
  role: "admin" | "nbd-client" | "node";
  name: string;
  volumes: string[];
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
