/**
 * The end-to-end harness as other folders may use it: a real 3-member etcd with Ballast
 * nodes on loopback (scripts/etcd_load.ts measures what such a cluster costs etcd).
 * @module
 */

export { type Cluster, startCluster } from "./_cluster.ts";
