import * as net from "node:net";
import { ListenError, listenFailure, listenServer } from "../../data/mod.ts";
import { FdListener } from "../../data/net/fd_listener.ts";
import { assert, assertEquals } from "../_assert.ts";

Deno.test("listenFailure() names the listener and the address of a port in use, from either listener kind", async () => {
  using taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const at = { host: "127.0.0.1", port: (taken.addr as Deno.NetAddr).port };
  const want = (what: string) =>
    `cannot listen for ${what} on 127.0.0.1:${at.port}: address already in use (another ` +
    "process listens there)";

  let fdErr: unknown;
  try {
    FdListener.open(at.host, at.port).close();
  } catch (err) {
    fdErr = err;
  }
  const fd = listenFailure("NBD", at, fdErr);
  assert(fd instanceof ListenError);
  assertEquals([fd.message, fd.listener, fd.address, fd.cause], [
    want("NBD"),
    "NBD",
    `127.0.0.1:${at.port}`,
    fdErr,
  ]);

  const server = net.createServer();
  let nodeErr: unknown;
  try {
    await listenServer(server, at.host, at.port);
  } catch (err) {
    nodeErr = err;
  } finally {
    server.close();
  }
  assertEquals(listenFailure("the API", at, nodeErr).message, want("the API"));
});

Deno.test("listenFailure() keeps an unknown reason's own words and brackets IPv6", () => {
  const e = listenFailure("NBD", { host: "::1", port: 7 }, new Error("something odd"));
  assertEquals(e.message, "cannot listen for NBD on [::1]:7: something odd");
});
