/**
 * Thin FFI bindings to the libc calls the file store needs and node:fs lacks:
 * positional I/O without a seek, fallocate (punch hole / zero range),
 * lseek(SEEK_DATA/SEEK_HOLE) and fdatasync off the event loop.
 * Linux x86_64/aarch64 glibc only.
 * @module
 */

const SYMBOLS = {
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  pread: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  pwrite: { parameters: ["i32", "buffer", "usize", "i64"], result: "isize" },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  fdatasync: { parameters: ["i32"], result: "i32", nonblocking: true },
  posix_fadvise: { parameters: ["i32", "i64", "i64", "i32"], result: "i32" },
  fdatasync_sync: { name: "fdatasync", parameters: ["i32"], result: "i32" },
  statvfs: { parameters: ["buffer", "buffer"], result: "i32" },
  // syscall(2) for cachestat(2) (Linux 6.5+), which glibc does not wrap.
  cachestat: {
    name: "syscall",
    parameters: ["i64", "i32", "buffer", "buffer", "u32"],
    result: "i64",
  },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const;

export const O_RDONLY = 0;
export const O_RDWR = 0o2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_CLOEXEC = 0o2000000;
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;
/** posix_fadvise(2): no readahead on this open file (reads fill the cache in 4 KiB folios). */
export const POSIX_FADV_RANDOM = 1;
/** posix_fadvise(2): start reading this range into the cache now (without waiting for it). */
export const POSIX_FADV_WILLNEED = 3;
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;
/** cachestat's number, the same on x86_64 and aarch64. */
export const SYS_CACHESTAT = 451;

/** errno numbers we map by name (Linux values). */
const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: "EPERM",
  2: "ENOENT",
  5: "EIO",
  6: "ENXIO",
  9: "EBADF",
  12: "ENOMEM",
  13: "EACCES",
  17: "EEXIST",
  22: "EINVAL",
  27: "EFBIG",
  28: "ENOSPC",
  30: "EROFS",
  95: "EOPNOTSUPP",
  122: "EDQUOT",
};

/**
 * The symbols with number arguments: Deno accepts a number for 64-bit parameters at
 * run time, while its generated types demand bigint. 64-bit results come back as
 * bigint; callers convert with Number().
 */
export interface Libc {
  open(path: Uint8Array, flags: number, mode: number): number;
  close(fd: number): number;
  pread(fd: number, buf: Uint8Array, count: number, offset: number): number | bigint;
  pwrite(fd: number, buf: Uint8Array, count: number, offset: number): number | bigint;
  ftruncate(fd: number, length: number): number;
  fallocate(fd: number, mode: number, offset: number, length: number): number;
  lseek(fd: number, offset: number, whence: number): number | bigint;
  fdatasync(fd: number): Promise<number>;
  /** Returns the error number itself (0 on success), not -1 and errno. */
  posix_fadvise(fd: number, offset: number, length: number, advice: number): number;
  fdatasync_sync(fd: number): number;
  statvfs(path: Uint8Array, buf: Uint8Array): number;
  cachestat(
    nr: number,
    fd: number,
    range: Uint8Array,
    stat: Uint8Array,
    flags: number,
  ): number | bigint;
  __errno_location(): Deno.PointerValue;
  strerror(n: number): Deno.PointerValue;
}
let lib: Libc | undefined;

/** The libc symbols, opened on first use. */
export function libc(): Libc {
  if (!lib) {
    lib = Deno.dlopen(libcPath(), SYMBOLS).symbols as unknown as Libc;
  }
  return lib;
}

function libcPath(): string {
  for (
    const p of ["libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6"]
  ) {
    try {
      Deno.dlopen(p, {}).close();
      return p;
    } catch {
      // try the next candidate
    }
  }
  throw new Error("cannot load libc.so.6: the file block store needs glibc on Linux");
}

/** The calling thread's errno as a number. */
export function errno(): number {
  const p = libc().__errno_location();
  return p ? new Deno.UnsafePointerView(p).getInt32() : 0;
}

/** A name such as "ENOSPC" for an errno number. */
export function errnoName(n: number): string {
  return ERRNO_NAMES[n] ?? `E${n}`;
}

/** The C library's description of an errno. */
export function strerror(n: number): string {
  const p = libc().strerror(n);
  return p ? Deno.UnsafePointerView.getCString(p) : `errno ${n}`;
}

/** NUL-terminated UTF-8 for a path argument. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** Size and free space of the filesystem holding `path` (statvfs). */
export function filesystemSpace(path: string): { capacityBytes: number; freeBytes: number } {
  // struct statvfs (64-bit Linux): f_bsize, f_frsize, f_blocks, f_bfree, f_bavail, ...
  const buf = new Uint8Array(128);
  if (libc().statvfs(cString(path), buf) !== 0) return { capacityBytes: 0, freeBytes: 0 };
  const v = new DataView(buf.buffer);
  const frsize = Number(v.getBigUint64(8, true));
  return {
    capacityBytes: Number(v.getBigUint64(16, true)) * frsize,
    freeBytes: Number(v.getBigUint64(32, true)) * frsize,
  };
}
