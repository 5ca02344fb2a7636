/**
 * Crash detection: ends a dead node process's liveness lease at once instead of up to one
 * TTL later (`--crash-detection`, on by default in cluster mode).
 *
 * A node's lease (TTL `--node-lease-ttl`, 10 s by default) is the failure detector of every
 * group the node masters: they fail over when it expires, which is 2/3 TTL to a TTL after the
 * process died (keep-alives go every TTL/3). But a process that dies (a crash, an
 * out-of-memory kill, `kill -9`) has its sockets closed by its kernel: the nodes it replicated
 * to see their connections from it end, and a new connection to any of its listeners is
 * refused. So when a peer connection from a node ends, this node checks it:
 *
 * 1. reads the node's liveness key (the lease it is attached to) and its record (peer and API
 *    addresses); nothing to do if the key is gone already;
 * 2. connects to both addresses, twice, CHECK_GAP_MS apart: every attempt must be refused
 *    (a TCP reset). One accepted connection, or one timeout, and the node is left to its lease;
 * 3. reads the liveness key again: if it is still attached to the same lease, revokes that
 *    lease (the key goes with it, and every node's lease watch sees the node down).
 *
 * Why a refusal is proof enough: a live process keeps its listeners open for its whole life
 * (it closes them only in a clean stop, which revokes its own lease first), and its kernel
 * accepts connections to them even while the process is frozen (SIGSTOP, a VM pause) or too
 * busy to answer. A host that died, or a network cut, refuses nothing (connections time out):
 * those are left to the lease TTL, as before. A restarted process on the same addresses
 * accepts, and a restarted process on new ones took a new lease: step 3 revokes only the lease
 * the dead process held.
 *
 * What a wrong revocation would cost (say a firewall that rejects connections to a live
 * node): availability, not data. The lease only detects failures; acknowledged writes and
 * reads are protected by the epochs that fence an old master's replicas and by the read lease
 * a promoted replica waits out (data/replication/lease.ts), exactly as when a frozen node's
 * lease expires. The node finds its lease gone at its next keep-alive and registers again.
 * `--crash-detection off` turns this off.
 * @module
 */

import { splitHostPort } from "../../data/mod.ts";
import { errorMessage } from "../../mod/errors.ts";
import type { Logger } from "../common/mod.ts";
import type { StateStore } from "../store/mod.ts";
import { aliveKey, NODE_PREFIX } from "./registry.ts";

/** Time between the two connection attempts to each address. */
export const CHECK_GAP_MS = 250;
/** A connection attempt that neither succeeds nor is refused within this is "no answer". */
const DIAL_TIMEOUT_MS = 1_000;

/** What a connection attempt found. */
export type DialResult = "refused" | "accepted" | "no-answer";

/** Tries one TCP connection to host:port and closes it at once. */
export type Dial = (host: string, port: number) => Promise<DialResult>;

/** The outcome of one check of a node, for the log and the tests. */
export type CrashCheck =
  | { outcome: "revoked"; lease: number; addresses: string[] }
  | { outcome: "alive"; reason: string }
  | { outcome: "skipped"; reason: string };

/** Finished checks by outcome (ballast_crash_checks_total). */
export type CrashCounts = Record<CrashCheck["outcome"], number>;

export interface CrashWatchOptions {
  store: StateStore;
  logger: Logger;
  /** Default: Deno.connect over TCP with a 1 s bound. */
  dial?: Dial;
  /** Default CHECK_GAP_MS. */
  checkGapMs?: number;
}

/** Checks nodes whose peer connections ended, and revokes the lease of a dead process. */
export class CrashWatch {
  readonly #store: StateStore;
  readonly #log: Logger;
  readonly #dial: Dial;
  readonly #gapMs: number;
  /** Nodes being checked now: many connections from one node end together. */
  readonly #checking = new Map<string, Promise<CrashCheck>>();
  readonly #outcomes: CrashCounts = { revoked: 0, alive: 0, skipped: 0 };
  #stopped = false;

  constructor(options: CrashWatchOptions) {
    this.#store = options.store;
    this.#log = options.logger.child({ component: "crash-watch" });
    this.#dial = options.dial ?? dialTcp;
    this.#gapMs = options.checkGapMs ?? CHECK_GAP_MS;
  }

  /**
   * A peer connection from `node` ended (closed or broken): check whether its process is
   * gone. Returns the check (one at a time per node; a second call while one runs joins it).
   */
  connectionLost(node: string): Promise<CrashCheck> {
    if (this.#stopped) return Promise.resolve({ outcome: "skipped", reason: "stopping" });
    let running = this.#checking.get(node);
    if (!running) {
      running = this.#check(node)
        .then((check) => {
          this.#outcomes[check.outcome]++;
          return check;
        }, (err): CrashCheck => {
          this.#outcomes.skipped++;
          const reason = `the check failed: ${errorMessage(err)}`;
          this.#log.warn({ peer: node, reason }, "crash check of a node failed; its lease decides");
          return { outcome: "skipped", reason };
        })
        .finally(() => this.#checking.delete(node));
      this.#checking.set(node, running);
    }
    return running;
  }

  /** Checks finished since start, by outcome (the /metrics counter). */
  counts(): CrashCounts {
    return { ...this.#outcomes };
  }

  /** No further checks (this node is stopping: its own connections end now). */
  stop(): void {
    this.#stopped = true;
  }

  async #check(node: string): Promise<CrashCheck> {
    const alive = await this.#store.get(aliveKey(node));
    if (!alive || alive.lease === 0) return { outcome: "skipped", reason: "no liveness lease" };
    const record = await this.#store.get(NODE_PREFIX + node);
    const addresses = record ? listenersOf(record.value) : [];
    if (addresses.length === 0) {
      return { outcome: "skipped", reason: "its record names no address to check" };
    }
    for (let round = 0; round < 2; round++) {
      if (round > 0) await new Promise((r) => setTimeout(r, this.#gapMs));
      for (const address of addresses) {
        const found = await this.#dial(address.host, address.port);
        if (found !== "refused") {
          const reason = `${address.text} ${found === "accepted" ? "accepted" : "did not answer"}`;
          this.#log.debug({ peer: node, reason }, "peer connection ended; the node is not dead");
          return { outcome: "alive", reason };
        }
      }
    }
    if (this.#stopped) return { outcome: "skipped", reason: "stopping" };
    const now = await this.#store.get(aliveKey(node));
    if (!now || now.lease !== alive.lease) {
      return { outcome: "skipped", reason: "its liveness lease changed during the check" };
    }
    const texts = addresses.map((a) => a.text);
    this.#log.warn(
      { peer: node, lease: alive.lease, refused: texts },
      "node process is gone (its peer connection ended and its listeners refuse connections); " +
        "revoking its liveness lease so its groups fail over now",
    );
    try {
      await this.#store.revokeLease(alive.lease);
    } catch (err) {
      // Another node's check (or the expiry) ended it first: the same result.
      if (/not found/i.test(errorMessage(err))) {
        return { outcome: "skipped", reason: "its lease ended meanwhile" };
      }
      throw err;
    }
    return { outcome: "revoked", lease: alive.lease, addresses: texts };
  }
}

interface Listener {
  host: string;
  port: number;
  /** As the record gives it, for messages. */
  text: string;
}

/**
 * The peer and API listeners a node record names (pure). The API address is a URL
 * ("https://HOST:PORT"), the peer address "HOST:PORT" or "[V6]:PORT".
 */
export function listenersOf(recordJson: string): Listener[] {
  let record: { peerAddress?: unknown; apiAddress?: unknown };
  try {
    record = JSON.parse(recordJson);
  } catch {
    return [];
  }
  const out: Listener[] = [];
  if (typeof record.peerAddress === "string") {
    try {
      out.push({ ...splitHostPort(record.peerAddress), text: record.peerAddress });
    } catch {
      // not HOST:PORT: checked by the API address alone
    }
  }
  if (typeof record.apiAddress === "string" && record.apiAddress !== "") {
    try {
      const url = new URL(record.apiAddress);
      const port = Number(url.port || (url.protocol === "https:" ? 443 : 80));
      out.push({ host: url.hostname.replace(/^\[|\]$/g, ""), port, text: record.apiAddress });
    } catch {
      // not a URL: checked by the peer address alone
    }
  }
  return out;
}

/** Dial with Deno.connect: refused, accepted (closed at once) or no answer within 1 s. */
async function dialTcp(host: string, port: number): Promise<DialResult> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const attempt = Deno.connect({ hostname: host, port, transport: "tcp" });
  const timeout = new Promise<"no-answer">((resolve) => {
    timer = setTimeout(() => resolve("no-answer"), DIAL_TIMEOUT_MS);
  });
  try {
    const won = await Promise.race([attempt, timeout]);
    if (won === "no-answer") {
      attempt.then((c) => c.close(), () => {});
      return "no-answer";
    }
    won.close();
    return "accepted";
  } catch (err) {
    return err instanceof Deno.errors.ConnectionRefused ? "refused" : "no-answer";
  } finally {
    clearTimeout(timer);
  }
}
