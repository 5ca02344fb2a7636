/**
 * A TCP or Unix-socket listener made with libc through FFI, whose accepted connections are
 * plain file descriptors. Deno cannot move a socket between threads, but a file descriptor is the
 * process's: the main thread accepts, picks a data worker, and the worker opens the
 * descriptor as a node:net socket (`new net.Socket({ fd })`). That lets the pool place each
 * connection where it wants, rather than the kernel's hash of SO_REUSEPORT listeners.
 *
 * accept4() runs as a nonblocking FFI call (on a thread of Deno's, off the event loop);
 * close() shuts the socket down first, which wakes a blocked accept4() on Linux.
 * Linux x86_64/aarch64 glibc only, like the file store.
 * @module
 */

import type { Logger } from "pino";

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
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  getgrnam: { parameters: ["buffer"], result: "pointer" },
  dup: { parameters: ["i32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const;

const AF_UNIX = 1;
const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOCK_NONBLOCK = 0o4000;
const SO_PEERCRED = 17;
const EAGAIN = 11;
const EINPROGRESS = 115;
const ECONNREFUSED = 111;
/** sun_path holds 108 bytes, the terminating NUL included (unix(7)). */
export const MAX_UNIX_PATH_BYTES = 107;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
const SO_KEEPALIVE = 9;
const IPPROTO_TCP = 6;
const TCP_KEEPIDLE = 4;
const TCP_KEEPINTVL = 5;
const TCP_KEEPCNT = 6;
/**
 * TCP keepalive of accepted connections: probed after 60 s without traffic, every 10 s, given
 * up after 6 unanswered probes. A client whose host died or was cut off without a FIN or a
 * reset would otherwise stay attached for ever (holding its volume: `volume delete` refuses a
 * volume with clients, and a forwarding node's connection its fence). A live, idle client's
 * kernel answers the probes: it is never cut for being idle.
 */
const KEEPALIVE = { idleS: 60, intervalS: 10, probes: 6 };
const IPPROTO_IPV6 = 41;
const IPV6_V6ONLY = 26;
const SHUT_RDWR = 2;
const BACKLOG = 511;

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;
function libc() {
  lib ??= Deno.dlopen("libc.so.6", SYMBOLS);
  return lib.symbols;
}

function errno(): number {
  return new Deno.UnsafePointerView(libc().__errno_location()!).getInt32();
}

function lastError(n = errno()): string {
  const msg = libc().strerror(n);
  return msg ? new Deno.UnsafePointerView(msg).getCString() : `errno ${n}`;
}

const RLIMIT_NOFILE = 7;

/** The process's limit on open descriptors (soft, hard), as getrlimit(2) says. */
function fileLimits(): { soft: number; hard: number } {
  const b = new BigUint64Array(2);
  if (libc().getrlimit(RLIMIT_NOFILE, new Uint8Array(b.buffer)) !== 0) {
    return { soft: Infinity, hard: Infinity };
  }
  const n = (v: bigint) => v >= 2n ** 53n ? Infinity : Number(v);
  return { soft: n(b[0]), hard: n(b[1]) };
}

/** The soft limit on open descriptors, as last read or raised here. */
let softLimit: number | undefined;

/**
 * Raises the process's soft limit on open descriptors to its hard limit (as Go's runtime
 * does), so that connections and volume files do not run out at a shell's default of 1024.
 * Returns the limits before and after.
 */
export function raiseDescriptorLimit(): { before: number; after: number } {
  const { soft, hard } = fileLimits();
  let after = soft;
  if (hard > soft && hard !== Infinity) {
    const b = new BigUint64Array([BigInt(hard), BigInt(hard)]);
    if (libc().setrlimit(RLIMIT_NOFILE, new Uint8Array(b.buffer)) === 0) after = hard;
  }
  softLimit = after;
  return { before: soft, after };
}

/**
 * Accepted connections whose descriptor number reaches this are closed at once: descriptors
 * are numbered lowest free first, so a number this high means at least this many are open,
 * and the rest is kept for volume files, the API, etcd and the runtime itself. Out of
 * descriptors, Deno 2.9 can panic (its stack guard reads /proc/self/maps) and its node:https
 * server stops accepting for good.
 */
export function sheddingAt(): number {
  softLimit ??= fileLimits().soft;
  if (!Number.isFinite(softLimit)) return Infinity; // no limit
  return softLimit - Math.max(64, Math.floor(softLimit / 16));
}

/**
 * For a connection accepted where its descriptor number is not known (a Deno listener): the
 * lowest free descriptor and the shedding mark, when the former has reached the latter (the
 * connection is to be closed at once), else undefined. One dup() and close() of stderr.
 */
export function descriptorsShort(): { fd: number; at: number } | undefined {
  const at = sheddingAt();
  if (at === Infinity) return undefined;
  const fd = libc().dup(2);
  if (fd >= 0) libc().close(fd);
  return fd < 0 || fd >= at ? { fd: fd < 0 ? at : fd, at } : undefined;
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

/** One accepted connection: its descriptor and the peer ("host:port", or a Unix peer's ids). */
export interface AcceptedFd {
  fd: number;
  remote: string;
}

/** Who may connect to a Unix-socket listener: the socket file's mode and group. */
export interface UnixSocketAccess {
  /** File mode of the socket (connecting needs write permission), e.g. 0o660. */
  mode: number;
  /** Group of the socket file; undefined keeps the process's group. */
  gid?: number;
}

/** A Unix-socket listener could not be set up at `path`; `reason` says why. */
export class UnixSocketError extends Error {
  override name = "UnixSocketError";
  readonly path: string;
  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.path = path;
  }
}

export class FdListener {
  readonly fd: number;
  readonly host: string;
  readonly port: number;
  /** The socket file of a Unix-socket listener (removed on close). */
  readonly path: string | undefined;
  #ino: number | null = null;
  #closed = false;
  /**
   * Called for each connection closed at once because descriptors run short (sheddingAt()),
   * with the descriptor number it got and the number shedding starts at.
   */
  onShed: Shed | undefined;

  private constructor(fd: number, host: string, port: number, path?: string) {
    this.fd = fd;
    this.host = host;
    this.port = port;
    this.path = path;
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

  /**
   * Listens on the Unix socket `path` whose file gets `access` (mode, group) before the
   * first client can connect. A socket file left behind by a process that is gone is
   * replaced; one that a live process listens on, or a file that is not a socket, is not.
   * Throws UnixSocketError naming the path and why.
   */
  static openUnix(path: string, access: UnixSocketAccess): FdListener {
    const sa = encodeUnixSockaddr(path);
    removeStaleSocket(path, sa);
    const c = libc();
    const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new UnixSocketError(path, `cannot create a Unix socket: ${lastError()}`);
    const l = new FdListener(fd, path, 0, path);
    try {
      if (c.bind(fd, sa, sa.length) !== 0) {
        throw new UnixSocketError(path, `cannot bind ${path}: ${lastError()}`);
      }
      l.#ino = Deno.lstatSync(path).ino;
      // Mode and group first, listen() after: nobody connects under the umask's mode.
      Deno.chmodSync(path, access.mode);
      if (access.gid !== undefined) Deno.chownSync(path, null, access.gid);
      if (c.listen(fd, BACKLOG) !== 0) {
        throw new UnixSocketError(path, `cannot listen on ${path}: ${lastError()}`);
      }
    } catch (err) {
      l.close();
      if (err instanceof UnixSocketError) throw err;
      throw new UnixSocketError(path, `cannot set up ${path}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    return l;
  }

  /** The next connection, or null once closed. Transient failures (EMFILE) are retried. */
  async accept(): Promise<AcceptedFd | null> {
    for (;;) {
      if (this.#closed) return null;
      const addr = new Uint8Array(112);
      const len = new Uint32Array([addr.length]);
      const fd = await libc().accept4(this.fd, addr, new Uint8Array(len.buffer), SOCK_CLOEXEC);
      if (this.#closed) {
        if (fd >= 0) libc().close(fd);
        return null;
      }
      if (fd >= 0) {
        let remote: string;
        if (this.path !== undefined) remote = unixPeer(fd);
        else {
          const { host, port } = decodeSockaddr(addr);
          remote = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
        }
        const at = sheddingAt();
        if (fd >= at) {
          libc().close(fd);
          this.onShed?.(remote, fd, at);
          continue;
        }
        if (this.path === undefined) keepAlive(fd);
        return { fd, remote };
      }
      // Out of descriptors or memory for a moment: wait rather than spin.
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Stops listening; a pending accept() resolves to null. A Unix socket's file goes. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    libc().shutdown(this.fd, SHUT_RDWR);
    libc().close(this.fd);
    if (this.path === undefined || this.#ino === null) return;
    try {
      // Only our own file: another process may have replaced it since.
      if (Deno.lstatSync(this.path).ino === this.#ino) Deno.removeSync(this.path);
    } catch {
      // already gone
    }
  }
}

/** The sockaddr_un of `path`; throws UnixSocketError when it does not fit. */
function encodeUnixSockaddr(path: string): Uint8Array {
  const bytes = new TextEncoder().encode(path);
  if (bytes.length === 0 || bytes.length > MAX_UNIX_PATH_BYTES || bytes.includes(0)) {
    throw new UnixSocketError(
      path,
      `Unix socket path ${JSON.stringify(path)} is ${bytes.length} bytes: it must be 1 to ` +
        `${MAX_UNIX_PATH_BYTES} bytes without NUL (unix(7)); pick a shorter path`,
    );
  }
  const b = new Uint8Array(2 + bytes.length + 1);
  new DataView(b.buffer).setUint16(0, AF_UNIX, true);
  b.set(bytes, 2);
  return b;
}

/**
 * Removes the socket file at `path` if nothing listens on it (a process that died left it);
 * refuses a live one and anything that is not a socket.
 */
function removeStaleSocket(path: string, sa: Uint8Array): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return;
    throw new UnixSocketError(path, `cannot check ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (!info.isSocket) {
    throw new UnixSocketError(path, `${path} exists and is not a socket: not replacing it`);
  }
  const c = libc();
  const probe = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (probe < 0) throw new UnixSocketError(path, `cannot create a Unix socket: ${lastError()}`);
  const r = c.connect(probe, sa, sa.length);
  const e = r === 0 ? 0 : errno();
  c.close(probe);
  if (r === 0 || e === EAGAIN || e === EINPROGRESS) {
    throw new UnixSocketError(
      path,
      `another process listens on ${path} (another ballast serve?): stop it or pick another path`,
    );
  }
  if (e !== ECONNREFUSED) {
    throw new UnixSocketError(path, `cannot check ${path}: ${lastError(e)}`);
  }
  Deno.removeSync(path); // stale: nobody listens
}

/** Turns on TCP keepalive (KEEPALIVE) on a connected TCP socket; a failure is not fatal. */
function keepAlive(fd: number): void {
  const c = libc();
  const int = (n: number) => new Uint8Array(new Int32Array([n]).buffer);
  c.setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, int(1), 4);
  c.setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, int(KEEPALIVE.idleS), 4);
  c.setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, int(KEEPALIVE.intervalS), 4);
  c.setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, int(KEEPALIVE.probes), 4);
}

/** "unix:uid=U,pid=P" of a connected Unix socket's peer (SO_PEERCRED), for logs. */
/** Whether `remote`, as accept() gives it, names a Unix-socket peer (else a TCP one). */
export function isUnixPeer(remote: string): boolean {
  return remote.startsWith("unix");
}

function unixPeer(fd: number): string {
  const cred = new Uint8Array(12);
  const len = new Uint32Array([cred.length]);
  if (libc().getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, new Uint8Array(len.buffer)) !== 0) {
    return "unix";
  }
  const v = new DataView(cred.buffer);
  return `unix:uid=${v.getUint32(4, true)},pid=${v.getInt32(0, true)}`;
}

/** The id of group `name` (a name the system knows, or a number); throws when unknown. */
export function groupId(name: string): number {
  if (/^\d+$/.test(name)) return Number(name);
  const gr = libc().getgrnam(new TextEncoder().encode(name + "\0"));
  if (gr === null) throw new RangeError(`unknown group ${JSON.stringify(name)}`);
  // struct group { char *gr_name; char *gr_passwd; gid_t gr_gid; ... } (glibc, 64-bit).
  return new Deno.UnsafePointerView(gr).getUint32(16);
}

/** Closes a descriptor this process owns (an accepted one nobody took). */
export function closeFd(fd: number): void {
  libc().close(fd);
}

/**
 * A second descriptor of the same socket, or -1: the data pool keeps one of
 * each connection it hands a worker, so that it can end the connection if the worker dies.
 */
export function dupFd(fd: number): number {
  return libc().dup(fd);
}

/** Ends a socket for both sides, whoever else holds a descriptor of it (shutdown(2)). */
export function shutdownFd(fd: number): void {
  libc().shutdown(fd, SHUT_RDWR);
}

/** Told of each connection closed at once because descriptors run short. */
export type Shed = (remote: string, fd: number, at: number) => void;

/** A listener's onShed: a warning at most every 10 s, with how many it closed since. */
export function shedWarning(log: Logger, listener: string): Shed {
  let last = -Infinity;
  let closed = 0;
  return (remote, fd, at) => {
    closed++;
    const now = performance.now();
    if (now - last < 10_000) return;
    last = now;
    log.warn(
      { listener, remote, fd, limit: at, closed },
      `closing new NBD connections: the process has ${fd} or more descriptors open and ` +
        `keeps the rest of its limit for volume files and the API (raise LimitNOFILE / ulimit -n)`,
    );
    closed = 0;
  };
}
