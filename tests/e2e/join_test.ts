/**
 * Joining a cluster with TLS on, end to end: real `ballast serve --etcd ...` processes on a
 * real etcd (tests/control/_etcd_harness.ts), the real CLI, all on loopback.
 *
 * The first node creates the CA and keeps it in etcd with the key sealed; `ballast cluster
 * join-token` makes single-use tokens; a node started with `--join TOKEN` gets its
 * certificate and the cluster KEK over TLS. Reused, expired, forged and foreign-CA tokens,
 * and a node with no token, are refused and `serve` exits 1 naming why.
 */

import { assert, assertEquals } from "../_assert.ts";
import { type EtcdCluster, startEtcd } from "../control/_etcd_harness.ts";
import { type BallastProcess, cli, e2eTest, run, startBallast } from "./_harness.ts";

const PREFIX = "/ballast-cluster";
const CA_KEY = `${PREFIX}/ballast/cluster/ca`;
const tools = ["etcd", "etcdctl"];

function clusterArgs(etcd: EtcdCluster, name: string, extra: string[] = []): string[] {
  return [
    "--etcd",
    etcd.endpoints.join(","),
    "--node-name",
    name,
    "--node-lease-ttl",
    "3s",
    ...extra,
  ];
}

function member(etcd: EtcdCluster, name: string, extra: string[] = []) {
  return startBallast({ tls: true, args: clusterArgs(etcd, name, extra) });
}

/** `ballast cluster join-token` against `b` with its own admin credentials. */
async function joinToken(b: BallastProcess, ttl?: string): Promise<string> {
  const r = await cli(
    [
      "cluster",
      "join-token",
      "-o",
      "json",
      "--data-dir",
      b.dataDir,
      ...(ttl ? ["--ttl", ttl] : []),
    ],
    { api: b.api },
  );
  assertEquals(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { token: string; id: string; expiresAt: string };
  assert(out.token.startsWith(`ballast1.${out.id}.`), out.token);
  return out.token;
}

/**
 * `ballast serve` that must exit 1 before it is ready; returns its stderr. On a new data
 * directory (removed afterwards) unless `existing` names one, which is kept.
 */
async function refusedServe(
  etcd: EtcdCluster,
  name: string,
  extra: string[],
  existing?: string,
): Promise<string> {
  const dir = existing ?? await Deno.makeTempDir({ prefix: "ballast-e2e-join-" });
  try {
    const r = await cli([
      "serve",
      "--data-dir",
      dir,
      "--api-listen",
      "127.0.0.1:0",
      "--nbd-listen",
      "127.0.0.1:0",
      ...clusterArgs(etcd, name, extra),
    ], { timeoutMs: 60_000 });
    assertEquals(r.code, 1, `${name}: ${r.stdout}\n${r.stderr}`);
    assert(!r.stdout.includes("ballast ready"), name);
    let kek = true;
    try {
      await Deno.stat(`${dir}/pki/cluster.kek`);
    } catch {
      kek = false;
    }
    assert(existing !== undefined || !kek, `${name}: a refused node keeps no KEK`);
    return r.stderr;
  } finally {
    if (existing === undefined) await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

async function nodeNames(api: string, credentialsOf: BallastProcess): Promise<string[]> {
  const r = await cli(["node", "list", "-o", "json", "--data-dir", credentialsOf.dataDir], { api });
  assertEquals(r.code, 0, r.stderr);
  const items = (JSON.parse(r.stdout) as { items: { name: string; state: string }[] }).items;
  return items.map((n) => `${n.name}:${n.state}`);
}

/** Changes the secret (or another part) of a token, keeping its shape. */
function alter(token: string, part: 1 | 2 | 3): string {
  const parts = token.split(".");
  const c = parts[part][0];
  parts[part] = (c === "a" ? "b" : "a") + parts[part].slice(1);
  return parts.join(".");
}

e2eTest(
  "join: the first node keeps its CA in etcd sealed; a token lets a second node join once",
  { tools },
  async () => {
    const etcd = await startEtcd();
    const nodes: BallastProcess[] = [];
    try {
      const a = await member(etcd, "node-a");
      nodes.push(a);
      assert(a.api.startsWith("https://"), a.api);

      // The CA is in etcd: certificate in clear, key sealed (no PEM private key).
      const raw = await run("etcdctl", [
        `--endpoints=${etcd.endpoints[0]}`,
        "get",
        CA_KEY,
        "--print-value-only",
      ]);
      assertEquals(raw.code, 0, raw.stderr);
      assert(raw.stdout.includes("BEGIN CERTIFICATE"), raw.stdout.slice(0, 200));
      assert(!raw.stdout.includes("PRIVATE KEY"), "the CA key is not in clear in etcd");
      assert(raw.stdout.includes('"alg":"AES-256-GCM"'), raw.stdout.slice(0, 400));
      const kek = await Deno.readTextFile(`${a.dataDir}/pki/cluster.kek`);
      assertEquals((await Deno.stat(`${a.dataDir}/pki/cluster.kek`)).mode! & 0o777, 0o600);
      const dump = await run("etcdctl", [
        `--endpoints=${etcd.endpoints[0]}`,
        "get",
        "--prefix",
        "/",
      ]);
      assert(!dump.stdout.includes(kek.trim()), "the KEK is not in etcd");
      assert(!a.logs().includes(kek.trim()), "the KEK is not logged");

      // No token: refused with the way out.
      const none = await refusedServe(etcd, "stranger", []);
      assert(
        none.includes("this cluster already has a CA; run `ballast cluster join-token`") &&
          none.includes("--join TOKEN"),
        none,
      );

      // A token, then the second node joins with it.
      const token = await joinToken(a);
      const b = await member(etcd, "node-b", ["--join", token]);
      nodes.push(b);
      assert(!b.logs().includes(token.split(".")[2]), "the token secret is not logged");
      assert(!a.logs().includes(token.split(".")[2]), "the token secret is not logged");
      for (const [api, creds] of [[a.api, b], [b.api, a], [a.api, a], [b.api, b]] as const) {
        assertEquals(
          await nodeNames(api, creds),
          ["node-a:ready", "node-b:ready"],
          `node list via ${api} with ${creds.dataDir}'s admin cert`,
        );
      }

      // Used twice: refused, naming the reason.
      const reused = await refusedServe(etcd, "node-c", ["--join", token]);
      assert(reused.includes("JOIN_TOKEN_USED") && reused.includes("node-b"), reused);

      // Forged: unknown id, or a known id with the wrong secret.
      const fresh = await joinToken(b); // any member makes tokens
      for (const forged of [alter(fresh, 1), alter(fresh, 2)]) {
        const err = await refusedServe(etcd, "node-f", ["--join", forged]);
        assert(err.includes("JOIN_TOKEN_INVALID"), err);
      }

      // Planted: a record written straight into etcd (no member's MAC) admits nobody.
      const secret = "00112233445566778899aabbccddeeff";
      const planted = {
        id: "evil01",
        secretSha256: Array.from(
          new Uint8Array(
            await crypto.subtle.digest("SHA-256", new TextEncoder().encode(secret)),
          ),
          (b) => b.toString(16).padStart(2, "0"),
        ).join(""),
        createdAt: new Date().toISOString(),
        expiresAt: new Date(Date.now() + 86_400_000).toISOString(),
        createdBy: "admin",
      };
      const put = await run("etcdctl", [
        `--endpoints=${etcd.endpoints[0]}`,
        "put",
        `${PREFIX}/ballast/cluster/join-tokens/evil01`,
        JSON.stringify(planted),
      ]);
      assertEquals(put.code, 0, put.stderr);
      const pin = fresh.split(".")[3];
      const plantedErr = await refusedServe(etcd, "node-x", [
        "--join",
        `ballast1.evil01.${secret}.${pin}`,
      ]);
      assert(plantedErr.includes("JOIN_TOKEN_INVALID"), plantedErr);

      // Another CA's pin: refused before anything is sent, so the token stays usable.
      const foreign = await refusedServe(etcd, "node-p", ["--join", alter(fresh, 3)]);
      assert(
        foreign.includes("JOIN_TOKEN_CA_MISMATCH") && foreign.includes("nothing was sent"),
        foreign,
      );

      // Expired.
      const short = await joinToken(a, "1s");
      await new Promise((r) => setTimeout(r, 1500));
      const expired = await refusedServe(etcd, "node-e", ["--join", short]);
      assert(expired.includes("JOIN_TOKEN_EXPIRED"), expired);

      // Two nodes racing with one token (the still unused `fresh`, through the env): one wins.
      const racers = await Promise.allSettled([
        startBallast({
          tls: true,
          args: clusterArgs(etcd, "node-r1"),
          env: { BALLAST_JOIN_TOKEN: fresh },
        }),
        startBallast({
          tls: true,
          args: clusterArgs(etcd, "node-r2"),
          env: { BALLAST_JOIN_TOKEN: fresh },
        }),
      ]);
      for (const r of racers) if (r.status === "fulfilled") nodes.push(r.value);
      const losers = racers.filter((r) => r.status === "rejected") as PromiseRejectedResult[];
      assertEquals(losers.length, 1, racers.map((r) => r.status).join(","));
      assert(String(losers[0].reason).includes("JOIN_TOKEN_USED"), String(losers[0].reason));

      // A member restarting with its data dir loads the CA from etcd (no token needed).
      const b2 = await b.restart();
      nodes[1] = b2;
      assert(b2.logs().includes("ballast ready"));
      const names = await nodeNames(b2.api, a);
      assert(names.includes("node-a:ready") && names.includes("node-b:ready"), names.join());
    } finally {
      for (const n of nodes.reverse()) await n.stop().catch(() => {});
      await etcd.stop();
    }
  },
);

/** The leaf certificate (PEM) that `b`'s peer listener presents now (openssl s_client). */
async function peerListenerCert(b: BallastProcess): Promise<string> {
  const line = b.logs().split("\n").find((l) => l.includes('"msg":"peer channel listening"'));
  assert(line, "the node logs its peer listener");
  const pki = `${b.dataDir}/pki`;
  const r = await run("sh", [
    "-c",
    `openssl s_client -connect ${JSON.parse(line).address} -cert ${pki}/node.crt ` +
    `-key ${pki}/node.key </dev/null 2>/dev/null | openssl x509`,
  ]);
  assertEquals(r.code, 0, r.stderr);
  return r.stdout.trim();
}

/** The first certificate of a PEM file. */
const firstPem = (text: string) =>
  text.slice(0, text.indexOf("-----END CERTIFICATE-----") + 25).trim();

e2eTest(
  "join: a joined node renews its own certificates with the cluster CA, and its replication listener presents the new one",
  { tools: [...tools, "openssl"] },
  async () => {
    const etcd = await startEtcd();
    const nodes: BallastProcess[] = [];
    try {
      // Leaves live 12 s here, so the joined node renews after about 8 s.
      const a = await member(etcd, "node-a", ["--cert-ttl", "12s"]);
      nodes.push(a);
      const token = await joinToken(a);
      const b = await member(etcd, "node-b", ["--join", token, "--cert-ttl", "12s"]);
      nodes.push(b);
      const before = await Deno.readTextFile(`${b.dataDir}/pki/node.crt`);
      const deadline = Date.now() + 30_000;
      const renewedNode = () =>
        b.logs().split("\n").some((l) =>
          l.includes("certificates renewed") && l.includes('"node"')
        );
      while (!renewedNode()) {
        assert(Date.now() < deadline, `node-b did not renew node.crt:\n${b.logs().slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 250));
      }
      const after = await Deno.readTextFile(`${b.dataDir}/pki/node.crt`);
      assert(before !== after, "node.crt reissued");
      assertEquals(await peerListenerCert(b), firstPem(after), "the peer listener reloaded it");
      assertEquals(await nodeNames(b.api, b), ["node-a:ready", "node-b:ready"]);
      assertEquals(await nodeNames(b.api, a), ["node-a:ready", "node-b:ready"]);
    } finally {
      for (const n of nodes.reverse()) await n.stop().catch(() => {});
      await etcd.stop();
    }
  },
);

e2eTest(
  "join: a member started against an etcd prefix with no cluster is refused (a wrong --etcd-prefix) and writes nothing there; --new-cluster on founds the cluster there again",
  { tools },
  async () => {
    const etcd = await startEtcd();
    let n1: BallastProcess | undefined;
    let dir = "";
    try {
      n1 = await member(etcd, "n1");
      dir = n1.dataDir;
      await n1.kill("SIGTERM");
      const other = ["--etcd-prefix", "/other"];
      const refused = await refusedServe(etcd, "n1", other, dir);
      assert(refused.includes("has no cluster under --etcd-prefix /other"), refused);
      assert(refused.includes("--new-cluster on"), refused);
      const keys = await run("etcdctl", [
        `--endpoints=${etcd.endpoints.join(",")}`,
        "get",
        "--prefix",
        "/other",
        "--keys-only",
      ]);
      assertEquals(keys.stdout.trim(), "", "nothing written under the wrong prefix");
      // Told to, it founds the cluster there with its own CA; its first prefix still works.
      n1 = await startBallast({
        tls: true,
        dataDir: dir,
        args: clusterArgs(etcd, "n1", [...other, "--new-cluster", "on"]),
      });
      assert(await n1.logged("cluster CA stored in etcd"), n1.logs());
      await n1.kill("SIGTERM");
      n1 = await startBallast({ tls: true, dataDir: dir, args: clusterArgs(etcd, "n1") });
    } finally {
      await n1?.stop();
      if (dir) await Deno.remove(dir, { recursive: true }).catch(() => {});
      await etcd.stop();
    }
  },
);
