/**
 * Shared by the attach-anywhere tests: a libnbd writer attached through a node that holds no
 * copy of the volume (the "front"), that records every acknowledged write and every pause,
 * and the checks at the end (no error, every acknowledged write read back through the same
 * connection and through the master directly).
 * @module
 */

import { assert, assertEquals } from "../_assert.ts";
import { waitFor } from "./_cluster.ts";
import { admin } from "./_cluster_tls.ts";
import { run } from "./_harness.ts";
import { type ReplCluster, untilServed, volumeOf, type VolumeView } from "./_replicated.ts";

export const PYTHON = "/usr/bin/python3";
/** Four nodes: the volume's three members, and a node that holds no copy (the front). */
export const NAMES = ["node-a", "node-b", "node-c", "node-d"];

/**
 * Writes 4 KiB blocks, 4 in flight (libnbd aio), each block holding its sequence number,
 * over a permutation of 4096 blocks (no two writes in flight overlap), until the stop file
 * appears; every completion must succeed (an error ends the script with status 1). Records
 * the newest acknowledged sequence number of each block, writes progress to a file, and
 * records every pause above 0.5 s between completions. Then FLUSH, reads every block back
 * through the same connection and prints JSON: writes, pauses (ms), bad blocks, manifest.
 */
const WRITER_PY = `
import sys, nbd, os, time, json
uri, progress, stop = sys.argv[1:4]
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(uri)
BLOCKS = 4096
done = {}
inflight = {}
seq = 0
last = time.monotonic()
pauses = []
def block(s):
    return s.to_bytes(8, "little") * 512
while not os.path.exists(stop) or inflight:
    while len(inflight) < 4 and not os.path.exists(stop):
        off = (seq * 7919 % BLOCKS) * 4096
        cookie = h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(block(seq))), off)
        inflight[cookie] = (off, seq)
        seq += 1
    h.poll(1000)
    for cookie in list(inflight):
        if h.aio_command_completed(cookie):
            off, s = inflight.pop(cookie)
            done[off] = max(done.get(off, -1), s)
            now = time.monotonic()
            if now - last > 0.5:
                pauses.append(round((now - last) * 1000))
            last = now
            if s % 100 == 0:
                with open(progress, "w") as f:
                    f.write(str(s))
h.flush()
bad = [off for off, s in done.items() if h.pread(4096, off) != block(s)]
print(json.dumps({"writes": len(done), "seq": seq, "pauses": pauses, "bad": bad[:10],
                  "manifest": {str(k): v for k, v in done.items()}}))
`;

/** Reads every block of the manifest through `uri`; prints the offsets that differ. */
const CHECK_PY = `
import sys, nbd, json
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
manifest = json.loads(open(sys.argv[2]).read())
bad = [o for o, s in manifest.items() if h.pread(4096, int(o)) != int(s).to_bytes(8, "little") * 512]
print(json.dumps(bad[:10]))
`;

export interface Writer {
  /** Sequence number of the newest write recorded in the progress file. */
  progress(): Promise<number>;
  /** Waits until `n` more writes than now were acknowledged. */
  advance(n: number, what: string): Promise<void>;
  /** Stops writing and checks everything; returns the pauses (ms) the client saw. */
  finish(c: ReplCluster, volume: string): Promise<number[]>;
}

/** Creates `volume` (2 replicas) and returns it with the node that holds no copy of it. */
export async function createWithFront(
  c: ReplCluster,
  volume: string,
): Promise<{ v: VolumeView; front: string }> {
  const a = c.nodes.get(NAMES[0])!;
  const made = await admin(a, ["volume", "create", volume, "--size", "64MiB", "--replicas", "2"]);
  assertEquals(made.code, 0, made.stderr);
  const v = await untilServed(c, volume);
  const front = NAMES.find((n) => !v.members?.includes(n));
  assert(front !== undefined, `a node outside the group: ${JSON.stringify(v)}`);
  return { v, front };
}

/** Starts the writer through `front`; files go to `dir`. */
export function startWriter(c: ReplCluster, front: string, volume: string, dir: string): Writer {
  const progressFile = `${dir}/progress`;
  const stop = `${dir}/stop`;
  const writer = run(PYTHON, ["-c", WRITER_PY, c.uri(front, volume), progressFile, stop], {
    timeoutMs: 600_000,
  });
  let ended: Awaited<typeof writer> | undefined;
  writer.then((r) => (ended = r));
  const progress = async () => {
    try {
      return Number(await Deno.readTextFile(progressFile)) || 0;
    } catch {
      return 0;
    }
  };
  return {
    progress,
    async advance(n, what) {
      const at = await progress();
      await waitFor(what, async () => {
        // A writer that stopped (an error reached the client) will not advance: say why.
        if (ended) throw new Error(`the writer ended (exit ${ended.code}): ${ended.stderr}`);
        return (await progress()) >= at + n;
      }, { timeoutMs: 60_000 });
    },
    async finish(c, volume) {
      await Deno.writeTextFile(stop, "");
      const w = await writer;
      assertEquals(w.code, 0, `the client saw an error: ${w.stderr}`);
      const out = JSON.parse(w.stdout) as {
        writes: number;
        pauses: number[];
        bad: string[];
        manifest: Record<string, number>;
      };
      assertEquals(out.bad, [], "acknowledged writes read back wrong through the same connection");
      const manifest = `${dir}/manifest.json`;
      await Deno.writeTextFile(manifest, JSON.stringify(out.manifest));
      const master = (await volumeOf(c, front, volume)).master;
      const check = await run(PYTHON, ["-c", CHECK_PY, c.uri(master, volume), manifest]);
      assertEquals(check.code, 0, check.stderr);
      assertEquals(JSON.parse(check.stdout), [], "acknowledged writes missing on the master");
      return out.pauses;
    },
  };
}

/** Waits until the group has a master other than `old`; returns the volume then. */
export async function newMaster(
  c: ReplCluster,
  via: string,
  volume: string,
  old: string,
): Promise<VolumeView> {
  let v: VolumeView | undefined;
  await waitFor(`a new master of ${volume}`, async () => {
    v = await volumeOf(c, via, volume);
    return v.master !== old;
  }, { timeoutMs: 60_000 });
  return v!;
}

/** Waits until every member of `volume` is in sync. */
export async function allInSync(c: ReplCluster, via: string, volume: string): Promise<void> {
  await waitFor("all three in sync", async () => {
    const v = await volumeOf(c, via, volume);
    return v.inSync?.length === 3 && (v.members?.length ?? 0) === 3;
  }, { timeoutMs: 120_000 });
}
