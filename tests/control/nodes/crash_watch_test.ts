/**
 * CrashWatch (control/nodes/crash_watch.ts) over the embedded store and real sockets: a
 * node's lease is revoked only when every listener its record names refuses connections
 * twice; a listener that accepts (a live process, or a frozen one, whose kernel still
 * accepts) keeps the lease, and so does a node that took a new lease meanwhile.
 */

import { assert, assertEquals } from "../../_assert.ts";
import { silentLogger } from "../../../control/common/mod.ts";
import {
  aliveKey,
  CrashWatch,
  type Dial,
  listenersOf,
  NODE_PREFIX,
} from "../../../control/nodes/mod.ts";
import type { SqliteStateStore } from "../../../control/store/sqlite/mod.ts";
import { withSqlite } from "../_fixtures.ts";

/** A loopback port nothing listens on: bound, then closed again. */
function closedPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function register(
  store: SqliteStateStore,
  node: string,
  peerPort: number,
  apiPort: number,
): Promise<number> {
  await store.put(
    NODE_PREFIX + node,
    JSON.stringify({
      name: node,
      peerAddress: `127.0.0.1:${peerPort}`,
      apiAddress: `https://127.0.0.1:${apiPort}`,
    }),
  );
  const lease = await store.grantLease(60);
  await store.put(aliveKey(node), "{}", { lease });
  return lease;
}

Deno.test("CrashWatch revokes the lease of a node whose listeners both refuse connections", async () => {
  await withSqlite(async (store) => {
    const lease = await register(store, "n2", closedPort(), closedPort());
    const watch = new CrashWatch({ store, logger: silentLogger(), checkGapMs: 10 });
    const check = await watch.connectionLost("n2");
    assertEquals(check.outcome, "revoked", JSON.stringify(check));
    assertEquals(
      await store.get(aliveKey("n2")),
      undefined,
      "the liveness key went with the lease",
    );
    assert(check.outcome === "revoked" && check.lease === lease);
  });
});

Deno.test("CrashWatch keeps the lease while one listener accepts, even when the other refuses", async () => {
  await withSqlite(async (store) => {
    const live = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      await register(store, "n2", closedPort(), (live.addr as Deno.NetAddr).port);
      const watch = new CrashWatch({ store, logger: silentLogger(), checkGapMs: 10 });
      const check = await watch.connectionLost("n2");
      assertEquals(check.outcome, "alive", JSON.stringify(check));
      assert((await store.get(aliveKey("n2"))) !== undefined, "lease kept");
    } finally {
      live.close();
    }
  });
});

Deno.test("CrashWatch keeps the lease of a frozen process: its kernel still accepts connections", async () => {
  await withSqlite(async (store) => {
    // A real process listening on two ports, then stopped (SIGSTOP), as a frozen node.
    const child = new Deno.Command("python3", {
      args: [
        "-c",
        "import socket,sys\n" +
        "s=[socket.socket() for _ in range(2)]\n" +
        "[x.bind(('127.0.0.1',0)) or x.listen(8) for x in s]\n" +
        "print(s[0].getsockname()[1], s[1].getsockname()[1], flush=True)\n" +
        "sys.stdin.read()\n",
      ],
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    try {
      const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
      let line = "";
      while (!line.includes("\n")) {
        const { value, done } = await reader.read();
        if (done) throw new Error("the listener process ended before printing its ports");
        line += value;
      }
      const [peerPort, apiPort] = line.trim().split(" ").map(Number);
      await register(store, "n2", peerPort, apiPort);
      Deno.kill(child.pid, "SIGSTOP");
      const watch = new CrashWatch({ store, logger: silentLogger(), checkGapMs: 10 });
      const check = await watch.connectionLost("n2");
      assertEquals(check.outcome, "alive", JSON.stringify(check));
      assert((await store.get(aliveKey("n2"))) !== undefined, "lease kept");
    } finally {
      Deno.kill(child.pid, "SIGKILL");
      await child.status;
      await child.stdin.close().catch(() => {});
    }
  });
});

Deno.test("CrashWatch revokes nothing when the node took a new lease during the check", async () => {
  await withSqlite(async (store) => {
    const peerPort = closedPort();
    const apiPort = closedPort();
    const oldLease = await register(store, "n2", peerPort, apiPort);
    let dials = 0;
    let newLease = 0;
    // Real dials; after the first round the node "restarts": a new lease on the same key.
    const dial: Dial = async (host, port) => {
      const conn = await Deno.connect({ hostname: host, port }).catch((err) => err);
      if (!(conn instanceof Deno.errors.ConnectionRefused)) throw new Error("expected refused");
      if (++dials === 2) newLease = await register(store, "n2", peerPort, apiPort);
      return "refused";
    };
    const watch = new CrashWatch({ store, logger: silentLogger(), dial, checkGapMs: 10 });
    const check = await watch.connectionLost("n2");
    assertEquals(check.outcome, "skipped", JSON.stringify(check));
    assertEquals(dials, 4, "two rounds over two listeners");
    assert(newLease !== oldLease);
    assertEquals((await store.get(aliveKey("n2")))?.lease, newLease, "the new lease is kept");
  });
});

Deno.test("CrashWatch checks a node once while many of its connections end together", async () => {
  await withSqlite(async (store) => {
    await register(store, "n2", closedPort(), closedPort());
    let dials = 0;
    const dial: Dial = () => Promise.resolve((dials++, "refused"));
    const watch = new CrashWatch({ store, logger: silentLogger(), dial, checkGapMs: 10 });
    const checks = await Promise.all([1, 2, 3].map(() => watch.connectionLost("n2")));
    assertEquals(checks.map((c) => c.outcome), ["revoked", "revoked", "revoked"]);
    assertEquals(dials, 4, "one check: two rounds over two listeners");
    // Gone already: a later loss reads no lease and dials nothing.
    assertEquals((await watch.connectionLost("n2")).outcome, "skipped");
    assertEquals(dials, 4);
    assertEquals(watch.counts(), { revoked: 1, alive: 0, skipped: 1 }, "one per check, not call");
    watch.stop();
    assertEquals((await watch.connectionLost("n3")).outcome, "skipped");
  });
});

Deno.test("listenersOf() reads the peer and API addresses of a node record", () => {
  assertEquals(
    listenersOf(JSON.stringify({ peerAddress: "[::1]:10811", apiAddress: "https://[::1]:5705" }))
      .map((l) => `${l.host} ${l.port}`),
    ["::1 10811", "::1 5705"],
  );
  assertEquals(
    listenersOf(JSON.stringify({ peerAddress: "10.0.0.2:10811", apiAddress: "http://n2" }))
      .map((l) => `${l.host} ${l.port}`),
    ["10.0.0.2 10811", "n2 80"],
  );
  assertEquals(listenersOf(JSON.stringify({ peerAddress: "nonsense", apiAddress: "" })), []);
  assertEquals(listenersOf("not json"), []);
});
