import { etcdCause, telling } from "../../../../control/store/etcd/_cause.ts";
import { EndpointPool, UNAVAILABLE_PREFIX } from "../../../../control/store/etcd/_conn.ts";
import { assertEquals } from "../../../_assert.ts";

// Messages as the etcd3 package passes them through from gRPC (seen on this machine).
const CASES: [string, string][] = [
  [
    "14 UNAVAILABLE: No connection established. Last error: connect ECONNREFUSED " +
    "127.0.0.1:23790 (2026-12-05T18:02:11.405Z)",
    "connection refused at 127.0.0.1:23790 (etcd not running?)",
  ],
  [
    "4 DEADLINE_EXCEEDED: Deadline exceeded after 0.030s,Waiting for LB pick",
    "no answer in time (etcd stopped, frozen or cut off?)",
  ],
  [
    "14 UNAVAILABLE: etcdserver: no leader",
    "etcd has no leader (a quorum of members is down or cut off)",
  ],
  ["14 UNAVAILABLE: Connection dropped", "connection reset"],
  [
    "14 UNAVAILABLE: No connection established. Last error: connect ECONNREFUSED 127.0.0.1:57102.",
    "connection refused at 127.0.0.1:57102 (etcd not running?)",
  ],
  [
    "14 UNAVAILABLE: No connection established. Last error: getaddrinfo ENOTFOUND etcd-x",
    "host name not resolved",
  ],
  [
    "14 UNAVAILABLE: No connection established. Last error: self-signed certificate in " +
    "certificate chain (2026-12-05T18:02:11.405Z)",
    "TLS failed: No connection established. Last error: self-signed certificate in certificate chain",
  ],
  ["13 INTERNAL: something   new\nhappened", "something new happened"],
  ["", "unknown error"],
];

Deno.test("etcdCause() names the cause of a failed etcd call without gRPC's status codes", () => {
  for (const [message, expected] of CASES) assertEquals(etcdCause(message), expected, message);
});

Deno.test("telling(): a member that answered 'no leader' says more than a refused one", () => {
  const refused = "connection refused at 127.0.0.1:2379 (etcd not running?)";
  const noLeader = "etcd has no leader (a quorum of members is down or cut off)";
  assertEquals(telling([refused, noLeader, refused], refused), noLeader);
  assertEquals(telling([refused], refused), refused);
});

Deno.test("EndpointPool.unavailable(): an UnavailableError from a call underneath is said once, not inside itself", () => {
  const pool = new EndpointPool(["http://127.0.0.1:9"], undefined, {
    requestTimeoutMs: 1000,
    attemptTimeoutMs: 500,
  });
  try {
    const inner = pool.unavailable("txn", new Error("connect ECONNREFUSED"), "not applied");
    const outer = pool.unavailable("txn", inner, "not applied");
    assertEquals(outer.message.split(UNAVAILABLE_PREFIX).length - 1, 1, outer.message);
    assertEquals(outer.message.split("the change was not applied").length - 1, 1, outer.message);
    const plain = pool.unavailable("get", inner);
    assertEquals(plain.message, inner.message);
  } finally {
    pool.close();
  }
});
