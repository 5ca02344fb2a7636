/**
 * `ballast ca init`: offline CA set-up in a data directory, before the node's first start
 * (or while it is stopped). It never talks to the API:
 *
 *   ballast ca init --data-dir D --ca-cert int.crt --ca-key int.key [--ca-chain root.crt]
 *       bring your own CA: an intermediate under your root that Ballast signs with
 *   ballast ca init --data-dir D --ca-cert your-ca.crt [--ca-chain ...]
 *       external CA: no CA key here; `ballast serve` writes node.csr and admin.csr for you
 *       to sign, then `ballast ca init --data-dir D --import-node node.crt --import-admin admin.crt`
 * @module
 */

import { join } from "node:path";
import { installCa, openPki } from "../../ca/mod.ts";
import { BallastError, errorMessage } from "../../mod/errors.ts";
import {
  type Command,
  command,
  type CommandSpec,
  requirePositionals,
  UsageError,
  usageHint,
} from "./_command.ts";

export const CA_INIT_SPEC: CommandSpec = {
  path: "ca init",
  args: "--data-dir DIR (--ca-cert FILE [--ca-key FILE] [--ca-chain FILE] | --import-node FILE)",
  summary: "Offline: bring your own CA into DIR/pki before the node first starts, or install " +
    "certificates your external CA signed while the node is stopped. Talks to no API.",
  flags: [
    { name: "data-dir", value: "DIR", help: "the node's data directory; required" },
    { name: "ca-cert", value: "FILE", help: "your CA certificate (PEM): intermediate or external" },
    { name: "ca-key", value: "FILE", help: "its private key (PKCS#8 PEM); omit for external mode" },
    { name: "ca-chain", value: "FILE", help: "certificates above --ca-cert, nearest first" },
    { name: "import-node", value: "FILE", help: "external mode: the signed node.csr" },
    { name: "import-admin", value: "FILE", help: "external mode: the signed admin.csr" },
    { name: "node-name", value: "NAME", help: "node name (external import)", default: "host name" },
  ],
  client: false,
  examples: [
    "ballast ca init --data-dir /var/lib/ballast --ca-cert int.crt --ca-key int.key --ca-chain root.crt",
    "ballast ca init --data-dir /var/lib/ballast --ca-cert corp-ca.crt",
    "ballast ca init --data-dir /var/lib/ballast --import-node node.crt --import-admin admin.crt",
  ],
};

async function readFile(path: string, flag: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    throw new UsageError(
      `cannot read --${flag} ${path}: ${errorMessage(err)}`,
      usageHint(CA_INIT_SPEC),
    );
  }
}

export const caInitCommand: Command = command(CA_INIT_SPEC, async (p, io) => {
  requirePositionals(CA_INIT_SPEC, p, []);
  const str = (k: string) => p.values[k] as string | undefined;
  const dataDir = str("data-dir");
  if (!dataDir) throw new UsageError("missing --data-dir DIR", usageHint(CA_INIT_SPEC));
  const dir = join(dataDir, "pki");
  const caCert = str("ca-cert");
  const importNode = str("import-node");
  const importAdmin = str("import-admin");
  if (!caCert && !importNode && !importAdmin) {
    throw new UsageError(
      "nothing to do: give --ca-cert (bring your own CA) or --import-node/--import-admin",
      usageHint(CA_INIT_SPEC),
    );
  }
  if (caCert) {
    const keyFile = str("ca-key");
    const chainFile = str("ca-chain");
    await installCa(dir, {
      certPem: await readFile(caCert, "ca-cert"),
      keyPem: keyFile ? await readFile(keyFile, "ca-key") : undefined,
      chainPem: chainFile ? await readFile(chainFile, "ca-chain") : undefined,
    });
    io.out(
      keyFile
        ? `installed your CA in ${dir}: Ballast signs its certificates with it from the first start\n`
        : `installed external CA ${caCert} in ${dir}: the first \`ballast serve\` writes ` +
          `${dir}/node.csr (and admin.csr) for your CA to sign\n`,
    );
  }
  if (importNode || importAdmin) {
    const nodeName = str("node-name") ?? Deno.hostname().toLowerCase().split(".")[0];
    const pki = await openPki(dir, { nodeName });
    for (const [which, file] of [["node", importNode], ["admin", importAdmin]] as const) {
      if (!file) continue;
      try {
        await pki.importSigned(which, await readFile(file, `import-${which}`));
      } catch (err) {
        throw err instanceof BallastError ? err : new BallastError(
          "INVALID_ARGUMENT",
          `cannot install ${file} as the ${which} certificate: ${errorMessage(err)}`,
        );
      }
      io.out(`installed ${file} as ${dir}/${which}.crt\n`);
    }
  }
  return 0;
});
