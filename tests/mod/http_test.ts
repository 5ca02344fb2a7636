import { unreachable } from "../../mod/_http.ts";
import { assertEquals } from "../_assert.ts";

/** A failed fetch as Deno 2.9 reports it: "fetch failed", rustls' words in the cause. */
function fetchFailed(cause: string): Error {
  return new TypeError("fetch failed", { cause: new Error(cause) });
}

const PREFIX = "error sending request for url (https://localhost:5705/v1/volumes): client " +
  "error (Connect): invalid peer certificate: ";

Deno.test("unreachable(): a node certificate for other names lists the names it has", () => {
  const err = unreachable(
    "https://localhost:5705",
    fetchFailed(
      PREFIX + 'certificate not valid for name "localhost"; certificate is only valid for ' +
        'DnsName("vm"), IpAddress(127.0.0.1) or UniformResourceIdentifier("ballast:role:node")',
    ),
    30_000,
  );
  assertEquals(err.code, "UNAVAILABLE");
  assertEquals(
    err.message,
    'cannot reach the Ballast API at https://localhost:5705: the node\'s certificate is not valid for "localhost"; it names vm, 127.0.0.1: use one of those in --api or BALLAST_API',
  );
});

Deno.test("unreachable(): an expired node certificate says when it expired", () => {
  const err = unreachable(
    "https://127.0.0.1:5705",
    fetchFailed(
      PREFIX + "certificate expired: verification time 1796500232 (UNIX), but certificate is " +
        "not valid after 1580515200 (215985032 seconds ago)",
    ),
    30_000,
  );
  assertEquals(
    err.message,
    "cannot reach the Ballast API at https://127.0.0.1:5705: the node's certificate expired at " +
      "2020-02-01T00:00:00.000Z (a running node renews its own at two thirds of their life: check " +
      "that it runs, its clock and its log)",
  );
});

Deno.test("unreachable(): an unknown issuer still asks for the node's CA bundle", () => {
  const err = unreachable("https://127.0.0.1:5705", fetchFailed(PREFIX + "UnknownIssuer"), 30_000);
  assertEquals(
    err.message,
    "cannot reach the Ballast API at https://127.0.0.1:5705: server certificate not trusted: " +
      "UnknownIssuer (pass the node's ca-bundle.crt with --cacert or BALLAST_CACERT)",
  );
});
