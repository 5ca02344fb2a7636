/**
 * A node that takes a peer connection and does not read it until told to: the receiving end
 * of channel_memory_test.ts, in its own process so that its memory can be measured.
 *
 *   deno run -A _peer_sink.ts listen  PKI_DIR            (node a: listens, prints {"port":N})
 *   deno run -A _peer_sink.ts connect PKI_DIR CREDS PORT (node b: connects to node a)
 *
 * Prints {"connected":true} once the connection is up, reads nothing until a line "read"
 * arrives on stdin, then reads every frame and prints {"received":BYTES,"frames":N} when the
 * sender closes (with "error" added when the connection broke instead).
 */
import pino from "pino";
import { openPki } from "../../../ca/mod.ts";
import { connectPeer, listenPeer, nodeVerifier, type PeerConnection } from "../../../data/mod.ts";

const [role, dir, credsFile, port] = Deno.args;
const logger = pino({ level: "warn" }, pino.destination(2));
const pki = await openPki(dir, { nodeName: "a", ipAddresses: ["127.0.0.1"] });
const out = new TextEncoder();
const say = (o: unknown) => Deno.stdout.writeSync(out.encode(JSON.stringify(o) + "\n"));

let conn: PeerConnection;
if (role === "listen") {
  const accepted = Promise.withResolvers<PeerConnection>();
  const listener = await listenPeer({
    host: "127.0.0.1",
    port: 0,
    credentials: () => pki.credentials("node"),
    verify: nodeVerifier(pki, "clientAuth"),
    onConnection: (c) => accepted.resolve(c),
    logger,
  });
  say({ port: Number(listener.address.split(":").at(-1)) });
  conn = await accepted.promise;
} else {
  const creds = JSON.parse(await Deno.readTextFile(credsFile));
  conn = await connectPeer({
    host: "127.0.0.1",
    port: Number(port),
    expectNode: "a",
    credentials: () => creds,
    verify: nodeVerifier(pki, "serverAuth"),
    logger,
  });
}
say({ connected: true });

// Nothing is read until the parent says so.
const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream()).getReader();
let input = "";
while (!input.includes("read\n")) {
  const { value, done } = await lines.read();
  if (done) Deno.exit(3);
  input += value;
}
let received = 0;
let frames = 0;
try {
  for await (const f of conn.frames()) {
    received += f.length;
    frames++;
  }
} catch (err) {
  say({ received, frames, error: (err as Error).message });
  Deno.exit(0);
}
say({ received, frames });
Deno.exit(0);
