import { captureIo } from "../../../control/cli/mod.ts";
import { resolveConfig, serve } from "../../../control/serve/mod.ts";
import { silentLogger } from "../../../control/common/mod.ts";
import { main } from "../../../main.ts";
import { assert, assertEquals } from "../../_assert.ts";

const MAIN = new URL("../../../main.ts", import.meta.url).pathname;

async function startServer() {
  const dir = await Deno.makeTempDir({ prefix: "ballast-cli-" });
  const config = resolveConfig(
    // Plaintext on loopback: these tests are about the CLI; tests/e2e/tls_test.ts covers TLS.
    { "data-dir": dir, "api-listen": "127.0.0.1:0", "nbd-listen": "127.0.0.1:0", tls: "off" },
    {},
    {},
    { hostname: () => "cli-node" },
  );
  const server = await serve(config, { logger: silentLogger() });
  return {
    server,
    dir,
    async close() {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Runs the CLI in-process against `api`. */
async function run(api: string, ...args: string[]) {
  const io = captureIo({ BALLAST_API: api });
  const code = await main(args, io);
  return { code, stdout: io.stdout, stderr: io.stderr };
}

/** An API URL where nothing listens: a port just freed. */
function nowhere(): string {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return `http://127.0.0.1:${port}`;
}
const NOWHERE = nowhere();

Deno.test("cli: --help at every level prints usage with flags, env and example, exit 0", async () => {
  for (
    const [args, mentions] of [
      [["--help"], [
        "Usage: ballast COMMAND",
        "volume",
        "BALLAST_API",
        "Example",
        "Exit codes: 0",
        "3 a check that ran and said no",
      ]],
      [["volume", "--help"], ["Usage: ballast volume COMMAND", "resize", "Examples:"]],
      [["volume", "create", "--help"], [
        "--size SIZE",
        "from 1 MiB to 1 PiB",
        "--label KEY=VALUE",
        "repeatable",
      ]],
      [["ca", "rotate", "--help"], ["--ca-cert FILE", "--ca-key FILE", "--ca-chain FILE"]],
      [["volume", "create", "-h"], ["ballast volume create db1 --size 10GiB"]],
      [["node", "--help"], ["Usage: ballast node COMMAND"]],
      [["serve", "--help"], ["--data-dir DIR", "BALLAST_NBD_LISTEN", "default 127.0.0.1:10809"]],
      [["version", "--help"], ["Usage: ballast version"]],
      [["help"], ["Usage: ballast COMMAND"]],
      [["help", "volume"], ["Usage: ballast volume COMMAND", "resize"]],
      [["help", "volume", "create"], ["Usage: ballast volume create NAME", "--size SIZE"]],
      [["help", "ca", "issue"], ["Usage: ballast ca issue", "--volumes LIST"]],
      [["volume", "help", "create"], ["Usage: ballast volume create NAME", "--size SIZE"]],
      [["volume", "help"], ["Usage: ballast volume COMMAND", "resize"]],
    ] as Array<[string[], string[]]>
  ) {
    const r = await run(NOWHERE, ...args);
    assertEquals(r.code, 0, args.join(" "));
    for (const m of mentions) assert(r.stdout.includes(m), `${args.join(" ")}: missing ${m}`);
    assertEquals(r.stderr, "");
  }
});

Deno.test("cli: usage mistakes exit 2 with a hint", async () => {
  for (
    const [args, message, hint] of [
      [[], "missing command", "ballast --help"],
      [["frobnicate"], 'unknown command "frobnicate"', "ballast --help"],
      [["--bogus", "volume", "list"], "unknown flag --bogus (the flags before", "ballast --help"],
      [["--", "frobnicate"], 'unknown command "frobnicate"', "ballast --help"],
      [["--bogus", "volume", "list"], "--request-timeout", "ballast --help"],
      [["node", "list", "--api", "https://x:1/v1"], "without a path", "node list"],
      [["volume"], "missing command", "ballast volume --help"],
      [["volume", "explode"], 'unknown command "volume explode"', "ballast volume --help"],
      [["volume", "create"], "missing argument NAME", "ballast volume create --help"],
      [["volume", "create", "v"], "missing flag --size", "ballast volume create --help"],
      [["volume", "create", "v", "--size"], "flag --size needs a value", "volume create NAME"],
      [["volume", "create", "v", "--size", "ten"], 'invalid --size "ten"', "volume create"],
      [["volume", "create", "v", "--size", "1g"], "G or GB for 10^9 bytes", "volume create"],
      [["volume", "create", "v", "--size", "-1GiB"], "a size cannot be negative", "create"],
      [["volume", "resize", "v", "--size", "-5"], "a size cannot be negative", "resize"],
      [["volume", "create", "v", "--size", "99999TiB"], "too large, the most is 1 PiB", "create"],
      [["volume", "create", "v", "--size", "1.5G"], "e.g. 1499999744 or 1500000256", "create"],
      [
        ["volume", "create", "v", "--size", "1G", "--label", "x"],
        'invalid --label: entry "x"',
        "create",
      ],
      [
        ["volume", "create", "v", "--size", "1G", "--label", "a=b,x"],
        'invalid --label: entry "x"',
        "create",
      ],
      [
        ["volume", "create", "v", "--size", "1G", "--label", "a=b", "--label", "a=c"],
        'invalid --label: label "a" is given twice',
        "volume create",
      ],
      [["volume", "update", "v"], "--label or --remove-label", "ballast volume update --help"],
      [["volume", "list", "--bogus"], "unknown flag --bogus", "ballast volume list --help"],
      [["volume", "list", "extra"], 'unexpected argument "extra"', "volume list"],
      [["volume", "get", "v", "-o", "yaml"], 'invalid --output "yaml"', "volume get"],
      [["volume", "get", "v", "-o=yaml"], 'invalid --output "yaml"', "volume get"],
      [["help", "frobnicate"], 'unknown command "frobnicate"', "ballast --help"],
      [["volume", "delete", "v", "--force=yes"], "does not take a value", "volume delete"],
      [["node", "get"], "missing argument NAME", "ballast node get --help"],
      [["node", "list", "--api", "localhost:5705"], 'invalid --api "localhost:5705"', "node list"],
      [["serve", "--log-level", "loud", "--data-dir", "/tmp/x"], "--log-level", "ballast serve"],
      // Commands that talk to no node take no client flags, rather than ignoring them.
      [["systemd-unit", "-o", "json"], "unknown flag -o", "ballast systemd-unit --help"],
      [["completion", "bash", "--api", "https://x:1"], "unknown flag --api", "completion"],
      [["serve", "--data-dir", "/tmp/x", "--cacert", "f"], "unknown flag --cacert", "serve"],
      [["-o", "json", "ca", "init", "--data-dir", "/tmp/x"], "unknown flag -o", "ca init"],
      [["ca", "show", "--pem", "-o", "json"], "choose one", "ballast ca show --help"],
    ] as Array<[string[], string, string]>
  ) {
    const r = await run(NOWHERE, ...args);
    assertEquals(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert(r.stderr.startsWith("error: "), r.stderr);
    assert(r.stderr.includes(message), `${args.join(" ")}: expected "${message}" in ${r.stderr}`);
    assert(r.stderr.includes(hint), `${args.join(" ")}: expected hint "${hint}" in ${r.stderr}`);
    assertEquals(r.stdout, "");
  }
});

Deno.test("cli: an unreachable node is exit 1 with a clear message; version still prints the client, --client alone exits 0", async () => {
  const r = await run(NOWHERE, "volume", "list");
  assertEquals(r.code, 1);
  assertEquals(
    r.stderr,
    `error: cannot reach the Ballast API at ${NOWHERE}: connection refused; is \`ballast serve\` running?\n`,
  );
  const v = await run(NOWHERE, "version");
  assertEquals(v.code, 1);
  assert(v.stdout.startsWith("Client: "), v.stdout);
  assert(!v.stdout.includes("Server:"), v.stdout);
  assert(v.stderr.startsWith("error: server version unknown: cannot reach"), v.stderr);
  const j = await run(NOWHERE, "version", "-o", "json");
  assertEquals(j.code, 1);
  assertEquals(JSON.parse(j.stdout).server, null);
  const c = await run(NOWHERE, "version", "--client", "-o", "json");
  assertEquals([c.code, c.stderr], [0, ""]);
  assertEquals(Object.keys(JSON.parse(c.stdout)), ["client"]);
});

Deno.test("cli: volume commands against a real node, tables and -o json", async () => {
  const node = await startServer();
  const api = node.server.apiUrl;
  try {
    const created = await run(
      api,
      "volume",
      "create",
      "db1",
      "--size",
      "10GiB",
      "--label",
      "a=b,c=d",
    );
    assertEquals([created.code, created.stdout], [0, 'volume "db1" created (10 GiB)\n']);
    const json = await run(api, "-o", "json", "volume", "create", "db2", "--size", "1MiB");
    assertEquals(json.code, 0);
    assertEquals(JSON.parse(json.stdout).sizeBytes, 2 ** 20);
    const si = await run(api, "-o", "json", "volume", "create", "si1", "--size", "2G");
    assertEquals([si.code, JSON.parse(si.stdout).sizeBytes], [0, 2 * 10 ** 9], "SI: 2G = 2x10^9");
    assertEquals((await run(api, "volume", "delete", "si1")).code, 0);
    // The server's field names are said as the flags the user typed.
    const nine = await run(api, "volume", "create", "r9", "--size", "1GiB", "--replicas", "9");
    assertEquals(nine.code, 2);
    assert(nine.stderr.startsWith("error: invalid --replicas 9:"), nine.stderr);

    const table = await run(api, "volume", "list");
    const lines = table.stdout.trimEnd().split("\n");
    assertEquals(lines[0].split(/\s+/), [
      "NAME",
      "SIZE",
      "ALLOCATED",
      "STATE",
      "CONNS",
      "REPLICAS",
      "MASTER",
      "EPOCH",
      "IN-SYNC",
      "PHASE",
      "AGE",
    ]);
    assert(
      /^db1\s+10 GiB\s+0 B\s+ready\s+0\s+0\s+cli-node\s+1\s+-\s+-\s+\d+s$/.test(lines[1]),
      lines[1],
    );
    assertEquals(lines[1].indexOf("10 GiB"), lines[0].indexOf("SIZE"), "columns aligned");
    assertEquals(lines[2].indexOf("1 MiB"), lines[0].indexOf("SIZE"), "columns aligned");

    const list = JSON.parse((await run(api, "volume", "list", "-o", "json")).stdout);
    for (const args of [["volume", "list", "-o=json"], ["-o=json", "volume", "list"]]) {
      const eq = await run(api, ...args);
      assertEquals(eq.code, 0, `${args.join(" ")}: ${eq.stderr}`);
      assertEquals(JSON.parse(eq.stdout), list, args.join(" "));
    }
    assertEquals(list.items.map((v: { name: string }) => v.name), ["db1", "db2"]);
    assertEquals(list.items[0].labels, { a: "b", c: "d" });
    const relabel = await run(
      api,
      "volume",
      "update",
      "db1",
      "--label",
      "e=f",
      "--remove-label",
      "a",
    );
    assertEquals([relabel.code, relabel.stdout], [0, 'volume "db1" updated\n'], relabel.stderr);
    const labels = JSON.parse((await run(api, "volume", "get", "db1", "-o", "json")).stdout).labels;
    assertEquals(labels, { c: "d", e: "f" });
    const updatedAt = JSON.parse((await run(api, "volume", "get", "db1", "-o", "json")).stdout)
      .updatedAt;
    const again = await run(api, "volume", "update", "db1", "--label", "e=f");
    assertEquals(again.stdout, 'volume "db1": nothing changed (it was so already)\n');
    const after = JSON.parse((await run(api, "volume", "get", "db1", "-o", "json")).stdout);
    assertEquals(after.updatedAt, updatedAt, "nothing changed: updatedAt as it was");
    // Six clients set a label each at once: every one is kept (the node edits the record).
    const keys = ["k1", "k2", "k3", "k4", "k5", "k6"];
    const runs = await Promise.all(
      keys.map((k) => run(api, "volume", "update", "db1", "--label", `${k}=x`)),
    );
    assertEquals(runs.map((r) => r.code), keys.map(() => 0), runs.map((r) => r.stderr).join());
    const all = JSON.parse((await run(api, "volume", "get", "db1", "-o", "json")).stdout).labels;
    assertEquals(Object.keys(all).sort(), ["c", "e", ...keys], JSON.stringify(all));
    const cleaned = await run(api, "volume", "update", "db1", "--remove-label", keys.join(","));
    assertEquals(cleaned.code, 0, cleaned.stderr);
    const both = await run(api, "volume", "update", "db1", "--label", "e=g", "--remove-label", "e");
    assertEquals(both.code, 2);
    assert(both.stderr.includes("label e is both set (--label) and removed"), both.stderr);

    const get = await run(api, "volume", "get", "db1");
    assert(get.stdout.includes("Size:         10 GiB (10737418240 bytes)"), get.stdout);
    const resized = await run(api, "volume", "resize", "db1", "--size", "20GiB");
    assertEquals(resized.stdout, 'volume "db1" resized to 20 GiB\n');
    const same = await run(api, "volume", "resize", "db1", "--size", "20GiB");
    assertEquals([same.code, same.stdout], [
      0,
      'volume "db1" is already 20 GiB: nothing changed\n',
    ]);
    const shrink = await run(api, "volume", "resize", "db1", "--size", "1GiB");
    assertEquals(shrink.code, 1);
    assert(shrink.stderr.includes("volumes can only grow"), shrink.stderr);

    const missing = await run(api, "volume", "get", "nope");
    assertEquals([missing.code, missing.stderr], [1, 'error: volume "nope" not found\n']);
    // One exit-code rule: an invalid request is 2 whether the server or the CLI finds it.
    const bad = await run(api, "volume", "create", "Bad!", "--size", "1GiB");
    assertEquals(bad.code, 2, "the server found it");
    assert(bad.stderr.includes('invalid volume name "Bad!"'), bad.stderr);
    const zero = await run(api, "volume", "create", "z", "--size", "0");
    assertEquals(zero.code, 2, "the CLI found it");
    assert(zero.stderr.includes("between 1 MiB and 1 PiB"), zero.stderr);

    assertEquals((await run(api, "volume", "delete", "db2")).stdout, 'volume "db2" deleted\n');
    assertEquals((await run(api, "volume", "delete", "db2")).code, 1);

    const nodes = await run(api, "node", "list");
    assert(/^cli-node\s+ready\s+1\s+/m.test(nodes.stdout), nodes.stdout);
    const n = JSON.parse((await run(api, "node", "get", "cli-node", "-o", "json")).stdout);
    assertEquals([n.name, n.apiAddress, n.nbdAddress], ["cli-node", api, node.server.nbdAddress]);

    const version = await run(api, "version");
    assert(version.stdout.includes(`Server: `) && version.stdout.includes(api), version.stdout);
    assertEquals(version.stderr, "");
  } finally {
    await node.close();
  }
});

Deno.test("cli: `ballast serve` as a process: ready line, refuses a second server, SIGTERM exits 0", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ballast-serve-" });
  const args = ["run", "-A", MAIN, "serve", "--data-dir", dir];
  const ports = ["--api-listen", "127.0.0.1:0", "--nbd-listen", "127.0.0.1:0", "--tls", "off"];
  const child = new Deno.Command(Deno.execPath(), {
    args: [...args, ...ports],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  let ready: Record<string, string> | undefined;
  while (!ready) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`serve exited before ready:\n${buffered}`);
    buffered += value;
    for (const line of buffered.split("\n")) {
      if (line.includes('"ballast ready"')) ready = JSON.parse(line);
    }
  }
  try {
    assert(/^http:\/\/127\.0\.0\.1:\d+$/.test(ready.api), ready.api);
    assert(/^127\.0\.0\.1:\d+$/.test(ready.nbd), ready.nbd);
    assertEquals(ready.level, "info");

    const second = await new Deno.Command(Deno.execPath(), {
      args: [...args, ...ports],
      stdout: "null",
      stderr: "piped",
    }).output();
    assertEquals(second.code, 1);
    const err = new TextDecoder().decode(second.stderr);
    assert(err.includes(`data directory ${dir} is in use by another ballast server`), err);
    // With JSON logs the reason is also a JSON line at level fatal, for log pipelines.
    const fatal = err.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l))
      .filter((l) => l.level === "fatal");
    assertEquals(fatal.length, 1, err);
    assert(fatal[0].msg.startsWith("cannot start: data directory"), fatal[0].msg);

    const list = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, "volume", "list", "-o", "json", "--api", ready.api],
      stdout: "piped",
    }).output();
    assertEquals(list.code, 0);
    assertEquals(JSON.parse(new TextDecoder().decode(list.stdout)), { items: [] });
  } finally {
    child.kill("SIGTERM");
    const drain = (async () => {
      while (!(await reader.read()).done) { /* drain */ }
    })();
    const status = await child.status;
    await drain;
    assertEquals(status.code, 0, "clean shutdown exits 0");
    const leftovers = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assertEquals(leftovers.includes("ballast.lock"), false, "lock released");
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli: volume update --label through a node of an older version (no setLabels) sends the whole label set, with a warning", async () => {
  const volume = {
    name: "db1",
    uuid: "00000000-0000-4000-8000-0000000000aa",
    sizeBytes: 1048576,
    replicas: 0,
    state: "ready",
    master: "n1",
    epoch: 0,
    labels: { keep: "1", drop: "x" },
    description: "",
    createdAt: "2026-12-01T00:00:00.000Z",
    updatedAt: "2026-12-01T00:00:00.000Z",
  };
  const patches: Record<string, unknown>[] = [];
  const old = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    if (req.method === "GET") return Response.json(volume);
    const body = await req.json() as Record<string, unknown>;
    patches.push(body);
    const unknown = Object.keys(body).find((k) =>
      !["size", "replicas", "labels", "description"].includes(k)
    );
    if (unknown) {
      const message =
        `unknown field "${unknown}" in request body; allowed fields: size, replicas, labels, description`;
      return Response.json({ error: { code: "INVALID_ARGUMENT", message } }, { status: 400 });
    }
    return Response.json({ ...volume, labels: body.labels });
  });
  try {
    const r = await run(
      `http://127.0.0.1:${old.addr.port}`,
      "volume",
      "update",
      "db1",
      "--label",
      "tier=gold",
      "--remove-label",
      "drop",
    );
    assertEquals(r.code, 0, r.stderr);
    assert(r.stderr.includes("older version: labels sent as a whole set"), r.stderr);
    assertEquals(patches, [
      { setLabels: { tier: "gold" }, removeLabels: ["drop"] },
      { labels: { keep: "1", tier: "gold" } },
    ]);
  } finally {
    await old.shutdown();
  }
});

Deno.test("cli: --request-timeout (and BALLAST_REQUEST_TIMEOUT) bounds the wait for a node that accepts and never answers", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of listener) held.push(c);
  })();
  const api = `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`;
  try {
    const flag = await run(api, "volume", "list", "--request-timeout", "300ms");
    assertEquals(flag.code, 1, flag.stderr);
    assert(flag.stderr.includes("no answer within 0.3 s"), flag.stderr);
    const bad = await run(api, "volume", "list", "--request-timeout", "soon");
    assertEquals(bad.code, 2, bad.stderr);
    assert(bad.stderr.includes('invalid --request-timeout "soon"'), bad.stderr);
    const version = await run(api, "--request-timeout", "abc", "version");
    assertEquals(version.code, 2, `a bad flag is a usage error: ${version.stderr}`);
    const empty = captureIo({ BALLAST_API: NOWHERE, BALLAST_REQUEST_TIMEOUT: "" });
    assertEquals(await main(["--", "volume", "list"], empty), 1, empty.stderr); // unreachable
    assert(empty.stderr.includes("cannot reach"), empty.stderr);
    const io = captureIo({ BALLAST_API: api, BALLAST_REQUEST_TIMEOUT: "200ms" });
    assertEquals(await main(["volume", "list"], io), 1, io.stderr);
    assert(io.stderr.includes("no answer within 0.2 s"), io.stderr);
  } finally {
    listener.close();
    for (const c of held) c.close();
    await accepting.catch(() => {});
  }
});
