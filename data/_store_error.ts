/**
 * Block-store failures as API errors (private to data/).
 * @module
 */

import { FailedPreconditionError, ResourceExhaustedError } from "../mod/errors.ts";
import { formatSize } from "../mod/size.ts";
import { BlockStoreError } from "./store/mod.ts";

/**
 * Maps store failures to API errors: a full disk is RESOURCE_EXHAUSTED; a size past the
 * largest file the file system allows (EFBIG: 16 TiB on ext4 with 4 KiB blocks) is
 * FAILED_PRECONDITION naming the size, since freeing space would not help.
 */
export function storeError(err: unknown, what: string, sizeBytes?: number): Error {
  if (err instanceof BlockStoreError) {
    if (err.errno === "EFBIG" && sizeBytes !== undefined) {
      return new FailedPreconditionError(
        `${what}: ${formatSize(sizeBytes)} is larger than the largest file the file system ` +
          "of the data directory allows (EFBIG; ext4 allows 16 TiB - 4 KiB with 4 KiB " +
          "blocks): choose a smaller size or put the data directory on XFS",
        { field: "size", sizeBytes },
      );
    }
    if (err.errno === "ENOSPC" || err.errno === "EDQUOT" || err.errno === "EFBIG") {
      return new ResourceExhaustedError(`${what}: no space left on the data disk`, { cause: err });
    }
  }
  return err instanceof Error ? err : new Error(String(err));
}
