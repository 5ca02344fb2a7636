/**
 * A forwarding node's connections to a master, fenced by generation (data/forwarder_fences.ts):
 * a real `ballast serve --etcd` with TLS (a cluster node: it takes node certificates on NBD,
 * as masters do from forwarding nodes), and two connections made as a forwarding node makes them
 * (STARTTLS with a node's certificate, NBD_OPT_BALLAST_FORWARDER naming the same forwarder,
 * generations 1 then 2). Once the newer one is attached, the older one's changes are refused
 * with ESHUTDOWN and change nothing, its reads still work, and the newer one's changes run.
 */

import { assertEquals } from "../_assert.ts";
import * as C from "../../data/nbd/constants.ts";
import { Upstream, type UpstreamRequest } from "../../data/proxy/mod.ts";
import { startEtcd } from "../control/_etcd_harness.ts";
import { type BallastProcess, cli, e2eTest, startBallast } from "./_harness.ts";

const ESHUTDOWN = 108;

function call(up: Upstream, req: UpstreamRequest): Promise<{ error: number; data?: Uint8Array }> {
  return new Promise((resolve) =>
    up.send(req, (r) => resolve({ error: r.error, data: r.data?.slice() }))
  );
}

const block = (fill: number) => new Uint8Array(4096).fill(fill);
const write = (up: Upstream, fill: number) =>
  call(up, { type: C.NBD_CMD_WRITE, flags: 0, offset: 0, length: 4096, data: block(fill) });
const read = async (up: Upstream) => {
  const r = await call(up, { type: C.NBD_CMD_READ, flags: 0, offset: 0, length: 4096 });
  return r.error === 0 ? r.data![0] : -r.error;
};

/** A connection as a forwarding node makes it, with `b`'s own node certificate. */
async function forwarding(
  b: BallastProcess,
  gen: number,
  id: [number, number] = [0x1234, 0x5678],
): Promise<Upstream> {
  const pki = `${b.dataDir}/pki`;
  return await Upstream.connect({
    host: b.nbdHost,
    port: b.nbdPort,
    exportName: "v",
    tls: {
      key: await Deno.readTextFile(`${pki}/node.key`),
      cert: await Deno.readTextFile(`${pki}/node.crt`),
      ca: await Deno.readTextFile(`${pki}/ca-bundle.crt`),
    },
    forwarder: { id, gen },
  });
}

e2eTest(
  "a forwarding node's older connection is fenced once its newer one attached: its changes are refused (ESHUTDOWN) and change nothing, the newer one's run",
  { tools: ["etcd"] },
  async () => {
    const etcd = await startEtcd();
    const b = await startBallast({ tls: true, args: ["--etcd", etcd.endpoints[0]] });
    const open: Upstream[] = [];
    try {
      const created = await cli([
        "volume",
        "create",
        "v",
        "--size",
        "16MiB",
        "--data-dir",
        b.dataDir,
      ], {
        api: b.api,
      });
      assertEquals(created.code, 0, created.stderr);
      const old = await forwarding(b, 1);
      open.push(old);
      assertEquals((await write(old, 1)).error, 0, "alone, the first connection writes");
      const other = await forwarding(b, 1, [0x9, 0x9]); // another forwarder: not fenced by it
      open.push(other);
      const newer = await forwarding(b, 2);
      open.push(newer);
      assertEquals((await write(old, 7)).error, ESHUTDOWN, "the replaced connection's change");
      assertEquals(await read(newer), 1, "nothing of it landed");
      assertEquals(await read(old), 1, "its reads still work");
      assertEquals((await write(newer, 2)).error, 0);
      assertEquals((await write(other, 3)).error, 0, "another forwarder's connection");
      assertEquals(await read(newer), 3);
      newer.close();
      open.pop();
      assertEquals((await write(old, 9)).error, ESHUTDOWN, "still fenced after the newer ended");
      assertEquals(await read(other), 3);
      const logs = b.logs();
      assertEquals(
        logs.includes('"forwarderGeneration":2'),
        true,
        "the attach names the generation",
      );
    } finally {
      for (const up of open) up.close();
      await b.stop();
      await etcd.stop();
    }
  },
);
