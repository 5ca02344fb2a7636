/**
 * What scripts/scale/scale_sim.ts learns from the nodes' logs (JSON lines, pino, `time` in ISO):
 * when each node exported a volume as group master (and at which epoch), when a group record
 * change was won (CAS) and what it said, and when a node saw a peer's lease expire. Reading
 * logs costs the cluster nothing: no API call and no etcd request during the measurement.
 * @module
 */

import type { Node } from "./_scale_cluster.ts";

export interface Exported {
  node: string;
  epoch: number;
  at: number;
}

export interface CasWon {
  node: string;
  epoch: number;
  master: string;
  down: string[];
  at: number;
}

const WANTED = ['"volume exported (group master)"', "group: CAS won:", '"node lease expired"'];

/** Everything of interest seen so far in every node's log. */
export class ClusterLog {
  readonly #nodes: Node[];
  /** volume -> exports, in log order. */
  readonly exported = new Map<string, Exported[]>();
  /** volume -> record changes won, in log order. */
  readonly casWon = new Map<string, CasWon[]>();
  /** peer -> the first time any node logged its lease expired. */
  readonly leaseExpired = new Map<string, number>();
  /** Every "node lease expired" line: who saw which peer go, when. */
  readonly expiries: { node: string; peer: string; at: number }[] = [];

  constructor(nodes: Node[]) {
    this.#nodes = nodes;
  }

  /** Reads what every node logged since the last call. */
  async poll(): Promise<void> {
    await Promise.all(this.#nodes.map(async (n) => {
      for (const line of await n.tail.read()) {
        if (WANTED.some((w) => line.includes(w))) this.#take(n.name, line);
      }
    }));
  }

  #take(node: string, line: string): void {
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(line);
    } catch {
      return;
    }
    const at = Date.parse(String(rec.time));
    const msg = String(rec.msg ?? "");
    const volume = String(rec.volume ?? "");
    const epoch = Number(rec.epoch ?? 0);
    if (msg === "volume exported (group master)") {
      push(this.exported, volume, { node, epoch, at });
    } else if (msg.startsWith("group: CAS won:")) {
      const master = /master (\S+)/.exec(msg)?.[1] ?? "";
      const down = /down \[([^\]]*)\]/.exec(msg)?.[1]?.split(",").filter((s) => s) ?? [];
      push(this.casWon, volume, { node, epoch, master, down, at });
    } else if (msg === "node lease expired") {
      const peer = String(rec.peer ?? "");
      this.expiries.push({ node, peer, at });
      if (!this.leaseExpired.has(peer) || this.leaseExpired.get(peer)! > at) {
        this.leaseExpired.set(peer, at);
      }
    }
  }

  /** The first export of `volume` by `node` (any node if undefined) at `epoch` or later. */
  firstExport(volume: string, minEpoch: number, node?: string): Exported | undefined {
    return this.exported.get(volume)?.find((e) =>
      e.epoch >= minEpoch && (node === undefined || e.node === node)
    );
  }

  /** The first record change of `volume` after `since` for which `pred` holds. */
  firstCas(volume: string, since: number, pred: (c: CasWon) => boolean): CasWon | undefined {
    return this.casWon.get(volume)?.find((c) => c.at >= since && pred(c));
  }
}

function push<T>(m: Map<string, T[]>, k: string, v: T): void {
  const list = m.get(k);
  if (list) list.push(v);
  else m.set(k, [v]);
}
