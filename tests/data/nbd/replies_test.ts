/**
 * A READ sent in pieces as one message (a simple reply, or one structured chunk with DF) is
 * never split by another reply completing meanwhile (a FLUSH or FUA write answered by the
 * disk): doc/proto.md, "Simple reply message" and "Structured reply chunk message". The
 * replies go to a transport that records the bytes in order (a pure core: no socket).
 */

import * as C from "../../../data/nbd/constants.ts";
import { Request } from "../../../data/nbd/codec.ts";
import { Replies, ReplyBatcher } from "../../../data/nbd/_replies.ts";
import type { Transport } from "../../../data/nbd/transport.ts";
import { concat } from "./_raw_client.ts";
import { assertEquals } from "../../_assert.ts";

function request(type: number, handle: number, length = 0, flags = 0): Request {
  const r = new Request();
  r.type = type;
  r.handleLo = handle;
  r.length = length;
  r.flags = flags;
  return r;
}

/** Streams a READ of three pieces; a FLUSH's reply completes while the second is read. */
async function readWithFlushMidway(structured: boolean, flags: number): Promise<Uint8Array> {
  const written: Uint8Array[] = [];
  const transport = {
    write: async (p: Uint8Array) => {
      await new Promise((r) => setTimeout(r, 0)); // a socket that takes its time
      written.push(p.slice());
      return p.length;
    },
    remote: "test",
  } as unknown as Transport;
  const replies = new Replies(new ReplyBatcher(() => transport, () => false));
  replies.structured = structured;
  const flush = replies.deferred(request(C.NBD_CMD_FLUSH, 2));
  let pieces = 0;
  await replies.readStreamed(
    request(C.NBD_CMD_READ, 1, 3 * C.STREAM_PIECE, flags),
    (into) => {
      into.fill(0x5a);
      if (++pieces === 2) flush.ok();
    },
  );
  replies.batch.flush();
  await replies.batch.sending;
  return concat(...written);
}

/** The handles of the messages in `bytes`, in order, and whether every data byte is 0x5a. */
function messages(bytes: Uint8Array, structured: boolean): { handles: number[]; clean: boolean } {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const handles: number[] = [];
  let clean = true;
  let at = 0;
  while (at < bytes.length) {
    const magic = v.getUint32(at);
    if (structured) {
      assertEquals(magic, C.NBD_STRUCTURED_REPLY_MAGIC, `a chunk header at ${at}`);
      const handle = v.getUint32(at + 12);
      const length = v.getUint32(at + 16);
      const type = v.getUint16(at + 6);
      handles.push(handle);
      if (type === C.NBD_REPLY_TYPE_OFFSET_DATA) {
        clean &&= bytes.subarray(at + 28, at + 20 + length).every((b) => b === 0x5a);
      }
      at += 20 + length;
    } else {
      assertEquals(magic, C.NBD_SIMPLE_REPLY_MAGIC, `a reply header at ${at}`);
      const handle = v.getUint32(at + 12);
      handles.push(handle);
      const data = handle === 1 ? 3 * C.STREAM_PIECE : 0;
      clean &&= bytes.subarray(at + 16, at + 16 + data).every((b) => b === 0x5a);
      at += 16 + data;
    }
  }
  return { handles, clean };
}

Deno.test("a simple-reply READ in pieces is one message: a FLUSH answered meanwhile follows it", async () => {
  const m = messages(await readWithFlushMidway(false, 0), false);
  assertEquals(m, { handles: [1, 2], clean: true });
});

Deno.test("a structured READ with DF is one chunk: a FLUSH answered meanwhile follows it", async () => {
  const m = messages(await readWithFlushMidway(true, C.NBD_CMD_FLAG_DF), true);
  assertEquals(m, { handles: [1, 2], clean: true });
});

Deno.test("a structured READ without DF is several chunks: another reply may come between them", async () => {
  const m = messages(await readWithFlushMidway(true, 0), true);
  assertEquals(m.clean, true);
  assertEquals(m.handles.filter((h) => h === 1).length, 3, "three chunks of the READ");
  assertEquals(m.handles.filter((h) => h === 2).length, 1, "and the FLUSH's reply, whole");
});
