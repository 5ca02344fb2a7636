/**
 * What a running member holds of its cluster's trust once `serve` has started it: the CA's
 * pin and KEK, the shared issued index and revocations, and the CA rotation follower. The
 * API's CA and cluster routes work on it (admission.ts).
 * @module
 */

import type { Pki } from "../../ca/mod.ts";
import type { StateStore } from "../store/mod.ts";
import type { ClusterKeys } from "./_ca_record.ts";
import type { ClusterCertificates } from "./revocations.ts";
import type { ClusterCaFollower } from "./rotation.ts";

/** A member of a cluster with TLS (cluster mode, the CA in etcd). */
export interface ClusterMember {
  /** The cluster's state store (etcd). */
  store: StateStore;
  /** This node's PKI, on the cluster CA. */
  pki: Pki;
  /** The CA's pin (follows rotations) and the KEK. */
  keys: ClusterKeys;
  /** The issued index and revocations shared through etcd. */
  certificates: ClusterCertificates;
  /** `ca rotate` through etcd, adopted by every member. */
  rotation: ClusterCaFollower;
}
