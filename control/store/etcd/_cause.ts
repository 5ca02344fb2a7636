/**
 * Why a call to etcd failed, in an operator's words (private to _conn.ts).
 *
 * The `etcd3` package passes gRPC's messages through, such as "14 UNAVAILABLE: No connection
 * established. Last error: connect ECONNREFUSED 127.0.0.1:2379 (2026-12-05T18:02:11.405Z)" or
 * "4 DEADLINE_EXCEEDED: Deadline exceeded after 0.030s,Waiting for LB pick". What an operator
 * acts on is the cause (refused, no answer, no leader, a certificate), so the error message
 * names it; the original message stays in the error's `cause` and in the node's log.
 * @module
 */

/** Known causes, first match wins: [pattern of gRPC's message, what it means]. */
const CAUSES: [RegExp, (m: RegExpMatchArray) => string][] = [
  [/ECONNREFUSED\s*([\w.:\[\]-]*)/, (m) => `connection refused${at(m[1])} (etcd not running?)`],
  [/ENOTFOUND|EAI_AGAIN/, () => "host name not resolved"],
  [/EHOSTUNREACH|ENETUNREACH/, () => "no route to host"],
  [/ECONNRESET|Connection dropped|socket hang up/i, () => "connection reset"],
  [/etcdserver: no leader/, () => "etcd has no leader (a quorum of members is down or cut off)"],
  [/etcdserver: leader changed/, () => "etcd's leader changed during the call"],
  [/etcdserver: request timed out/, () => "etcd timed out (slow disk, or a quorum lost)"],
  [/etcdserver: too many requests/, () => "etcd is overloaded (too many requests)"],
  [
    /authentication|permission denied|PERMISSION_DENIED|UNAUTHENTICATED/i,
    () => "etcd refused the credentials",
  ],
  [/certificate|self[- ]signed|SSL|TLS|handshake/i, (m) => `TLS failed: ${stripGrpc(m.input!)}`],
  [
    /ETIMEDOUT|DEADLINE_EXCEEDED|Deadline exceeded/i,
    () => "no answer in time (etcd stopped, frozen or cut off?)",
  ],
];

/** " at 127.0.0.1:2379", or nothing when gRPC did not say where (a sentence's dot dropped). */
function at(address: string | undefined): string {
  const a = address?.replace(/\.+$/, "");
  return a ? ` at ${a}` : "";
}

/**
 * The cause to report of a call that failed on several members: one that says more than
 * that a member is down ("no leader": a member answered) wins over the last one's.
 */
export function telling(causes: readonly string[], last: string): string {
  return causes.find((c) => c.startsWith("etcd has no leader")) ?? last;
}

/** gRPC's message without its status code prefix ("14 UNAVAILABLE: ") and timestamp. */
function stripGrpc(message: string): string {
  return message
    .replace(/^\d+ [A-Z_]+: /, "")
    .replace(/\s*\(\d{4}-\d\d-\d\dT[\d:.]+Z\)/g, "")
    .replace(/\s+/g, " ")
    .trim();
}

/** The cause of a failed etcd call, short and without gRPC's internals. */
export function etcdCause(message: string): string {
  for (const [pattern, describe] of CAUSES) {
    const m = message.match(pattern);
    if (m) return describe(m);
  }
  return stripGrpc(message) || "unknown error";
}
