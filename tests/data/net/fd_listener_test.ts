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
  groupId,
  UnixSocketError,
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

Deno.test("FdListener.openUnix() applies mode and group, names its peer, and removes its file on close", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/nbd.sock`;
  const gid = groupId("65534");
  const l = FdListener.openUnix(path, { mode: 0o640, gid });
  try {
    const info = Deno.lstatSync(path);
    assert(info.isSocket, "a socket file");
    assertEquals(info.mode! & 0o777, 0o640);
    assertEquals(info.gid, gid);
    const client = await Deno.connect({ transport: "unix", path });
    const accepted = await l.accept();
    assertEquals(accepted?.remote, `unix:uid=${Deno.uid()},pid=${Deno.pid}`);
    closeFd(accepted!.fd);
    client.close();
  } finally {
    l.close();
  }
  assertThrows(() => Deno.lstatSync(path), Deno.errors.NotFound);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("FdListener.openUnix() replaces a stale socket, refuses a live one, a non-socket and a long path", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/nbd.sock`;
  // A socket file whose process is gone (python exits without unlinking it).
  const py = `import socket; s = socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(path)})`;
  assertEquals((await new Deno.Command("python3", { args: ["-c", py] }).output()).code, 0);
  assert(Deno.lstatSync(path).isSocket, "the stale socket is there");
  const l = FdListener.openUnix(path, { mode: 0o600 });
  try {
    const err = assertThrows(() => FdListener.openUnix(path, { mode: 0o600 }), UnixSocketError);
    assert(err.message.includes(`another process listens on ${path}`), err.message);
    assertEquals(err.path, path);
    const probe = await l.accept(); // the live check's connection
    if (probe) closeFd(probe.fd);
  } finally {
    l.close();
  }
  Deno.writeTextFileSync(path, "data");
  assertThrows(
    () => FdListener.openUnix(path, { mode: 0o600 }),
    UnixSocketError,
    "exists and is not a socket",
  );
  assertEquals(Deno.readTextFileSync(path), "data", "a file that is not a socket is kept");
  assertThrows(
    () => FdListener.openUnix(`${dir}/${"x".repeat(120)}`, { mode: 0o600 }),
    UnixSocketError,
    "must be 1 to 107 bytes",
  );
  assertThrows(() => groupId("no-such-group-here"), RangeError, "unknown group");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("FdListener: accepted TCP connections have keepalive armed (a client that vanished without a FIN is found out), not after 2 hours but about a minute of silence", async () => {
  const l = FdListener.open("127.0.0.1", 0);
  const client = await Deno.connect({ hostname: "127.0.0.1", port: l.port });
  const accepted = (await l.accept())!;
  try {
    const inode = /socket:\[(\d+)\]/.exec(Deno.readLinkSync(`/proc/self/fd/${accepted.fd}`))![1];
    const line = (await Deno.readTextFile("/proc/net/tcp")).split("\n")
      .map((x) => x.trim().split(/\s+/)).find((f) => f[9] === inode);
    assert(line, "the accepted socket is in /proc/net/tcp");
    // "tr:tm->when": timer 2 is the keepalive timer, when in jiffies (USER_HZ 100).
    const [timer, when] = line[5].split(":");
    assertEquals(timer, "02", `timers of the accepted socket: ${line[5]}`);
    const seconds = parseInt(when, 16) / 100;
    assert(seconds > 0 && seconds <= 60, `first probe in ${seconds} s`);
  } finally {
    client.close();
    closeFd(accepted.fd);
    l.close();
  }
});
