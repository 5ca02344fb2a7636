/**
 * Free TCP ports on 127.0.0.1 for tests that must name a port before a child process binds it
 * (etcd members, servers restarted on the same address).
 *
 * A port from `listen(port: 0)` comes from the kernel's ephemeral range
 * (/proc/sys/net/ipv4/ip_local_port_range, 32768-60999 here), the same range outgoing
 * connections take their local ports from, and the kernel may hand the same number out again as
 * soon as the probe closes. Both happened in CI: two etcd members were given one number (one as a
 * client URL, one as a peer URL), and the second failed with "address already in use". So ports
 * come from below the ephemeral range, are probed by binding them, and are never handed out twice
 * by one test process.
 * @module
 */

const LOW = 20_000;
const HIGH = 32_000; // exclusive; below the ephemeral range's 32768
const handedOut = new Set<number>();

/** A port free when asked, outside the ephemeral range and not yet handed out by this process. */
export function freePort(): number {
  for (let attempt = 0; attempt < 1_000; attempt++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
    if (handedOut.has(port)) continue;
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
    } catch {
      continue; // in use
    }
    handedOut.add(port);
    return port;
  }
  throw new Error(`freePort: no free port found in ${LOW}-${HIGH - 1} after 1000 tries`);
}
