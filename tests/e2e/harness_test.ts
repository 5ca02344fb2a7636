/**
 * Tests of the e2e harness itself. The server tests use a small fake
 * `ballast serve` (it listens on the requested ports and logs the same ready
 * line), so they run before main.ts exists and test only the harness.
 */

import assert from "node:assert/strict";
import { VERSION } from "../../mod/version.ts";
import {
  cli,
  e2eTest,
  freePort,
  haveTool,
  parseReadyLine,
  requireBallast,
  requireTools,
  run,
  startBallast,
} from "./_harness.ts";

const FAKE_SERVE = `
const args = Deno.args;
const flag = (name) => args[args.lastIndexOf(name) + 1];
if (args[0] !== "serve") throw new Error("expected serve, got " + args.join(" "));
const mode = Deno.env.get("FAKE_MODE") ?? "ok";
if (mode === "crash") { console.error("boom: cannot open data dir"); Deno.exit(3); }
if (mode === "silent") { console.error("starting slowly"); setInterval(() => {}, 1000); }
else {
  const listen = (addr) => {
    const i = addr.lastIndexOf(":");
    return Deno.listen({ hostname: addr.slice(0, i), port: Number(addr.slice(i + 1)) });
  };
  const api = listen(flag("--api-listen"));
  const nbd = listen(flag("--nbd-listen"));
  const dataDir = flag("--data-dir");
  let starts = 1;
  try { starts += Number(Deno.readTextFileSync(dataDir + "/starts").trim()); } catch { /* first */ }
  Deno.writeTextFileSync(dataDir + "/starts", String(starts));
  Deno.addSignalListener("SIGTERM", () => { console.error("graceful stop"); Deno.exit(0); });
  console.log("stdout line");
  console.error(JSON.stringify({ level: 20, msg: "debug noise", starts }));
  console.error(JSON.stringify({
    level: 30, msg: "ballast ready",
    api: "http://127.0.0.1:" + api.addr.port, nbd: "127.0.0.1:" + nbd.addr.port,
  }));
  setInterval(() => {}, 1000);
}
`;

async function withFake(fn: (entry: string, dataDir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ballast-harness-test-" });
  try {
    const entry = `${dir}/fake_serve.js`;
    await Deno.writeTextFile(entry, FAKE_SERVE);
    const dataDir = `${dir}/data`;
    await Deno.mkdir(dataDir);
    await Deno.writeTextFile(`${dataDir}/starts`, "0");
    await fn(entry, dataDir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("haveTool() and requireTools() name every missing tool", () => {
  assert.equal(haveTool("sh"), true);
  assert.equal(haveTool("/bin/sh"), true);
  assert.equal(haveTool("ballast-no-such-tool-1"), false);
  assert.equal(requireTools(["sh"]), undefined);
  const reason = requireTools(["sh", "ballast-no-such-tool-1", "ballast-no-such-tool-2"]);
  assert.ok(reason !== undefined);
  assert.match(reason, /missing tools: ballast-no-such-tool-1, ballast-no-such-tool-2/);
  assert.doesNotMatch(reason, /\bsh\b,/);
});

Deno.test("requireBallast() returns a reason exactly when main.ts is missing", async () => {
  const exists = await Deno.stat(new URL("../../main.ts", import.meta.url)).then(
    () => true,
    () => false,
  );
  if (Deno.env.get("BALLAST_BIN")) return;
  assert.equal(requireBallast() === undefined, exists);
});

Deno.test("run() returns exit code, stdout and stderr", async () => {
  const r = await run("sh", ["-c", "echo out; echo err >&2; exit 3"]);
  assert.equal(r.code, 3);
  assert.equal(r.stdout, "out\n");
  assert.equal(r.stderr, "err\n");
  assert.equal(r.timedOut, false);
  assert.equal((await run("true", [])).code, 0);
  const cat = await run("cat", [], { stdin: "piped input" });
  assert.equal(cat.stdout, "piped input");
  const env = await run("sh", ["-c", "echo $HARNESS_X"], { env: { HARNESS_X: "42" } });
  assert.equal(env.stdout, "42\n");
});

Deno.test("run() rejects a command that is not installed, naming it", async () => {
  await assert.rejects(
    run("ballast-no-such-tool-1", []),
    /ballast-no-such-tool-1: command not found/,
  );
});

Deno.test("run() kills a command at its timeout and says so", async () => {
  await assert.rejects(run("sleep", ["30"], { timeoutMs: 200 }), /timed out after 200 ms/);
  const r = await run("sleep", ["30"], { timeoutMs: 200, allowTimeout: true });
  assert.equal(r.timedOut, true);
  assert.equal(r.signal, "SIGKILL");
  assert.notEqual(r.code, 0);
});

Deno.test("freePort() returns distinct listenable ports below the ephemeral range", () => {
  const ports = Array.from({ length: 50 }, () => freePort());
  assert.equal(new Set(ports).size, ports.length, `a port handed out twice: ${ports}`);
  for (const port of ports) {
    assert.ok(port >= 20_000 && port < 32_768, `port ${port} outside 20000-32767`);
  }
  const l = Deno.listen({ hostname: "127.0.0.1", port: ports[0] });
  l.close();
});

Deno.test("parseReadyLine() reads the JSON and the pretty ready line", () => {
  assert.equal(parseReadyLine('{"msg":"other"}\n'), undefined);
  assert.deepEqual(
    parseReadyLine(
      '{"level":30,"msg":"ballast ready","api":"http://127.0.0.1:1","nbd":"127.0.0.1:2"}',
    ),
    { api: "http://127.0.0.1:1", nbd: "127.0.0.1:2" },
  );
  assert.deepEqual(
    parseReadyLine("12:00:00.000 INFO  ballast ready api=http://127.0.0.1:1 nbd=127.0.0.1:2"),
    { api: "http://127.0.0.1:1", nbd: "127.0.0.1:2" },
  );
});

Deno.test("startBallast() waits for the ready line, stop() is graceful, restart() keeps data and ports", async () => {
  await withFake(async (entry, dataDir) => {
    const b = await startBallast({ entry, dataDir });
    assert.match(b.api, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(b.nbdHost, "127.0.0.1");
    assert.equal(b.nbdUri("vol 1"), `nbd://127.0.0.1:${b.nbdPort}/vol%201`);
    assert.match(b.logs(), /debug noise/);
    assert.match(b.logs(), /stdout line/);
    const b2 = await b.restart();
    assert.equal(b2.api, b.api);
    assert.equal(b2.nbdPort, b.nbdPort);
    assert.match(b2.logs(), /"starts":2/);
    const stopped = await b2.stop();
    assert.equal(stopped.code, 0);
    assert.equal(stopped.forced, false);
    assert.match(b2.logs(), /graceful stop/);
    // A caller-provided data dir is kept.
    assert.equal((await Deno.readTextFile(`${dataDir}/starts`)).trim(), "2");
  });
});

Deno.test("startBallast() removes the temp data dir it made; kill() leaves it until stop()", async () => {
  await withFake(async (entry) => {
    const b = await startBallast({ entry });
    await b.kill("SIGKILL");
    assert.equal(b.exited(), true);
    await Deno.stat(b.dataDir);
    const r = await b.stop();
    assert.equal(r.signal, "SIGKILL");
    await assert.rejects(Deno.stat(b.dataDir), Deno.errors.NotFound);
  });
});

Deno.test("startBallast() fails fast with the server's stderr when it exits early", async () => {
  await withFake(async (entry, dataDir) => {
    const t0 = Date.now();
    await assert.rejects(
      startBallast({ entry, dataDir, env: { FAKE_MODE: "crash" } }),
      /ballast exited \(code 3\)[\s\S]*boom: cannot open data dir/,
    );
    assert.ok(Date.now() - t0 < 10_000);
  });
});

Deno.test("startBallast() times out with the output so far when no ready line comes", async () => {
  await withFake(async (entry, dataDir) => {
    await assert.rejects(
      startBallast({ entry, dataDir, env: { FAKE_MODE: "silent" }, readyTimeoutMs: 1500 }),
      /did not log "ballast ready" within 1500 ms[\s\S]*starting slowly/,
    );
  });
});

e2eTest("ballast version prints the release version (via cli())", {}, async () => {
  const r = await cli(["version", "--client"], { timeoutMs: 60_000 });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(VERSION.replaceAll(".", "\\.")));
});

e2eTest("real ballast serve logs its ready line and exits 0 on SIGTERM", {}, async () => {
  const b = await startBallast();
  try {
    const res = await fetch(b.api);
    await res.body?.cancel();
    assert.ok(b.nbdPort > 0);
  } finally {
    const r = await b.stop();
    assert.equal(r.code, 0, b.logs());
    assert.equal(r.forced, false);
  }
});
