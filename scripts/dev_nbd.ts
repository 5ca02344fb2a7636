// deno-lint-ignore-file no-console
/** Development helper: serve one file-backed volume over NBD without the control plane. */
import { startDataPlane } from "../data/mod.ts";
import { createLogger } from "../control/common/mod.ts";
const [dir, port = "10809", size = String(1 << 30)] = Deno.args;
const plane = await startDataPlane({
  dataDir: dir,
  nbdListen: { host: "127.0.0.1", port: Number(port) },
  logger: createLogger({ level: (Deno.env.get("LOG") as "info") ?? "warn" }),
  nodeName: "dev",
});
const uuid = "00000000-0000-4000-8000-000000000001";
try {
  await plane.openVolume({ name: "vol", uuid, sizeBytes: Number(size), description: "dev" });
} catch {
  await plane.createVolume({ name: "vol", uuid, sizeBytes: Number(size), description: "dev" });
}
console.log(`serving nbd://${plane.nbdAddress}/vol`);
Deno.addSignalListener("SIGTERM", async () => {
  await plane.close();
  Deno.exit(0);
});
