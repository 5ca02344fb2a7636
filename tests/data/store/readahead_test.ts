/**
 * ReadaheadStreams (data/store/_readahead.ts), the pure core of FileBlockStore.readBulk()'s
 * readahead: which reads are sequential, which range to ask the kernel for and when, and that
 * several interleaved readers each keep their stream.
 * @module
 */

import { ReadaheadStreams } from "../../../data/store/_readahead.ts";
import { assertEquals } from "../../_assert.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const SIZE = 1024 * MiB;

/** Reads `count` blocks of `block` bytes in order from `start`; returns the ranges asked for. */
function readOn(
  ra: ReadaheadStreams,
  start: number,
  block: number,
  count: number,
  size = SIZE,
): [number, number][] {
  const asked: [number, number][] = [];
  for (let i = 0; i < count; i++) {
    if (ra.read(start + i * block, block, size)) asked.push([ra.from, ra.to]);
  }
  return asked;
}

Deno.test("readahead: a sequential reader's windows start small, double, and stop growing at the largest", () => {
  const ra = new ReadaheadStreams(128 * KiB, 1 * MiB);
  assertEquals(ra.read(0, 4 * KiB, SIZE), false, "one read is not a stream yet");
  assertEquals(ra.read(4 * KiB, 4 * KiB, SIZE), true, "the second, where the first ended, is");
  assertEquals([ra.from, ra.to], [8 * KiB, 8 * KiB + 128 * KiB]);
  // Within half a window of what was asked for, the next window (twice as large) is asked for,
  // from where the last one ended: nothing is asked for twice, nothing is skipped.
  const asked = readOn(ra, 8 * KiB, 4 * KiB, 1000);
  let end = 8 * KiB + 128 * KiB;
  for (const [from, to] of asked) {
    assertEquals(from, end, "each range starts where the one before ended");
    end = to;
  }
  assertEquals(asked.length > 3, true, `${asked.length} ranges over 4 MiB of reads`);
  const last = asked[asked.length - 1];
  // The reader read up to 4 KiB * 1002; what was asked for reaches at most one window past it.
  const readTo = 4 * KiB * 1002;
  assertEquals(last[1] > readTo && last[1] <= readTo + 1 * MiB, true, `asked up to ${last[1]}`);
  assertEquals(last[1] - last[0] <= 1 * MiB, true, "no range larger than the largest window");
});

Deno.test("readahead: a large reader's first window is four of its reads", () => {
  const ra = new ReadaheadStreams(128 * KiB, 8 * MiB);
  ra.read(0, 1 * MiB, SIZE);
  assertEquals(ra.read(1 * MiB, 1 * MiB, SIZE), true);
  assertEquals([ra.from, ra.to], [2 * MiB, 6 * MiB]);
});

Deno.test("readahead: random reads ask for nothing", () => {
  const ra = new ReadaheadStreams(128 * KiB, 8 * MiB);
  let x = 12345;
  let asked = 0;
  for (let i = 0; i < 10_000; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    if (ra.read((x % (SIZE / (4 * KiB))) * 4 * KiB, 4 * KiB, SIZE)) asked++;
  }
  // Two random blocks may happen to be adjacent; almost none are.
  assertEquals(asked <= 5, true, `${asked} readaheads for 10000 random reads`);
});

Deno.test("readahead: interleaved sequential readers each keep their stream, among random reads", () => {
  const ra = new ReadaheadStreams(128 * KiB, 1 * MiB);
  const streams = [0, 100 * MiB, 200 * MiB, 300 * MiB];
  const next = [...streams];
  const asked: number[][] = streams.map(() => []);
  let x = 7;
  for (let round = 0; round < 2000; round++) {
    for (const [s, at] of next.entries()) {
      if (ra.read(at, 4 * KiB, SIZE)) asked[s].push(ra.from, ra.to);
      next[s] = at + 4 * KiB;
      // Three one-off reads between two reads of a stream (another client's random reads).
      for (let k = 0; k < 3; k++) {
        x = (x * 1103515245 + 12345) % 2 ** 31;
        ra.read(512 * MiB + (x % 1000) * 64 * KiB + 4 * KiB, 4 * KiB, SIZE);
      }
    }
  }
  for (const [s, ranges] of asked.entries()) {
    // 2000 reads of 4 KiB: ~8 MiB read, each stream asked ahead all the way, contiguously.
    assertEquals(ranges[0], streams[s] + 8 * KiB, `stream ${s} asked from its second read on`);
    for (let i = 2; i < ranges.length; i += 2) assertEquals(ranges[i], ranges[i - 1]);
    const reached = ranges[ranges.length - 1];
    assertEquals(
      reached >= next[s],
      true,
      `stream ${s}: asked up to ${reached}, read to ${next[s]}`,
    );
  }
});

Deno.test("readahead: windows stop at the end of the file, and a reader starting over is a new stream", () => {
  const size = 1 * MiB;
  const ra = new ReadaheadStreams(128 * KiB, 8 * MiB);
  const asked = readOn(ra, 0, 64 * KiB, 16, size);
  assertEquals(asked.every(([from, to]) => from < to && to <= size), true, JSON.stringify(asked));
  assertEquals(asked[asked.length - 1][1], size);
  assertEquals(ra.read(0, 64 * KiB, size), false, "back at the start: a new stream");
  assertEquals(ra.read(64 * KiB, 64 * KiB, size), true, "which reads ahead again");
  assertEquals([ra.from, ra.to], [128 * KiB, 128 * KiB + 256 * KiB]);
});
