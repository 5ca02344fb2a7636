import { assert, assertEquals } from "../../_assert.ts";
import { escapeLabelValue } from "../../../control/api/_metrics.ts";
import { attachNbd, call, fullDiskPlane, NODE, startTestNode } from "../_fixtures.ts";
import pino from "pino";

const GiB = 2 ** 30;

Deno.test("api: health, version and openapi answer with request ids", async () => {
  const node = await startTestNode();
  try {
    const health = await call(node.app, "GET", "/v1/health");
    assertEquals(health.status, 200);
    assertEquals(health.body.status, "ok");
    assertEquals(health.body.node, NODE);
    assertEquals(health.body.checks.store.ok, true);
    assertEquals(health.body.checks.dataPlane.ok, true);
    assert(/^[0-9a-f-]{36}$/.test(health.headers.get("x-request-id") ?? ""), "generated id");

    const version = await call(node.app, "GET", "/v1/version", undefined, {
      "X-Request-Id": "trace-42",
    });
    assertEquals(version.headers.get("x-request-id"), "trace-42");
    assertEquals(version.body.apiVersion, "v1");
    assertEquals(version.body.deno, Deno.version.deno);
    // Run from the checkout: a source build, its commit read from git (when git is here).
    assertEquals(version.body.build, "source");
    assertEquals(version.body.builtAt, null);
    assert(
      version.body.commit === null || /^[0-9a-f]{40}(-dirty)?$/.test(version.body.commit),
      `commit: ${version.body.commit}`,
    );

    const doc = await call(node.app, "GET", "/v1/openapi.json");
    assertEquals(doc.body.openapi, "3.1.0");
    assert(doc.body.paths["/v1/volumes/{name}"].delete, "documents DELETE /v1/volumes/{name}");
  } finally {
    await node.close();
  }
});

/** The parts of an OpenAPI operation the test reads. */
type Op = { responses: Record<string, { headers?: Record<string, unknown> }> };

Deno.test("openapi: every $ref resolves; node and volume operations document 503 and reads Ballast-Stale", async () => {
  const { OPENAPI_DOCUMENT } = await import("../../../control/api/openapi/document.ts");
  const doc = JSON.parse(JSON.stringify(OPENAPI_DOCUMENT));
  const refs: string[] = [];
  const walk = (v: unknown) => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === "object") {
      for (const [k, x] of Object.entries(v)) k === "$ref" ? refs.push(x as string) : walk(x);
    }
  };
  walk(doc);
  assert(refs.length > 20, `only ${refs.length} refs`);
  for (const r of new Set(refs)) {
    const target = r.replace(/^#\//, "").split("/").reduce(
      (o: Record<string, unknown> | undefined, part) => o?.[part] as Record<string, unknown>,
      doc,
    );
    assert(target !== undefined, `unresolved $ref ${r}`);
  }
  for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, Op>>)) {
    if (!/^\/v1\/(nodes|volumes)/.test(path)) continue;
    for (const [method, op] of Object.entries(ops)) {
      assert(op.responses["503"], `${method.toUpperCase()} ${path} documents no 503`);
      if (method === "get") {
        assert(op.responses["200"].headers?.["Ballast-Stale"], `GET ${path}: no Ballast-Stale`);
      }
    }
  }
});

Deno.test("api: volume lifecycle create, get, list, grow, relabel, delete", async () => {
  const node = await startTestNode();
  try {
    const created = await call(node.app, "POST", "/v1/volumes", {
      name: "db1",
      size: "1GiB",
      labels: { team: "storage" },
      description: "first",
    });
    assertEquals(created.status, 201);
    assertEquals(created.headers.get("location"), "/v1/volumes/db1");
    assertEquals(created.body.state, "ready");
    assertEquals(created.body.sizeBytes, GiB);
    assertEquals(created.body.master, NODE);
    assertEquals(created.body.replicas, 0);
    assertEquals(created.body.allocatedBytes, 0, "thin: nothing allocated yet");
    assertEquals(created.body.connections, 0);

    const dup = await call(node.app, "POST", "/v1/volumes", { name: "db1", size: 2 ** 20 });
    assertEquals([dup.status, dup.body.error.code], [409, "ALREADY_EXISTS"]);

    const got = await call(node.app, "GET", "/v1/volumes/db1");
    assertEquals(got.body.uuid, created.body.uuid);
    assertEquals(got.body.labels, { team: "storage" });

    const grown = await call(node.app, "PATCH", "/v1/volumes/db1", {
      size: 2 * GiB,
      labels: { tier: "gold" },
    });
    assertEquals(grown.status, 200);
    assertEquals(grown.body.sizeBytes, 2 * GiB);
    assertEquals(grown.body.labels, { tier: "gold" }, "labels are replaced as a whole");
    assertEquals(grown.body.description, "first");

    const shrink = await call(node.app, "PATCH", "/v1/volumes/db1", { size: "1GiB" });
    assertEquals([shrink.status, shrink.body.error.code], [412, "FAILED_PRECONDITION"]);
    assertEquals(shrink.body.error.details.field, "size");
    assert(shrink.body.error.message.includes("only grow"), shrink.body.error.message);

    // A volume created without replicas is no volume group: its count cannot change.
    const more = await call(node.app, "PATCH", "/v1/volumes/db1", { replicas: 1 });
    assertEquals([more.status, more.body.error.code], [412, "FAILED_PRECONDITION"]);
    assertEquals(more.body.error.details.field, "replicas");
    assert(more.body.error.message.includes("not a volume group"), more.body.error.message);
    const same = await call(node.app, "PATCH", "/v1/volumes/db1", { replicas: 0 });
    assertEquals([same.status, same.body.replicas], [200, 0]);

    await call(node.app, "POST", "/v1/volumes", { name: "a0", size: 2 ** 20 });
    const list = await call(node.app, "GET", "/v1/volumes");
    assertEquals(list.body.items.map((v: { name: string }) => v.name), ["a0", "db1"]);

    const del = await call(node.app, "DELETE", "/v1/volumes/db1");
    assertEquals(del.status, 204);
    const gone = await call(node.app, "GET", "/v1/volumes/db1");
    assertEquals([gone.status, gone.body.error.code], [404, "NOT_FOUND"]);
    assertEquals(gone.body.error.message, 'volume "db1" not found');
    const again = await call(node.app, "DELETE", "/v1/volumes/db1");
    assertEquals(again.status, 404);
  } finally {
    await node.close();
  }
});

const BAD_CREATES: Array<[string, unknown, number, string, string]> = [
  ["empty object", {}, 400, "INVALID_ARGUMENT", "name"],
  ["missing size", { name: "v" }, 400, "INVALID_ARGUMENT", "size"],
  ["uppercase name", { name: "Bad", size: "1GiB" }, 400, "INVALID_ARGUMENT", "name"],
  ["name with slash", { name: "a/b", size: "1GiB" }, 400, "INVALID_ARGUMENT", "name"],
  ["name too long", { name: "a".repeat(64), size: "1GiB" }, 400, "INVALID_ARGUMENT", "name"],
  ["numeric name", { name: 7, size: "1GiB" }, 400, "INVALID_ARGUMENT", "name"],
  ["size below 1 MiB", { name: "v", size: 2 ** 20 - 512 }, 400, "INVALID_ARGUMENT", "size"],
  ["size above 1 PiB", { name: "v", size: 2 ** 50 + 512 }, 400, "INVALID_ARGUMENT", "size"],
  ["size not sector aligned", { name: "v", size: 2 ** 20 + 1 }, 400, "INVALID_ARGUMENT", "size"],
  ["size fractional", { name: "v", size: 1048576.5 }, 400, "INVALID_ARGUMENT", "size"],
  ["size unknown unit", { name: "v", size: "10XB" }, 400, "INVALID_ARGUMENT", "size"],
  ["size boolean", { name: "v", size: true }, 400, "INVALID_ARGUMENT", "size"],
  ["size SI, not sector aligned", { name: "v", size: "1.5G" }, 400, "INVALID_ARGUMENT", "size"],
  ["size lower-case SI unit", { name: "v", size: "1g" }, 400, "INVALID_ARGUMENT", "size"],
  [
    "replicas negative",
    { name: "v", size: "1GiB", replicas: -1 },
    400,
    "INVALID_ARGUMENT",
    "replicas",
  ],
  [
    "replicas string",
    { name: "v", size: "1GiB", replicas: "1" },
    400,
    "INVALID_ARGUMENT",
    "replicas",
  ],
  [
    "replicas need cluster",
    { name: "v", size: "1GiB", replicas: 2 },
    412,
    "FAILED_PRECONDITION",
    "replicas",
  ],
  ["labels array", { name: "v", size: "1GiB", labels: [] }, 400, "INVALID_ARGUMENT", "labels"],
  [
    "label bad key",
    { name: "v", size: "1GiB", labels: { "a b": "x" } },
    400,
    "INVALID_ARGUMENT",
    "labels.a b",
  ],
  [
    "label number value",
    { name: "v", size: "1GiB", labels: { k: 1 } },
    400,
    "INVALID_ARGUMENT",
    "labels.k",
  ],
  [
    "description number",
    { name: "v", size: "1GiB", description: 5 },
    400,
    "INVALID_ARGUMENT",
    "description",
  ],
  [
    "description with a bidirectional override",
    { name: "v", size: "1GiB", description: "ok \u202egnp.exe" },
    400,
    "INVALID_ARGUMENT",
    "description",
  ],
  [
    "description with a line separator",
    { name: "v", size: "1GiB", description: "a\u2028b" },
    400,
    "INVALID_ARGUMENT",
    "description",
  ],
  [
    "label value with an isolate",
    { name: "v", size: "1GiB", labels: { k: "\u2066txt" } },
    400,
    "INVALID_ARGUMENT",
    "labels.k",
  ],
  [
    "label value with a zero-width space (a format character)",
    { name: "v", size: "1GiB", labels: { k: "a\u200bb" } },
    400,
    "INVALID_ARGUMENT",
    "labels.k",
  ],
  [
    "label value with a C1 control",
    { name: "v", size: "1GiB", labels: { k: "a\u009bb" } },
    400,
    "INVALID_ARGUMENT",
    "labels.k",
  ],
  ["unknown field", { name: "v", size: "1GiB", sise: 1 }, 400, "INVALID_ARGUMENT", "sise"],
];

Deno.test("api: every invalid create body returns its code and names the field", async () => {
  const node = await startTestNode();
  try {
    for (const [what, body, status, code, field] of BAD_CREATES) {
      const res = await call(node.app, "POST", "/v1/volumes", body);
      assertEquals([res.status, res.body.error.code], [status, code], what);
      assertEquals(res.body.error.details?.field, field, what);
    }
    const cluster = await call(node.app, "POST", "/v1/volumes", {
      name: "v",
      size: "1GiB",
      replicas: 1,
    });
    assert(cluster.body.error.message.includes("cluster mode"), cluster.body.error.message);
    assertEquals((await call(node.app, "GET", "/v1/volumes")).body.items, [], "nothing created");
  } finally {
    await node.close();
  }
});

Deno.test("api: malformed requests get JSON errors", async () => {
  const node = await startTestNode();
  try {
    const cases: Array<[string, string, string, unknown, number, string | undefined]> = [
      ["malformed JSON", "POST", "/v1/volumes", "{name:", 400, undefined],
      ["array body", "POST", "/v1/volumes", "[1]", 400, undefined],
      ["empty body", "POST", "/v1/volumes", "", 400, undefined],
      ["bad path name", "GET", "/v1/volumes/Bad_Name", undefined, 400, "name"],
      ["unknown query", "GET", "/v1/volumes?limit=3", undefined, 400, "limit"],
      ["bad force", "DELETE", "/v1/volumes/v?force=maybe", undefined, 400, "force"],
      ["empty force", "DELETE", "/v1/volumes/v?force=", undefined, 400, "force"],
      ["bare force", "DELETE", "/v1/volumes/v?force", undefined, 400, "force"],
      ["force twice", "DELETE", "/v1/volumes/v?force=false&force=true", undefined, 400, "force"],
      ["deep twice", "POST", "/v1/volumes/v/verify?deep=true&deep=true", undefined, 400, "deep"],
      ["empty patch", "PATCH", "/v1/volumes/v", {}, 400, undefined],
      ["patch unknown field", "PATCH", "/v1/volumes/v", { name: "w" }, 400, "name"],
      ["patch bad size", "PATCH", "/v1/volumes/v", { size: "big" }, 400, "size"],
      [
        "labels and setLabels",
        "PATCH",
        "/v1/volumes/v",
        {
          labels: {},
          setLabels: { a: "b" },
        },
        400,
        "labels",
      ],
      ["bad removeLabels", "PATCH", "/v1/volumes/v", { removeLabels: "a" }, 400, "removeLabels"],
      [
        "set and removed",
        "PATCH",
        "/v1/volumes/v",
        {
          setLabels: { a: "b" },
          removeLabels: ["a"],
        },
        400,
        "removeLabels",
      ],
      ["patch bad replicas", "PATCH", "/v1/volumes/v", { replicas: 9 }, 400, "replicas"],
      ["patch replicas not a number", "PATCH", "/v1/volumes/v", { replicas: "2" }, 400, "replicas"],
      ["bad node name", "GET", "/v1/nodes/NODE!", undefined, 400, "name"],
      ["a delete with a body", "DELETE", "/v1/volumes/v", "garbage{", 400, undefined],
      ["an uncordon with a body", "POST", "/v1/nodes/n/uncordon", { bogus: 1 }, 400, "bogus"],
      ["a verify with a body", "POST", "/v1/volumes/v/verify", { deep: true }, 400, "deep"],
    ];
    for (const [what, method, path, body, status, field] of cases) {
      const res = await call(node.app, method, path, body === "" ? "" : body);
      assertEquals(res.status, status, what);
      assertEquals(res.body.error.code, "INVALID_ARGUMENT", what);
      assertEquals(res.body.error.details?.field, field, what);
    }
    const json = await call(node.app, "POST", "/v1/volumes", "{name:");
    assert(json.body.error.message.includes("not valid JSON"), json.body.error.message);

    const unknown = await call(node.app, "PUT", "/v1/things");
    assertEquals([unknown.status, unknown.body.error.code], [404, "NOT_FOUND"]);
    assert(unknown.body.error.message.includes("PUT /v1/things"), unknown.body.error.message);
  } finally {
    await node.close();
  }
});

Deno.test("api: JSON bodies need application/json (415), one 413 limit, each key once, 405 with Allow", async () => {
  const node = await startTestNode();
  try {
    // Text that is not Unicode is refused, not stored with U+FFFD or a lone surrogate.
    const json = { "content-type": "application/json" };
    const prefix = new TextEncoder().encode('{"name":"u8","size":"1MiB","description":"');
    const badBytes = new Uint8Array([...prefix, 0xff, 0xfe, 0x22, 0x7d]);
    const bad = await node.app.request("/v1/volumes", {
      method: "POST",
      body: badBytes,
      headers: json,
    });
    const badErr = await bad.json();
    assertEquals([bad.status, badErr.error.message], [400, "request body is not valid UTF-8"]);
    const lone = await node.app.request("/v1/volumes", {
      method: "POST",
      body: '{"name":"u8","size":"1MiB","description":"a\\ud800b"}',
      headers: json,
    });
    const loneErr = await lone.json();
    assertEquals([lone.status, loneErr.error.details?.field], [400, "description"]);
    assertEquals((await node.app.request("/v1/volumes/u8")).status, 404, "nothing created");
    const body = JSON.stringify({ name: "ct", size: "1MiB" });
    for (const type of [undefined, "application/x-www-form-urlencoded", "text/plain"]) {
      const res = await node.app.request("/v1/volumes", {
        method: "POST",
        body,
        headers: type ? { "content-type": type } : {},
      });
      const err = await res.json();
      assertEquals([res.status, err.error.code], [415, "INVALID_ARGUMENT"], String(type));
      assert(err.error.message.includes("application/json"), err.error.message);
    }
    assertEquals((await call(node.app, "GET", "/v1/volumes/ct")).status, 404, "nothing created");
    const charset = await node.app.request("/v1/volumes", {
      method: "POST",
      body,
      headers: { "content-type": "Application/JSON; charset=utf-8" },
    });
    assertEquals(charset.status, 201, "parameters and case are fine");

    const big = await call(node.app, "POST", "/v1/volumes", {
      name: "big",
      size: "1MiB",
      description: "x".repeat(70 * 1024),
    });
    assertEquals([big.status, big.body.error.code], [413, "INVALID_ARGUMENT"]);

    const dup = await call(
      node.app,
      "POST",
      "/v1/volumes",
      '{"name":"d1","size":"1MiB","size":"1TiB"}',
    );
    assertEquals([dup.status, dup.body.error.details?.field], [400, "size"]);
    assert(dup.body.error.message.includes('"size" twice'), dup.body.error.message);
    const nested = await call(
      node.app,
      "POST",
      "/v1/volumes",
      '{"name":"d2","size":"1MiB","labels":{"a":"1","b":{"x":1},"a":"2"}}',
    );
    assertEquals([nested.status, nested.body.error.details?.field], [400, "labels.a"]);
    assertEquals((await call(node.app, "GET", "/v1/volumes/d1")).status, 404);
    const escaped = await call(
      node.app,
      "PATCH",
      "/v1/volumes/ct",
      '{"labels":{"k":"v"},"label\u0073":{}}',
    );
    assertEquals(escaped.body.error.details?.field, "labels", "keys compared decoded");

    const put = await call(node.app, "PUT", "/v1/volumes/ct", { size: "2MiB" });
    assertEquals([put.status, put.body.error.code], [405, "INVALID_ARGUMENT"]);
    assertEquals(put.headers.get("allow"), "GET, HEAD, PATCH, DELETE");
    assert(put.body.error.message.includes("PUT"), put.body.error.message);
    const delList = await call(node.app, "DELETE", "/v1/volumes");
    assertEquals([delList.status, delList.headers.get("allow")], [405, "GET, HEAD, POST"]);
    const none = await call(node.app, "PUT", "/v1/nothing/here");
    assertEquals(none.status, 404, "an unknown path stays 404");
    for (const path of ["/v1/volumes/", "/v1/volumes/ct/"]) {
      const slash = await call(node.app, "GET", path);
      assertEquals([slash.status, slash.headers.get("allow")], [404, null], path);
    }
  } finally {
    await node.close();
  }
});

Deno.test("api: delete is refused while an NBD client is connected, forced delete disconnects it", async () => {
  const node = await startTestNode();
  let conn: Deno.TcpConn | undefined;
  try {
    await call(node.app, "POST", "/v1/volumes", { name: "busy", size: "64MiB" });
    conn = await attachNbd(node.dataPlane.nbdAddress, "busy");
    const got = await call(node.app, "GET", "/v1/volumes/busy");
    assertEquals(got.body.connections, 1);

    const refused = await call(node.app, "DELETE", "/v1/volumes/busy");
    assertEquals([refused.status, refused.body.error.code], [412, "FAILED_PRECONDITION"]);
    const after = await call(node.app, "GET", "/v1/volumes/busy");
    assertEquals(after.body.state, "ready", "state restored after a refused delete");

    const forced = await call(node.app, "DELETE", "/v1/volumes/busy?force=true");
    assertEquals(forced.status, 204);
    assertEquals(await conn.read(new Uint8Array(16)), null, "the client was disconnected");
    assertEquals((await call(node.app, "GET", "/v1/volumes/busy")).status, 404);
  } finally {
    conn?.close();
    await node.close();
  }
});

Deno.test("api: a full disk on create is RESOURCE_EXHAUSTED and leaves no record", async () => {
  const node = await startTestNode({ wrapPlane: fullDiskPlane });
  try {
    const res = await call(node.app, "POST", "/v1/volumes", { name: "big", size: "1TiB" });
    assertEquals([res.status, res.body.error.code], [507, "RESOURCE_EXHAUSTED"]);
    assert(res.body.error.message.includes("no space left"), res.body.error.message);
    assertEquals(await node.store.get("/ballast/volumes/big"), undefined);
    assertEquals((await call(node.app, "GET", "/v1/volumes/big")).status, 404);
  } finally {
    await node.close();
  }
});

/** The file system type of `dir` as stat -f names it ("ext2/ext3" for ext4, "xfs", "tmpfs"). */
async function fsType(dir: string): Promise<string> {
  const out = await new Deno.Command("stat", { args: ["-f", "-c", "%T", dir] }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

Deno.test("api: a size past the file system's largest file is FAILED_PRECONDITION naming it, not a full disk", async () => {
  const node = await startTestNode();
  try {
    const fs = await fsType(node.dir);
    if (!fs.startsWith("ext")) return; // only ext4 stops at 16 TiB; XFS and tmpfs allow 1 PiB
    const res = await call(node.app, "POST", "/v1/volumes", { name: "huge", size: "16TiB" });
    assertEquals([res.status, res.body.error.code], [412, "FAILED_PRECONDITION"], fs);
    const msg: string = res.body.error.message;
    assert(msg.includes("16 TiB is larger than the largest file"), msg);
    assertEquals(await node.store.get("/ballast/volumes/huge"), undefined);
    await call(node.app, "POST", "/v1/volumes", { name: "small", size: "1TiB" });
    const grow = await call(node.app, "PATCH", "/v1/volumes/small", { size: "20TiB" });
    assertEquals([grow.status, grow.body.error.code], [412, "FAILED_PRECONDITION"]);
    assert(grow.body.error.message.includes("20 TiB is larger"), grow.body.error.message);
  } finally {
    await node.close();
  }
});

Deno.test("api: nodes list the local node as ready with live capacity", async () => {
  const node = await startTestNode();
  try {
    await call(node.app, "POST", "/v1/volumes", { name: "v1", size: "8MiB" });
    const list = await call(node.app, "GET", "/v1/nodes");
    assertEquals(list.body.items.length, 1);
    const n = list.body.items[0];
    assertEquals([n.name, n.state, n.volumes], [NODE, "ready", 1]);
    assertEquals(n.nbdAddress, node.dataPlane.nbdAddress);
    assert(n.capacityBytes > 0 && n.freeBytes > 0 && n.freeBytes <= n.capacityBytes);
    assertEquals((await call(node.app, "GET", `/v1/nodes/${NODE}`)).body.name, NODE);
    const missing = await call(node.app, "GET", "/v1/nodes/nope");
    assertEquals([missing.status, missing.body.error.code], [404, "NOT_FOUND"]);
  } finally {
    await node.close();
  }
});

Deno.test("api: /metrics renders Prometheus text with per-volume series", async () => {
  const node = await startTestNode();
  try {
    await call(node.app, "POST", "/v1/volumes", { name: 'q"v', size: "8MiB" }); // rejected
    await call(node.app, "POST", "/v1/volumes", { name: "m1", size: "8MiB" });
    await call(node.app, "GET", "/v1/volumes/m1");
    const res = await node.app.request("/metrics");
    assertEquals(res.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    const text = await res.text();
    const lines = text.split("\n");
    for (
      const family of [
        "ballast_volume_ops_total",
        "ballast_volume_bytes_total",
        "ballast_volume_errors_total",
        "ballast_volume_request_duration_seconds",
        "ballast_volume_connections",
        "ballast_volume_size_bytes",
        "ballast_volume_allocated_bytes",
        "ballast_nbd_connections",
        "ballast_api_requests_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
      ]
    ) {
      assert(lines.some((l) => l.startsWith(`# HELP ${family} `)), `HELP of ${family}`);
      assert(lines.some((l) => l.startsWith(`# TYPE ${family} `)), `TYPE of ${family}`);
    }
    assert(lines.includes(`ballast_volume_size_bytes{volume="m1"} ${8 * 2 ** 20}`));
    assert(lines.includes(`ballast_volume_ops_total{volume="m1",op="read"} 0`));
    assert(
      lines.includes(
        `ballast_volume_request_duration_seconds_bucket{volume="m1",op="write",le="+Inf"} 0`,
      ),
    );
    assert(
      lines.includes(
        `ballast_api_requests_total{method="GET",route="/v1/volumes/:name",status="200"} 1`,
      ),
    );
    assert(
      lines.includes(
        `ballast_api_requests_total{method="POST",route="/v1/volumes",status="400"} 1`,
      ),
    );
    assert(lines.includes("ballast_nbd_connections 0"));
  } finally {
    await node.close();
  }
});

Deno.test("escapeLabelValue() escapes backslash, quote and newline", () => {
  assertEquals(escapeLabelValue('a\\b"c\nd'), 'a\\\\b\\"c\\nd');
  assertEquals(escapeLabelValue("plain"), "plain");
});

Deno.test("api: the request's log line carries its id; changes and refusals at info, reads that succeed at debug", async () => {
  const lines: { level: number; req?: string; status?: number; method?: string }[] = [];
  const logger = pino({ level: "info" }, { write: (l: string) => void lines.push(JSON.parse(l)) });
  const node = await startTestNode({ logger });
  try {
    const ask = (method: string, path: string, id: string, body?: unknown) =>
      node.app.request(path, {
        method,
        headers: { "x-request-id": id, "content-type": "application/json" },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
    const made = await ask("POST", "/v1/volumes", "req-create", { name: "v1", size: "8MiB" });
    assertEquals([made.status, made.headers.get("x-request-id")], [201, "req-create"]);
    assertEquals((await ask("GET", "/v1/volumes/v1", "req-read")).status, 200);
    assertEquals((await ask("GET", "/v1/volumes/nope", "req-missing")).status, 404);
    const of = (id: string) => lines.filter((l) => l.req === id);
    assertEquals(of("req-create").map((l) => [l.level, l.status]), [[30, 201]]);
    assertEquals(of("req-read"), [], "a read that succeeds is at debug");
    assertEquals(of("req-missing").map((l) => [l.level, l.status, l.method]), [[30, 404, "GET"]]);
  } finally {
    await node.close();
  }
});
