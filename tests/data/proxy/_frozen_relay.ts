/**
 * A TCP relay a test can freeze: while frozen it moves no byte either way and opens no
 * connection onward, but closes nothing (a partition that drops packets rather than refusing
 * them: the sides see an open connection that never answers).
 * @module
 */

export interface FrozenRelay {
  /** "127.0.0.1:PORT" to connect to instead of the target. */
  readonly address: string;
  freeze(): void;
  thaw(): void;
  close(): void;
}

/** Relays connections to `target` ("host:port"). */
export function frozenRelay(target: string): FrozenRelay {
  const at = target.lastIndexOf(":");
  const to = { hostname: target.slice(0, at), port: Number(target.slice(at + 1)) };
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  let frozen = false;
  let waiting: (() => void)[] = [];
  const thawed = () =>
    frozen ? new Promise<void>((resolve) => waiting.push(resolve)) : Promise.resolve();
  const pump = async (from: Deno.Conn, into: Deno.Conn) => {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        await thawed();
        const n = await from.read(buf);
        if (n === null) break;
        await thawed(); // what was read when the freeze came is held too
        for (let off = 0; off < n;) off += await into.write(buf.subarray(off, n));
      }
      await into.closeWrite();
    } catch { /* either side closed */ }
  };
  const relay = async (c: Deno.Conn) => {
    conns.add(c);
    try {
      await thawed();
      const up = await Deno.connect(to);
      conns.add(up);
      await Promise.all([pump(c, up), pump(up, c)]);
    } catch { /* the target went away */ }
  };
  (async () => {
    for await (const c of listener) void relay(c);
  })().catch(() => {});
  const thaw = () => {
    frozen = false;
    const w = waiting;
    waiting = [];
    for (const resolve of w) resolve();
  };
  return {
    address: `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    freeze: () => void (frozen = true),
    thaw,
    close() {
      thaw();
      try {
        listener.close();
      } catch { /* closed */ }
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
    },
  };
}
