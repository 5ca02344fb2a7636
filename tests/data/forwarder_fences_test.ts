/**
 * Forwarder fences (data/forwarder_fences.ts), the pure core: tables over one shared buffer
 * stand for the threads serving a volume; and the handshake's NBD_OPT_BALLAST_FORWARDER
 * (data/nbd/handshake.ts), which names a forwarder only with a node's certificate.
 */

import { assert, assertEquals } from "../_assert.ts";
import { ForwarderFences } from "../../data/forwarder_fences.ts";
import * as C from "../../data/nbd/constants.ts";
import { type ExportView, handleOption, initialState } from "../../data/nbd/handshake.ts";

const A: [number, number] = [0xdead, 0xbeef];
const B: [number, number] = [0xffff_ffff, 1];

Deno.test("fences: a newer generation of a forwarder, on any thread, fences its older connections; not another forwarder's", () => {
  const t1 = new ForwarderFences();
  const t2 = new ForwarderFences(t1.buffer); // another thread's view
  const a1 = t1.register(A, 1)!;
  const b1 = t1.register(B, 1)!;
  assert(!a1.fenced() && !b1.fenced());
  const a2 = t2.register(A, 2)!;
  assert(a1.fenced(), "the older connection of A is fenced");
  assert(!a2.fenced() && !b1.fenced(), "A's newest and B's are not");
  const a0 = t2.register(A, 0)!; // a late, older one registering after
  assert(a0.fenced() && !a2.fenced());
  a2.release();
  assert(a1.fenced(), "the newest ending does not unfence the older ones");
  a1.release();
  a0.release();
  // Every connection of A ended: its slot is free. A's next connection (a higher generation,
  // as a forwarder's always is) is not fenced; a request of a released one still running is.
  const again = t1.register(A, 3)!;
  assert(!again.fenced());
  assert(a1.fenced() && a0.fenced(), "released connections stay fenced");
  const b2 = t2.register(B, 2)!;
  assert(b1.fenced() && !b2.fenced());
  b2.release();
  again.release();
  b1.release();
});

Deno.test("fences: the table grows in place as forwarders register (every thread's view follows), up to 4096; a full table registers nothing more, and frees slots as connections end", () => {
  const t1 = new ForwarderFences();
  const t2 = new ForwarderFences(t1.buffer); // another thread's view, made before the growth
  assertEquals(t1.slots, 64);
  const held = Array.from({ length: 100 }, (_, i) => t1.register([i + 1, 7], 1)!);
  assert(held.every((f) => f !== undefined));
  assertEquals([t1.slots, t2.slots], [128, 128]);
  // A forwarder registered in a slot past the other thread's first view: found there, and
  // fenced by a newer generation registered there (not given a second slot).
  const old = held[90];
  const newer = t2.register([91, 7], 2)!;
  assert(old.fenced() && !newer.fenced(), "the newer connection fences the one in a grown slot");
  assert(!held[89].fenced() && !held[91].fenced(), "others unaffected");
  for (let i = 100; i < 4096; i++) assert(t2.register([i + 1, 7], 1) !== undefined, `slot ${i}`);
  assertEquals(t1.slots, 4096);
  assertEquals(t1.register([99_999, 7], 1), undefined, "full");
  assert(t1.register([5, 7], 2) !== undefined, "a forwarder already in the table still is");
  held[10].release();
  assert(t2.register([99_999, 7], 1) !== undefined, "a freed slot is used");
});

const DISK: ExportView = {
  name: "disk",
  description: "",
  size: 1 << 20,
  readOnly: false,
  canTrim: true,
  canFastZero: true,
};
const catalog = { lookup: (n: string) => (n === "disk" ? DISK : undefined), list: () => [DISK] };

function forwarderOption(id: [number, number], gen: number, bytes = 12): Uint8Array {
  const b = new Uint8Array(bytes);
  const v = new DataView(b.buffer);
  if (bytes >= 12) {
    v.setUint32(0, id[0]);
    v.setUint32(4, id[1]);
    v.setUint32(8, gen);
  }
  return b;
}

/** The reply type of an option's single reply. */
function replyType(out: Uint8Array[]): number {
  return new DataView(out[0].buffer, out[0].byteOffset).getUint32(12);
}

Deno.test("NBD_OPT_BALLAST_FORWARDER: with a node's certificate the forwarder goes with the export to transmission; otherwise refused (POLICY), and a malformed one is INVALID", () => {
  const state = initialState(C.NBD_FLAG_C_FIXED_NEWSTYLE);
  const node = { tlsAvailable: true, tlsRequired: false, forwarders: true };
  const named = handleOption(
    state,
    catalog,
    node,
    C.NBD_OPT_BALLAST_FORWARDER,
    forwarderOption(B, 3),
  );
  assertEquals(replyType(named.action.out), C.NBD_REP_ACK);
  const go = new Uint8Array([0, 0, 0, 4, ...new TextEncoder().encode("disk"), 0, 0]);
  const attached = handleOption(named.state, catalog, node, C.NBD_OPT_GO, go);
  assertEquals(attached.action.kind, "transmission");
  assertEquals(
    (attached.action as { forwarder?: unknown }).forwarder,
    { id: B, gen: 3 },
  );
  const client = { tlsAvailable: true, tlsRequired: false };
  const refused = handleOption(
    state,
    catalog,
    client,
    C.NBD_OPT_BALLAST_FORWARDER,
    forwarderOption(B, 3),
  );
  assertEquals(replyType(refused.action.out), C.NBD_REP_ERR_POLICY);
  assertEquals(refused.state.forwarder, undefined);
  for (const bad of [forwarderOption(B, 1, 8), forwarderOption([0, 0], 1)]) {
    const r = handleOption(state, catalog, node, C.NBD_OPT_BALLAST_FORWARDER, bad);
    assertEquals(replyType(r.action.out), C.NBD_REP_ERR_INVALID);
  }
});

Deno.test("fences: a lock left held by a thread that was terminated inside is taken over", () => {
  const t = new ForwarderFences();
  new Int32Array(t.buffer)[0] = 1; // what a worker terminated in the middle would leave
  const f = t.register(A, 1);
  assert(f !== undefined && !f.fenced());
  f.release();
  assertEquals(new Int32Array(t.buffer)[0], 0, "and let go after");
});
