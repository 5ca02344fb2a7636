/**
 * CA rotation across a cluster, end to end: a real etcd, two real TLS `ballast serve --etcd`
 * nodes, the real CLI, nbdinfo and openssl. `ca rotate` through A puts a new root in etcd;
 * B, down meanwhile, adopts it at its restart; a second rotation through B is adopted by A
 * while it runs. Certificates from every root in its overlap keep working on both nodes,
 * and each node's own certificates move to the newest root.
 */

import { assert, assertEquals } from "../_assert.ts";
import { startEtcd } from "../control/_etcd_harness.ts";
import type { CaInfo } from "../../mod/types.ts";
import { type BallastProcess, cli, e2eTest, run } from "./_harness.ts";
import { admin, apiStatus, canOpen, issue, member } from "./_cluster_tls.ts";

const tools = ["etcd", "etcdctl", "nbdinfo", "openssl"];
const ADOPT_MS = 10_000;

async function caShow(b: BallastProcess): Promise<CaInfo> {
  const r = await admin(b, ["ca", "show", "-o", "json"]);
  assertEquals(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as CaInfo;
}

const current = (info: CaInfo) => info.certificates[0].sha256Fingerprint;
const trusted = (info: CaInfo) => info.trusted.map((c) => c.sha256Fingerprint);

/** openssl: `b`'s node.crt is signed by `b`'s current ca.crt, and by nothing else trusted. */
async function nodeCertUnderCurrentCa(b: BallastProcess): Promise<string> {
  const pki = `${b.dataDir}/pki`;
  const r = await run("openssl", [
    "verify",
    "-x509_strict",
    "-CAfile",
    `${pki}/ca.crt`,
    `${pki}/node.crt`,
  ]);
  return r.code === 0 ? "ok" : r.stdout + r.stderr;
}

/**
 * Whether `b`'s peer (replication) listener presents a certificate that chains to `caPem`
 * (a TLS handshake trusting that root alone, with `b`'s own node certificate as the client).
 */
async function peerCertUnder(b: BallastProcess, caPem: string): Promise<boolean> {
  const line = b.logs().split("\n").find((l) => l.includes('"msg":"peer channel listening"'));
  assert(line, "the node logs its peer listener");
  const address = JSON.parse(line).address as string;
  const at = address.lastIndexOf(":");
  const pki = `${b.dataDir}/pki`;
  try {
    const conn = await Deno.connectTls({
      hostname: address.slice(0, at),
      port: Number(address.slice(at + 1)),
      caCerts: [caPem],
      cert: await Deno.readTextFile(`${pki}/node.crt`),
      key: await Deno.readTextFile(`${pki}/node.key`),
    });
    try {
      await conn.handshake();
      return true;
    } finally {
      conn.close();
    }
  } catch {
    return false;
  }
}

e2eTest(
  "cluster: ca rotate moves every member to the new root (B at restart, A live); old certificates work through the overlap",
  { tools },
  async () => {
    const etcd = await startEtcd();
    const bDir = await Deno.makeTempDir({ prefix: "ballast-rotate-b-" });
    const nodes: BallastProcess[] = [];
    const dirs: string[] = [bDir];
    try {
      const a = await member(etcd, "node-a");
      nodes.push(a);
      const t = await admin(a, ["cluster", "join-token", "-o", "json"]);
      assertEquals(t.code, 0, t.stderr);
      const token = (JSON.parse(t.stdout) as { token: string }).token;
      let b = await member(etcd, "node-b", ["--join", token], bDir);
      nodes.push(b);

      assertEquals((await admin(a, ["volume", "create", "v1", "--size", "4MiB"])).code, 0);
      const vmOld = await issue(a, "vm-old", ["--role", "nbd-client", "--volumes", "v1"]);
      const opsOld = await issue(a, "ops-old", ["--role", "admin"]);
      dirs.push(vmOld.dir, opsOld.dir);
      const root0 = current(await caShow(a));
      assertEquals(current(await caShow(b)), root0, "B joined under A's CA");

      // B is down while A rotates.
      await b.stop();
      const rot = await admin(a, ["ca", "rotate", "--overlap", "1h", "-o", "json"]);
      assertEquals(rot.code, 0, rot.stderr);
      const root1 = current(JSON.parse(rot.stdout) as CaInfo);
      assert(root1 !== root0, "rotate made a new root");
      const onA = await caShow(a);
      assertEquals(current(onA), root1);
      assert(trusted(onA).includes(root0), `A trusts the old root in the overlap: ${trusted(onA)}`);
      assertEquals(await nodeCertUnderCurrentCa(a), "ok", "A's node.crt moved to the new root");

      // A now presents a certificate from the new root: with the old bundle a client cannot
      // verify it; with the new one (ca show --pem) its old-root certificate still works.
      assert(!(await canOpen(a, "v1", vmOld.dir)), "the old bundle does not verify A any more");
      for (const d of [vmOld.dir, opsOld.dir]) {
        await Deno.writeTextFile(`${d}/ca-cert.pem`, onA.bundlePem);
      }
      assert(await canOpen(a, "v1", vmOld.dir), "the old-root nbd-client certificate opens v1");
      const vmNew = await issue(a, "vm-new", ["--role", "nbd-client", "--volumes", "v1"]);
      dirs.push(vmNew.dir);
      assert(await canOpen(a, "v1", vmNew.dir), "a new-root nbd-client certificate opens v1");
      assertEquals(await apiStatus(a.api, opsOld.dir), 200, "old-root admin on A's API");

      // B adopts the rotation at its restart: same CA as A, old root still trusted.
      nodes.pop();
      b = await member(etcd, "node-b", [], bDir);
      nodes.push(b);
      const onB = await caShow(b);
      assertEquals(current(onB), root1, "B adopted the new root at start");
      assert(trusted(onB).includes(root0), `B trusts the old root in the overlap: ${trusted(onB)}`);
      assertEquals(await nodeCertUnderCurrentCa(b), "ok", "B's node.crt moved to the new root");
      assertEquals(await apiStatus(b.api, opsOld.dir), 200, "old-root admin on B's API");
      assert(await canOpen(a, "v1", vmNew.dir), "new-root client still opens v1 on A");
      assert(await b.logged("the local CA differs from the cluster CA"), "B says so");

      // A join token pins the CA it was made under.
      const t1 = await admin(a, ["cluster", "join-token", "-o", "json"]);
      assertEquals(t1.code, 0, t1.stderr);
      const tokenRoot1 = (JSON.parse(t1.stdout) as { token: string }).token;

      // A second rotation, through B: A adopts it live, without a restart.
      const rot2 = await admin(b, ["ca", "rotate", "--overlap", "1h", "-o", "json"]);
      assertEquals(rot2.code, 0, rot2.stderr);
      const root2 = current(JSON.parse(rot2.stdout) as CaInfo);
      assert(root2 !== root1 && root2 !== root0);
      const asked = Date.now();
      let live = await caShow(a);
      while (current(live) !== root2 && Date.now() - asked < ADOPT_MS) {
        await new Promise((r) => setTimeout(r, 200));
        live = await caShow(a);
      }
      assertEquals(current(live), root2, `A adopted B's rotation within ${ADOPT_MS} ms`);
      for (const root of [root0, root1]) {
        assert(trusted(live).includes(root), `A still trusts ${root}: ${trusted(live)}`);
      }
      assertEquals(await nodeCertUnderCurrentCa(a), "ok", "A's node.crt moved to the newest root");
      // Its replication listener too: masters that trust only the new roots can reach it.
      const caNow = await Deno.readTextFile(`${a.dataDir}/pki/ca.crt`);
      assert(await peerCertUnder(a, caNow), "A's peer listener presents a newest-root certificate");
      assert(await a.logged("adopted the cluster CA"), "A logs the adoption");

      for (const d of [vmOld.dir, opsOld.dir]) {
        await Deno.writeTextFile(`${d}/ca-cert.pem`, live.bundlePem);
      }
      // A's API now serves a certificate under root2: a client trusting only root2 gets in.
      const ops2 = await issue(b, "ops-2", ["--role", "admin"]);
      dirs.push(ops2.dir);
      await Deno.copyFile(`${a.dataDir}/pki/ca.crt`, `${ops2.dir}/ca-cert.pem`);
      assertEquals(await apiStatus(a.api, ops2.dir), 200, "root2-only client on A's API");
      // A token made before the rotation is refused, saying why.
      const cDir = await Deno.makeTempDir({ prefix: "ballast-rotate-c-" });
      dirs.push(cDir);
      const c = await cli([
        "serve",
        "--data-dir",
        cDir,
        "--api-listen",
        "127.0.0.1:0",
        "--nbd-listen",
        "127.0.0.1:0",
        "--etcd",
        etcd.endpoints.join(","),
        "--node-name",
        "node-c",
        "--join",
        tokenRoot1,
      ], { timeoutMs: 60_000 });
      assertEquals(c.code, 1, c.stdout + c.stderr);
      assert(c.stderr.includes("rotated out"), c.stderr);
      // And the oldest certificates still work everywhere (both overlaps run for an hour).
      assert(await canOpen(a, "v1", vmOld.dir), "root0 nbd-client on A after two rotations");
      assertEquals(await apiStatus(b.api, opsOld.dir), 200, "root0 admin on B");
    } finally {
      for (const n of nodes.reverse()) await n.stop().catch(() => {});
      for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
      await etcd.stop();
    }
  },
);
