/**
 * Forwarding one client connection's requests to its volume's master, and following the
 * master when it changes (docs/CLUSTER.md, "Attach anywhere").
 *
 * Every request is held here until the master answered it. When the connection to the
 * master ends (the master died, or its node shut down), or the directory names another
 * master or a newer epoch (a failover, a drain, or a master frozen past its lease), the held
 * requests are sent again, in the order the client sent them, to whichever master the
 * directory names, as soon as it can be reached; the client sees only a pause. An ESHUTDOWN
 * from the master is held too, for up to FAILOVER_MS: a master that another member replaced
 * answers its last requests with it (data/nbd/errno.ts notMaster), as does a node shutting
 * down. This node then disconnects from that master softly (NBD_CMD_DISC, as a client must on
 * ESHUTDOWN), connects to it again no sooner than RETRY_MS later unless the directory names
 * another, and sends what it holds to whichever master answers. An EIO is held for
 * EIO_GRACE_MS only, in case a change of master explains it after all; otherwise it reaches
 * the client.
 *
 * Why sending again is safe: a held request was never acknowledged to the client, and the
 * NBD client cannot depend on the order in which the server processes requests that are in
 * flight together ("Ordering of messages and writes"); the new master holds every write any
 * master acknowledged (replication), so running a held WRITE, TRIM or WRITE_ZEROES again
 * there only does late what the client asked, and a FLUSH run there covers every write
 * acknowledged before it. Sent again to the same master on a new connection, a request must
 * not also run late from the old one: every connection names this forwarder and a generation
 * one higher than the last (NBD_OPT_BALLAST_FORWARDER), and the master refuses the changes of
 * older generations (data/forwarder_fences.ts). If no master can be reached within
 * FAILOVER_MS, held requests fail with EIO.
 * @module
 */

import type { Logger } from "pino";
import * as C from "../nbd/constants.ts";
import {
  type ForwardedReply,
  type ForwardedRequest,
  type RequestForwarder,
  UNAVAILABLE,
} from "../exports.ts";
import { type Directory, type DirectoryEntry, sameMaster } from "./directory.ts";
import { type Upstream, UpstreamError } from "./upstream.ts";
import type { ForwarderName } from "./_negotiation.ts";

/** How long held requests wait for a master they can be sent to, before EIO. */
export const FAILOVER_MS = 30_000;
/**
 * How long an EIO from the master is held in case the master changes. A replaced master
 * answers ESHUTDOWN (held up to FAILOVER_MS), so this is a safety net for an EIO that a
 * failover causes some other way; this node learns of a new master through its etcd watch,
 * which a loaded machine can deliver seconds late. An EIO no failover explains reaches the
 * client this much later.
 */
export const EIO_GRACE_MS = 10_000;
/** Bytes of held requests (payloads and expected data) before the client is held back. */
const MAX_HELD_BYTES = 64 * 1024 * 1024;
/** Between attempts to reach a master that did not answer. */
const RETRY_MS = 200;
/**
 * How long the oldest request sent on a connection may go unanswered before the connection is
 * given up and its requests are sent again on a new one (to the same master if the directory
 * still names it). A connection that stays open while nothing comes back (a partition that
 * drops packets rather than refusing them) would otherwise hold the client until TCP gives up,
 * about 15 minutes. Longer than any wait a live master makes a request take (a lapsed lease is
 * waited for up to 15 s, a silent replica 5 s and then the record). The old connection's
 * requests cannot run after the new one's (data/forwarder_fences.ts).
 */
export const STALL_MS = 30_000;

/** Connects to the master an entry names (TLS with this node's certificate). */
export type ConnectUpstream = (
  entry: DirectoryEntry,
  signal?: AbortSignal,
  forwarder?: ForwarderName,
) => Promise<Upstream>;

interface Held {
  seq: number;
  req: ForwardedRequest;
  done: (r: ForwardedReply) => void;
  /** When the master answered it with an error that may be a failover (held meanwhile). */
  erredAt?: number;
  error?: number;
  /** The master that answered so: sent there again, the hold's bound keeps counting. */
  erredOn?: DirectoryEntry;
  /** When it was sent on the current connection. */
  sentAt?: number;
}

export class Forwarder implements RequestForwarder {
  readonly #name: string;
  readonly #dir: Directory;
  readonly #connect: ConnectUpstream;
  #log: Logger;
  #held = new Map<number, Held>();
  #heldBytes = 0;
  #seq = 0;
  #up: Upstream | undefined;
  /** The entry #up was opened for. */
  #upEntry: DirectoryEntry | undefined;
  #connecting = false;
  /** The connection attempt under way, and the entry it is for. */
  #attempt: { entry: DirectoryEntry; abort: AbortController } | undefined;
  /** performance.now() since when no master was reachable (NaN while one is). */
  #lostAt = NaN;
  #closed = false;
  #unwatch: () => void;
  /** This forwarder's id and its connections' generation, as named to masters. */
  readonly #id = forwarderId();
  #gen = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #space: (() => void) | undefined;
  /** For logs: when the current pause began. */
  #pauseStart = NaN;
  /** Ends the connection loop's wait between attempts early. */
  #wake: (() => void) | undefined;
  /** The master that last answered ESHUTDOWN, and when: not reconnected to for RETRY_MS. */
  #shutdownBy: { entry: DirectoryEntry; at: number } | undefined;

  readonly #failoverMs: number;
  readonly #eioGraceMs: number;
  readonly #stallMs: number;
  /** Looks for a connection that stopped answering (STALL_MS). */
  readonly #stallTimer: ReturnType<typeof setInterval>;

  constructor(
    o: {
      name: string;
      directory: Directory;
      connect: ConnectUpstream;
      log: Logger;
      /** Default FAILOVER_MS. */
      failoverMs?: number;
      /** Default EIO_GRACE_MS. */
      eioGraceMs?: number;
      /** Default STALL_MS. */
      stallMs?: number;
    },
  ) {
    this.#failoverMs = o.failoverMs ?? FAILOVER_MS;
    this.#eioGraceMs = o.eioGraceMs ?? EIO_GRACE_MS;
    this.#stallMs = o.stallMs ?? STALL_MS;
    this.#stallTimer = setInterval(() => this.#stalled(), Math.min(1000, this.#stallMs / 4));
    Deno.unrefTimer(this.#stallTimer);
    this.#name = o.name;
    this.#dir = o.directory;
    this.#connect = o.connect;
    this.#log = o.log;
    this.#unwatch = this.#dir.watch(o.name, () => {
      this.#wake?.(); // a connection loop waiting between attempts tries the new entry now
      this.#check();
    });
    this.#ensureConnected();
  }

  submit(req: ForwardedRequest, done: (r: ForwardedReply) => void): Promise<void> | undefined {
    if (this.#closed) {
      done({ error: C.NBD_EIO, message: "the connection is closing" });
      return undefined;
    }
    const h: Held = { seq: this.#seq++, req, done };
    this.#held.set(h.seq, h);
    this.#heldBytes += req.length;
    const up = this.#up;
    if (up && !up.closed) this.#send(up, h);
    else this.#ensureConnected();
    if (this.#heldBytes <= MAX_HELD_BYTES) return undefined;
    return new Promise((resolve) => (this.#space = resolve));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#unwatch();
    this.#wake?.();
    this.#stopTimer();
    clearInterval(this.#stallTimer);
    this.#attempt?.abort.abort("the client's connection ended");
    this.#up?.close();
    this.#up = undefined;
    for (const h of this.#held.values()) h.done({ error: C.NBD_EIO, message: "closed" });
    this.#held.clear();
    this.#space?.();
  }

  #send(up: Upstream, h: Held): void {
    if (!sameMaster(h.erredOn, this.#upEntry)) {
      h.erredAt = undefined;
      h.error = undefined;
      h.erredOn = undefined;
    }
    h.sentAt = performance.now();
    try {
      up.send(h.req, (r) => this.#answered(up, h, r));
    } catch {
      // The connection just ended: onClose reconnects and sends it again.
    }
  }

  #answered(up: Upstream, h: Held, r: { error: number; data?: Uint8Array }): void {
    if (up !== this.#up || !this.#held.has(h.seq)) return; // a connection given up on
    if (r.error === C.NBD_ESHUTDOWN || r.error === C.NBD_EIO) {
      // Possibly a master on its way out: hold it while the directory may name another.
      if (h.erredAt === undefined) {
        h.erredAt = performance.now();
        h.erredOn = this.#upEntry;
      }
      h.error = r.error;
      if (r.error === C.NBD_ESHUTDOWN) {
        // "If the client receives an NBD_ESHUTDOWN error it MUST initiate a soft disconnect"
        // ("Terminating the transmission phase"): everything held goes to the next connection.
        this.#log.info(
          { master: this.#upEntry?.master, held: this.#held.size },
          "forwarding: the master is shutting down this export; holding requests for the next",
        );
        this.#shutdownBy = this.#upEntry && { entry: this.#upEntry, at: performance.now() };
        this.#drop();
      }
      this.#startTimer();
      this.#check();
      return;
    }
    this.#finish(h, r);
  }

  /** The oldest request sent on the connection waited STALL_MS: gives the connection up. */
  #stalled(): void {
    const up = this.#up;
    if (!up || this.#closed) return;
    const now = performance.now();
    for (const h of this.#held.values()) {
      if (h.sentAt === undefined || h.erredAt !== undefined) continue;
      if (now - h.sentAt < this.#stallMs) return; // held in order: the first sent is first
      this.#log.warn(
        {
          master: this.#upEntry?.master,
          waitedMs: Math.round(now - h.sentAt),
          held: this.#held.size,
        },
        "forwarding: the master did not answer; connecting again",
      );
      this.#drop();
      this.#check();
      return;
    }
  }

  #finish(h: Held, r: ForwardedReply): void {
    if (!this.#held.delete(h.seq)) return;
    this.#heldBytes -= h.req.length;
    h.done(r);
    if (this.#space && this.#heldBytes <= MAX_HELD_BYTES / 2) {
      const s = this.#space;
      this.#space = undefined;
      s();
    }
  }

  /**
   * Runs on every directory change of this volume and on a timer while anything is held
   * for a failover: switches to a new master, releases errors no failover explains, and
   * fails everything once no master was reachable for the failover bound (FAILOVER_MS).
   */
  #check(): void {
    if (this.#closed) return;
    const entry = this.#dir.get(this.#name);
    if (this.#attempt && !sameMaster(entry, this.#attempt.entry)) {
      this.#attempt.abort.abort("the volume's master changed");
    }
    if (this.#up && !sameMaster(entry, this.#upEntry)) {
      this.#log.info(
        {
          from: this.#upEntry && `${this.#upEntry.master}@${this.#upEntry.epoch}`,
          to: entry && `${entry.master}@${entry.epoch}`,
          held: this.#held.size,
        },
        "forwarding: the volume's master changed; sending held requests there",
      );
      this.#drop();
    }
    const now = performance.now();
    for (const h of [...this.#held.values()]) {
      if (h.erredAt === undefined) continue;
      const grace = h.error === C.NBD_ESHUTDOWN ? this.#failoverMs : this.#eioGraceMs;
      if (now - h.erredAt >= grace) {
        this.#finish(h, {
          error: C.NBD_EIO,
          message: h.error === C.NBD_ESHUTDOWN
            ? `the master of "${this.#name}" shut down and no other took over`
            : `the master of "${this.#name}" failed the request`,
        });
      }
    }
    if (!this.#up && this.#lostAt === this.#lostAt && now - this.#lostAt >= this.#failoverMs) {
      const n = this.#held.size;
      for (const h of [...this.#held.values()]) {
        this.#finish(h, {
          error: C.NBD_EIO,
          message: `no master of "${this.#name}" reachable for ${this.#failoverMs / 1000} s`,
        });
      }
      if (n > 0) {
        this.#log.error(
          { failed: n, waitedMs: Math.round(now - this.#lostAt) },
          "forwarding: no master reachable; requests failed with EIO",
        );
      }
      this.#lostAt = now; // the next requests get their own bound
    }
    if (!this.#up) this.#ensureConnected();
    if (!this.#up || [...this.#held.values()].some((h) => h.erredAt !== undefined)) {
      this.#startTimer();
    } else this.#stopTimer();
  }

  /** Gives up on the current connection: everything held is sent again on the next one. */
  #drop(): void {
    this.#up?.close();
    this.#up = undefined;
    this.#upEntry = undefined;
    if (this.#lostAt !== this.#lostAt) this.#lostAt = performance.now();
    if (this.#pauseStart !== this.#pauseStart) {
      // From the oldest request that got no answer on it: a frozen master holds its connection
      // open for seconds before it is given up, and the client waited all along.
      const sent = [...this.#held.values()].map((h) => h.sentAt ?? Infinity);
      this.#pauseStart = Math.min(performance.now(), ...sent);
    }
  }

  #ensureConnected(): void {
    if (this.#closed || this.#up || this.#connecting) return;
    this.#connecting = true;
    if (this.#lostAt !== this.#lostAt) this.#lostAt = performance.now();
    this.#startTimer();
    void this.#connectLoop().finally(() => (this.#connecting = false));
  }

  async #connectLoop(): Promise<void> {
    let lastError = "";
    while (!this.#closed) {
      const entry = this.#dir.get(this.#name);
      const by = this.#shutdownBy;
      const refused = by !== undefined && sameMaster(entry, by.entry) &&
        performance.now() - by.at < RETRY_MS;
      if (entry && !entry.masterDown && !refused) {
        const abort = new AbortController();
        this.#attempt = { entry, abort };
        try {
          // Each connection a generation higher: the master then refuses changes that the
          // connections before it still hold (data/forwarder_fences.ts).
          const up = await this.#connect(entry, abort.signal, { id: this.#id, gen: ++this.#gen });
          if (this.#closed) return up.close();
          if (!sameMaster(this.#dir.get(this.#name), entry)) {
            up.close(); // the master moved on while we connected
            continue;
          }
          this.#attach(up, entry);
          return;
        } catch (err) {
          if (this.#closed) return; // the client left: nothing to say of the master
          const msg = err instanceof Error ? err.message : String(err);
          // Its master refuses it as unavailable (fenced): new clients are told (directory.ts).
          if (
            err instanceof UpstreamError && err.code === "refused" && msg.includes(UNAVAILABLE)
          ) {
            this.#dir.refused(
              entry,
              `master ${entry.master} refuses it: ${msg.replace(/^.*?: /, "")}`,
            );
          }
          if (msg !== lastError) {
            // Given up because the directory names another master (a drain, a failover): news.
            const level = abort.signal.aborted ? "info" : "warn";
            this.#log[level](
              { master: entry.master, reason: msg },
              "forwarding: master unreachable",
            );
            lastError = msg;
          }
          if (!(err instanceof UpstreamError)) this.#log.debug({ err }, "forwarding: connect");
        } finally {
          this.#attempt = undefined;
        }
        if (abort.signal.aborted) continue; // another master: try it at once
      }
      if (this.#held.size === 0 && this.#up === undefined && this.#lostAt === this.#lostAt) {
        // Nothing waits: keep trying, but the failover clock starts with the next request.
        this.#lostAt = performance.now();
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, RETRY_MS);
        this.#wake = () => (clearTimeout(t), resolve());
      });
      this.#wake = undefined;
    }
  }

  #attach(up: Upstream, entry: DirectoryEntry): void {
    this.#dir.refused(entry, undefined);
    this.#up = up;
    this.#upEntry = entry;
    this.#lostAt = NaN;
    up.onClose((err) => {
      if (this.#up !== up) return;
      // Expected when the directory already names another master (a planned handover).
      const moved = !sameMaster(this.#dir.get(this.#name), entry);
      this.#log[moved ? "info" : "warn"](
        { reason: err.message, held: this.#held.size, master: entry.master },
        "forwarding: master lost",
      );
      this.#drop();
      this.#check();
    });
    const held = [...this.#held.values()].sort((a, b) => a.seq - b.seq);
    if (this.#pauseStart === this.#pauseStart) {
      this.#log.info(
        {
          master: entry.master,
          epoch: entry.epoch,
          resent: held.length,
          pausedMs: Math.round(performance.now() - this.#pauseStart),
        },
        "forwarding: master reached again; held requests sent",
      );
      this.#pauseStart = NaN;
    } else this.#log.debug({ master: entry.master, epoch: entry.epoch }, "forwarding to master");
    for (const h of held) this.#send(up, h);
    this.#check();
  }

  #startTimer(): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#timer = setInterval(() => this.#check(), 100);
  }

  #stopTimer(): void {
    if (this.#timer === undefined) return;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/** A random forwarder id: two u32, not both 0. */
function forwarderId(): [number, number] {
  const id = crypto.getRandomValues(new Uint32Array(2));
  return id[0] === 0 && id[1] === 0 ? forwarderId() : [id[0], id[1]];
}
