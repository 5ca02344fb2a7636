import { installCa, parseCertificates } from "../../../ca/mod.ts";
import { BallastClient } from "../../../mod/client.ts";
import { BallastError } from "../../../mod/errors.ts";
import { assert, assertEquals, assertRejects } from "../../_assert.ts";
import { HAVE_OPENSSL, opensslTest, operatorCa, tempDir } from "../../ca/_helpers.ts";
import { startTlsNode } from "../_tls_node.ts";

Deno.test(
  opensslTest(
    "ca rotate on your own intermediate: refused without a new CA, moves to the one given",
  ),
  {
    ignore: !HAVE_OPENSSL,
  },
  async () => {
    await using t = await tempDir();
    await Deno.mkdir(`${t.dir}/one`);
    await Deno.mkdir(`${t.dir}/two`);
    const [one, two] = [await operatorCa(`${t.dir}/one`), await operatorCa(`${t.dir}/two`)];
    const node = await startTlsNode({
      beforeOpen: (dir) =>
        installCa(dir, { certPem: one.int, keyPem: one.intKey, chainPem: one.root }),
    });
    try {
      assertEquals(node.pki.mode, "intermediate");
      const before = node.admin;
      using client = new BallastClient(node.url, {
        caCertPem: before.ca,
        certPem: before.cert,
        keyPem: before.key,
      });
      // Ballast makes no CA of its own here: the refusal says what to run instead.
      const refused = await assertRejects(() => client.rotateCa("1h"), BallastError);
      assertEquals(refused.code, "FAILED_PRECONDITION");
      assert(
        refused.message.includes("ballast ca rotate --ca-cert NEW.crt --ca-key NEW.key"),
        refused.message,
      );
      // A key that is not the new CA's is refused before anything changes.
      const wrongKey = await assertRejects(
        () => client.rotateCa("1h", { certPem: two.int, keyPem: one.intKey, chainPem: two.root }),
        BallastError,
      );
      assertEquals(wrongKey.code, "INVALID_ARGUMENT");
      assertEquals(
        node.pki.caCertificates[0].subject,
        parseCertificates(one.int, "int")[0].subject,
      );

      const info = await client.rotateCa("1h", {
        certPem: two.int,
        keyPem: two.intKey,
        chainPem: two.root,
      });
      assertEquals(info.trusted.length, 2, "the old intermediate stays trusted for the overlap");
      const newCa = parseCertificates(two.int, "int")[0];
      assert(node.pki.caCertificates[0].equal(newCa), "the node signs with the new intermediate");
      const admin = parseCertificates(node.pki.credentials("admin").cert, "admin.crt")[0];
      assertEquals(admin.issuer, newCa.subject, "admin.crt reissued under the new intermediate");
      // The admin certificate from the old intermediate still opens the API during the overlap.
      using old = new BallastClient(node.url, {
        caCertPem: info.bundlePem,
        certPem: before.cert,
        keyPem: before.key,
      });
      assertEquals((await old.listVolumes()).length, 0);
    } finally {
      await node.close();
    }
  },
);
