/**
 * A master that serves a volume again at the epoch it served it at before (its process
 * restarted while its lease held) starts new replication sessions with the members before it
 * serves (data/replication/sessions.ts resume): a change its previous process sent that
 * reaches a member only now is refused instead of landing after the new process's writes.
 * And it compares its copy with the members' (master.ts reconcile), as a promoted master
 * does: a write its previous process applied here but never sent reaches them.
 * Real data planes on real copies, the real peer channel with TLS and a real PKI, a real NBD
 * client; the restart is a second data plane on the first one's data directory.
 */

import { openPki } from "../../../ca/mod.ts";
import { silentLogger } from "../../../control/common/mod.ts";
import { startDataPlane } from "../../../data/mod.ts";
import { CopyHashes } from "../../../data/replication/mod.ts";
import { FileBlockStore } from "../../../data/store/mod.ts";
import { connectPeer, listenPeer, nodeVerifier } from "../../../data/peer/mod.ts";
import {
  decodeReply,
  encodeRequest,
  type Request,
  STATUS_STALE_SESSION,
  T_WRITE,
} from "../../../data/replication/wire.ts";
import { assertEquals } from "../../_assert.ts";
import { RawClient } from "../nbd/_raw_client.ts";

const KIB = 1024;

function block(fill: number): Uint8Array {
  return new Uint8Array(4 * KIB).fill(fill);
}

async function firstBlock(path: string): Promise<Uint8Array> {
  using f = await Deno.open(path, { read: true });
  const b = new Uint8Array(4 * KIB);
  let done = 0;
  while (done < b.length) done += (await f.read(b.subarray(done))) ?? b.length;
  return b;
}

/** A replica node "b" on a peer listener, and processes of a master node "a" to it. */
async function world() {
  const log = silentLogger();
  const root = await Deno.makeTempDir({ prefix: "ballast-resume-" });
  const pki = await openPki(`${root}/pki`, { nodeName: "b", ipAddresses: ["127.0.0.1"] });
  const issued = await pki.issue({ role: "node", name: "a", ipAddresses: ["127.0.0.1"] });
  const aCredentials = { key: issued.keyPem!, cert: issued.certPem, ca: pki.trustBundlePem() };
  const spec = { name: "r", uuid: crypto.randomUUID(), sizeBytes: 1 << 20, description: "" };
  const b = await startDataPlane({
    dataDir: `${root}/b`,
    nbdListen: { host: "127.0.0.1", port: 0 },
    logger: log,
    nodeName: "b",
  });
  await b.createVolume(spec, { export: false });
  const replicas = b.replicaService(log);
  const serving: Promise<void>[] = [];
  const listener = await listenPeer({
    host: "127.0.0.1",
    port: 0,
    credentials: () => pki.credentials("node"),
    verify: nodeVerifier(pki, "clientAuth"),
    onConnection: (c) => void serving.push(replicas.serve(c).catch(() => {})),
    logger: log,
  });
  const [host, port] = listener.address.split(":");
  const failures: string[][] = [];
  const replication = {
    epoch: 1,
    targets: [{ node: "b", address: listener.address }],
    onReplicasFailed: (nodes: string[]) => {
      failures.push(nodes);
      return Promise.resolve();
    },
  };
  let a: Awaited<ReturnType<typeof startDataPlane>> | undefined;
  /** A process of the master node: a data plane on its data directory, serving the volume. */
  const master = async (create = false) => {
    await a?.close();
    a = await startDataPlane({
      dataDir: `${root}/a`,
      nbdListen: { host: "127.0.0.1", port: 0 },
      logger: log,
      nodeName: "a",
      connectNode: (node) =>
        connectPeer({
          host,
          port: Number(port),
          expectNode: node,
          credentials: () => aCredentials,
          verify: nodeVerifier(pki, "serverAuth"),
          timeoutMs: 5000,
        }),
    });
    if (create) await a.createVolume(spec, { export: false });
    await a.openVolume(spec, { replication });
    return a;
  };
  const write = async (fill: number) => {
    const c = await RawClient.open(a!.nbdAddress, spec.name);
    try {
      return await c.write(0, block(fill));
    } finally {
      await c.close();
    }
  };
  return {
    log,
    spec,
    async stop() {
      await a?.close();
      a = undefined;
    },
    replicas,
    failures,
    master,
    write,
    bCopy: () => b.copyPath!(spec.uuid)!,
    aCopy: () => a!.copyPath!(spec.uuid)!,
    async [Symbol.asyncDispose]() {
      await a?.close();
      await listener.close();
      await Promise.all(serving);
      await b.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

Deno.test("a master serving again at the same epoch starts new sessions first: its previous process's late change is refused, its own are applied", async () => {
  await using w = await world();
  await w.master(true);
  assertEquals(await w.write(1), 0);
  assertEquals(await firstBlock(w.bCopy()), block(1), "replicated");
  // A change the first process sent that is still on its way (the member's socket, a
  // connection the dead process's kernel still retransmits): untagged, as it was sent.
  const late = encodeRequest(
    {
      type: T_WRITE,
      id: 99,
      volume: w.spec.uuid,
      epoch: 1,
      flags: 0,
      offset: 0,
      data: block(9),
    } as Request,
  );
  // The process restarts; the record still names it master at epoch 1.
  await w.master();
  const refused = decodeReply(await w.replicas.handle(late, w.log));
  assertEquals(refused.status, STATUS_STALE_SESSION, "the previous process's change");
  assertEquals(await firstBlock(w.bCopy()), block(1), "and it changed nothing");
  assertEquals(await w.write(2), 0, "the new process's writes are applied");
  assertEquals(await firstBlock(w.bCopy()), block(2));
  assertEquals(await firstBlock(w.aCopy()), block(2));
  assertEquals(w.failures, [], "the member stayed in sync: no refusal, no resync needed");
});

Deno.test("a master serving again at the same epoch compares the copies: a write its previous process applied here and never sent reaches the member", async () => {
  await using w = await world();
  await w.master(true);
  assertEquals(await w.write(1), 0);
  const aPath = w.aCopy();
  await w.stop();
  // The process died between applying a write here and sending it. The write went through
  // the copy's write tracking, as every write does (its region marked dirty first).
  const hashes = new CopyHashes(w.log);
  const state = await hashes.acquire(aPath);
  await state.writer.enter(0, 4 * KIB);
  const store = FileBlockStore.open(aPath);
  try {
    store.write(block(7), 0);
  } finally {
    store.close();
  }
  state.writer.leave(0, 4 * KIB);
  await hashes.release(aPath);
  assertEquals(await firstBlock(w.bCopy()), block(1));
  // Restarted at the same epoch: it serves its copy (block 7), and the member gets it too.
  await w.master();
  const deadline = Date.now() + 20_000;
  let b = await firstBlock(w.bCopy());
  while (b[0] !== 7 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    b = await firstBlock(w.bCopy());
  }
  assertEquals(b, block(7), "the member's copy was made equal to the master's");
  assertEquals(w.failures, []);
});
