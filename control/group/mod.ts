/**
 * Volume groups: placement of a master and replicas, the group record, and the pure
 * state machine each hosting node runs against that record (a driver applies effects).
 * @module
 */

export * from "./placement.ts";
export * from "./record.ts";
export * from "./machine.ts";
