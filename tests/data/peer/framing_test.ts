/**
 * FrameDecoder's slabs (data/peer/_framing.ts): frames copied out of a transient chunk (the
 * peer connection's reused read buffer) share slabs, are never overwritten while not given
 * back, and their slab is filled again only once every frame taken from it came back.
 */
import { FrameDecoder, frameHeader } from "../../../data/peer/_framing.ts";
import { assert, assertEquals } from "../../_assert.ts";

const KIB = 1024;

/** A frame's payload: `n` bytes of a pattern of its own. */
function payload(seed: number, n = 4 * KIB): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (seed * 131 + i * 7) & 0xff;
  return b;
}

/** The wire bytes of `payloads` in one chunk. */
function chunkOf(payloads: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(payloads.reduce((n, p) => n + 4 + p.length, 0));
  let at = 0;
  for (const p of payloads) {
    out.set(frameHeader(p.length), at);
    out.set(p, at + 4);
    at += 4 + p.length;
  }
  return out;
}

/** Pushes frames seeds [from, to) as one transient chunk, then overwrites the chunk. */
function feed(d: FrameDecoder, from: number, to: number, n = 4 * KIB): Uint8Array[] {
  const seeds = Array.from({ length: to - from }, (_, i) => from + i);
  const chunk = chunkOf(seeds.map((s) => payload(s, n)));
  const frames = d.push(chunk, true);
  chunk.fill(0xee); // what the next socket read does to the read buffer
  return frames;
}

Deno.test("frames from a transient chunk share a slab and survive the chunk's reuse", () => {
  const d = new FrameDecoder();
  const frames = feed(d, 0, 16);
  assertEquals(frames.length, 16);
  frames.forEach((f, i) => assertEquals(f, payload(i), `frame ${i}`));
  assert(frames.every((f) => f.buffer === frames[0].buffer), "one slab for small frames");
  // Many more frames, none given back: the first ones are never written over.
  const later = [feed(d, 16, 48), feed(d, 48, 80), feed(d, 80, 112)].flat();
  frames.forEach((f, i) => assertEquals(f, payload(i), `frame ${i} after 96 more`));
  later.forEach((f, i) => assertEquals(f, payload(16 + i), `frame ${16 + i}`));
  assert(new Set(later.map((f) => f.buffer)).size > 1, "a full slab is followed by another");
});

Deno.test("a slab is filled again only when every frame taken from it came back", () => {
  const d = new FrameDecoder();
  const first = feed(d, 0, 8);
  const slab = first[0].buffer;
  for (const f of first.slice(1)) d.recycle(f);
  d.recycle(first[1]); // twice: counts once
  d.recycle(first[1].subarray(0)); // a view of its own, never handed out: ignored
  const more = feed(d, 8, 16);
  assertEquals(first[0], payload(0), "the frame not given back is intact");
  assert(more.every((f) => f.buffer === slab && f.byteOffset >= 8 * 4 * KIB), "appended");
  d.recycle(first[0]);
  for (const f of more) d.recycle(f);
  const again = feed(d, 16, 17);
  assert(again[0].buffer === slab && again[0].byteOffset === 0, "an empty slab starts over");
  assertEquals(again[0], payload(16));
});

Deno.test("a full slab whose frames all came back holds the frames after the next one", () => {
  const d = new FrameDecoder();
  const a = feed(d, 0, 64); // 64 x 4 KiB: the slab is full
  const b = feed(d, 64, 65);
  assert(b[0].buffer !== a[0].buffer, "a new slab");
  for (const f of a) d.recycle(f);
  const fill = feed(d, 65, 128); // fills b's slab
  assert(fill.every((f) => f.buffer === b[0].buffer));
  const c = feed(d, 128, 129);
  assert(c[0].buffer === a[0].buffer, "the first slab, given back whole, is used again");
  assertEquals(b[0], payload(64));
  fill.forEach((f, i) => assertEquals(f, payload(65 + i)));
  assertEquals(c[0], payload(128));
});

Deno.test("tiny and large frames from a transient chunk get copies of their own", () => {
  const d = new FrameDecoder();
  const tiny = feed(d, 0, 4, 16);
  assert(new Set(tiny.map((f) => f.buffer)).size === 4, "16-byte frames: own copies");
  tiny.forEach((f, i) => assertEquals(f, payload(i, 16)));
  const large = feed(d, 4, 6, 40 * KIB);
  assert(large[0].buffer !== large[1].buffer, "40 KiB frames: own copies");
  large.forEach((f, i) => assertEquals(f, payload(4 + i, 40 * KIB)));
  d.recycle(tiny[0]); // not from a slab: ignored
  d.recycle(large[0]);
  assertEquals(tiny[0], payload(0, 16));
});
