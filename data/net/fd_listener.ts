/**
 * A TCP listener made with libc through FFI, whose accepted connections are plain file
 * descriptors. Deno cannot move a socket between threads, but a file descriptor is the
 * process's: the main thread accepts, picks a data worker, and the worker opens the
 * descriptor as a node:net socket (`new net.Socket({ fd })`). That lets the pool place each
 * connection where it wants, rather than the kernel's hash of SO_REUSEPORT listeners.
 *
 * accept4() runs as a nonblocking FFI call (on a thread of Deno's, off the event loop);
 * close() shuts the socket down first, which wakes a blocked accept4() on Linux.
 * Linux x86_64/aarch64 glibc only, like the file store.
 * @module
 */

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  accept4: {
    parameters: ["i32", "buffer", "buffer", "i32"],
    result: "i32",
    nonblocking: true,
  },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const;

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const IPPROTO_IPV6 = 41;
const IPV6_V6ONLY = 26;
const SHUT_RDWR = 2;
const BACKLOG = 511;

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;
function libc() {
  lib ??= Deno.dlopen("libc.so.6", SYMBOLS);
  return lib.symbols;
}

function lastError(): string {
  const c = libc();
  const n = new Deno.UnsafePointerView(c.__errno_location()!).getInt32();
  const msg = c.strerror(n);
  return msg ? new Deno.UnsafePointerView(msg).getCString() : `errno ${n}`;
}

/** The sockaddr for an IPv4 or IPv6 literal (or "localhost") and a port. */
export function encodeSockaddr(host: string, port: number): Uint8Array {
  const h = host === "localhost" ? "127.0.0.1" : host.replace(/^\[(.*)\]$/, "$1");
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  if (v4) {
    const b = new Uint8Array(16);
    const v = new DataView(b.buffer);
    v.setUint16(0, AF_INET, true);
    v.setUint16(2, port, false);
    for (let i = 0; i < 4; i++) {
      const o = Number(v4[i + 1]);
      if (o > 255) throw new RangeError(`not an IPv4 address: ${host}`);
      b[4 + i] = o;
    }
    return b;
  }
  if (h.includes(":")) {
    const b = new Uint8Array(28);
    const v = new DataView(b.buffer);
    v.setUint16(0, AF_INET6, true);
    v.setUint16(2, port, false);
    if (h.split("::").length > 2) throw new RangeError(`not an IPv6 address: ${host}`);
    const [head, tail = ""] = h.split("::");
    const parts = (s: string) => (s === "" ? [] : s.split(":"));
    const hi = parts(head);
    const lo = parts(tail);
    if (!h.includes("::") && hi.length !== 8) throw new RangeError(`not an IPv6 address: ${host}`);
    const groups = [...hi, ...Array(8 - hi.length - lo.length).fill("0"), ...lo];
    groups.forEach((g, i) => {
      const n = parseInt(g, 16);
      if (!/^[0-9a-f]{1,4}$/i.test(g) || Number.isNaN(n)) {
        throw new RangeError(`not an IPv6 address: ${host}`);
      }
      v.setUint16(8 + 2 * i, n, false);
    });
    return b;
  }
  throw new RangeError(`listen address must be an IP address or localhost, got ${host}`);
}

/** "host:port" of a sockaddr (IPv6 hosts in brackets). */
export function decodeSockaddr(b: Uint8Array): { host: string; port: number } {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const family = v.getUint16(0, true);
  const port = v.getUint16(2, false);
  if (family === AF_INET) return { host: [...b.subarray(4, 8)].join("."), port };
  if (family === AF_INET6) {
    const g: string[] = [];
    for (let i = 0; i < 8; i++) g.push(v.getUint16(8 + 2 * i, false).toString(16));
    // RFC 5952: the longest run of two or more zero groups becomes "::".
    let best = [-1, 0];
    for (let i = 0; i < 8;) {
      let j = i;
      while (j < 8 && g[j] === "0") j++;
      if (j - i > best[1]) best = [i, j - i];
      i = j === i ? i + 1 : j;
    }
    const host = best[1] < 2
      ? g.join(":")
      : `${g.slice(0, best[0]).join(":")}::${g.slice(best[0] + best[1]).join(":")}`;
    return { host, port };
  }
  return { host: "?", port };
}

/** One accepted connection: its descriptor and the peer's "host:port". */
export interface AcceptedFd {
  fd: number;
  remote: string;
}

export class FdListener {
  readonly fd: number;
  readonly host: string;
  readonly port: number;
  #closed = false;

  private constructor(fd: number, host: string, port: number) {
    this.fd = fd;
    this.host = host;
    this.port = port;
  }

  /**
   * Listens on host:port (port 0 picks a free one: see `port`). Throws Deno.errors.AddrInUse
   * or an Error naming the address and the system's reason.
   */
  static open(host: string, port: number): FdListener {
    const sa = encodeSockaddr(host, port);
    const family = new DataView(sa.buffer).getUint16(0, true);
    const c = libc();
    const fd = c.socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new Error(`cannot create a socket for ${host}:${port}: ${lastError()}`);
    const one = new Uint8Array([1, 0, 0, 0]);
    c.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, 4);
    if (family === AF_INET6) c.setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, one, 4);
    if (c.bind(fd, sa, sa.length) !== 0 || c.listen(fd, BACKLOG) !== 0) {
      const why = lastError();
      c.close(fd);
      const where = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
      if (/in use/i.test(why)) throw new Deno.errors.AddrInUse(`${where}: ${why}`);
      throw new Error(`cannot listen on ${where}: ${why}`);
    }
    const bound = new Uint8Array(28);
    const len = new Uint32Array([bound.length]);
    c.getsockname(fd, bound, new Uint8Array(len.buffer));
    return new FdListener(fd, host, decodeSockaddr(bound).port);
  }

  /** The next connection, or null once closed. Transient failures (EMFILE) are retried. */
  async accept(): Promise<AcceptedFd | null> {
    for (;;) {
      if (this.#closed) return null;
      const addr = new Uint8Array(28);
      const len = new Uint32Array([addr.length]);
      const fd = await libc().accept4(this.fd, addr, new Uint8Array(len.buffer), SOCK_CLOEXEC);
      if (this.#closed) {
        if (fd >= 0) libc().close(fd);
        return null;
      }
      if (fd >= 0) {
        const { host, port } = decodeSockaddr(addr);
        return { fd, remote: host.includes(":") ? `[${host}]:${port}` : `${host}:${port}` };
      }
      // Out of descriptors or memory for a moment: wait rather than spin.
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Stops listening; a pending accept() resolves to null. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc().shutdown(this.fd, SHUT_RDWR);
    libc().close(this.fd);
  }
}

/** Closes a descriptor this process owns (an accepted one nobody took). */
export function closeFd(fd: number): void {
  libc().close(fd);
}
