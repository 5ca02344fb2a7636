/**
 * The master's side of replication sessions (wire.ts, "Sessions"): before a member becomes a
 * target again for its resync, the master asks it for a new session of the copy, and every
 * change sent to it from then on carries that session. The member refuses changes of older
 * sessions: frames of a link the master gave up that were still on their way (in its
 * socket, behind a slow FLUSH, or in a process frozen and resumed) and would otherwise land
 * after the resync had made their region equal, undoing a newer write on a copy the record
 * then calls in sync.
 * @module
 */

import type { Logger } from "pino";
import type { PeerLinks } from "./links.ts";
import type { ReplicaTarget } from "./replicator.ts";
import { ResyncError } from "./resync.ts";
import { decodeSession, replyMessage, STATUS_BAD_REQUEST, STATUS_OK, T_SESSION } from "./wire.ts";

export class MemberSessions {
  /** Session by volume name and member node, at the volume's current epoch. */
  readonly #byVolume = new Map<string, Map<string, number>>();
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  /** Forgets the sessions of `volume` (its epoch changed: the members forget them too). */
  clear(volume: string): void {
    this.#byVolume.delete(volume);
  }

  /** `member` with its session of `volume`, when it was given one. */
  tagged(volume: string, member: ReplicaTarget): ReplicaTarget {
    const session = this.#byVolume.get(volume)?.get(member.node);
    return session ? { ...member, session } : member;
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
    let sessions = this.#byVolume.get(v.name);
    if (!sessions) this.#byVolume.set(v.name, sessions = new Map());
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
