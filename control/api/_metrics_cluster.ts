/**
 * The cluster families of GET /metrics (_metrics.ts renders them): each volume group's phase,
 * in-sync and member counts, wanted copies and epoch, as the volume records in the store say
 * (every node reports every group, so a group whose master is down is still reported, by the
 * nodes that are up: aggregate with `max by (volume)`); each node's state as this node sees it
 * (the same derivation as `node list`); and the orphaned copies in this node's data directory.
 * docs/CLUSTER.md, "Metrics", lists them.
 * @module
 */

import type { NodeInfo, NodeState, Volume } from "../../mod/types.ts";

/** The phases of a group (GroupRecord.phase), each a series of ballast_volume_phase. */
export const PHASES = ["healthy", "degraded", "failing-over", "unavailable"] as const;
/** The states of a node (NodeInfo.state), each a series of ballast_node_state. */
export const NODE_STATES: NodeState[] = ["ready", "unreachable", "down", "cordoned"];

/** What the cluster families read. */
export interface ClusterMetricsInput {
  /** Every volume as listed from the store; only groups (with `members`) are rendered. */
  volumes: Volume[];
  /** Every node as this node sees it now (undefined: the registry could not be read). */
  nodes?: NodeInfo[];
  /** Copies in DATA/orphaned/ and the bytes they take on disk (undefined: unknown). */
  orphaned?: { copies: number; bytes: number };
}

/** Appends the cluster families to `out`. */
export function renderClusterMetrics(
  input: ClusterMetricsInput,
  family: (name: string, type: string, help: string) => void,
  labels: (pairs: Record<string, string>) => string,
  out: string[],
): void {
  const groups = input.volumes.filter((v) => v.members !== undefined && v.phase !== undefined);
  family(
    "ballast_volume_phase",
    "gauge",
    "Phase of each replicated volume as its record says, members whose lease is gone " +
      "counted down (every node reports every group; the master's node also unavailable " +
      "when its members refuse it or it cannot export): " +
      "1 for the current phase (healthy, degraded, failing-over, unavailable), 0 for the others.",
  );
  for (const v of groups) {
    for (const phase of PHASES) {
      out.push(
        `ballast_volume_phase${labels({ volume: v.name, phase })} ${v.phase === phase ? 1 : 0}`,
      );
    }
  }
  const perGroup = (name: string, help: string, value: (v: Volume) => number) => {
    family(name, "gauge", help);
    for (const v of groups) out.push(`${name}${labels({ volume: v.name })} ${value(v)}`);
  };
  perGroup(
    "ballast_volume_in_sync_members",
    "Members of each replicated volume holding every acknowledged write (the master included).",
    (v) => v.inSync?.length ?? 0,
  );
  perGroup(
    "ballast_volume_members",
    "Members (copies) each replicated volume has now, in sync or not.",
    (v) => v.members!.length,
  );
  perGroup(
    "ballast_volume_desired_copies",
    "Copies each replicated volume is meant to have: its replicas plus the master.",
    (v) => v.replicas + 1,
  );
  perGroup(
    "ballast_volume_epoch",
    "Epoch of each replicated volume: increases by one with every change of master.",
    (v) => v.epoch,
  );
  if (input.nodes) {
    family(
      "ballast_node_state",
      "gauge",
      "State of each node as the node scraped sees it (as `ballast node list` there): 1 for " +
        "the current state (ready, unreachable, down, cordoned), 0 for the others.",
    );
    for (const n of input.nodes) {
      for (const state of NODE_STATES) {
        out.push(
          `ballast_node_state${labels({ node: n.name, state })} ${n.state === state ? 1 : 0}`,
        );
      }
    }
  }
  if (input.orphaned) {
    family(
      "ballast_orphaned_copies",
      "gauge",
      "Volume copies in DATA/orphaned/ (no volume record has their uuid); delete them once sure.",
    );
    out.push(`ballast_orphaned_copies ${input.orphaned.copies}`);
    family(
      "ballast_orphaned_bytes",
      "gauge",
      "Bytes the copies in DATA/orphaned/ take on disk (allocated, with their sidecar files).",
    );
    out.push(`ballast_orphaned_bytes ${input.orphaned.bytes}`);
  }
}
