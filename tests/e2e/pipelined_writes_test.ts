/**
 * Pipelined 1 MiB WRITEs into regions that are clean (each must wait for its activity-log mark,
 * data/replication/tracker.ts) land intact, on a data worker and on the main thread. While such a
 * WRITE waits, its payload is used in place in the connection's input buffer, not copied
 * (data/nbd/_change.ts): were anything read into that buffer meanwhile, a later WRITE's bytes
 * would land in an earlier one's place. Two connections per volume, each with all its WRITEs in
 * flight at once, every MiB distinct; one of them off region boundaries (each WRITE spans two
 * regions, the second of which the first connection may be marking).
 */

import { assertEquals } from "../_assert.ts";
import { PYTHON } from "./_cluster.ts";
import { cli, e2eTest, run, startBallast } from "./_harness.ts";

const MIB = 1024 * 1024;
/** WRITEs per connection, all in flight together (more than the input buffer holds). */
const WRITES = 24;

/** Sends WRITES 1 MiB writes at once from `first` MiB + `shift` bytes; prints "ok N". */
const WRITE_PY = `
import sys, nbd
uri, first, shift, n, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
MIB = 1 << 20
h = nbd.NBD()
h.connect_uri(uri)
cookies = []
for i in range(n):
    data = ("%s%07d" % (tag, first + i)).encode() * (MIB // 8)
    cookies.append(h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), (first + i) * MIB + shift))
while h.aio_in_flight() > 0:
    h.poll(-1)
for c in cookies:
    h.aio_command_completed(c)
print("ok", len(cookies))
`;

/** Reads back what WRITE_PY wrote; prints the MiB numbers that differ, then "checked N". */
const VERIFY_PY = `
import sys, nbd
uri, first, shift, n, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
MIB = 1 << 20
h = nbd.NBD()
h.connect_uri(uri)
for i in range(n):
    want = ("%s%07d" % (tag, first + i)).encode() * (MIB // 8)
    if h.pread(MIB, (first + i) * MIB + shift) != want:
        print("differs", first + i)
print("checked", n)
`;

for (const workers of ["2", "1"]) {
  e2eTest(
    `pipelined 1 MiB writes into clean regions land intact (--data-workers ${workers})`,
    { tools: [PYTHON] },
    async () => {
      const b = await startBallast({ args: ["--data-workers", workers] });
      try {
        const made = await cli(["volume", "create", "v", "--size", "64MiB"], { api: b.api });
        assertEquals(made.code, 0, made.stderr);
        const uri = b.nbdUri("v");
        // [first MiB, shift, tag]: aligned, and half a MiB off (two regions per WRITE).
        const streams: [number, number, string][] = [[0, 0, "a"], [WRITES + 4, MIB / 2, "b"]];
        const args = ([first, shift, tag]: [number, number, string]) => [
          uri,
          String(first),
          String(shift),
          String(WRITES),
          tag,
        ];
        const wrote = await Promise.all(
          streams.map((s) => run(PYTHON, ["-c", WRITE_PY, ...args(s)], { timeoutMs: 60_000 })),
        );
        for (const w of wrote) assertEquals(w.stdout.trim(), `ok ${WRITES}`, w.stderr);
        for (const s of streams) {
          const check = await run(PYTHON, ["-c", VERIFY_PY, ...args(s)], { timeoutMs: 60_000 });
          assertEquals(check.stdout.trim(), `checked ${WRITES}`, check.stderr);
        }
      } finally {
        await b.stop();
      }
    },
  );
}
