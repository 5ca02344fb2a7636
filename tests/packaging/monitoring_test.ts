// deno-lint-ignore-file no-console
/**
 * The monitoring files operators drop in (packaging/monitoring/): the alerting rules pass
 * `promtool check rules` and their unit tests (`promtool test rules`), a live node's /metrics
 * passes `promtool check metrics`, and every Grafana dashboard query returns data from a real
 * Prometheus scraping a live TLS cluster of two nodes with a replicated volume under I/O.
 * @module
 */

import { assert, assertEquals } from "../_assert.ts";
import { e2eTest, freePort, REPO_ROOT, run } from "../e2e/_harness.ts";
import { admin } from "../e2e/_cluster_tls.ts";
import { LEASE_TTL_S, startReplCluster, untilServed } from "../e2e/_replicated.ts";

const DIR = `${REPO_ROOT}/packaging/monitoring`;
const PYTHON = "/usr/bin/python3";
/** How long the dashboard queries may take to all return data. */
const WAIT_MS = 90_000;

e2eTest(
  "promtool accepts the alerting rules and their unit tests pass",
  { tools: ["promtool"], ballast: false },
  async () => {
    const check = await run("promtool", ["check", "rules", "ballast-alerts.yml"], { cwd: DIR });
    assertEquals(check.code, 0, check.stdout + check.stderr);
    assert(check.stdout.includes("SUCCESS"), check.stdout);
    const test = await run("promtool", ["test", "rules", "ballast-alerts_test.yml"], { cwd: DIR });
    assertEquals(test.code, 0, test.stdout + test.stderr);
  },
);

/** Every expression of the dashboard, with Grafana's variables replaced for a plain query. */
async function dashboardQueries(): Promise<Array<{ panel: string; expr: string }>> {
  const dash = JSON.parse(await Deno.readTextFile(`${DIR}/ballast-dashboard.json`));
  const out: Array<{ panel: string; expr: string }> = [];
  for (const p of dash.panels) {
    for (const t of p.targets ?? []) {
      const expr = (t.expr as string)
        .replaceAll("$__rate_interval", "15s")
        .replaceAll('"$instance"', '".*"');
      assert(!expr.includes("$"), `panel ${p.title}: unknown variable in ${t.expr}`);
      out.push({ panel: p.title, expr });
    }
  }
  return out;
}

/** Reads and writes 64 KiB blocks through `uri` until `stopFile` exists. */
const LOAD_PY = `
import os, sys, nbd
h = nbd.NBD(); h.set_uri_allow_local_file(True); h.connect_uri(sys.argv[1])
i = 0
while not os.path.exists(sys.argv[2]):
    h.pwrite(bytes([i % 251]) * 65536, (i % 256) * 65536)
    h.pread(65536, ((i + 7) % 256) * 65536)
    i += 1
    if i % 64 == 0: h.flush()
h.shutdown()
print(i)
`;

e2eTest(
  "a live node's /metrics passes promtool check metrics and every dashboard query returns data",
  { tools: ["promtool", "prometheus", "etcd", PYTHON] },
  async () => {
    const c = await startReplCluster(["node-a", "node-b"]);
    const work = await Deno.makeTempDir({ prefix: "ballast-prometheus-" });
    let prom: Deno.ChildProcess | undefined;
    let load: Promise<unknown> | undefined;
    const stopFile = `${work}/stop-load`;
    try {
      const a = c.nodes.get("node-a")!;
      const made = await admin(a, ["volume", "create", "m1", "--size", "16MiB", "--replicas", "1"]);
      assertEquals(made.code, 0, made.stderr);
      const v = await untilServed(c, "m1");
      load = run(PYTHON, ["-c", LOAD_PY, c.uri(v.master, "m1"), stopFile], {
        timeoutMs: 300_000,
      });

      // promtool check metrics on the master's live /metrics (TLS, client certificate).
      const certs = ["ca-cert.pem", "client-cert.pem", "client-key.pem"].map((f) =>
        `${c.certDir}/${f}`
      );
      const curl = await run("curl", [
        "-sS",
        "--fail",
        "--cacert",
        certs[0],
        "--cert",
        certs[1],
        "--key",
        certs[2],
        `${c.nodes.get(v.master)!.api}/metrics`,
      ]);
      assertEquals(curl.code, 0, curl.stderr);
      assert(curl.stdout.includes("ballast_replication_member_state"), "replication families");
      const lint = await run("promtool", ["check", "metrics"], { stdin: curl.stdout });
      assertEquals(lint.code, 0, `promtool check metrics:\n${lint.stdout}${lint.stderr}`);

      // A real Prometheus scraping both nodes every second, with the alerting rules loaded.
      const targets = [...c.nodes.values()].map((n) => new URL(n.api).host);
      const port = await freePort();
      await Deno.writeTextFile(
        `${work}/prometheus.yml`,
        `global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: ["${DIR}/ballast-alerts.yml"]
scrape_configs:
  - job_name: ballast
    scheme: https
    tls_config: {ca_file: "${certs[0]}", cert_file: "${certs[1]}", key_file: "${certs[2]}"}
    static_configs: [{targets: ${JSON.stringify(targets)}}]
`,
      );
      prom = new Deno.Command("prometheus", {
        args: [
          `--config.file=${work}/prometheus.yml`,
          `--storage.tsdb.path=${work}/data`,
          `--web.listen-address=127.0.0.1:${port}`,
        ],
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const promLog = (async () => {
        let text = "";
        for await (const s of prom.stderr.pipeThrough(new TextDecoderStream())) text += s;
        return text;
      })();
      const query = async (expr: string): Promise<{ status: string; data?: { result: [] } }> => {
        const res = await fetch(
          `http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(expr)}`,
        );
        return await res.json();
      };

      // Wait (with a deadline) until every query has answered with data at least once.
      const queries = await dashboardQueries();
      const pending = new Map(queries.map((q) => [q.expr, q.panel]));
      const deadline = Date.now() + WAIT_MS;
      while (pending.size > 0 && Date.now() < deadline) {
        for (const expr of [...pending.keys()]) {
          try {
            const r = await query(expr);
            assertEquals(r.status, "success", `${expr}: ${JSON.stringify(r)}`);
            if ((r.data?.result.length ?? 0) > 0) pending.delete(expr);
          } catch (err) {
            if (err instanceof TypeError) break; // Prometheus not listening yet
            throw err;
          }
        }
        if (pending.size > 0) await new Promise((r) => setTimeout(r, 1000));
      }
      const up = await query('up{job="ballast"}').catch(() => undefined);
      assertEquals(
        [...pending].map(([e, p]) => `${p}: ${e}`),
        [],
        `dashboard queries without data after ${WAIT_MS / 1000} s; up=${
          JSON.stringify(up?.data?.result)
        }`,
      );
      console.log(`${queries.length} dashboard queries returned data (lease TTL ${LEASE_TTL_S}s)`);

      // The rules loaded and evaluate without errors.
      const rules = await (await fetch(`http://127.0.0.1:${port}/api/v1/rules`)).json();
      const loaded = rules.data.groups.flatMap((g: { rules: unknown[] }) => g.rules) as Array<
        { name: string; health: string; lastError?: string }
      >;
      assertEquals(loaded.length, 13, "all alerting rules loaded");
      for (const r of loaded) assertEquals(r.health, "ok", `${r.name}: ${r.lastError}`);
      prom.kill("SIGTERM");
      await prom.status;
      await promLog;
      prom = undefined;
    } finally {
      await Deno.writeTextFile(stopFile, "");
      await load?.catch(() => {});
      if (prom) {
        prom.kill("SIGKILL");
        await prom.status;
      }
      await c.stop();
      await Deno.remove(work, { recursive: true }).catch(() => {});
    }
  },
);
