/**
 * Volume history: the events a replicated volume's group changes leave behind (epochs,
 * masters, members leaving and rejoining the in-sync set, resyncs, handovers), one small key
 * each, written in the same transaction as the change (`ballast volume events`).
 * @module
 */

export {
  type EventDraft,
  eventKey,
  EVENTS_KEEP,
  EVENTS_PREFIX,
  eventsPrefix,
  goneWhy,
  historyOf,
  type HistoryRecord,
  masterResumed,
  NEW_MEMBER,
  type NodeFacts,
  type OpenResync,
  parseEvents,
  pendingEvents,
  resyncInterrupted,
  type ResyncReach,
  resyncStarted,
  unendedResyncs,
  withHistory,
} from "./history.ts";
