/**
 * End-to-end tests of cluster mode: real `ballast serve --etcd ...` processes on one
 * real etcd (Debian etcd-server, started by tests/control/_etcd_harness.ts), all on
 * loopback. Membership through leases (kill -9 shows as down), volume records shared
 * by every node, and etcd over https with client certificates.
 */

import { assert, assertEquals } from "../_assert.ts";
import { type EtcdCluster, startEtcd } from "../control/_etcd_harness.ts";
import { type BallastProcess, cli, e2eTest, run, startBallast } from "./_harness.ts";

const LEASE_TTL_S = 3;
/**
 * A deadline only, generous for a loaded machine (etcd sweeps expired leases about every
 * 500 ms, then revokes them with a raft write): how soon a killed node must be reported
 * down is checked against its bound by cluster_faults_test.ts.
 */
const DOWN_MARGIN_MS = 30_000;

interface NodeRow {
  name: string;
  state: string;
  reason: string;
}

async function nodeList(api: string): Promise<NodeRow[]> {
  const res = await cli(["node", "list", "-o", "json"], { api });
  assertEquals(res.code, 0, res.stderr);
  return (JSON.parse(res.stdout) as { items: NodeRow[] }).items;
}

async function nodeStates(api: string): Promise<Record<string, string>> {
  const res = await fetch(`${api}/v1/nodes`);
  const body = await res.json() as { items: NodeRow[] };
  return Object.fromEntries(body.items.map((n) => [n.name, n.state]));
}

function clusterNode(etcd: EtcdCluster, name: string, extra: string[] = []) {
  return startBallast({
    args: [
      "--etcd",
      etcd.endpoints.join(","),
      "--node-name",
      name,
      "--node-lease-ttl",
      `${LEASE_TTL_S}s`,
      ...extra,
    ],
  });
}

const tools = ["etcd", "etcdctl"];

e2eTest(
  "serve --etcd: two nodes on one etcd see each other, share volumes, and a killed node goes down",
  { tools },
  async () => {
    const etcd = await startEtcd();
    let a: BallastProcess | undefined;
    let b: BallastProcess | undefined;
    try {
      a = await clusterNode(etcd, "node-a");
      b = await clusterNode(etcd, "node-b");
      assert(a.logs().includes(`"store":"etcd (${etcd.endpoints[0]})"`), "ready line names etcd");

      for (const api of [a.api, b.api]) {
        const rows = await nodeList(api);
        assertEquals(
          rows.map((n) => `${n.name}:${n.state}`),
          ["node-a:ready", "node-b:ready"],
          `node list via ${api}`,
        );
      }

      const created = await cli(["volume", "create", "v1", "--size", "4MiB"], { api: a.api });
      assertEquals(created.code, 0, created.stderr);
      const listed = await cli(["volume", "list", "-o", "json"], { api: b.api });
      assertEquals(listed.code, 0, listed.stderr);
      const items = (JSON.parse(listed.stdout) as { items: { name: string; master: string }[] })
        .items;
      assertEquals(items.map((v) => `${v.name}@${v.master}`), ["v1@node-a"]);

      // Deleted through B: A (the master) removes its file and the record.
      const deleted = await cli(["volume", "delete", "v1"], { api: b.api });
      assertEquals(deleted.code, 0, deleted.stderr);
      const after = await cli(["volume", "list", "-o", "json"], { api: a.api });
      assertEquals(JSON.parse(after.stdout).items, []);
      const files = [...Deno.readDirSync(`${a.dataDir}/volumes`)].map((e) => e.name);
      assertEquals(files, [], "A's volume file is gone");

      await a.kill("SIGKILL");
      const killedAt = Date.now();
      while ((await nodeStates(b.api))["node-a"] !== "down") {
        assert(
          Date.now() - killedAt < LEASE_TTL_S * 1000 + DOWN_MARGIN_MS,
          `node-a not down within ${LEASE_TTL_S} s + ${DOWN_MARGIN_MS} ms`,
        );
        await new Promise((r) => setTimeout(r, 100));
      }
      const rows = await nodeList(b.api);
      const downA = rows.find((n) => n.name === "node-a")!;
      assertEquals([downA.state, rows.find((n) => n.name === "node-b")!.state], ["down", "ready"]);
      assert(downA.reason.includes("lease expired"), downA.reason);
    } finally {
      await b?.stop();
      await a?.stop();
      await etcd.stop();
    }
  },
);

e2eTest(
  "serve --etcd: a node that holds its lease but does not answer is unreachable, then ready again",
  { tools },
  async () => {
    const etcd = await startEtcd();
    let a: BallastProcess | undefined;
    let b: BallastProcess | undefined;
    let paused = false;
    try {
      // A long lease on A, so it stays "alive" for etcd while it is stopped.
      a = await startBallast({
        args: ["--etcd", etcd.endpoints[0], "--node-name", "node-a", "--node-lease-ttl", "60s"],
      });
      b = await clusterNode(etcd, "node-b");
      assertEquals((await nodeStates(b.api))["node-a"], "ready");

      Deno.kill(a.pid, "SIGSTOP");
      paused = true;
      const stoppedAt = Date.now();
      let row: NodeRow | undefined;
      while (
        (row = (await nodeList(b.api)).find((n) => n.name === "node-a"))?.state !== "unreachable"
      ) {
        assert(Date.now() - stoppedAt < 20_000, `node-a not unreachable: ${JSON.stringify(row)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      const why = row!.reason;
      // deno-lint-ignore no-console
      console.log(`node-a unreachable after ${Date.now() - stoppedAt} ms: ${why}`);
      assert(why.includes("lease still held"), why);
      assert(why.includes("did not answer"), why);

      Deno.kill(a.pid, "SIGCONT");
      paused = false;
      const resumedAt = Date.now();
      while ((await nodeStates(b.api))["node-a"] !== "ready") {
        assert(Date.now() - resumedAt < 20_000, "node-a not ready again after SIGCONT");
        await new Promise((r) => setTimeout(r, 200));
      }
    } finally {
      if (paused && a) Deno.kill(a.pid, "SIGCONT");
      await b?.stop();
      await a?.stop();
      await etcd.stop();
    }
  },
);

e2eTest(
  "serve --etcd https: client certificates work; a missing or foreign client cert exits 1 naming the endpoint",
  { tools: [...tools, "openssl"] },
  async () => {
    const etcd = await startEtcd({ tls: true });
    const dir = await Deno.makeTempDir({ prefix: "ballast-etcd-pem-" });
    let node: BallastProcess | undefined;
    try {
      const tls = etcd.tls!;
      await Deno.writeTextFile(`${dir}/ca.pem`, tls.caPem);
      await Deno.writeTextFile(`${dir}/client.pem`, tls.certPem);
      await Deno.writeTextFile(`${dir}/client.key`, tls.keyPem);
      // A client certificate from another CA (self-signed).
      const self = await run("openssl", [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        `${dir}/foreign.key`,
        "-out",
        `${dir}/foreign.pem`,
        "-days",
        "1",
        "-subj",
        "/CN=intruder",
      ]);
      assertEquals(self.code, 0, self.stderr);

      const endpoint = etcd.endpoints[0];
      assert(endpoint.startsWith("https://"));
      node = await clusterNode(etcd, "secure", [
        "--etcd-cacert",
        `${dir}/ca.pem`,
        "--etcd-cert",
        `${dir}/client.pem`,
        "--etcd-key",
        `${dir}/client.key`,
      ]);
      assert(node.logs().includes(`"store":"etcd (${endpoint})"`));
      assertEquals((await nodeList(node.api)).map((n) => `${n.name}:${n.state}`), [
        "secure:ready",
      ]);
      await node.stop();
      node = undefined;

      const refused = async (what: string, extra: string[]) => {
        const data = await Deno.makeTempDir({ prefix: "ballast-e2e-", dir });
        const res = await cli([
          "serve",
          "--data-dir",
          data,
          "--tls",
          "off",
          "--api-listen",
          "127.0.0.1:0",
          "--nbd-listen",
          "127.0.0.1:0",
          "--node-name",
          "refused",
          "--etcd",
          endpoint,
          "--etcd-cacert",
          `${dir}/ca.pem`,
          ...extra,
        ], { timeoutMs: 60_000 });
        assertEquals(res.code, 1, `${what}: ${res.stdout}\n${res.stderr}`);
        assert(res.stderr.includes(endpoint), `${what}: error names ${endpoint}: ${res.stderr}`);
        assert(!res.stdout.includes("ballast ready"), what);
      };
      await refused("no client certificate", []);
      await refused("client certificate from another CA", [
        "--etcd-cert",
        `${dir}/foreign.pem`,
        "--etcd-key",
        `${dir}/foreign.key`,
      ]);

      // A CA file that is not there is named with its flag before anything connects.
      const missing = await cli([
        "serve",
        "--data-dir",
        dir,
        "--tls",
        "off",
        "--etcd",
        endpoint,
        "--etcd-cacert",
        `${dir}/nope.pem`,
      ]);
      assertEquals(missing.code, 2, `an invalid argument: ${missing.stderr}`);
      assert(missing.stderr.includes(`--etcd-cacert "${dir}/nope.pem"`), missing.stderr);
    } finally {
      await node?.stop();
      await etcd.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
);

e2eTest(
  "serve --etcd: a second node under a name that is running is refused and changes nothing; the same data directory started again after kill -9 goes on, an empty one once the old lease expired",
  { tools },
  async () => {
    const etcd = await startEtcd();
    let a: BallastProcess | undefined;
    try {
      a = await clusterNode(etcd, "node-a");
      // Another data directory, the same name (a copied environment file).
      const err = await clusterNode(etcd, "node-a").then(
        (dup) => dup.stop().then(() => "it started"),
        (e: Error) => e.message,
      );
      assert(err.includes("exited (code 1) before logging"), err);
      assert(
        err.includes(
          `node name \\"node-a\\" is in use by another running node (its API: ${a.api}`,
        ) ||
          err.includes(`node name "node-a" is in use by another running node (its API: ${a.api}`),
        err,
      );
      const rows = await nodeList(a.api);
      assertEquals(rows.map((n) => `${n.name}:${n.state}`), ["node-a:ready"]);
      const node = await (await fetch(`${a.api}/v1/nodes/node-a`)).json() as { apiAddress: string };
      assertEquals(node.apiAddress, a.api, "the running node's record is untouched");
      // kill -9, then the same directory at once: its old lease is still live, and its own.
      const dataDir = a.dataDir;
      await a.kill();
      a = await startBallast({
        dataDir,
        args: ["--etcd", etcd.endpoints.join(","), "--node-lease-ttl", `${LEASE_TTL_S}s`],
      });
      assert(a.logs().includes('"node":"node-a"'), "restarted as node-a, its recorded name");
      assertEquals((await nodeList(a.api)).map((n) => `${n.name}:${n.state}`), ["node-a:ready"]);
      // kill -9, then an empty data directory under the same name (a replaced disk): the old
      // process's API does not answer, so the new one waits for the old lease, then starts.
      await a.kill();
      await Deno.remove(dataDir, { recursive: true });
      a = await clusterNode(etcd, "node-a");
      assert(
        await a.logged("waiting for its liveness lease to expire"),
        `it waited for the old lease:\n${a.logs()}`,
      );
      assertEquals((await nodeList(a.api)).map((n) => `${n.name}:${n.state}`), ["node-a:ready"]);
      // The same again on the same API address: this process holds it, so the old one is gone.
      const apiListen = a.api.replace(/^https?:\/\//, "");
      await a.kill();
      await Deno.remove(a.dataDir, { recursive: true });
      a = await startBallast({
        apiListen,
        args: [
          "--etcd",
          etcd.endpoints.join(","),
          "--node-name",
          "node-a",
          "--node-lease-ttl",
          `${LEASE_TTL_S}s`,
        ],
      });
      assert(
        await a.logged("this node's own API address"),
        `it knew the old process was gone:\n${a.logs()}`,
      );
      assertEquals((await nodeList(a.api)).map((n) => `${n.name}:${n.state}`), ["node-a:ready"]);
    } finally {
      await a?.stop();
      await Deno.remove(a?.dataDir ?? "/nonexistent", { recursive: true }).catch(() => {});
      await etcd.stop();
    }
  },
);
