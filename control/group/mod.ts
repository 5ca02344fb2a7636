/**
 * Volume groups: placement of a master and replicas, the group record, and the pure
 * state machine each hosting node runs against that record, membership changes its master
 * decides (membership.ts), and the driver that applies
 * its effects (driver.ts, with the shared lease view of lease_watch.ts).
 * @module
 */

export * from "./placement.ts";
export * from "./membership.ts";
export * from "./record.ts";
export * from "./machine.ts";
export * from "./driver.ts";
export * from "./host.ts";
export * from "./lease_watch.ts";
export * from "./handover.ts";
