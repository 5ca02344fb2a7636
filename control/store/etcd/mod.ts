/**
 * The state store of cluster mode: the StateStore contract on etcd v3, with writes applied
 * at most once and watches that resume by revision.
 * @module
 */

export { type EtcdConnectOptions, EtcdStateStore, type EtcdTls } from "./etcd_store.ts";
