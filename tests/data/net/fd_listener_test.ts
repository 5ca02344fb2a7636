/**
 * FdListener: a libc TCP listener whose connections are file descriptors another thread can
 * open as node:net sockets; sockaddr encoding at the edges.
 */
import { Socket } from "node:net";
import {
  closeFd,
  decodeSockaddr,
  encodeSockaddr,
  FdListener,
} from "../../../data/net/fd_listener.ts";
import { assert, assertEquals, assertThrows } from "../../_assert.ts";

Deno.test("encodeSockaddr() and decodeSockaddr() round-trip IPv4, IPv6 and localhost", () => {
  const table: [string, number, string][] = [
    ["127.0.0.1", 10809, "127.0.0.1"],
    ["0.0.0.0", 1, "0.0.0.0"],
    ["localhost", 65535, "127.0.0.1"],
    ["::1", 80, "::1"],
    ["[::1]", 80, "::1"],
    ["fe80::1:2", 443, "fe80::1:2"],
  ];
  for (const [host, port, back] of table) {
    assertEquals(decodeSockaddr(encodeSockaddr(host, port)), { host: back, port }, host);
  }
  for (const bad of ["example.com", "1.2.3.256", "1::2::3", "::g"]) {
    assertThrows(() => encodeSockaddr(bad, 1), RangeError, undefined, bad);
  }
});

Deno.test("FdListener hands out descriptors that open as working node:net sockets", async () => {
  const l = FdListener.open("127.0.0.1", 0);
  try {
    assert(l.port > 0, "port 0 picks a free port");
    const client = await Deno.connect({ hostname: "127.0.0.1", port: l.port });
    const accepted = await l.accept();
    assert(accepted !== null);
    assertEquals(accepted.remote, `127.0.0.1:${(client.localAddr as Deno.NetAddr).port}`);
    const sock = new Socket(
      { fd: accepted.fd } as unknown as ConstructorParameters<typeof Socket>[0],
    );
    const got = new Promise<string>((resolve) => sock.once("data", (d) => resolve(String(d))));
    await client.write(new TextEncoder().encode("ping"));
    assertEquals(await got, "ping");
    sock.write("pong");
    const buf = new Uint8Array(4);
    assertEquals(await client.read(buf), 4);
    assertEquals(new TextDecoder().decode(buf), "pong");
    sock.destroy();
    client.close();
  } finally {
    l.close();
  }
});

Deno.test("FdListener: close() ends a pending accept() with null; a taken port is AddrInUse", async () => {
  const l = FdListener.open("127.0.0.1", 0);
  const pending = l.accept();
  l.close();
  assertEquals(await pending, null);
  const a = FdListener.open("127.0.0.1", 0);
  try {
    assertThrows(() => FdListener.open("127.0.0.1", a.port), Deno.errors.AddrInUse);
  } finally {
    a.close();
  }
  // Closing a descriptor nobody took is allowed (a connection refused before handoff).
  const b = FdListener.open("127.0.0.1", 0);
  const c = await Deno.connect({ hostname: "127.0.0.1", port: b.port });
  const taken = await b.accept();
  closeFd(taken!.fd);
  assertEquals(await c.read(new Uint8Array(1)), null, "the client sees the connection end");
  c.close();
  b.close();
});
