import { formatHostPort, parseListen } from "../../../control/common/address.ts";
import { InvalidArgumentError } from "../../../mod/errors.ts";
import { assertEquals, assertThrows } from "../../_assert.ts";

Deno.test("parseListen() handles IPv4, [IPv6], host names, :PORT and port 0", () => {
  assertEquals(parseListen("127.0.0.1:5705"), { host: "127.0.0.1", port: 5705 });
  assertEquals(parseListen("[::1]:5705"), { host: "::1", port: 5705 });
  assertEquals(parseListen("[fe80::1%eth0]:1"), { host: "fe80::1%eth0", port: 1 });
  assertEquals(parseListen("localhost:0"), { host: "localhost", port: 0 });
  assertEquals(parseListen(":8080"), { host: "0.0.0.0", port: 8080 });
  assertEquals(formatHostPort({ host: "::1", port: 5 }), "[::1]:5");
  assertEquals(formatHostPort({ host: "10.0.0.1", port: 5 }), "10.0.0.1:5");
  for (const bad of ["", "1.2.3.4", "[::1]", "[::1]:", "a b:1", "h:123456", "h:-1"]) {
    assertThrows(() => parseListen(bad, "--api-listen"), InvalidArgumentError, "--api-listen");
  }
});
