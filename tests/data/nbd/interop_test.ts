/**
 * Real NBD clients (libnbd's nbdinfo and nbdcopy, QEMU's qemu-io and qemu-img, fio's
 * nbd engine) against an in-process data plane on loopback. A test whose tool is not
 * installed is registered as ignored, with the reason printed.
 * @module
 */

import { type RunningDataPlane, startDataPlane } from "../../../data/local_plane.ts";
import { OP_FLUSH, OP_WRITE_ZEROES } from "../../../data/stats.ts";
import { createLogger, silentLogger } from "../../../control/common/mod.ts";
import { assert, assertEquals } from "../../_assert.ts";
import { RawClient } from "./_raw_client.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 64 * MiB;
const VOL = "vol";
const dec = new TextDecoder();

// ---- tools -----------------------------------------------------------------------------

function onPath(name: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/** Registers a test that needs `tools`; ignored, with the reason printed, when one is missing. */
function interopTest(name: string, tools: string[], fn: () => Promise<void>): void {
  const missing = tools.filter((t) => !onPath(t));
  if (missing.length > 0) {
    // deno-lint-ignore no-console
    console.warn(`interop_test: skipping "${name}": ${missing.join(", ")} not installed`);
  }
  Deno.test({ name: `interop: ${name}`, ignore: missing.length > 0, fn });
}

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

async function run(cmd: string, args: string[]): Promise<Ran> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Runs a command that must succeed; returns its stdout. */
async function ok(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  assertEquals(
    r.code,
    0,
    `${cmd} ${args.join(" ")} exited ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`,
  );
  return r.stdout;
}

/** qemu-io on the volume with one -c per command; exits nonzero if any command fails. */
function qemuIo(uri: string, ...commands: string[]): Promise<Ran> {
  return run("qemu-io", ["-f", "raw", uri, ...commands.flatMap((c) => ["-c", c])]);
}

async function qemuIoOk(uri: string, ...commands: string[]): Promise<string> {
  const r = await qemuIo(uri, ...commands);
  assertEquals(r.code, 0, `qemu-io ${commands.join("; ")}\n${r.stdout}\n${r.stderr}`);
  assert(!r.stdout.includes("Pattern verification failed"), r.stdout);
  return r.stdout;
}

// ---- the data plane --------------------------------------------------------------------

interface Ctx {
  plane: RunningDataPlane;
  dir: string;
  /** nbd:// URI of the test volume. */
  uri: string;
}

function testLogger() {
  const level = Deno.env.get("BALLAST_TEST_LOG");
  return level ? createLogger({ level: level as "debug" }) : silentLogger();
}

async function withPlane(fn: (ctx: Ctx) => Promise<void>, size = SIZE): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ballast-interop-" });
  const plane = await startDataPlane({
    dataDir: `${dir}/data`,
    nbdListen: { host: "127.0.0.1", port: 0 },
    logger: testLogger(),
    nodeName: "interop",
  });
  try {
    await plane.createVolume({
      name: VOL,
      uuid: crypto.randomUUID(),
      sizeBytes: size,
      description: "interop test volume",
    });
    await fn({ plane, dir, uri: `nbd://${plane.nbdAddress}/${VOL}` });
  } finally {
    await plane.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function allocated(plane: RunningDataPlane): number {
  return plane.volumeStatus(VOL)!.allocatedBytes;
}

function stats(plane: RunningDataPlane) {
  const s = plane.volumeStats().find((v) => v.volume === VOL);
  assert(s, "no stats for the volume");
  return s;
}

/** Random bytes (getRandomValues fills at most 64 KiB per call). */
function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(b.subarray(off, Math.min(n, off + 65536)));
  }
  return b;
}

/** Asserts byte equality, naming the first difference (assertEquals would print megabytes). */
function assertSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  assertEquals(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      throw new Error(`${what}: first difference at byte ${i}: ${actual[i]} != ${expected[i]}`);
    }
  }
}

interface MapEntry {
  offset: number;
  length: number;
  type: number;
}

async function nbdinfoMap(uri: string): Promise<MapEntry[]> {
  const out = JSON.parse(await ok("nbdinfo", ["--map", "--json", uri])) as MapEntry[];
  return out.map(({ offset, length, type }) => ({ offset, length, type }));
}

// ---- nbdinfo -------------------------------------------------------------------------

interopTest("nbdinfo --list shows every export with its description, size and flags", [
  "nbdinfo",
], async () => {
  await withPlane(async ({ plane }) => {
    await plane.createVolume({
      name: "another",
      uuid: crypto.randomUUID(),
      sizeBytes: 1 * MiB,
      description: "the second one",
    });
    const out = JSON.parse(await ok("nbdinfo", ["--list", "--json", `nbd://${plane.nbdAddress}`]));
    assertEquals([out.protocol, out.structured, out.TLS], ["newstyle-fixed", true, false]);
    const exports = out.exports as Record<string, unknown>[];
    assertEquals(exports.map((e) => e["export-name"]).sort(), ["another", "vol"]);
    const vol = exports.find((e) => e["export-name"] === VOL)!;
    assertEquals(
      {
        description: vol.description,
        size: vol["export-size"],
        contexts: vol.contexts,
        readOnly: vol.is_read_only,
        trim: vol.can_trim,
        zero: vol.can_zero,
        fua: vol.can_fua,
        flush: vol.can_flush,
        df: vol.can_df,
        multiConn: vol.can_multi_conn,
        cache: vol.can_cache,
        blockSizes: [vol.block_size_minimum, vol.block_size_preferred, vol.block_size_maximum],
      },
      {
        description: "interop test volume",
        size: SIZE,
        contexts: ["base:allocation"],
        readOnly: false,
        trim: true,
        zero: true,
        fua: true,
        flush: true,
        df: true,
        multiConn: true,
        cache: true,
        blockSizes: [1, 4096, 32 * MiB],
      },
    );
    const another = exports.find((e) => e["export-name"] === "another")!;
    assertEquals([another.description, another["export-size"]], ["the second one", 1 * MiB]);
  });
});

interopTest("nbdinfo --map shows one hole, then the data written by qemu-io", [
  "nbdinfo",
  "qemu-io",
], async () => {
  await withPlane(async ({ uri }) => {
    assertEquals(await nbdinfoMap(uri), [{ offset: 0, length: SIZE, type: 3 }]);
    await qemuIoOk(uri, "write -P 0x5a 1M 64k");
    assertEquals(await nbdinfoMap(uri), [
      { offset: 0, length: 1 * MiB, type: 3 },
      { offset: 1 * MiB, length: 64 * KiB, type: 0 },
      { offset: 1 * MiB + 64 * KiB, length: SIZE - 1 * MiB - 64 * KiB, type: 3 },
    ]);
    // And a discard turns it back into a hole.
    await qemuIoOk(uri, "discard 1M 64k");
    assertEquals(await nbdinfoMap(uri), [{ offset: 0, length: SIZE, type: 3 }]);
  });
});

// ---- qemu-io ---------------------------------------------------------------------------

interopTest("qemu-io writes and reads back patterns at aligned and unaligned offsets", [
  "qemu-io",
], async () => {
  await withPlane(async ({ uri, plane }) => {
    await qemuIoOk(
      uri,
      "write -P 0xab 0 64k",
      "write -P 0xcd 65537 3000",
      "write -P 0xef 63M 1M",
      "read -P 0xab 0 64k",
      "read -P 0xcd 65537 3000",
      "read -P 0 65536 1",
      "read -P 0xef 63M 1M",
      "read -P 0 1M 62M",
    );
    // The check can fail: a wrong pattern makes qemu-io report it and exit nonzero.
    const wrong = await qemuIo(uri, "read -P 0xac 0 64k");
    assert(wrong.code !== 0, "qemu-io accepted a wrong pattern");
    assert(wrong.stdout.includes("Pattern verification failed"), wrong.stdout);
    // The raw client sees the same bytes qemu-io wrote.
    const c = await RawClient.open(plane.nbdAddress, VOL);
    try {
      assertEquals(await c.read(65536, 3002), new Uint8Array([0, ...Array(3000).fill(0xcd), 0]));
    } finally {
      await c.close();
    }
  });
});

interopTest("qemu-io write -z keeps blocks allocated without -u and frees them with -u", [
  "qemu-io",
], async () => {
  await withPlane(async ({ uri, plane }) => {
    await qemuIoOk(uri, "write -P 0x55 0 4M", "flush");
    const written = allocated(plane);
    assert(written >= 4 * MiB, `allocated after writing 4 MiB: ${written}`);
    const zeroesBefore = stats(plane).ops[OP_WRITE_ZEROES];

    // Without -u qemu sends NBD_CMD_WRITE_ZEROES with NO_HOLE: zeroes, still allocated.
    await qemuIoOk(uri, "write -z 0 4M", "read -P 0 0 4M");
    assert(stats(plane).ops[OP_WRITE_ZEROES] > zeroesBefore, "no WRITE_ZEROES reached the server");
    const kept = allocated(plane);
    assert(kept >= 4 * MiB, `write -z without -u freed blocks: ${written} -> ${kept}`);

    // With -u it may unmap: the blocks go.
    await qemuIoOk(uri, "write -z -u 0 4M", "read -P 0 0 4M");
    const freed = allocated(plane);
    assert(kept - freed >= 4 * MiB, `write -z -u freed only ${kept - freed} bytes`);
  });
});

interopTest("qemu-io discard reads back as zeroes and frees the blocks", ["qemu-io"], async () => {
  await withPlane(async ({ uri, plane }) => {
    await qemuIoOk(uri, "write -P 0x11 0 8M", "flush");
    const before = allocated(plane);
    await qemuIoOk(
      uri,
      "discard 1M 4M",
      "read -P 0x11 0 1M",
      "read -P 0 1M 4M",
      "read -P 0x11 5M 3M",
    );
    const after = allocated(plane);
    assert(before - after >= 4 * MiB, `discard of 4 MiB freed ${before - after} bytes`);
  });
});

interopTest("qemu-io FUA writes and flushes succeed and reach the server", [
  "qemu-io",
], async () => {
  await withPlane(async ({ uri, plane }) => {
    const flushes = stats(plane).ops[OP_FLUSH];
    await qemuIoOk(
      uri,
      "write -f -P 0x77 0 4k",
      "write -f -z 8k 4k",
      "flush",
      "write -P 0x78 4k 4k",
      "flush",
      "read -P 0x77 0 4k",
      "read -P 0x78 4k 4k",
    );
    assert(stats(plane).ops[OP_FLUSH] >= flushes + 2, "flushes did not reach the server");
    assertEquals(stats(plane).errors.reduce((a, b) => a + b, 0), 0, "server-side errors");
  });
});

// ---- bulk copies ---------------------------------------------------------------------

/** 64 MiB of random data with zero runs, so sparse-aware copies have zeroes to handle. */
function sourceImage(): Uint8Array {
  const b = randomBytes(SIZE);
  b.fill(0, 16 * MiB, 20 * MiB);
  b.fill(0, 33 * MiB + 4096, 33 * MiB + 4096 + 65536);
  b.fill(0, SIZE - 1 * MiB);
  return b;
}

interopTest("qemu-img convert copies 64 MiB in and nbdcopy copies the same bytes out", [
  "qemu-img",
  "qemu-io",
  "nbdcopy",
], async () => {
  await withPlane(async ({ uri, dir }) => {
    // Fill the volume first so that zero runs in the source must really be written.
    await qemuIoOk(uri, "write -P 0xff 0 64M");
    const src = sourceImage();
    await Deno.writeFile(`${dir}/src.img`, src);
    await ok("qemu-img", ["convert", "-n", "-f", "raw", "-O", "raw", `${dir}/src.img`, uri]);
    await ok("nbdcopy", [uri, `${dir}/out.img`]);
    assertSameBytes(await Deno.readFile(`${dir}/out.img`), src, "nbdcopy output");
  });
});

interopTest("nbdcopy uses 4 connections at once (multi-conn) and the data survives", [
  "nbdcopy",
  "qemu-img",
], async () => {
  await withPlane(async ({ uri, dir }) => {
    const src = sourceImage();
    await Deno.writeFile(`${dir}/src.img`, src);
    const r = await run("nbdcopy", [
      "--verbose",
      "--connections=4",
      "--threads=4",
      `${dir}/src.img`,
      uri,
    ]);
    assertEquals(r.code, 0, r.stderr.slice(-4000));
    // nbdcopy drops to one connection when the server does not advertise CAN_MULTI_CONN.
    assert(
      /connections=4\b/.test(r.stderr),
      `nbdcopy did not use 4 connections: ${
        r.stderr.split("\n").find((l) => l.includes("connections="))
      }`,
    );
    await ok("qemu-img", ["convert", "-f", "raw", "-O", "raw", uri, `${dir}/out.img`]);
    assertSameBytes(await Deno.readFile(`${dir}/out.img`), src, "qemu-img output");
  });
});

interopTest("4 qemu-io clients write and verify their own regions concurrently", [
  "qemu-io",
], async () => {
  await withPlane(async ({ uri }) => {
    const one = (i: number) =>
      qemuIoOk(
        uri,
        ...Array.from({ length: 16 }, (_, j) => `write -P ${0x10 + i} ${i * 16 + j}M 1M`),
        `read -P ${0x10 + i} ${i * 16}M 16M`,
      );
    await Promise.all([0, 1, 2, 3].map(one));
    // Each region still holds its own pattern after all four finished.
    await Promise.all([0, 1, 2, 3].map((i) => qemuIoOk(uri, `read -P ${0x10 + i} ${i * 16}M 16M`)));
  });
});

// ---- fio -----------------------------------------------------------------------------

interopTest("fio nbd engine: mixed 4k/64k random writes verify with crc32c", ["fio"], async () => {
  await withPlane(async ({ uri }) => {
    const r = await run("fio", [
      "--name=ballast-verify",
      "--ioengine=nbd",
      `--uri=${uri}`,
      "--rw=randwrite",
      "--bssplit=4k/50:64k/50",
      "--iodepth=16",
      "--size=256m",
      "--time_based",
      "--runtime=3",
      "--verify=crc32c",
      "--verify_backlog=256",
      "--verify_fatal=1",
      "--verify_state_save=0",
      "--output-format=json",
    ]);
    assertEquals(r.code, 0, `fio exited ${r.code}\n${r.stdout.slice(-4000)}\n${r.stderr}`);
    // fio prints "fio: connected to NBD server" before the JSON.
    const json = JSON.parse(r.stdout.slice(r.stdout.indexOf("{")));
    const job = json.jobs[0];
    assertEquals(job.error, 0, `fio job error ${job.error}`);
    assert(!/verify|crc32c/i.test(r.stderr), `fio reported: ${r.stderr}`);
    assert(job.write.io_bytes > 0, "fio wrote nothing");
    // Verification reads back what was written: no reads would mean nothing was verified.
    assert(job.read.io_bytes > 0, "fio verified nothing");
  }, 256 * MiB);
});
