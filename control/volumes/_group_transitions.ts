/**
 * Pure transitions of a replicated volume's record (the hand-over fields of
 * _record.ts) used by the create and delete paths of _groups.ts and
 * service.ts. Each takes the current record and returns the next one, "delete" (remove
 * the record), or undefined (no change), so they are tested without a store.
 * @module
 */

import { FailedPreconditionError } from "../../mod/errors.ts";
import type { VolumeRecord } from "./_record.ts";

/**
 * How long after `createdAt` a group still "creating" counts as abandoned (its creator
 * crashed or lost the store before it flipped the record to ready or undid it): the
 * creator's wait plus a generous margin for its cleanup and clock skew between nodes.
 */
export function staleCreateMs(createWaitMs: number): number {
  return createWaitMs + 60_000;
}

/**
 * A delete of a group: "deleting" with `remaining` = the members whose copy must go
 * (kept when a delete is already under way). A group still being created is refused,
 * unless the create is stale (older than `staleMs`): then it is deleted like a ready
 * one, every member removing whatever copy it made.
 *
 * `down`: members whose liveness lease is gone. Without `force` they refuse the delete
 * (a down member could never remove its copy, so the delete would never finish); with
 * it they leave `remaining` for `leftOut` (see leftOutOf(): they remove their copy when they
 * come back), and with no live member left the record goes at once ("delete").
 */
export function markGroupDeleting(
  rec: VolumeRecord,
  opts: { force: boolean; now: Date; staleMs: number; down?: string[] },
): VolumeRecord | "delete" {
  if (rec.state === "creating") {
    const age = opts.now.getTime() - Date.parse(rec.createdAt);
    if (!(age > opts.staleMs)) {
      throw new FailedPreconditionError(`volume "${rec.name}" is still being created`, {
        state: rec.state,
      });
    }
  }
  const { created: _c, createFailed: _f, ...rest } = rec;
  const all = rec.state === "deleting" && rec.remaining ? rec.remaining : rec.group!.members;
  const down = all.filter((m) => opts.down?.includes(m));
  if (down.length > 0 && !opts.force) {
    const s = down.length > 1 ? "s" : "";
    throw new FailedPreconditionError(
      `volume "${rec.name}" has member${s} down: ${down.join(", ")}; a down member cannot ` +
        `remove its copy, so the delete would wait for ${down.length > 1 ? "them" : "it"}. ` +
        `Use --force to delete it now (a down member removes its copy when it comes back)`,
      { state: rec.state, down },
    );
  }
  const remaining = all.filter((m) => !down.includes(m));
  if (remaining.length === 0) return "delete";
  return {
    ...rest,
    state: "deleting",
    remaining,
    deleteForce: opts.force,
    deleteRefused: undefined,
    updatedAt: opts.now.toISOString(),
  };
}

/**
 * A forced delete under way whose `remaining` lists members now down (gone down after
 * it was asked): they leave the list, as markGroupDeleting would have left them out;
 * with no one left, the record goes. Undefined: nothing to change.
 */
export function dropDownMembers(
  rec: VolumeRecord,
  down: string[],
): VolumeRecord | "delete" | undefined {
  if (rec.state !== "deleting" || !rec.deleteForce) return undefined;
  const remaining = rec.remaining ?? rec.group!.members;
  const left = remaining.filter((m) => !down.includes(m));
  if (left.length === remaining.length) return undefined;
  return left.length === 0 ? "delete" : { ...rec, remaining: left };
}

/** A failed create undone: the members that made a copy remove it; none, the record goes. */
export function abandonCreate(rec: VolumeRecord): VolumeRecord | "delete" | undefined {
  if (rec.state !== "creating") return undefined;
  const created = rec.created ?? [];
  if (created.length === 0) return "delete";
  const { created: _c, createFailed: _f, ...rest } = rec;
  return { ...rest, state: "deleting", remaining: created, deleteForce: true };
}

/** `member` removed its copy: off `remaining`; the last one removes the record. */
export function copyDeleted(
  rec: VolumeRecord,
  member: string,
): VolumeRecord | "delete" | undefined {
  if (rec.state !== "deleting") return undefined;
  const left = (rec.remaining ?? rec.group!.members).filter((m) => m !== member);
  return left.length === 0 ? "delete" : { ...rec, remaining: left };
}
