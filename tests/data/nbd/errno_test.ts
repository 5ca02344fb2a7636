/**
 * nbdError(): the one mapping from a failure's POSIX error name to the NBD error value
 * ("Error values"), flag-aware like nbdkit's nbd_errno.
 */
import * as C from "../../../data/nbd/constants.ts";
import { errnoOf, nbdError } from "../../../data/nbd/errno.ts";
import { BlockStoreError } from "../../../data/store/mod.ts";
import { assertEquals } from "../../_assert.ts";

const NONE = 0;
const DF = C.NBD_CMD_FLAG_DF;
const FAST_ZERO = C.NBD_CMD_FLAG_FAST_ZERO;

Deno.test("nbdError() maps POSIX error names to NBD error values, unknown ones to EIO", () => {
  const table: [string | undefined, number, number][] = [
    ["EPERM", NONE, C.NBD_EPERM],
    ["EROFS", NONE, C.NBD_EPERM],
    ["EACCES", NONE, C.NBD_EPERM],
    ["EIO", NONE, C.NBD_EIO],
    ["ENOMEM", NONE, C.NBD_ENOMEM],
    ["EINVAL", NONE, C.NBD_EINVAL],
    ["ENOSPC", NONE, C.NBD_ENOSPC],
    ["EDQUOT", NONE, C.NBD_ENOSPC],
    ["EFBIG", NONE, C.NBD_ENOSPC],
    ["ESHUTDOWN", NONE, C.NBD_ESHUTDOWN],
    ["EBADF", NONE, C.NBD_EIO],
    ["ENOENT", NONE, C.NBD_EIO],
    ["enospc", NONE, C.NBD_EIO],
    ["", NONE, C.NBD_EIO],
    [undefined, NONE, C.NBD_EIO],
  ];
  for (const [name, flags, want] of table) assertEquals(nbdError(name, flags), want, String(name));
});

Deno.test("nbdError() sends EOVERFLOW only with DF and ENOTSUP only with FAST_ZERO, else EINVAL", () => {
  const table: [string, number, number][] = [
    ["EOVERFLOW", NONE, C.NBD_EINVAL],
    ["EOVERFLOW", DF, C.NBD_EOVERFLOW],
    ["EOVERFLOW", FAST_ZERO, C.NBD_EINVAL],
    ["ENOTSUP", NONE, C.NBD_EINVAL],
    ["EOPNOTSUPP", NONE, C.NBD_EINVAL],
    ["ENOTSUP", FAST_ZERO, C.NBD_ENOTSUP],
    ["EOPNOTSUPP", FAST_ZERO | C.NBD_CMD_FLAG_FUA, C.NBD_ENOTSUP],
    ["ENOTSUP", DF, C.NBD_EINVAL],
  ];
  for (const [name, flags, want] of table) {
    assertEquals(nbdError(name, flags), want, `${name} with flags 0x${flags.toString(16)}`);
  }
});

Deno.test("errnoOf() reads a store error's errno and calls anything else EIO", () => {
  assertEquals(errnoOf(new BlockStoreError("ENOSPC", "full")), "ENOSPC");
  assertEquals(errnoOf(new Error("boom")), "EIO");
  assertEquals(errnoOf({ errno: 5 }), "EIO");
  assertEquals(errnoOf(null), "EIO");
  assertEquals(errnoOf(undefined), "EIO");
});
