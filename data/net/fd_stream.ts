/**
 * A connected TCP socket inherited as a file descriptor (a data worker's connection, handed
 * over by the main thread's FdListener), read and written the way `Deno.TcpConn` is: each
 * read lands straight in the caller's buffer, as large as the caller asks for.
 *
 * Opened as a node:net socket instead (`new net.Socket({ fd })`), every read goes through a
 * 64 KiB buffer and is copied out of it, one callback per 64 KiB: measured on loopback, a
 * 1 MiB writer reached 1.7 GB/s that way against 3.3-4.8 GB/s here, and a data worker spent
 * about 1.5-1.7x the CPU of the main thread per GiB of 1 MiB writes (docs/BENCHMARKS.md,
 * "The one-connection gap").
 *
 * Deno 2.9 has no public way to make a TcpConn from a descriptor, but its node:net TCP handle
 * can adopt one (`open(fd)`) and hand its stream over as a resource (`takeStream()`), which
 * the runtime's own `core.read`/`core.write` then serve as they serve a TcpConn. Everything
 * used is checked first; when anything is missing (another Deno version), or with
 * BALLAST_FD_STREAMS=off, this returns undefined and the caller opens a node:net socket.
 * @module
 */

import process from "node:process";

/** The byte stream of an adopted TCP descriptor. */
export interface FdStream {
  /** Reads into `p`; resolves to the byte count, or null at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  /** Sends FIN once what was written has gone; reads go on. */
  closeWrite(): Promise<void>;
  close(): void;
}

// deno-lint-ignore no-explicit-any
type Internal = any;

interface Core {
  read(rid: number, p: Uint8Array): Promise<number>;
  write(rid: number, p: Uint8Array): Promise<number>;
  shutdown(rid: number): Promise<void>;
  close(rid: number): void;
}

/** The runtime's resource I/O and node's TCP handle class, or undefined when not there. */
function internals(): { core: Core; Tcp: Internal; socketType: number } | undefined {
  try {
    if (Deno.env.get("BALLAST_FD_STREAMS") === "off") return undefined;
  } catch {
    // no env permission: the default
  }
  try {
    const d = Deno as Internal;
    const core = d[d.internal]?.core;
    const binding = (process as Internal).binding?.("tcp_wrap");
    const Tcp = binding?.TCP;
    const socketType = binding?.constants?.SOCKET;
    const proto = Tcp?.prototype;
    if (
      typeof core?.read !== "function" || typeof core.write !== "function" ||
      typeof core.shutdown !== "function" || typeof core.close !== "function" ||
      typeof Tcp !== "function" || typeof socketType !== "number" ||
      typeof proto?.open !== "function" || typeof proto.setNoDelay !== "function" ||
      typeof proto.takeStream !== "function"
    ) {
      return undefined;
    }
    return { core, Tcp, socketType };
  } catch {
    return undefined;
  }
}

const INTERNALS = internals();

/** True when this runtime can adopt descriptors as streams (see the module comment). */
export const fdStreamsAvailable: boolean = INTERNALS !== undefined;

/**
 * Adopts `fd`, a connected TCP socket (never a Unix one), with TCP_NODELAY set. Returns
 * undefined, leaving `fd` untouched, when the runtime cannot or the handle refused it.
 */
export function adoptTcpFd(fd: number): FdStream | undefined {
  if (INTERNALS === undefined) return undefined;
  const { core, Tcp, socketType } = INTERNALS;
  const handle = new Tcp(socketType);
  if (handle.open(fd) !== 0) return undefined;
  handle.setNoDelay(true);
  const rid: number = handle.takeStream();
  // The handle keeps the descriptor's number registered until it is closed: without this, a
  // later connection on the same number is refused (EEXIST). The stream stays open.
  handle.close();
  return {
    read: async (p) => {
      // As Deno's TcpConn.read: 0 bytes from a non-empty buffer is the end of the stream.
      const n = await core.read(rid, p);
      return n === 0 && p.length > 0 ? null : n;
    },
    write: (p) => core.write(rid, p),
    closeWrite: async () => {
      try {
        await core.shutdown(rid);
      } catch {
        // already closed or reset
      }
    },
    close: () => {
      try {
        core.close(rid);
      } catch {
        // already closed
      }
    },
  };
}
