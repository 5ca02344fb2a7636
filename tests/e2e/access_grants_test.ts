/**
 * What a client may do with a volume (issue 10 items 6 and 3): read-only certificates
 * (`--volumes db1:ro`) and the read-only Unix socket are served with NBD_FLAG_READ_ONLY and
 * every write through them fails with EPERM, on the server; a grant is bound to the volume
 * that existed when the certificate was issued, so a volume deleted and created again under
 * the same name is not opened by old certificates. Real clients (python libnbd, nbdinfo).
 */

import { assert, assertEquals } from "../_assert.ts";
import { admin, issue } from "./_cluster_tls.ts";
import { e2eTest, run, startBallast } from "./_harness.ts";
import { startReplCluster } from "./_replicated.ts";

const PYTHON = "/usr/bin/python3";

/**
 * Attaches to the URI with strict mode off (so that libnbd sends what the server must
 * refuse), then prints JSON: the READ_ONLY flag, the first byte read, and the errno of a
 * WRITE, TRIM and WRITE_ZEROES (0: it succeeded).
 */
const PROBE_PY = `
import sys, nbd, json
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.set_strict_mode(0); h.connect_uri(sys.argv[1])
def err(f):
    try:
        f(); return 0
    except nbd.Error as e:
        return e.errnum
out = {"readOnly": h.is_read_only(), "first": h.pread(4096, 0)[0]}
out["write"] = err(lambda: h.pwrite(b"\\x11" * 4096, 0))
out["trim"] = err(lambda: h.trim(4096, 0))
out["zero"] = err(lambda: h.zero(4096, 0))
out["after"] = h.pread(4096, 0)[0]
print(json.dumps(out))
`;

interface Probe {
  readOnly: boolean;
  first: number;
  write: number;
  trim: number;
  zero: number;
  after: number;
}

async function probe(uri: string): Promise<Probe> {
  const r = await run(PYTHON, ["-c", PROBE_PY, uri]);
  assertEquals(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Probe;
}

const EPERM = 1;
/** What a read-only client sees: the flag, and EPERM for every write, nothing changed. */
const READ_ONLY = { readOnly: true, first: 0xab, write: EPERM, trim: EPERM, zero: EPERM };

function assertReadOnly(p: Probe, what: string): void {
  assertEquals({ ...p, after: undefined }, { ...READ_ONLY, after: undefined }, what);
  assertEquals(p.after, 0xab, `${what}: the data is unchanged`);
}

const tlsUri = (host: string, port: number, volume: string, dir: string) =>
  `nbds://${host}:${port}/${volume}?tls-certificates=${dir}`;

e2eTest(
  "a read-only certificate (NAME:ro) and the read-only Unix socket get READ_ONLY and EPERM for every write",
  { tools: [PYTHON, "qemu-io"] },
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "ballast-ro-" });
    const roSocket = `${dir}/ro.sock`;
    const b = await startBallast({ tls: true, args: ["--nbd-unix-ro", roSocket] });
    try {
      assertEquals((await admin(b, ["volume", "create", "v", "--size", "1MiB"])).code, 0);
      const rwSocket = `${b.dataDir}/nbd.sock`;
      const fill = await run("qemu-io", [
        "-f",
        "raw",
        "-c",
        "write -P 0xab 0 1M",
        `nbd+unix:///v?socket=${rwSocket}`,
      ]);
      assertEquals(fill.code, 0, fill.stderr);

      const ro = await issue(b, "backup", ["--role", "nbd-client", "--volumes", "v:ro"]);
      assertReadOnly(await probe(tlsUri(b.nbdHost, b.nbdPort, "v", ro.dir)), "v:ro certificate");
      assertReadOnly(await probe(`nbd+unix:///v?socket=${roSocket}`), "read-only socket");
      assert(await b.logged('"readOnly":true'), "the attach is logged as read-only");

      // The same volume through a read-write grant: the writes go through.
      const rw = await issue(b, "vm", ["--role", "nbd-client", "--volumes", "v"]);
      const w = await probe(tlsUri(b.nbdHost, b.nbdPort, "v", rw.dir));
      assertEquals([w.readOnly, w.write, w.trim, w.zero], [false, 0, 0, 0]);
      for (const d of [ro.dir, rw.dir]) await Deno.remove(d, { recursive: true });
    } finally {
      await b.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

e2eTest(
  "a grant is bound to the volume it was issued for: a deleted and re-created volume refuses the old certificate, a new one works",
  { tools: ["nbdinfo"] },
  async () => {
    const b = await startBallast({ tls: true });
    const dirs: string[] = [];
    try {
      const create = async () => {
        const r = await admin(b, ["volume", "create", "db1", "--size", "1MiB", "-o", "json"]);
        assertEquals(r.code, 0, r.stderr);
        return (JSON.parse(r.stdout) as { uuid: string }).uuid;
      };
      const first = await create();
      const old = await issue(b, "vm1", ["--role", "nbd-client", "--volumes", "db1"]);
      // Issued before db2 existed: bound by name, and says so.
      const named = await admin(b, [
        "ca",
        "issue",
        "vm2",
        "--role",
        "nbd-client",
        "--volumes",
        "db2",
        "--out",
        `${old.dir}-named`,
      ]);
      assertEquals(named.code, 0, named.stderr);
      assert(named.stdout.includes("db2 (by name)"), named.stdout);
      const anyInc = await issue(b, "vm3", [
        "--role",
        "nbd-client",
        "--volumes",
        "db1",
        "--any-incarnation",
      ]);
      dirs.push(old.dir, `${old.dir}-named`, anyInc.dir);
      // LIBNBD_DEBUG shows the server's message with the refusal.
      const info = (dir: string) =>
        run("nbdinfo", ["--size", tlsUri(b.nbdHost, b.nbdPort, "db1", dir)], {
          env: { LIBNBD_DEBUG: "1" },
        });
      assertEquals((await info(old.dir)).code, 0, "the certificate opens the volume it names");
      const listed = await admin(b, ["ca", "list", "-o", "json"]);
      const items = JSON.parse(listed.stdout).items as { name: string; grants?: unknown }[];
      assertEquals(items.find((i) => i.name === "vm1")?.grants, [
        { volume: "db1", readOnly: false, uuid: first },
      ], "ca list shows the binding");

      assertEquals((await admin(b, ["volume", "delete", "db1"])).code, 0);
      const second = await create();
      assert(second !== first, "a new volume has a new uuid");
      const refused = await info(old.dir);
      assert(refused.code !== 0, "the old certificate does not open the new db1");
      assert(
        refused.stderr.includes(
          `bound to the volume of that name that existed when it was issued`,
        ) &&
          refused.stderr.includes(first) && refused.stderr.includes(second),
        refused.stderr,
      );
      assertEquals((await info(anyInc.dir)).code, 0, "--any-incarnation binds by name");
      const fresh = await issue(b, "vm1b", ["--role", "nbd-client", "--volumes", "db1"]);
      dirs.push(fresh.dir);
      const ok = await info(fresh.dir);
      assertEquals(ok.code, 0, ok.stderr);
      assertEquals(ok.stdout.trim().split("\n").at(-1), String(2 ** 20));
      assert(
        await b.logged(/"level":"warn".*"option refused"/),
        "the refusal is logged as a warning",
      );
    } finally {
      await b.stop();
      for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
    }
  },
);

e2eTest(
  "a read-only client attached through a node that forwards to the master is served read-only there, and the node lists the volume (NBD_OPT_LIST)",
  { tools: [PYTHON, "etcd", "nbdinfo"] },
  async () => {
    const c = await startReplCluster(["node-a", "node-b"]);
    try {
      const a = c.nodes.get("node-a")!;
      const made = await admin(a, ["volume", "create", "fv", "--size", "1MiB", "-o", "json"]);
      assertEquals(made.code, 0, made.stderr);
      const master = (JSON.parse(made.stdout) as { master: string }).master;
      const front = c.nodes.get(master === "node-a" ? "node-b" : "node-a")!;
      // Fill through the master with the cluster's admin certificate.
      const fill = `import nbd, sys
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1]); h.pwrite(b"\\xab" * 4096, 0); h.flush()`;
      const filled = await run(PYTHON, ["-c", fill, c.uri(master, "fv")]);
      assertEquals(filled.code, 0, filled.stderr);
      const ro = await issue(a, "reader", ["--role", "nbd-client", "--volumes", "fv:ro"]);
      let p: Probe | undefined;
      // The front learns where fv is served from the directory (etcd watch).
      const deadline = Date.now() + 30_000;
      for (;;) {
        const r = await run(PYTHON, [
          "-c",
          PROBE_PY,
          tlsUri(front.nbdHost, front.nbdPort, "fv", ro.dir),
        ]);
        if (r.code === 0) {
          p = JSON.parse(r.stdout) as Probe;
          break;
        }
        assert(Date.now() < deadline, `the front never served fv: ${r.stderr}`);
        await new Promise((res) => setTimeout(res, 200));
      }
      assertReadOnly(p, "forwarded read-only client");
      assert(await front.logged('"forwarded":true'), "the front forwarded the client");
      // NBD_OPT_LIST on the front names the volume it forwards, as the master does.
      const listed = await run("nbdinfo", [
        "--list",
        "--json",
        tlsUri(front.nbdHost, front.nbdPort, "", ro.dir),
      ]);
      assertEquals(listed.code, 0, listed.stderr);
      const names = (JSON.parse(listed.stdout) as { exports: { "export-name": string }[] })
        .exports.map((e) => e["export-name"]);
      assertEquals(names, ["fv"]);
      await Deno.remove(ro.dir, { recursive: true });
    } finally {
      await c.stop();
    }
  },
);
