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

Deno.test({
  name: "adoptTcpFd() reads and writes, ends the sending side, and frees the descriptor number",
  ignore: !fdStreamsAvailable,
  fn: async () => {
    const l = FdListener.open("127.0.0.1", 0);
    try {
      // Twice: the second connection gets the number the first one's descriptor had, which
      // the runtime must accept again once the first stream is closed.
      const numbers: number[] = [];
      for (let round = 0; round < 2; round++) {
        const client = await Deno.connect({ hostname: "127.0.0.1", port: l.port });
        const accepted = (await l.accept())!;
        numbers.push(accepted.fd);
        const s = adoptTcpFd(accepted.fd);
        assert(s !== undefined, `descriptor ${accepted.fd} adopted in round ${round}`);
        // 3 MiB each way: more than one read's worth, so partial reads are exercised.
        const big = new Uint8Array(3 << 20).map((_, i) => i % 251);
        const sending = client.write(big).then(async (n) => {
          let off = n;
          while (off < big.length) off += await client.write(big.subarray(off));
        });
        assertEquals(await readExactly(s, big.length), big);
        await sending;
        const back = s.write(enc.encode("pong"));
        assertEquals(dec.decode(await readExactly(client, 4)), "pong");
        assertEquals(await back, 4);
        await s.closeWrite();
        assertEquals(await client.read(new Uint8Array(1)), null, "FIN after closeWrite()");
        await client.write(enc.encode("late"));
        assertEquals(dec.decode(await readExactly(s, 4)), "late", "reads go on after FIN");
        client.close();
        assertEquals(await s.read(new Uint8Array(8)), null, "end of stream");
        s.close();
        s.close(); // twice is harmless
      }
      assertEquals(numbers[0], numbers[1], "the second connection reused the number");
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
