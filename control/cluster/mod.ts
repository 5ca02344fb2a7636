/**
 * Cluster mode's shared trust, kept in etcd: the cluster CA record (its key sealed under a
 * KEK that only members hold), the bootstrap of a node's PKI from it, joining with a token
 * (both sides), CA rotation adopted by every member, and revocations and the issued index
 * shared by all members.
 * @module
 */

export type { ClusterKeys } from "./_ca_record.ts";
export { KEK_FILE } from "./_ca_record.ts";
export { type ClusterNodeConfig, NEEDS_JOIN_MESSAGE, prepareClusterPki } from "./bootstrap.ts";
export { JOIN_PATH, type JoinRequest, type JoinResponse } from "./join.ts";
export {
  admitNode,
  DEFAULT_TOKEN_TTL_SECONDS,
  issueJoinToken,
  JOIN_TOKEN_PREFIX,
  MAX_TOKEN_TTL,
  MAX_TOKEN_TTL_SECONDS,
} from "./admission.ts";
export { caPinOf, type JoinToken, parseJoinToken } from "./join_token.ts";
export { type ClusterMember } from "./member.ts";
export { ClusterCaFollower, rotateClusterCa } from "./rotation.ts";
export {
  CA_ISSUED_PREFIX,
  CA_REVOKED_PREFIX,
  ClusterCertificates,
  type ClusterRevokeResult,
} from "./revocations.ts";
