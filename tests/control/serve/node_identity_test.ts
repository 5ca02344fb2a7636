/**
 * A data directory's node name (control/serve/_node_identity.ts) on real directories: recorded
 * at the first claim, kept, a different one refused; a directory from before the record names
 * its node by its node certificate. `ballast serve` itself: a restart under another name exits
 * 1 saying whose directory it is, and a restart without a name runs under the recorded one.
 * @module
 */

import {
  claimNodeName,
  NODE_NAME_FILE,
  recordedNodeName,
  recordNodeName,
} from "../../../control/serve/_node_identity.ts";
import { openPki } from "../../../ca/mod.ts";
import { FailedPreconditionError } from "../../../mod/errors.ts";
import { assert, assertEquals, assertRejects } from "../../_assert.ts";

async function withDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ballast-node-name-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a data directory's name: recorded once, kept, another refused; its id made once", async () => {
  await withDir(async (dir) => {
    assertEquals(recordedNodeName(dir), undefined, "a new directory names no node");
    const id = await claimNodeName(dir, "node-a");
    assertEquals(recordedNodeName(dir), undefined, "not bound before the node started");
    assertEquals(
      await claimNodeName(dir, "node-z"),
      id,
      "so another name may still start; same id",
    );
    await recordNodeName(dir, "node-a");
    await recordNodeName(dir, "node-b");
    assertEquals(Deno.readTextFileSync(`${dir}/${NODE_NAME_FILE}`), "node-a\n", "the first kept");
    assertEquals(recordedNodeName(dir), { name: "node-a", where: `${dir}/${NODE_NAME_FILE}` });
    assertEquals(await claimNodeName(dir, "node-a"), id);
    const err = await assertRejects(() => claimNodeName(dir, "node-z"), FailedPreconditionError);
    assert(err.message.includes(`belongs to node "node-a"`), err.message);
    assertEquals(Deno.readTextFileSync(`${dir}/${NODE_NAME_FILE}`), "node-a\n", "unchanged");
  });
});

Deno.test("a data directory from before the record names its node by its node certificate", async () => {
  await withDir(async (dir) => {
    await openPki(`${dir}/pki`, { nodeName: "node-b", dnsNames: ["node-b"], ipAddresses: [] });
    assertEquals(recordedNodeName(dir), { name: "node-b", where: `${dir}/pki/node.crt` });
    await assertRejects(() => claimNodeName(dir, "node-z"), FailedPreconditionError);
    await claimNodeName(dir, "node-b");
    await recordNodeName(dir, "node-b");
    assertEquals(Deno.readTextFileSync(`${dir}/${NODE_NAME_FILE}`), "node-b\n", "now recorded");
  });
});

const MAIN = new URL("../../../main.ts", import.meta.url).pathname;

/**
 * Runs `ballast serve` on `dir` until it logs that it is ready (then SIGTERM) or exits; its
 * log (stderr) and output. Killed after 60 s.
 */
async function serveOnce(dir: string, extra: string[]): Promise<{ code: number; out: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      MAIN,
      "serve",
      "--data-dir",
      dir,
      "--tls",
      "off",
      "--api-listen",
      "127.0.0.1:0",
      "--nbd-listen",
      "127.0.0.1:0",
      "--nbd-unix",
      "off",
      ...extra,
    ],
    stdout: "piped",
    stderr: "piped",
    env: { BALLAST_NODE_NAME: "" },
  }).spawn();
  const deadline = setTimeout(() => child.kill("SIGKILL"), 60_000);
  let log = "";
  const decoder = new TextDecoder();
  const stdout = new Response(child.stdout).text();
  try {
    let stopped = false;
    for await (const chunk of child.stderr) {
      log += decoder.decode(chunk, { stream: true });
      if (!stopped && log.includes('"msg":"ballast ready"')) {
        stopped = true; // once: the process may have exited by the next chunk
        try {
          child.kill("SIGTERM");
        } catch {
          // it exited already: its status tells
        }
      }
    }
    const { code } = await child.status;
    return { code, out: log + (await stdout) };
  } finally {
    clearTimeout(deadline);
  }
}

Deno.test("ballast serve: a data directory restarted under another name exits 1 saying whose it is; without a name it runs under its own", async () => {
  await withDir(async (dir) => {
    const first = await serveOnce(dir, ["--node-name", "node-a"]);
    assertEquals(first.code, 0, first.out);
    assert(first.out.includes('"node":"node-a"'), first.out);
    const renamed = await serveOnce(dir, ["--node-name", "node-z"]);
    assertEquals(renamed.code, 1, renamed.out);
    assert(renamed.out.includes(`belongs to node "node-a"`), renamed.out);
    assert(!renamed.out.includes("ballast ready"), "it did not start");
    const unnamed = await serveOnce(dir, []);
    assertEquals(unnamed.code, 0, unnamed.out);
    assert(unnamed.out.includes('"node":"node-a"'), `runs as node-a: ${unnamed.out}`);
  });
});
