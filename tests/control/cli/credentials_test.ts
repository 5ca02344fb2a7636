import { createRootCa, exportPrivateKeyPem } from "../../../ca/mod.ts";
import { checkCredentials } from "../../../control/cli/_credentials.ts";
import { BallastError } from "../../../mod/errors.ts";
import { assertEquals, assertThrows } from "../../_assert.ts";

/** A self-signed certificate and its key, as PEM. */
async function pair(commonName: string) {
  const { cert, keys } = await createRootCa({ commonName });
  return { certPem: cert.toString("pem"), keyPem: await exportPrivateKeyPem(keys.privateKey) };
}

const files = { cacert: "ca.pem", cert: "me.crt", key: "me.key" };

Deno.test("checkCredentials() accepts a certificate with its own key", async () => {
  const me = await pair("me");
  checkCredentials({ caCertPem: me.certPem, ...me, files });
  checkCredentials({ files: {} });
});

Deno.test("checkCredentials() names the key that does not belong to the certificate", async () => {
  const [me, other] = [await pair("me"), await pair("other")];
  const err = assertThrows(
    () => checkCredentials({ certPem: me.certPem, keyPem: other.keyPem, files }),
    BallastError,
  );
  assertEquals(err.code, "INVALID_ARGUMENT");
  assertEquals(
    err.message,
    "client key me.key does not belong to the client certificate me.crt (CN=me, O=Ballast): pass the key " +
      "issued with it",
  );
});

Deno.test("checkCredentials() names a file that holds the wrong kind of PEM", async () => {
  const me = await pair("me");
  const cases: [Parameters<typeof checkCredentials>[0], string][] = [
    [
      { caCertPem: me.keyPem, files },
      "CA bundle ca.pem is not a PEM certificate (BEGIN CERTIFICATE)",
    ],
    [
      { certPem: me.keyPem, keyPem: me.keyPem, files },
      "client certificate me.crt is not a PEM certificate (BEGIN CERTIFICATE)",
    ],
    [
      { certPem: me.certPem, keyPem: me.certPem, files },
      "client key me.key is not an unencrypted PEM private key",
    ],
  ];
  for (const [c, message] of cases) {
    const err = assertThrows(() => checkCredentials(c), BallastError);
    assertEquals([err.code, err.message], ["INVALID_ARGUMENT", message]);
    assertEquals(err.message.includes("PRIVATE KEY-----"), false, "never echoes key material");
  }
});
