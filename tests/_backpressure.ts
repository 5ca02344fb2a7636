/**
 * For tests of backpressure (a peer that stops reading must hold the sender back): what the
 * kernel itself can absorb on this machine, and waiting until a sender has stalled.
 *
 * Kernel socket buffers differ between machines (`net.ipv4.tcp_rmem` max is 32 MiB on ours):
 * a test must push past them and allow for them in its bounds rather than assume a size, and
 * judge a sender once it has stalled rather than after a fixed time.
 * @module
 */

import { fail } from "./_assert.ts";

/**
 * The most one TCP connection on this machine can hold in kernel buffers: the sender's
 * largest send buffer plus the receiver's largest receive buffer (autotuning maxima), read
 * from the kernel so that a test of backpressure pushes past whatever they are here.
 */
export async function kernelBufferBytes(): Promise<number> {
  const max = async (f: string) => Number((await Deno.readTextFile(f)).trim().split(/\s+/)[2]);
  return await max("/proc/sys/net/ipv4/tcp_wmem") + await max("/proc/sys/net/ipv4/tcp_rmem");
}

/**
 * Waits until `count()` has not changed for `quietMs` (the sender is held back) or reached
 * `total`; fails after `deadlineMs`. A slow machine can only end the wait early, with less
 * counted, never make a held-back sender look free.
 */
export async function untilStalled(
  count: () => number,
  total: number,
  quietMs = 1000,
  deadlineMs = 60_000,
): Promise<void> {
  const start = Date.now();
  let last = -1;
  let since = Date.now();
  while (Date.now() - start < deadlineMs) {
    const n = count();
    if (n === total) return;
    if (n !== last) {
      last = n;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  fail(`the sender neither finished nor stalled within ${deadlineMs} ms (${count()} of ${total})`);
}
