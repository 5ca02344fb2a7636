// deno-lint-ignore-file no-console
/**
 * The README's quick start, run as written. Its shell blocks marked `<!-- quickstart-test -->`
 * (and docs/API.md's marked `<!-- api-test -->`) are extracted and run one after another with
 * `bash -e -o pipefail`, each from a copy of the checkout, against the node that the block marked
 * `<!-- quickstart-test: serve -->` starts (`deno task start`, so the quick start's own ports and
 * data dir). Everything happens in a network namespace with only loopback (the quick start's fixed
 * ports cannot collide with anyone else's) and with HOME in a temporary directory, so nothing is
 * written into the checkout. Each block must exit 0, and its key outputs are checked (EXPECT).
 * Blocks marked `: root` (nbdfuse, losetup, mount) run when this machine allows, else they are
 * reported as ignored with the reason. The examples of `ballast --help` are run the same way.
 * @module
 */

import { assert, assertEquals, assertThrows, fail } from "../_assert.ts";
import { DocBlockError, markedBlocks } from "./_doc_blocks.ts";
import {
  type DocWorld,
  makeDocWorld,
  MOUNT_CLEANUP,
  mountsUnavailable,
  runScript,
  startDocNode,
} from "./_doc_world.ts";
import { e2eTest, REPO_ROOT, type RunResult } from "./_harness.ts";
import { loopbackNetns, netnsUnavailable } from "./_netns.ts";

Deno.test("markedBlocks() returns the marked sh blocks only, with their kind and line", () => {
  const md = [
    "# T", // 1
    "<!-- quickstart-test: serve -->", // 2
    "```sh", // 3
    "deno task start", // 4
    "```", // 5
    "```sh", // 6: not marked
    "rm -rf /", // 7
    "```", // 8
    "<!-- quickstart-test -->", // 9
    "", // 10
    "```bash", // 11
    "echo a", // 12
    "echo b", // 13
    "```", // 14
    "<!-- other-test -->", // 15
    "```sh", // 16
    "echo other", // 17
    "```", // 18
  ].join("\n");
  assertEquals(markedBlocks(md, "quickstart-test", "R.md"), [
    { file: "R.md", line: 3, kind: "serve", text: "deno task start\n" },
    { file: "R.md", line: 11, kind: "", text: "echo a\necho b\n" },
  ]);
  assertEquals(markedBlocks(md, "other-test").map((b) => b.text), ["echo other\n"]);
});

Deno.test("markedBlocks() refuses a marker without a sh block and a block never closed", () => {
  const noBlock = "<!-- quickstart-test -->\nsome prose\n```sh\nls\n```\n";
  const e1 = assertThrows(() => markedBlocks(noBlock, "quickstart-test", "R.md"), DocBlockError);
  assertEquals([e1.file, e1.line], ["R.md", 1]);
  const unclosed = "text\n<!-- quickstart-test -->\n```sh\nls\n";
  const e2 = assertThrows(() => markedBlocks(unclosed, "quickstart-test", "R.md"), DocBlockError);
  assertEquals(e2.line, 3);
});

/** A check on the output of every block whose text matches `when`. */
interface Expect {
  what: string;
  when: RegExp;
  out?: RegExp;
  notOut?: RegExp;
}

const EXPECT: Expect[] = [
  { what: "nbdinfo shows db1's 10 GiB", when: /^nbdinfo /m, out: /export-size:\s+10737418240\b/ },
  { what: "qemu-io reads 1 MiB back", when: /^qemu-io /m, out: /read 1048576\/1048576 bytes/ },
  { what: "qemu-io reads the pattern", when: /^qemu-io /m, notOut: /Pattern verification failed/ },
  {
    what: "volume get shows the 1 MiB written",
    when: /^ballast volume get db1/m,
    out: /Allocated:\s+1 MiB/,
  },
  {
    what: "ca issue writes an nbd-client bundle",
    when: /^ballast ca issue /m,
    out: /Role:\s+nbd-client/,
  },
  { what: "the filesystem is mounted and written", when: /^mkfs\.ext4 /m, out: /db1-mnt/ },
  { what: "fio writes 16 MiB", when: /^fio /m, out: /WRITE: bw=.*io=16\.0MiB/ },
  { what: "the volume is deleted", when: /^ballast volume delete db1/m, out: /"db1" deleted/ },
  { what: "the API is healthy", when: /\/v1\/health$/m, out: /"status":"ok"/ },
  { what: "the API resizes db1", when: /-X PATCH .*20GiB/, out: /"sizeBytes":21474836480\b/ },
];

/** The quick start's fixed addresses: free in a fresh namespace, checked on the host otherwise. */
const QUICKSTART_PORTS = [5705, 10809];
const NS = `ballast-readme-${Deno.pid}`;
const NETNS_SKIP = await netnsUnavailable(NS);
const PORTS_SKIP = NETNS_SKIP === undefined ? undefined : portsTaken(QUICKSTART_PORTS);
const MOUNT_SKIP = await mountsUnavailable();
const TOOLS = ["git", "bash", "setsid", "nbdinfo", "qemu-io", "fio", "curl"];

function portsTaken(ports: number[]): string | undefined {
  const taken = ports.filter((port) => {
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return false;
    } catch {
      return true;
    }
  });
  return taken.length ? `${NETNS_SKIP}, and port(s) ${taken.join(", ")} are in use` : undefined;
}

/** The checks that apply to a snippet (those whose `when` it matches), added to `seen`. */
function checkOutput(snippet: string, r: RunResult, seen: Set<Expect>): void {
  const out = r.stdout + r.stderr;
  for (const e of EXPECT.filter((e) => e.when.test(snippet))) {
    seen.add(e);
    if (e.out && !e.out.test(out)) fail(`${e.what}: expected ${e.out} in the output:\n${out}`);
    if (e.notOut?.test(out)) fail(`${e.what}: did not expect ${e.notOut} in the output:\n${out}`);
  }
}

/** Runs `fn` in a fresh world, in a fresh loopback-only namespace when there can be one. */
async function inDocWorld(fn: (w: DocWorld) => Promise<void>): Promise<void> {
  await using ns = NETNS_SKIP === undefined ? await loopbackNetns(NS) : undefined;
  const w = await makeDocWorld(ns?.wrap ?? []);
  try {
    await fn(w);
  } finally {
    await Deno.remove(w.root, { recursive: true }).catch(() => {});
  }
}

function assertRan(where: string, snippet: string, r: RunResult): void {
  assertEquals(
    r.code,
    0,
    `${where} exited ${r.code}:\n${snippet}\n--- output:\n${r.stdout}${r.stderr}`,
  );
}

e2eTest(
  "README quick start and docs/API.md examples run as written against `deno task start`",
  { tools: TOOLS, skip: PORTS_SKIP },
  async (t) => {
    const read = (f: string) => Deno.readTextFile(`${REPO_ROOT}/${f}`);
    const readme = markedBlocks(await read("README.md"), "quickstart-test", "README.md");
    const api = markedBlocks(await read("docs/API.md"), "api-test", "docs/API.md");
    const serve = readme.filter((b) => b.kind === "serve");
    assertEquals(serve.length, 1, "README.md marks one block `<!-- quickstart-test: serve -->`");
    assert(api.length > 0, "docs/API.md marks a block `<!-- api-test -->`");
    const blocks = [...readme.filter((b) => b.kind !== "serve"), ...api];
    for (const b of blocks) {
      assert(["", "root"].includes(b.kind), `${b.file}:${b.line}: unknown kind "${b.kind}"`);
    }

    await inDocWorld(async (w) => {
      const before = new Set([...Deno.readDirSync(w.checkout)].map((e) => e.name));
      const node = await startDocNode(w, serve[0].text);
      try {
        console.log(node.logs().split("\n").find((l) => l.includes("ballast ready")));
        const seen = new Set<Expect>();
        for (const b of blocks) {
          const name = `${b.file}:${b.line}${b.kind ? ` (${b.kind})` : ""}: ${
            b.text.split("\n")[0]
          }`;
          if (b.kind === "root" && MOUNT_SKIP) {
            console.log(`not run: ${b.file}:${b.line}: ${MOUNT_SKIP}`);
            EXPECT.filter((e) => e.when.test(b.text)).forEach((e) => seen.add(e));
            await t.step({ name: `${name} [skipped: ${MOUNT_SKIP}]`, ignore: true, fn: () => {} });
            continue;
          }
          const passed = await t.step(name, async () => {
            const r = await runScript(w, (b.kind === "root" ? MOUNT_CLEANUP : "") + b.text);
            assertRan(`${b.file}:${b.line}`, b.text, r);
            checkOutput(b.text, r, seen);
          });
          if (!passed) break;
        }
        const unchecked = EXPECT.filter((e) => !seen.has(e)).map((e) => e.what);
        assertEquals(unchecked, [], "every check has a block in README.md or docs/API.md to run");
        const written = [...Deno.readDirSync(w.checkout)].map((e) => e.name)
          .filter((n) => !before.has(n));
        assertEquals(written, [".ballast"], "the examples write into the checkout only .ballast/");
      } finally {
        await node.stop();
      }
      // "Ctrl-C stops it": cleanly, although the node gets the SIGINT twice (from the terminal
      // and passed on by `deno task`).
      assert(node.logs().includes("ballast stopped"), `Ctrl-C stopped the node:\n${node.logs()}`);
      assert(!node.logs().includes("second signal"), `one Ctrl-C is one signal:\n${node.logs()}`);
    });
  },
);

e2eTest(
  "the examples of `ballast --help` run as written",
  { tools: TOOLS, skip: PORTS_SKIP },
  async () => {
    await inDocWorld(async (w) => {
      const help = await runScript(w, "ballast --help");
      assertRan("ballast --help", "ballast --help", help);
      const examples = help.stdout.split("\nExamples:\n")[1]?.split("\n")
        .map((l) => l.trim()).filter((l) => l !== "") ?? [];
      const serve = examples.filter((l) => l.startsWith("ballast serve"));
      assertEquals(serve.length, 1, `one \`ballast serve\` example in:\n${help.stdout}`);
      const rest = examples.filter((l) => l !== serve[0]).join("\n") + "\n";
      assert(/^nbdinfo /m.test(rest), `an NBD client example in:\n${help.stdout}`);
      const node = await startDocNode(w, serve[0]);
      try {
        const r = await runScript(w, rest);
        assertRan("the examples", rest, r);
        checkOutput(rest, r, new Set());
      } finally {
        await node.stop();
      }
    });
  },
);
