/**
 * The node's TLS contexts (control/tls/node_tls.ts) follow the trust bundle: once a retired
 * CA's overlap has ended, the next renewal check rebuilds them without it (they named it to
 * clients as an acceptable CA and sent it in the chain until the next certificate renewal).
 */

import { silentLogger } from "../../../control/common/mod.ts";
import { setupNodeTls } from "../../../control/tls/node_tls.ts";
import { assert, assertEquals } from "../../_assert.ts";

Deno.test("renewal check: a retired CA's overlap ended rebuilds the TLS contexts without it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ballast-node-tls-" });
  const tls = await setupNodeTls({
    dataDir: dir,
    nodeName: "n1",
    apiListen: { host: "127.0.0.1", port: 5705 },
    nbdListen: { host: "127.0.0.1", port: 10809 },
    certTtlSeconds: 30 * 86400,
  }, silentLogger());
  let reloads = 0;
  const stop = tls.startRenewal(() => void reloads++, 3_600_000); // ticks only by renewNow()
  try {
    await tls.pki.rotateCa({ overlapSeconds: 1 });
    tls.reload(); // as the rotation's caller does
    const roots = (pem: string) => pem.match(/BEGIN CERTIFICATE/g)?.length ?? 0;
    assertEquals(roots(tls.pki.credentials("node").ca), 2, "both roots in the overlap");
    await tls.renewNow();
    assertEquals(reloads, 0, "nothing changed yet");
    await new Promise((r) => setTimeout(r, 1_200)); // the overlap ends
    await tls.renewNow();
    assertEquals(reloads, 1, "rebuilt once the bundle lost the retired root");
    assertEquals(roots(tls.pki.credentials("node").ca), 1);
    await tls.renewNow();
    assertEquals(reloads, 1, "and not again");
    assert(roots(await Deno.readTextFile(`${dir}/pki/ca-bundle.crt`)) === 1, "file rewritten");
  } finally {
    stop();
    await Deno.remove(dir, { recursive: true });
  }
});
