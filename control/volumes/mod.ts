/**
 * Volumes: the lifecycle of every volume over the state store and the data plane
 * (VolumeService), the record each volume keeps in the store, the rules its fields follow,
 * and replicated volumes as volume groups (one group driver from group/ per member).
 * @module
 */

export {
  type DrainNodes,
  type DrainOptions,
  type PeerStatusSource,
  type ReconcileReport,
  type ServedGroup,
  VOLUME_PREFIX,
  type VolumeRecord,
  VolumeService,
  type VolumeServiceOptions,
} from "./service.ts";
export {
  checkDescription,
  checkLabels,
  checkReplicas,
  checkSpreadBy,
  checkVolumeName,
  checkVolumeSize,
  describeSize,
  labelChange,
  MAX_DESCRIPTION,
  MAX_LABELS,
  MAX_VOLUME_SIZE,
  MIN_VOLUME_SIZE,
  parseLabelList,
  SECTOR,
  VOLUME_NAME,
} from "./rules.ts";
export { type NodeLoad, nodeLoad } from "./_group_create.ts";
export { ORPHAN_MIN_AGE_MS, orphanMinAgeMs } from "./_orphans.ts";
