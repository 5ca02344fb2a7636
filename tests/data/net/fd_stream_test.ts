/**
 * adoptTcpFd(): an accepted TCP descriptor read and written as a stream (the data workers'
 * plaintext connections), on real loopback sockets.
 */
import { FdListener } from "../../../data/net/fd_listener.ts";
import { adoptTcpFd, fdStreamsAvailable } from "../../../data/net/fd_stream.ts";
import { openFdTransport } from "../../../data/nbd/node_transport.ts";
import { assert, assertEquals } from "../../_assert.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

async function readExactly(r: { read(p: Uint8Array): Promise<number | null> }, n: number) {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const k = await r.read(buf.subarray(got));
    if (k === null) throw new Error(`end of stream after ${got} of ${n} bytes`);
    got += k;
  }
  return buf;
}

/** Whether this process has descriptor `fd` open (Linux: /proc/self/fd). */
function isOpen(fd: number): boolean {
  try {
    Deno.lstatSync(`/proc/self/fd/${fd}`);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

Deno.test({
  name: "adoptTcpFd() reads and writes, ends the sending side, and frees the descriptor number",
  ignore: !fdStreamsAvailable,
  fn: async () => {
    const l = FdListener.open("127.0.0.1", 0);
    try {
      // Until an accepted connection gets a number an adopted, closed one had (the kernel hands
      // out the lowest free number): the runtime must adopt such a number again. The next
      // client connects before the stream is closed, so that it does not take that number.
      const numbers: number[] = [];
      let client = await Deno.connect({ hostname: "127.0.0.1", port: l.port });
      for (let round = 0; round < 6; round++) {
        const accepted = (await l.accept())!;
        const reused = numbers.includes(accepted.fd);
        numbers.push(accepted.fd);
        const s = adoptTcpFd(accepted.fd);
        assert(s !== undefined, `descriptor ${accepted.fd} adopted in round ${round}`);
        // 3 MiB each way: more than one read's worth, so partial reads are exercised.
        const big = new Uint8Array(3 << 20).map((_, i) => i % 251);
        const c = client;
        const sending = c.write(big).then(async (n) => {
          let off = n;
          while (off < big.length) off += await c.write(big.subarray(off));
        });
        assertEquals(await readExactly(s, big.length), big);
        await sending;
        const back = s.write(enc.encode("pong"));
        assertEquals(dec.decode(await readExactly(c, 4)), "pong");
        assertEquals(await back, 4);
        await s.closeWrite();
        assertEquals(await c.read(new Uint8Array(1)), null, "FIN after closeWrite()");
        await c.write(enc.encode("late"));
        assertEquals(dec.decode(await readExactly(s, 4)), "late", "reads go on after FIN");
        c.close();
        assertEquals(await s.read(new Uint8Array(8)), null, "end of stream");
        if (!reused) client = await Deno.connect({ hostname: "127.0.0.1", port: l.port });
        s.close();
        s.close(); // twice is harmless
        // Closed at once: nothing of this test opens a descriptor before the next accept.
        assert(!isOpen(accepted.fd), `descriptor ${accepted.fd} is still open after close()`);
        if (reused) break;
      }
      assert(
        numbers.some((n, i) => numbers.indexOf(n) < i),
        `no accepted connection got a number again in ${numbers.length} rounds: ${numbers}`,
      );
    } finally {
      l.close();
    }
  },
});

Deno.test("openFdTransport() adopts a plaintext TCP descriptor as a stream", async () => {
  const l = FdListener.open("127.0.0.1", 0);
  try {
    const client = await Deno.connect({ hostname: "127.0.0.1", port: l.port });
    const accepted = (await l.accept())!;
    const t = openFdTransport(accepted.fd, accepted.remote, { direct: true, tcp: true });
    assertEquals(t.readPath, fdStreamsAvailable ? "fd-stream" : "direct");
    assertEquals(t.remote, accepted.remote);
    await client.write(enc.encode("ping"));
    assertEquals(dec.decode(await readExactly(t, 4)), "ping");
    await t.write(enc.encode("pong"));
    assertEquals(dec.decode(await readExactly(client, 4)), "pong");
    client.close();
    assertEquals(await t.read(new Uint8Array(4)), null);
    t.close();
  } finally {
    l.close();
  }
});
