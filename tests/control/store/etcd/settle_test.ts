import {
  appliedResult,
  byRevision,
  candidates,
  comparesHold,
  explains,
  getRevisions,
} from "../../../../control/store/etcd/_settle.ts";
import type { KeyValue, Op, WatchEvent } from "../../../../control/store/mod.ts";
import { assertEquals } from "../../../_assert.ts";

const kv = (key: string, value: string, rev: number, lease = 0): KeyValue => ({
  key,
  value,
  createRevision: rev,
  modRevision: rev,
  version: 1,
  lease,
});
const put = (key: string, value: string, rev: number, lease = 0): WatchEvent => ({
  type: "put",
  kv: kv(key, value, rev, lease),
});
const del = (key: string, rev: number): WatchEvent => ({ type: "delete", kv: kv(key, "", rev) });

Deno.test("explains() accepts exactly the events a branch writes", () => {
  const ops: Op[] = [
    { type: "put", key: "/a", value: "1" },
    { type: "delete", key: "/b" },
    { type: "delete", key: "/p/", prefix: true },
    { type: "get", key: "/a" },
  ];
  const table: [string, WatchEvent[], boolean][] = [
    ["put, delete and prefix delete", [put("/a", "1", 5), del("/b", 5), del("/p/x", 5)], true],
    ["deletes of missing keys leave no event", [put("/a", "1", 5)], true],
    ["another value", [put("/a", "2", 5)], false],
    ["another lease", [put("/a", "1", 5, 7)], false],
    ["an extra key written by someone else", [put("/a", "1", 5), put("/c", "1", 5)], false],
    ["the put is missing", [del("/b", 5)], false],
    ["a delete outside the prefix", [put("/a", "1", 5), del("/q/x", 5)], false],
    ["no events", [], false],
  ];
  for (const [what, events, want] of table) assertEquals(explains(ops, events), want, what);
  assertEquals(
    explains([{ type: "put", key: "/a", value: "1", lease: 7 }], [put("/a", "1", 5, 7)]),
    true,
  );
});

Deno.test("candidates() finds the revisions whose events are the branch's writes, oldest first", () => {
  const history = byRevision([
    put("/c", "1", 11),
    put("/c", "2", 12),
    put("/c", "1", 14),
    put("/other", "1", 14),
    put("/c", "1", 13),
  ]);
  assertEquals([...history.keys()], [11, 12, 13, 14]);
  assertEquals(candidates([{ type: "put", key: "/c", value: "1" }], history), [11, 13]);
  assertEquals(candidates([{ type: "get", key: "/c" }], history), [], "a read never applied");
  assertEquals(candidates([{ type: "delete", key: "/c" }], history), []);
});

Deno.test("comparesHold() evaluates compares as etcd does, missing keys included", () => {
  const kvs = new Map([["/a", { ...kv("/a", "x", 4), version: 2 }], ["/gone", undefined]]);
  assertEquals(comparesHold([{ key: "/a", target: "modRevision", op: "==", value: 4 }], kvs), true);
  assertEquals(comparesHold([{ key: "/a", target: "version", op: ">", value: 2 }], kvs), false);
  assertEquals(comparesHold([{ key: "/gone", target: "version", op: "==", value: 0 }], kvs), true);
  assertEquals(comparesHold([{ key: "/gone", target: "value", op: "!=", value: "x" }], kvs), false);
  assertEquals(comparesHold([], kvs), true);
});

Deno.test("getRevisions() reads gets before the first write at M - 1, after the last at M, between: unknown", () => {
  const ops: Op[] = [
    { type: "get", key: "/a" },
    { type: "put", key: "/a", value: "1" },
    { type: "get", key: "/b" },
    { type: "delete", key: "/b" },
    { type: "get", key: "/a" },
  ];
  assertEquals(getRevisions(ops, 9), [8, undefined, undefined, undefined, 9]);
});

Deno.test("appliedResult() rebuilds put revisions, delete counts and get results", () => {
  const ops: Op[] = [
    { type: "get", key: "/g" },
    { type: "put", key: "/a", value: "1" },
    { type: "delete", key: "/p/", prefix: true },
    { type: "delete", key: "/missing" },
  ];
  const events = [put("/a", "1", 9), del("/p/1", 9), del("/p/2", 9)];
  const gets = new Map([[0, [kv("/g", "g", 3)]]]);
  assertEquals(appliedResult(ops, false, 9, events, gets), {
    succeeded: false,
    revision: 9,
    responses: [
      { type: "get", kvs: [kv("/g", "g", 3)] },
      { type: "put", revision: 9 },
      { type: "delete", deleted: 2 },
      { type: "delete", deleted: 0 },
    ],
  });
});
