/**
 * The volume-group state machine (control/group/machine.ts) as scenario transcripts in the
 * style of etcd-io/raft's testdata: testdata/*.txt feed events to one actor and show the
 * effects and state that step() must produce. Commands:
 *
 *   init self=NODE
 *   event TYPE [key=value ...]
 *
 * Records are written `rev=N epoch=E master=M members=A,B in-sync=A,B [down=A]`.
 * Event types and their keys: lease-expired|lease-restored node=; replica-in-sync|
 * replica-out-of-sync replica= epoch=; data-changed epoch= waiting=yes|no; replicas-failed
 * epoch= replicas=A,B;
 * record-changed|read-result <record>; cas-won rev=; cas-lost <record> leases=N:up,N:down;
 * response-lost; timer-fired name=.
 */
import {
  type ActorState,
  type Effect,
  type GroupEvent,
  initActor,
  step,
} from "../../../control/group/machine.ts";
import {
  describeRecord,
  type GroupRecord,
  phaseOf,
  type Versioned,
} from "../../../control/group/record.ts";
import { type Command, runTranscript, transcriptFiles } from "../../_transcript.ts";

function list(v: string | undefined): string[] {
  return v === undefined || v === "" ? [] : v.split(",");
}

function num(c: Command, key: string): number {
  const v = Number(c.kv.get(key));
  if (!Number.isInteger(v)) throw new Error(`${c.line}: ${key}= must be an integer`);
  return v;
}

function versioned(c: Command): Versioned {
  const members = list(c.kv.get("members")).sort();
  const base = {
    epoch: num(c, "epoch"),
    master: c.kv.get("master") ?? "",
    members,
    inSync: list(c.kv.get("in-sync")).sort(),
    down: list(c.kv.get("down")).sort(),
    desired: { replicas: members.length - 1 },
  };
  const record: GroupRecord = { ...base, phase: phaseOf(base) };
  return { revision: num(c, "rev"), record };
}

function event(c: Command): GroupEvent {
  const type = c.args[0];
  switch (type) {
    case "lease-expired":
    case "lease-restored":
      return { type, node: c.kv.get("node") ?? "" };
    case "replica-in-sync":
    case "replica-out-of-sync":
      return { type, replica: c.kv.get("replica") ?? "", epoch: num(c, "epoch") };
    case "data-changed":
      return { type, epoch: num(c, "epoch"), waiting: c.kv.get("waiting") === "yes" };
    case "replicas-failed":
      return { type, epoch: num(c, "epoch"), replicas: list(c.kv.get("replicas")) };
    case "record-changed":
    case "read-result":
      return { type, current: versioned(c) };
    case "cas-won":
      return { type, revision: num(c, "rev") };
    case "cas-lost":
      return {
        type,
        current: versioned(c),
        leases: list(c.kv.get("leases")).map((l) => {
          const [node, up] = l.split(":");
          return { node, up: up === "up" };
        }),
      };
    case "response-lost":
      return { type };
    case "timer-fired":
      return { type, name: c.kv.get("name") ?? "" };
    default:
      throw new Error(`unknown event ${type}`);
  }
}

function describeEffect(e: Effect): string {
  switch (e.type) {
    case "read":
      return "effect read";
    case "cas":
      return `effect cas expect=r${e.expectedRevision} ${describeRecord(e.record)} ` +
        `guard down=[${e.guard.down}] up=[${e.guard.up}]`;
    case "set-timer":
      return `effect set-timer ${e.name} ${e.ms}ms`;
    case "notify": {
      const n = e.notice;
      const who = "node" in n ? ` ${n.node}` : "replica" in n ? ` ${n.replica}` : "";
      return `notify ${n.kind}${who} e${n.epoch}`;
    }
  }
}

function describeState(s: ActorState): string {
  const known = s.known ? `r${s.known.revision} ${describeRecord(s.known.record)}` : "-";
  const reports = s.reports.map((r) => `${r.replica}:${r.inSync ? "in" : "out"}@e${r.epoch}`);
  return `state known=${known} op=${s.op?.kind ?? "-"} lease-down=[${s.leaseDown}] ` +
    `serving=${s.serving === undefined ? "-" : `e${s.serving}`} reports=[${reports}] ` +
    `holding=${s.holding === undefined ? "-" : `e${s.holding}`}` +
    (Array.isArray(s.holdFor) && s.holdFor.length > 0 ? ` hold-for=[${s.holdFor}]` : "");
}

function handler(): (c: Command) => string {
  let state: ActorState | undefined;
  return (c) => {
    let r;
    if (c.name === "init") r = initActor(c.kv.get("self") ?? "");
    else if (c.name === "event" && state) r = step(state, event(c));
    else throw new Error(`unknown command or no init yet: ${c.line}`);
    state = r.state;
    return [...r.effects.map(describeEffect), describeState(state)].join("\n");
  };
}

for (const file of transcriptFiles(new URL("./testdata/", import.meta.url))) {
  const name = file.split("/").at(-1)!;
  Deno.test(`group machine transcript ${name}`, () => runTranscript(file, handler()));
}
