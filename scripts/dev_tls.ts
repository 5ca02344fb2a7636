// deno-lint-ignore-file no-console
/** Development helper: serve one volume over NBD with STARTTLS required (certs from a dir). */
import { createSecureContext } from "node:tls";
import { X509Certificate } from "node:crypto";
import { startDataPlane } from "../data/mod.ts";
import { startTlsServer } from "../data/nbd/node_transport.ts";
import type { NodeSocketTransport } from "../data/nbd/node_transport.ts";
import { createLogger } from "../control/log.ts";
const [dir, pki, port = "10920"] = Deno.args;
const ctx = createSecureContext({
  key: Deno.readTextFileSync(`${pki}/server-key.pem`),
  cert: Deno.readTextFileSync(`${pki}/server-cert.pem`),
  ca: Deno.readTextFileSync(`${pki}/ca-cert.pem`),
  minVersion: "TLSv1.2",
});
const plane = await startDataPlane({
  dataDir: dir,
  nbdListen: { host: "127.0.0.1", port: Number(port) },
  logger: createLogger({ level: (Deno.env.get("LOG") as "info") ?? "warn" }),
  nodeName: "dev",
  policy: () => ({ tlsAvailable: true, tlsRequired: true }),
  startTls: async (t) => {
    const { transport, peer } = await startTlsServer(t as NodeSocketTransport, () => ctx);
    const ca = new X509Certificate(Deno.readTextFileSync(`${pki}/ca-cert.pem`));
    if (!peer.certificate || !new X509Certificate(peer.certificate).verify(ca.publicKey)) {
      transport.close();
      throw new Error(`client certificate refused (authorized=${peer.authorized})`);
    }
    return { transport, identity: "client" };
  },
});
const uuid = "00000000-0000-4000-8000-000000000002";
try {
  await plane.openVolume({ name: "vol", uuid, sizeBytes: 1 << 30, description: "dev" });
} catch {
  await plane.createVolume({ name: "vol", uuid, sizeBytes: 1 << 30, description: "dev" });
}
console.log(`serving nbds://${plane.nbdAddress}/vol`);
