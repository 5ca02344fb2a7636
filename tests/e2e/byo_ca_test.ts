/**
 * Bring your own CA, with openssl playing the operator's PKI: an intermediate that
 * Ballast signs with, and an external CA that signs Ballast's CSRs.
 */

import { assert, assertEquals } from "../_assert.ts";
import { cli, e2eTest, run, startBallast } from "./_harness.ts";

async function openssl(dir: string, script: string): Promise<void> {
  const r = await run("bash", ["-ec", script], { cwd: dir });
  assertEquals(r.code, 0, r.stderr);
}

const ROOT = `
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out root.key 2>/dev/null
openssl req -x509 -new -key root.key -subj /CN=corp-root -days 30 -out root.crt \\
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
`;

e2eTest(
  "an operator's intermediate CA signs every Ballast certificate; clients trust only the root",
  { tools: ["openssl", "nbdinfo"] },
  async () => {
    const tmp = await Deno.makeTempDir({ prefix: "ballast-byo-" });
    let b: Awaited<ReturnType<typeof startBallast>> | undefined;
    try {
      await openssl(
        tmp,
        ROOT + `
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out int.key
openssl req -new -key int.key -subj /CN=ballast-int -out int.csr
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\\nkeyUsage=critical,keyCertSign,cRLSign\\n' > int.ext
openssl x509 -req -in int.csr -CA root.crt -CAkey root.key -CAcreateserial -days 20 \\
  -extfile int.ext -out int.crt 2>/dev/null
`,
      );
      const data = `${tmp}/data`;
      const init = await cli([
        "ca",
        "init",
        "--data-dir",
        data,
        "--ca-cert",
        `${tmp}/int.crt`,
        "--ca-key",
        `${tmp}/int.key`,
        "--ca-chain",
        `${tmp}/root.crt`,
      ]);
      assertEquals(init.code, 0, init.stderr);
      b = await startBallast({ tls: true, dataDir: data });
      const admin = (args: string[]) => cli([...args, "--data-dir", data], { api: b!.api });
      assertEquals((await admin(["volume", "create", "v", "--size", "64MiB"])).code, 0);
      const certDir = `${tmp}/client`;
      assertEquals(
        (await admin([
          "ca",
          "issue",
          "c1",
          "--role",
          "nbd-client",
          "--volumes",
          "v",
          "--out",
          certDir,
        ]))
          .code,
        0,
      );
      // The client trusts the operator's root only; the node sends its chain.
      await Deno.copyFile(`${tmp}/root.crt`, `${certDir}/ca-cert.pem`);
      const size = await run("nbdinfo", [
        "--size",
        `nbds://${b.nbdHost}:${b.nbdPort}/v?tls-certificates=${certDir}`,
      ]);
      assertEquals([size.code, size.stdout.trim()], [0, String(64 * 2 ** 20)], size.stderr);
      const verify = await run("openssl", [
        "verify",
        "-CAfile",
        `${tmp}/root.crt`,
        "-untrusted",
        `${tmp}/int.crt`,
        `${data}/pki/node.crt`,
      ]);
      assertEquals(verify.code, 0, verify.stdout + verify.stderr);
      const show = await admin(["ca", "show", "-o", "json"]);
      assertEquals(JSON.parse(show.stdout).mode, "intermediate");
    } finally {
      await b?.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
);

e2eTest(
  "external CA: serve writes CSRs and says what to do; signed certificates imported offline work",
  { tools: ["openssl"] },
  async () => {
    const tmp = await Deno.makeTempDir({ prefix: "ballast-ext-" });
    let b: Awaited<ReturnType<typeof startBallast>> | undefined;
    try {
      await openssl(tmp, ROOT);
      const data = `${tmp}/data`;
      const init = await cli(["ca", "init", "--data-dir", data, "--ca-cert", `${tmp}/root.crt`]);
      assertEquals(init.code, 0, init.stderr);
      // No node certificate yet: the node refuses to start and names the CSRs to sign.
      const first = await startBallast({ tls: true, dataDir: data, args: ["--node-name", "n1"] })
        .then(() => "started", (e: Error) => e.message);
      assert(first.includes("external CA mode: sign"), first);
      assert(first.includes(`${data}/pki/node.csr`), first);
      await openssl(
        tmp,
        `
printf 'basicConstraints=critical,CA:FALSE\\nkeyUsage=critical,digitalSignature\\nextendedKeyUsage=serverAuth,clientAuth\\n' > node.ext
printf 'basicConstraints=critical,CA:FALSE\\nkeyUsage=critical,digitalSignature\\nextendedKeyUsage=clientAuth\\n' > admin.ext
for w in node admin; do
  openssl x509 -req -in data/pki/$w.csr -CA root.crt -CAkey root.key -CAcreateserial -days 5 \\
    -copy_extensions copyall -extfile $w.ext -out $w.crt 2>/dev/null
done
`,
      );
      const imp = await cli([
        "ca",
        "init",
        "--data-dir",
        data,
        "--node-name",
        "n1",
        "--import-node",
        `${tmp}/node.crt`,
        "--import-admin",
        `${tmp}/admin.crt`,
      ]);
      assertEquals(imp.code, 0, imp.stderr);
      b = await startBallast({ tls: true, dataDir: data, args: ["--node-name", "n1"] });
      const nodes = await cli(["node", "list", "-o", "json", "--data-dir", data], { api: b.api });
      assertEquals(nodes.code, 0, nodes.stderr);
      assertEquals(JSON.parse(nodes.stdout).items[0].name, "n1");
    } finally {
      await b?.stop();
      await Deno.remove(tmp, { recursive: true });
    }
  },
);
