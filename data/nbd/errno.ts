/**
 * The one place where a failure becomes an NBD error value ("Error values"), modelled on
 * nbdkit's nbd_errno(): every refusal and every store failure is described by a POSIX error
 * name, and nbdError() turns that name into what the client sees, knowing the request's
 * flags. Pure.
 *
 * - `ENOTSUP` is sent only for WRITE_ZEROES with NBD_CMD_FLAG_FAST_ZERO (the client asked
 *   to be told "not fast"); otherwise an unsupported operation is `EINVAL`.
 * - `EOVERFLOW` is sent only for a request with NBD_CMD_FLAG_DF; otherwise `EINVAL`.
 * - `EDQUOT` and `EFBIG` are `ENOSPC` ("SHOULD map the EDQUOT and EFBIG errors to ENOSPC");
 *   `EROFS` and `EACCES` are `EPERM`; anything unknown is `EIO` (a storage failure the
 *   client may retry, never mistaken for its own mistake).
 * @module
 */

import * as C from "./constants.ts";

/** The POSIX error names the data plane describes failures with. */
export type Errno =
  | "EPERM"
  | "EIO"
  | "ENOMEM"
  | "EINVAL"
  | "ENOSPC"
  | "EOVERFLOW"
  | "ENOTSUP"
  | "ESHUTDOWN"
  // Any other name a store reports (EDQUOT, EROFS, ...); the literals above keep completion.
  // deno-lint-ignore ban-types
  | (string & {});

/** The NBD error value for `errno` on a request carrying command flags `flags`. */
export function nbdError(errno: Errno | undefined, flags: number): number {
  switch (errno) {
    case "EPERM":
    case "EROFS":
    case "EACCES":
      return C.NBD_EPERM;
    case "ENOMEM":
      return C.NBD_ENOMEM;
    case "EINVAL":
      return C.NBD_EINVAL;
    case "ENOSPC":
    case "EDQUOT":
    case "EFBIG":
      return C.NBD_ENOSPC;
    case "EOVERFLOW":
      return (flags & C.NBD_CMD_FLAG_DF) !== 0 ? C.NBD_EOVERFLOW : C.NBD_EINVAL;
    case "EOPNOTSUPP":
    case "ENOTSUP":
      return (flags & C.NBD_CMD_FLAG_FAST_ZERO) !== 0 ? C.NBD_ENOTSUP : C.NBD_EINVAL;
    case "ESHUTDOWN":
      return C.NBD_ESHUTDOWN;
    default:
      return C.NBD_EIO;
  }
}

/** A failure described by its POSIX error name (what errnoOf reads). */
export class ErrnoError extends Error {
  override name = "ErrnoError";
  constructor(readonly errno: Errno, message: string) {
    super(message);
  }
}

/**
 * The failure of a request that this node may no longer serve as the volume's master: another
 * member was promoted (a replica saw a newer epoch, the group record names another master) or
 * the group driver stopped. `ESHUTDOWN`, not `EIO`: for this volume the server is going away
 * ("Error values": "the server is in the process of being shut down"), nothing failed on the
 * media, and a forwarding node (data/proxy/forwarder.ts) holds such a request until the group
 * names the next master and sends it there, rather than failing it.
 */
export function notMaster(message: string): ErrnoError {
  return new ErrnoError("ESHUTDOWN", message);
}

/** The POSIX error name a thrown value carries (`errno` of BlockStoreError), else EIO. */
export function errnoOf(err: unknown): Errno {
  const errno = (err as { errno?: unknown } | null)?.errno;
  return typeof errno === "string" && errno !== "" ? errno : "EIO";
}

/** The POSIX error name of an NBD error value a server sent (a master, to a forwarder). */
export function errnoName(value: number): Errno {
  switch (value) {
    case C.NBD_EPERM:
      return "EPERM";
    case C.NBD_ENOMEM:
      return "ENOMEM";
    case C.NBD_EINVAL:
      return "EINVAL";
    case C.NBD_ENOSPC:
      return "ENOSPC";
    case C.NBD_EOVERFLOW:
      return "EOVERFLOW";
    case C.NBD_ENOTSUP:
      return "ENOTSUP";
    case C.NBD_ESHUTDOWN:
      return "ESHUTDOWN";
    default:
      return "EIO";
  }
}
