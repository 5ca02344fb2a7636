/**
 * The master's side of replication sessions (wire.ts, "Sessions"): before a member becomes a
 * target again for its resync, the master asks it for a new session of the copy, and every
 * change sent to it from then on carries that session. The member refuses changes of older
 * sessions: frames of a link the master gave up that were still on their way (in its
 * socket, behind a slow FLUSH, or in a process frozen and resumed) and would otherwise land
 * after the resync had made their region equal, undoing a newer write on a copy the record
 * then calls in sync. A master process that serves a volume again at the epoch it served it
 * at does the same with every in-sync member first (resume()): its previous process's
 * changes are of that epoch too.
 * @module
 */

import type { Logger } from "pino";
import type { PeerLinks } from "./links.ts";
import type { ReplicaTarget } from "./replicator.ts";
import { ResyncError } from "./resync.ts";
import { decodeSession, replyMessage, STATUS_BAD_REQUEST, STATUS_OK, T_SESSION } from "./wire.ts";

/** How long resume() waits for the members' new sessions before serving. */
const RESUME_MS = 2000;

export class MemberSessions {
  /** Per volume name: the epoch its sessions belong to, and the session of each member. */
  readonly #byVolume = new Map<string, { epoch: number; members: Map<string, number> }>();
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  /** Forgets the sessions of `volume` (its epoch changed: the members forget them too). */
  clear(volume: string): void {
    this.#byVolume.delete(volume);
  }

  /** Forgets the sessions of `volume` unless they belong to `epoch`. */
  keepEpoch(volume: string, epoch: number): void {
    if (this.#byVolume.get(volume)?.epoch !== epoch) this.#byVolume.delete(volume);
  }

  /** `member` with its session of `volume`, when it was given one. */
  tagged(volume: string, member: ReplicaTarget): ReplicaTarget {
    const session = this.#byVolume.get(volume)?.members.get(member.node);
    return session ? { ...member, session } : member;
  }

  /**
   * This node serves `v` again at an epoch at which it served it before: its process
   * restarted while its lease held, so no member took over. Changes its previous process sent
   * may still be on their way to the members at this same epoch (in a socket, behind a slow
   * fdatasync, in a connection its kernel still retransmits after the process died), and
   * epoch fencing does not refuse them: they must not land after this process's newer writes.
   * So before it serves, every member is asked for a new session, in parallel and for at most
   * RESUME_MS in all; their older changes are refused from then on. A member that has not
   * answered by then gets untagged changes: one that started the session after all refuses
   * them and is resynced (a cost, not a loss); one that is down is taken out of sync as ever.
   */
  async resume(
    links: PeerLinks,
    v: { name: string; uuid: string },
    epoch: number,
    members: ReplicaTarget[],
  ): Promise<void> {
    this.keepEpoch(v.name, epoch);
    if (members.length === 0) return;
    const failed: Record<string, string> = {};
    const asked = members.map((m) =>
      this.start(links, v, m, epoch).catch((err) => {
        failed[m.node] = err instanceof Error ? err.message : String(err);
      })
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((r) => timer = setTimeout(() => r("late"), RESUME_MS));
    const outcome = await Promise.race([Promise.all(asked), late]);
    clearTimeout(timer);
    const started = members.filter((m) => this.tagged(v.name, m).session !== undefined);
    this.#log.info(
      {
        volume: v.name,
        epoch,
        members: started.map((m) => m.node),
        ...(Object.keys(failed).length > 0 ? { failed } : {}),
        ...(outcome === "late" ? { unanswered: RESUME_MS } : {}),
      },
      "serving again at the same epoch: new replication sessions, so the changes of this " +
        "node's previous process are refused",
    );
  }

  /**
   * Starts a new session of `member`'s copy of volume `v` at `epoch`. A member of an older
   * version gets none (it is resynced without, as before); any other refusal or failure
   * throws (the resync does not start).
   */
  async start(
    links: PeerLinks,
    v: { name: string; uuid: string },
    member: ReplicaTarget,
    epoch: number,
  ): Promise<void> {
    const link = await links.get(member.node, member.address);
    const reply = await link.request({ type: T_SESSION, flags: 0, volume: v.uuid, epoch });
    let entry = this.#byVolume.get(v.name);
    if (entry?.epoch !== epoch) this.#byVolume.set(v.name, entry = { epoch, members: new Map() });
    const sessions = entry.members;
    if (reply.status === STATUS_BAD_REQUEST) {
      sessions.delete(member.node);
      this.#log.info(
        { volume: v.name, replica: member.node },
        "member runs an older version without replication sessions: resynced without one",
      );
      return;
    }
    if (reply.status !== STATUS_OK) {
      throw new ResyncError(
        `replica ${member.node} refused a new session: ${replyMessage(reply)}`,
      );
    }
    sessions.set(member.node, decodeSession(reply.body));
  }
}
