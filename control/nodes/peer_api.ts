/**
 * Calls from this node to another node's node-to-node API (`/v1/peer/...`, which the
 * "node" certificate role may call), with this node's own certificate like the probe
 * (probe.ts) and a short timeout, so a node that does not answer costs the caller little.
 * @module
 */

import { UnavailableError } from "../../mod/errors.ts";
import { BallastClient } from "../../mod/client.ts";
import type { VolumeLiveStatus, VolumeVerifyReport } from "../../mod/types.ts";
import type { ProbeCredentials } from "./probe.ts";

/** Below the probe's 2.5 s, so `volume get` stays quick when the serving node is stuck. */
const DEFAULT_TIMEOUT_MS = 2_000;

export interface PeerApiOptions {
  credentials: () => ProbeCredentials | undefined;
  /** The API address a node published (NodeRegistry.apiAddress). */
  apiAddressOf: (node: string) => Promise<string | undefined>;
  timeoutMs?: number;
}

/** This node's client of the other nodes' node-to-node routes. */
export class PeerApi {
  readonly #o: Required<PeerApiOptions>;

  constructor(options: PeerApiOptions) {
    this.#o = { timeoutMs: DEFAULT_TIMEOUT_MS, ...options };
  }

  /** Node `node`'s first-hand status of volume `name` (GET /v1/peer/volumes/{name}). */
  async volumeStatus(node: string, name: string): Promise<VolumeLiveStatus> {
    const address = await this.#o.apiAddressOf(node);
    if (!address) throw new UnavailableError(`node ${node} has not published an API address`);
    using client = new BallastClient(address, {
      timeoutMs: this.#o.timeoutMs,
      ...(this.#o.credentials() ?? {}),
    });
    return await client.peerVolumeStatus(name);
  }

  /**
   * Has node `node` (the volume's master) compare the copies of `name`: no short timeout
   * here, a deep verification reads every copy whole.
   */
  async verifyVolume(node: string, name: string, deep: boolean): Promise<VolumeVerifyReport> {
    const address = await this.#o.apiAddressOf(node);
    if (!address) throw new UnavailableError(`node ${node} has not published an API address`);
    const timeoutMs = deep ? 3_600_000 : 120_000;
    using client = new BallastClient(address, { timeoutMs, ...(this.#o.credentials() ?? {}) });
    return await client.peerVerifyVolume(name, deep, timeoutMs);
  }
}
