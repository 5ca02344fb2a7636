/**
 * The checking client of `deno task chaos` (scripts/chaos.ts CHECKER_PY) against real nbdkit
 * servers: it passes on a server that keeps what it acknowledged (`memory`), and fails on one
 * that acknowledges writes and forgets them (`null`: every read is zeroes) and on one that
 * answers some requests with an error (the `error` filter). A checker that cannot fail would
 * make every chaos run look clean.
 */

import { CHECKER_PY } from "../../scripts/chaos.ts";
import { PYTHON } from "../e2e/_cluster.ts";
import { assert, assertEquals } from "../_assert.ts";

interface Outcome {
  code: number;
  lines: Record<string, unknown>[];
}

/** Runs the checker on 64 blocks against `nbdkit ARGS` on a Unix socket, stopping it after `ms`. */
async function check(args: string[], ms: number): Promise<Outcome> {
  const dir = await Deno.makeTempDir({ prefix: "ballast-chaos-check-" });
  const sock = `${dir}/nbd.sock`;
  const server = new Deno.Command("nbdkit", {
    args: ["-f", "-U", sock, ...args],
    stdout: "null",
    stderr: "null",
  }).spawn();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const deadline = Date.now() + 10_000;
    while (!(await Deno.stat(sock).catch(() => undefined))) {
      assert(Date.now() < deadline, `nbdkit ${args.join(" ")} did not listen within 10 s`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const stop = `${dir}/stop`;
    const checker = new Deno.Command(PYTHON, {
      args: ["-c", CHECKER_PY, `nbd+unix:///?socket=${sock}`, stop, "64", "8", "1"],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    timer = setTimeout(() => Deno.writeTextFileSync(stop, ""), ms);
    const out = await checker.output();
    const text = new TextDecoder().decode(out.stdout).trim();
    return { code: out.code, lines: text.split("\n").filter((l) => l).map((l) => JSON.parse(l)) };
  } finally {
    clearTimeout(timer);
    try {
      server.kill("SIGTERM");
    } catch { /* gone */ }
    await server.status;
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("chaos checker: a server that keeps what it acknowledged passes", async () => {
  const r = await check(["memory", "1M"], 1_000);
  const done = r.lines.at(-1) as {
    done?: boolean;
    writes: number;
    reads: number;
    verified: number;
  };
  assertEquals([r.code, done.done], [0, true], JSON.stringify(r.lines));
  assert(done.writes > 0 && done.reads > 0, JSON.stringify(done));
  assertEquals(done.verified, 64, "every block read back at the end");
});

Deno.test("chaos checker: a server that forgets acknowledged writes is caught (exit 2)", async () => {
  const r = await check(["null", "1M"], 10_000);
  assertEquals(r.code, 2, JSON.stringify(r.lines));
  const v = String(r.lines.at(-1)?.violation);
  assert(/read generation 0, last acknowledged [1-9]/.test(v), v);
});

Deno.test("chaos checker: an error reply fails it (exit 3)", async () => {
  const r = await check(["--filter=error", "memory", "1M", "error-rate=20%"], 10_000);
  assertEquals(r.code, 3, JSON.stringify(r.lines));
  assert(typeof r.lines.at(-1)?.error === "string", JSON.stringify(r.lines.at(-1)));
});
