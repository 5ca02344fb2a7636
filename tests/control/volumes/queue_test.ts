/**
 * RecordQueues (control/volumes/_queue.ts): one serial lane per volume behind the record
 * watch. A stuck volume holds up only its own lane; changes waiting on a lane coalesce
 * to the newest; a failed change is retried from a fresh read with backoff until it
 * succeeds or the record is gone.
 */

import { silentLogger } from "../../../control/common/mod.ts";
import { type RecordChange, RecordQueues } from "../../../control/volumes/_queue.ts";
import type { KeyValue } from "../../../control/store/mod.ts";
import { assertEquals } from "../../_assert.ts";

const kv = (name: string, rev: number): KeyValue => ({
  key: `/ballast/volumes/${name}`,
  value: `{"rev":${rev}}`,
  createRevision: 1,
  modRevision: rev,
  version: rev,
  lease: 0,
});

const describe = (c: RecordChange) => c.type === "put" ? `put@${c.kv.modRevision}` : "deleted";

async function until(what: string, ok: () => boolean, ms = 3_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

Deno.test("RecordQueues: a volume whose change hangs does not hold up another volume's", async () => {
  let release = () => {};
  const hang = new Promise<void>((r) => release = r);
  const applied: string[] = [];
  const q = new RecordQueues({
    apply: async (name, c) => {
      if (name === "slow") await hang;
      applied.push(`${name}:${describe(c)}`);
    },
    read: () => Promise.resolve(undefined),
    logger: silentLogger(),
  });
  q.push("slow", { type: "put", kv: kv("slow", 2) });
  q.push("fast", { type: "put", kv: kv("fast", 3) });
  q.push("fast", { type: "deleted" });
  await until("fast applied", () => applied.length === 2);
  assertEquals(applied, ["fast:put@3", "fast:deleted"]);
  assertEquals(q.busy(), ["slow"]);
  release();
  await until("slow applied", () => applied.length === 3);
  assertEquals(q.busy(), []);
  await q.stop();
});

Deno.test("RecordQueues: one change at a time per volume, in order; waiting ones coalesce to the newest", async () => {
  let release = () => {};
  const hang = new Promise<void>((r) => release = r);
  const applied: string[] = [];
  let running = 0;
  let most = 0;
  const q = new RecordQueues({
    apply: async (_name, c) => {
      most = Math.max(most, ++running);
      if (c.type === "put" && c.kv.modRevision === 1) await hang;
      applied.push(describe(c));
      running--;
    },
    read: () => Promise.resolve(undefined),
    logger: silentLogger(),
  });
  q.push("v", { type: "put", kv: kv("v", 1) });
  for (const rev of [2, 3, 4]) q.push("v", { type: "put", kv: kv("v", rev) });
  release();
  await until("drained", () => q.busy().length === 0);
  assertEquals([applied, most], [["put@1", "put@4"], 1]);
  await q.stop();
});

Deno.test("RecordQueues: a failed change is retried from a fresh read, backing off, until it succeeds", async () => {
  const calls: { at: number; change: string }[] = [];
  let failures = 3;
  const start = Date.now();
  const q = new RecordQueues({
    apply: (_name, c) => {
      calls.push({ at: Date.now() - start, change: describe(c) });
      return failures-- > 0 ? Promise.reject(new Error("etcd said no")) : Promise.resolve();
    },
    read: (name) => Promise.resolve(kv(name, 9)),
    logger: silentLogger(),
    backoffMs: [20, 50],
  });
  q.push("v", { type: "put", kv: kv("v", 5) });
  await until("succeeded", () => calls.length === 4 && q.busy().length === 0);
  // The first try had the watched record; each retry a fresh read of it.
  assertEquals(calls.map((c) => c.change), ["put@5", "put@9", "put@9", "put@9"]);
  const gaps = calls.slice(1).map((c, i) => c.at - calls[i].at);
  for (const [i, min] of [20, 40, 50].entries()) {
    if (gaps[i] < min - 5) throw new Error(`retry ${i + 1} after ${gaps[i]} ms, want >= ${min}`);
  }
  await q.stop();
});

Deno.test("RecordQueues: retries stop once the record is gone (applied as deleted) or the queues stop", async () => {
  const applied: string[] = [];
  let record: KeyValue | undefined = kv("v", 7);
  const q = new RecordQueues({
    apply: (_name, c) => {
      applied.push(describe(c));
      return c.type === "put" ? Promise.reject(new Error("disk")) : Promise.resolve();
    },
    read: () => Promise.resolve(record),
    logger: silentLogger(),
    backoffMs: [10, 10],
  });
  q.push("v", { type: "put", kv: kv("v", 7) });
  await until("retried", () => applied.length >= 2);
  record = undefined;
  await until("gone", () => applied.at(-1) === "deleted" && q.busy().length === 0);
  const n = applied.length;
  await new Promise((r) => setTimeout(r, 50));
  assertEquals(applied.length, n, "no retry after the record is gone");

  record = kv("v", 8);
  q.push("v", { type: "put", kv: kv("v", 8) });
  await until("failing again", () => applied.length >= n + 2);
  await q.stop();
  const m = applied.length;
  await new Promise((r) => setTimeout(r, 50));
  assertEquals(applied.length, m, "no retry after stop()");
});
