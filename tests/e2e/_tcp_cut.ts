/**
 * A TCP relay that a test can cut: one node's connections to etcd pass through it, so that
 * node alone can be cut off from etcd (a partition) while it still reaches its peers.
 * @module
 */

export class TcpCut {
  readonly #listener: Deno.TcpListener;
  readonly #target: { hostname: string; port: number };
  #conns = new Set<Deno.TcpConn>();
  #cut = false;

  private constructor(listener: Deno.TcpListener, target: { hostname: string; port: number }) {
    this.#listener = listener;
    this.#target = target;
    void this.#accept();
  }

  /** Relays 127.0.0.1:<some port> to `url`'s host and port (http://host:port). */
  static start(url: string): TcpCut {
    const u = new URL(url);
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    return new TcpCut(listener, { hostname: u.hostname, port: Number(u.port) });
  }

  /** The relay's URL, to give the node instead of the target's. */
  get url(): string {
    return `http://127.0.0.1:${(this.#listener.addr as Deno.NetAddr).port}`;
  }

  /** Ends every relayed connection and refuses new ones until restore(). */
  cut(): void {
    this.#cut = true;
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    this.#conns.clear();
  }

  restore(): void {
    this.#cut = false;
  }

  close(): void {
    this.cut();
    try {
      this.#listener.close();
    } catch { /* closed */ }
  }

  async #accept(): Promise<void> {
    for (;;) {
      let c: Deno.TcpConn;
      try {
        c = await this.#listener.accept();
      } catch {
        return;
      }
      if (this.#cut) {
        c.close();
        continue;
      }
      void this.#relay(c);
    }
  }

  async #relay(client: Deno.TcpConn): Promise<void> {
    let server: Deno.TcpConn;
    try {
      server = await Deno.connect(this.#target);
    } catch {
      client.close();
      return;
    }
    this.#conns.add(client);
    this.#conns.add(server);
    const pipe = async (from: Deno.TcpConn, to: Deno.TcpConn) => {
      const buf = new Uint8Array(64 * 1024);
      try {
        for (;;) {
          const n = await from.read(buf);
          if (n === null) break;
          let at = 0;
          while (at < n) at += await to.write(buf.subarray(at, n));
        }
      } catch { /* cut or reset */ }
      for (const c of [from, to]) {
        this.#conns.delete(c);
        try {
          c.close();
        } catch { /* closed */ }
      }
    };
    await Promise.all([pipe(client, server), pipe(server, client)]);
  }
}
