import { dataWorkersWarning, resolveConfig } from "../../../control/serve/config.ts";
import { unknownBallastEnv } from "../../../control/serve/settings.ts";
import { FailedPreconditionError, InvalidArgumentError } from "../../../mod/errors.ts";
import { assert, assertEquals, assertThrows } from "../../_assert.ts";

const host = { hostname: () => "Storage-01.example.com", cores: () => 4 };

Deno.test("resolveConfig() fills every default", () => {
  assertEquals(resolveConfig({ "data-dir": "/d" }, {}, {}, host), {
    dataDir: "/d",
    apiListen: { host: "127.0.0.1", port: 5705 },
    nbdListen: { host: "127.0.0.1", port: 10809 },
    nodeName: "storage-01",
    logLevel: "info",
    logFormat: "json",
    nodeLeaseTtlSeconds: 10,
    tls: true,
    nbdLocalListen: undefined,
    nbdUnix: { path: "/d/nbd.sock", mode: 0o660 },
    nbdUnixRo: undefined,
    apiAnonymousHealth: false,
    certTtlSeconds: 30 * 86400,
    etcd: undefined,
    labels: {},
    dataWorkers: { min: 1, max: 4 },
    peerListen: { host: "127.0.0.1", port: 10811 },
    resyncRateBytesPerSecond: 0,
    replaceAfterSeconds: 300,
    crashDetection: true,
  });
});

Deno.test("resolveConfig() reads --crash-detection (default on) and names a bad value", () => {
  const c = (flags: Record<string, string>, env: Record<string, string> = {}) =>
    resolveConfig({ "data-dir": "/d", etcd: "http://127.0.0.1:2379", ...flags }, env, {}, host)
      .crashDetection;
  assertEquals(c({}), true);
  assertEquals(c({ "crash-detection": "off" }), false);
  assertEquals(c({}, { BALLAST_CRASH_DETECTION: "off" }), false);
  const err = assertThrows(() => c({ "crash-detection": "sometimes" }), InvalidArgumentError);
  assert(err.message.includes("--crash-detection"), err.message);
});

Deno.test("resolveConfig() reads --nbd-unix (default DATA_DIR/nbd.sock, off), its mode and group", () => {
  const c = (flags: Record<string, string>, env: Record<string, string> = {}) =>
    resolveConfig({ "data-dir": "/d", ...flags }, env, {}, host).nbdUnix;
  assertEquals(c({ "nbd-unix": "off" }), undefined);
  assertEquals(c({}, { BALLAST_NBD_UNIX: "off" }), undefined);
  assertEquals(c({ "nbd-unix": "/run/ballast/nbd.sock", "nbd-unix-mode": "600" }), {
    path: "/run/ballast/nbd.sock",
    mode: 0o600,
  });
  assertEquals(c({ "nbd-unix-group": "disk" }, { BALLAST_NBD_UNIX_MODE: "0660" }), {
    path: "/d/nbd.sock",
    mode: 0o660,
    group: "disk",
  });
  assertEquals(c({ "nbd-unix": "rel.sock" })?.path, `${Deno.cwd()}/rel.sock`);
  for (const mode of ["660x", "8", "01777", "rw-rw----"]) {
    const err = assertThrows(() => c({ "nbd-unix-mode": mode }), InvalidArgumentError);
    assert(err.message.includes(`--nbd-unix-mode "${mode}"`), err.message);
  }
  assertThrows(() => c({ "nbd-unix-group": "a b" }), InvalidArgumentError, "group name or id");
  const ro = resolveConfig(
    { "data-dir": "/d", "nbd-unix-ro": "/run/b/ro.sock", "nbd-unix-group": "backup" },
    {},
    {},
    host,
  );
  assertEquals(ro.nbdUnixRo, { path: "/run/b/ro.sock", mode: 0o660, group: "backup" });
  assertThrows(
    () => c({ "nbd-unix-ro": "/d/nbd.sock" }),
    InvalidArgumentError,
    "needs a path of its own",
  );
  // sun_path holds 108 bytes: a longer path could never be bound.
  assertEquals(c({ "nbd-unix": `/${"s".repeat(106)}` })?.path.length, 107);
  const err = assertThrows(
    () => c({ "nbd-unix": `/${"s".repeat(107)}` }),
    InvalidArgumentError,
    "is 108 bytes, more than the 107",
  );
  assert(err.message.includes("--nbd-unix off"), err.message);
  const long = () => resolveConfig({ "data-dir": `/${"d".repeat(98)}` }, {}, {}, host);
  assertThrows(long, InvalidArgumentError, "invalid default of --nbd-unix");
});

Deno.test("resolveConfig() reads --replace-after as a duration (default 5m) and names a bad one", () => {
  const c = (flags: Record<string, string>, env: Record<string, string> = {}) =>
    resolveConfig({ "data-dir": "/d", etcd: "http://127.0.0.1:2379", ...flags }, env, {}, host)
      .replaceAfterSeconds;
  assertEquals(c({ "replace-after": "3s" }), 3);
  assertEquals(c({ "replace-after": "10m" }), 600);
  assertEquals(c({}, { BALLAST_REPLACE_AFTER: "1h" }), 3600);
  const err = assertThrows(() => c({ "replace-after": "soon" }), InvalidArgumentError);
  assertEquals(err.message.includes('--replace-after "soon"'), true, err.message);
  assertThrows(() => c({ "replace-after": "0s" }), InvalidArgumentError);
});

Deno.test("resolveConfig() reads --peer-listen (default: the NBD host on 10811, or a free port beside a free NBD port) and --resync-rate", () => {
  const c = (flags: Record<string, string>, env: Record<string, string> = {}) =>
    resolveConfig({ "data-dir": "/d", etcd: "http://127.0.0.1:2379", ...flags }, env, {}, host);
  assertEquals(c({ "nbd-listen": "10.0.0.5:10809" }).peerListen, { host: "10.0.0.5", port: 10811 });
  assertEquals(c({ "nbd-listen": "127.0.0.1:0" }).peerListen, { host: "127.0.0.1", port: 0 });
  assertEquals(c({ "peer-listen": "127.0.0.1:7000" }).peerListen, {
    host: "127.0.0.1",
    port: 7000,
  });
  assertEquals(c({ "resync-rate": "100MiB/s" }).resyncRateBytesPerSecond, 100 * 2 ** 20);
  assertEquals(c({ "resync-rate": "1GiB" }).resyncRateBytesPerSecond, 2 ** 30);
  assertEquals(c({ "resync-rate": "unlimited" }).resyncRateBytesPerSecond, 0);
  assertEquals(c({ "resync-rate": "50M/s" }).resyncRateBytesPerSecond, 50 * 10 ** 6, "SI");
  const lower = assertThrows(() => c({ "resync-rate": "50mb/s" }), InvalidArgumentError);
  assert(lower.message.includes("M or MB for 10^6"), lower.message);
  assertEquals(c({}, { BALLAST_RESYNC_RATE: "10MiB/s" }).resyncRateBytesPerSecond, 10 * 2 ** 20);
  const err = assertThrows(() => c({ "resync-rate": "fast" }), InvalidArgumentError);
  assertEquals(err.message.includes("--resync-rate"), true, err.message);
  // The value and why, once; a bare number is refused (it would be bytes a second).
  const unit = assertThrows(() => c({ "resync-rate": "10XB" }), InvalidArgumentError);
  assert(unit.message.startsWith('invalid --resync-rate "10XB": unknown unit "XB"'), unit.message);
  assertEquals(unit.message.split("--resync-rate").length, 2, unit.message);
  const bare = assertThrows(() => c({ "resync-rate": "10" }), InvalidArgumentError);
  assert(
    bare.message.startsWith(
      'invalid --resync-rate "10": a rate needs a unit (10 would be 10 ' +
        "bytes a second)",
    ),
    bare.message,
  );
  const negative = assertThrows(() => c({ "resync-rate": "-5MiB/s" }), InvalidArgumentError);
  assert(negative.message.includes("cannot be negative"), negative.message);
  assertEquals(c({ "resync-rate": "0" }).resyncRateBytesPerSecond, 0, "0: no limit");
  assertThrows(() => c({ "peer-listen": "nowhere" }), InvalidArgumentError);
});

Deno.test("resolveConfig() reads --data-workers: auto follows the cores, 0 and 1 mean the main thread, N and MIN..MAX", () => {
  const dw = (v: string | undefined, cores = 4, env: Record<string, string> = {}) =>
    resolveConfig(
      { "data-dir": "/d", ...(v === undefined ? {} : { "data-workers": v }) },
      env,
      {},
      {
        ...host,
        cores: () => cores,
      },
    ).dataWorkers;
  assertEquals(dw(undefined), { min: 1, max: 4 });
  assertEquals(dw("auto", 1), undefined, "one core: the main thread");
  assertEquals(dw("AUTO", 16), { min: 1, max: 16 });
  assertEquals(dw("0"), undefined);
  assertEquals(dw("1"), undefined);
  assertEquals(dw("3", 1), { min: 3, max: 3 }, "an explicit size, whatever the cores");
  assertEquals(dw("2..6"), { min: 2, max: 6 });
  assertEquals(dw(undefined, 4, { BALLAST_DATA_WORKERS: "2" }), { min: 2, max: 2 });
  for (const bad of ["-1", "two", "4..2", "0..3", "257", "1.5", "1..300"]) {
    const e = assertThrows(() => dw(bad), InvalidArgumentError, undefined, bad);
    assertEquals(e.message.includes(`"${bad}"`), true, e.message);
  }
  for (
    const [bad, why] of [
      ["4..2", "MIN 4 is above MAX 2"],
      ["0..3", "a pool has at least 1 worker"],
      ["1..300", "at most 256 workers"],
    ]
  ) {
    const e = assertThrows(() => dw(bad), InvalidArgumentError);
    assertEquals(e.message.includes(why), true, e.message);
  }
});

Deno.test("dataWorkersWarning() warns only when the pool may grow past the usable cores", () => {
  assertEquals(dataWorkersWarning(undefined, 2), undefined);
  assertEquals(dataWorkersWarning({ min: 1, max: 2 }, 2), undefined);
  assertEquals(dataWorkersWarning({ min: 2, max: 2 }, 4), undefined);
  assertEquals(
    dataWorkersWarning({ min: 100, max: 100 }, 2),
    "the data worker pool (--data-workers, BALLAST_DATA_WORKERS) allows 100 workers on 2 usable cores: each worker is a thread with its own " +
      "heap (memory, start-up time) and workers beyond the cores serve no faster; auto sizes the " +
      "pool to the cores",
  );
  assertEquals(dataWorkersWarning({ min: 1, max: 3 }, 1)?.includes("on 1 usable core:"), true);
});

Deno.test("resolveConfig() parses --label and BALLAST_LABELS; bad entries name the source", () => {
  assertEquals(
    resolveConfig(
      { "data-dir": "/d", etcd: "http://127.0.0.1:2379", label: "zone=a, rack=r1" },
      {},
      {},
      host,
    ).labels,
    { zone: "a", rack: "r1" },
  );
  assertEquals(
    resolveConfig(
      { "data-dir": "/d", etcd: "http://127.0.0.1:2379" },
      { BALLAST_LABELS: "zone=b" },
      {},
      host,
    ).labels,
    { zone: "b" },
  );
  for (
    const [bad, needle] of [
      ["zone", 'entry "zone"'],
      ["=a", 'entry "=a"'],
      ["z one=a", "z one"],
      ["zone=a,zone=b", 'label "zone" is given twice'],
    ]
  ) {
    const e = assertThrows(
      () =>
        resolveConfig(
          { "data-dir": "/d", etcd: "http://127.0.0.1:2379", label: bad },
          {},
          {},
          host,
        ),
      InvalidArgumentError,
    );
    assertEquals(e.message.includes("--label") && e.message.includes(needle), true, e.message);
  }
});

Deno.test("resolveConfig() allows --tls off only when every listener is on loopback", () => {
  const off = { "data-dir": "/d", tls: "off" };
  assertEquals(resolveConfig(off, {}, {}, host).tls, false);
  assertEquals(
    resolveConfig({ ...off, "api-listen": "[::1]:1", "nbd-listen": "localhost:2" }, {}, {}, host)
      .tls,
    false,
  );
  for (const flag of ["api-listen", "nbd-listen"]) {
    const e = assertThrows(
      () => resolveConfig({ ...off, [flag]: "0.0.0.0:1" }, {}, {}, host),
      InvalidArgumentError,
    );
    assertEquals(e.message.includes(`--${flag} is 0.0.0.0:1`), true, e.message);
  }
  assertThrows(
    () => resolveConfig({ "data-dir": "/d", "nbd-local-listen": "10.1.2.3:10810" }, {}, {}, host),
    InvalidArgumentError,
    "must be on loopback",
  );
  assertEquals(
    resolveConfig({ "data-dir": "/d", "nbd-local-listen": "127.0.0.1:0" }, {}, {}, host)
      .nbdLocalListen,
    { host: "127.0.0.1", port: 0 },
  );
  assertThrows(() => resolveConfig({ ...off, tls: "maybe" }, {}, {}, host), InvalidArgumentError);
  assertEquals(
    resolveConfig({ "data-dir": "/d", "cert-ttl": "12h" }, {}, {}, host).certTtlSeconds,
    43200,
  );
  assertThrows(
    () => resolveConfig({ "data-dir": "/d", "cert-ttl": "soon" }, {}, {}, host),
    InvalidArgumentError,
    "--cert-ttl",
  );
});

Deno.test("resolveConfig() refuses a cluster-only setting without --etcd, naming where it came from, rather than start alone", () => {
  for (
    const [flags, env, needle] of [
      [{ "etcd-prefix": "/x" }, {}, '--etcd-prefix "/x" needs --etcd'],
      [{ label: "zone=a" }, {}, '--label "zone=a" needs --etcd'],
      [{ "replace-after": "1m" }, {}, '--replace-after "1m" needs --etcd'],
      [{}, { BALLAST_NODE_LEASE_TTL: "5s" }, 'BALLAST_NODE_LEASE_TTL "5s" needs --etcd'],
      [{ "peer-listen": "127.0.0.1:7000" }, {}, "--peer-listen"],
      [{ "resync-rate": "10MiB/s" }, {}, "--resync-rate"],
      [{ "crash-detection": "off" }, {}, "--crash-detection"],
    ] as [Record<string, string>, Record<string, string>, string][]
  ) {
    const e = assertThrows(
      () => resolveConfig({ "data-dir": "/d", ...flags }, env, {}, host),
      InvalidArgumentError,
    );
    assert(e.message.includes(needle) && e.message.includes("BALLAST_ETCD missing"), e.message);
    assertEquals(e.details?.field, "etcd");
  }
  // Defaults, and the settings of any mode, start a single node as before.
  assertEquals(
    resolveConfig({ "data-dir": "/d", "data-workers": "2" }, {}, {}, host).etcd,
    undefined,
  );
});

Deno.test("resolveConfig() takes flags over env over file", () => {
  const env = {
    BALLAST_DATA_DIR: "/env",
    BALLAST_API_LISTEN: "0.0.0.0:1",
    BALLAST_NBD_LISTEN: "[::1]:2",
    BALLAST_LOG_LEVEL: "debug",
    BALLAST_NODE_NAME: "from-env",
  };
  const file = { dataDir: "/file", logFormat: "pretty", nodeLeaseTtlSeconds: 5, logLevel: "warn" };
  const c = resolveConfig(
    { "api-listen": "127.0.0.2:3", "node-lease-ttl": "7s", etcd: "http://127.0.0.1:2379" },
    env,
    file,
    host,
  );
  assertEquals(c.dataDir, "/env");
  assertEquals(c.apiListen, { host: "127.0.0.2", port: 3 });
  assertEquals(c.nbdListen, { host: "::1", port: 2 });
  assertEquals(c.logLevel, "debug");
  assertEquals(c.logFormat, "pretty");
  assertEquals(c.nodeName, "from-env");
  assertEquals(c.nodeLeaseTtlSeconds, 7);
  const etcd = { etcd: "http://127.0.0.1:2379" };
  for (const [text, seconds] of [["5m", 300], ["0.5m", 30], ["45", 45], ["1h", 3600]] as const) {
    const ttl = resolveConfig({ ...etcd, "data-dir": "/d", "node-lease-ttl": text }, {}, {}, host);
    assertEquals(ttl.nodeLeaseTtlSeconds, seconds, text);
  }
  assertEquals(
    resolveConfig({}, {}, { ...file, etcd: "http://127.0.0.1:2379" }, host).dataDir,
    "/file",
  );
});

const D = { "data-dir": "/d" };
const BAD: Array<[string, Record<string, string>, Record<string, string>, string, string]> = [
  ["no data dir", {}, {}, "data-dir", "--data-dir"],
  ["empty data dir env", {}, { BALLAST_DATA_DIR: "" }, "data-dir", "BALLAST_DATA_DIR"],
  ["api without port", { ...D, "api-listen": "localhost" }, {}, "api-listen", '"localhost"'],
  ["api port too big", { ...D, "api-listen": "127.0.0.1:65536" }, {}, "api-listen", "65536"],
  ["api port not a number", { ...D, "api-listen": "1.2.3.4:http" }, {}, "api-listen", '"http"'],
  ["bare ipv6", { ...D, "nbd-listen": "::1:10809" }, {}, "nbd-listen", "brackets"],
  ["env listen", D, { BALLAST_NBD_LISTEN: "x:-1" }, "nbd-listen", "BALLAST_NBD_LISTEN"],
  ["log level", { ...D, "log-level": "loud" }, {}, "log-level", '--log-level "loud"'],
  ["log format env", D, { BALLAST_LOG_FORMAT: "xml" }, "log-format", "BALLAST_LOG_FORMAT"],
  ["ttl zero", { ...D, "node-lease-ttl": "0" }, {}, "node-lease-ttl", '"0"'],
  ["ttl too long", { ...D, "node-lease-ttl": "2h" }, {}, "node-lease-ttl", "1 second to 1 hour"],
  ["ttl fraction", { ...D, "node-lease-ttl": "1.5s" }, {}, "node-lease-ttl", '"1.5s"'],
  ["node name", { ...D, "node-name": "Node_1!" }, {}, "node-name", '"Node_1!"'],
  ["etcd scheme", { ...D, etcd: "unix:///run/etcd" }, {}, "etcd", '"unix:///run/etcd"'],
  ["etcd no port", { ...D, etcd: "http://127.0.0.1" }, {}, "etcd", "missing port"],
  ["etcd path", { ...D, etcd: "http://h:2379/v3" }, {}, "etcd", '"http://h:2379/v3"'],
  ["etcd empty entry", { ...D, etcd: "http://h:1,,http://h:2" }, {}, "etcd", "empty entry"],
  ["etcd not a url", { ...D, etcd: "127.0.0.1:2379" }, {}, "etcd", '"127.0.0.1:2379"'],
  [
    "etcd mixed schemes",
    { ...D, etcd: "http://a:1,https://b:2" },
    {},
    "etcd",
    "mixes http and https",
  ],
  ["etcd env", D, { BALLAST_ETCD: "ftp://h:1" }, "etcd", "BALLAST_ETCD"],
  ["https without CA", { ...D, etcd: "https://h:2379" }, {}, "etcd-cacert", "--etcd-cacert"],
  [
    "cert without key",
    { ...D, etcd: "https://h:2379", "etcd-cacert": "ca.pem", "etcd-cert": "c.pem" },
    {},
    "etcd-key",
    '--etcd-cert "c.pem" needs --etcd-key',
  ],
  [
    "key without cert",
    { ...D, etcd: "https://h:2379", "etcd-cacert": "ca.pem" },
    { BALLAST_ETCD_KEY: "k.pem" },
    "etcd-cert",
    'BALLAST_ETCD_KEY "k.pem" needs --etcd-cert',
  ],
  [
    "TLS files with http",
    { ...D, etcd: "http://h:2379", "etcd-cacert": "ca.pem" },
    {},
    "etcd",
    "only applies to https",
  ],
  ["TLS files without --etcd", { ...D, "etcd-cacert": "ca.pem" }, {}, "etcd", "needs --etcd"],
  [
    "etcd prefix",
    { ...D, etcd: "http://h:1", "etcd-prefix": "no-slash" },
    {},
    "etcd-prefix",
    '"no-slash"',
  ],
  [
    "etcd prefix trailing slash",
    { ...D, etcd: "http://h:1", "etcd-prefix": "/a/" },
    {},
    "etcd-prefix",
    '"/a/"',
  ],
];

Deno.test("resolveConfig() rejects bad values naming the flag and value", () => {
  for (const [what, flags, env, field, mentions] of BAD) {
    const err = assertThrows(
      () => resolveConfig(flags, env, {}, host),
      InvalidArgumentError,
      mentions,
      what,
    );
    assertEquals(err.details?.field, field, what);
  }
});

Deno.test("resolveConfig() reads --etcd URLs, TLS files and prefix", () => {
  const c = resolveConfig(
    { ...D, etcd: " http://127.0.0.1:2379/, HTTP://[::1]:22379 " },
    {},
    {},
    host,
  );
  assertEquals(c.etcd, {
    endpoints: ["http://127.0.0.1:2379", "http://[::1]:22379"],
    caFile: undefined,
    certFile: undefined,
    keyFile: undefined,
    prefix: "/ballast-cluster",
  });
  const env = {
    BALLAST_ETCD: "https://10.0.0.5:2379,https://10.0.0.6:2379",
    BALLAST_ETCD_CACERT: "/etc/ca.pem",
    BALLAST_ETCD_CERT: "/etc/c.pem",
    BALLAST_ETCD_KEY: "/etc/c.key",
    BALLAST_ETCD_PREFIX: "/prod/ballast",
  };
  assertEquals(resolveConfig(D, env, {}, host).etcd, {
    endpoints: ["https://10.0.0.5:2379", "https://10.0.0.6:2379"],
    caFile: "/etc/ca.pem",
    certFile: "/etc/c.pem",
    keyFile: "/etc/c.key",
    prefix: "/prod/ballast",
  });
  // Server-authenticated https without a client certificate is allowed.
  const caOnly = resolveConfig(
    { ...D, etcd: "https://h:1", "etcd-cacert": "ca.pem" },
    {},
    {},
    host,
  );
  assertEquals([caOnly.etcd?.caFile, caOnly.etcd?.certFile], ["ca.pem", undefined]);
  assertEquals(resolveConfig(D, { BALLAST_ETCD: "" }, {}, host).etcd, undefined);
  assertEquals(
    resolveConfig({ ...D, etcd: "http://h:1", "etcd-prefix": "/" }, {}, {}, host).etcd?.prefix,
    "",
  );
});

Deno.test("resolveConfig() reads --cert-ttl with the one duration rule (at most 3650 days)", () => {
  assertEquals(
    resolveConfig({ "data-dir": "/d", "cert-ttl": "3650d" }, {}, {}, host).certTtlSeconds,
    3650 * 86400,
  );
  const e = assertThrows(
    () => resolveConfig({ "data-dir": "/d", "cert-ttl": "5000d" }, {}, {}, host),
    InvalidArgumentError,
  );
  assertEquals(e.message, 'invalid --cert-ttl "5000d": expected 1 second to 3650 days');
  assertEquals(e.details, { field: "cert-ttl" });
  assertThrows(
    () => resolveConfig({ "data-dir": "/d" }, { BALLAST_CERT_TTL: "5000d" }, {}, host),
    InvalidArgumentError,
    "invalid BALLAST_CERT_TTL",
  );
});

Deno.test("resolveConfig() keeps the node name the data directory records: used without a name, a different one refused", () => {
  const recorded = () => ({ name: "node-a", where: "/d/node-name" });
  const facts = { ...host, recordedNodeName: recorded };
  // The host was renamed: the node keeps its name.
  assertEquals(resolveConfig({ "data-dir": "/d" }, {}, {}, facts).nodeName, "node-a");
  assertEquals(
    resolveConfig({ "data-dir": "/d", "node-name": "node-a" }, {}, {}, facts).nodeName,
    "node-a",
  );
  for (
    const [flags, env, source] of [
      [{ "data-dir": "/d", "node-name": "node-z" }, {}, "--node-name"],
      [{ "data-dir": "/d" }, { BALLAST_NODE_NAME: "node-z" }, "BALLAST_NODE_NAME"],
    ] as const
  ) {
    const err = assertThrows(() => resolveConfig(flags, env, {}, facts), FailedPreconditionError);
    assert(
      err.message.includes(`/d belongs to node "node-a" (/d/node-name), not "node-z" (${source})`),
      err.message,
    );
    assert(err.message.includes("--node-name node-a"), err.message);
  }
  // A new directory: the host name, as before.
  const none = { ...host, recordedNodeName: () => undefined };
  assertEquals(resolveConfig({ "data-dir": "/d" }, {}, {}, none).nodeName, "storage-01");
});

Deno.test("resolveConfig() reads --new-cluster (default off; needs --etcd and TLS)", () => {
  const base = { "data-dir": "/d", "node-name": "n1" };
  const etcd = { ...base, etcd: "http://127.0.0.1:2379" };
  assertEquals(resolveConfig(etcd, {}, {}, host).newCluster, undefined);
  assertEquals(resolveConfig({ ...etcd, "new-cluster": "on" }, {}, {}, host).newCluster, true);
  assertEquals(resolveConfig(etcd, { BALLAST_NEW_CLUSTER: "on" }, {}, host).newCluster, true);
  const err = assertThrows(
    () => resolveConfig({ ...base, "new-cluster": "on" }, {}, {}, host),
    InvalidArgumentError,
  );
  assert(err.message.includes("--new-cluster needs --etcd"), err.message);
  assertThrows(
    () => resolveConfig({ ...etcd, "new-cluster": "maybe" }, {}, {}, host),
    InvalidArgumentError,
  );
});

Deno.test("resolveConfig() refuses two listeners on the same port of overlapping addresses", () => {
  const same = assertThrows(
    () =>
      resolveConfig(
        { "data-dir": "/d", "api-listen": "127.0.0.1:45705", "nbd-listen": "127.0.0.1:45705" },
        {},
        {},
        host,
      ),
    InvalidArgumentError,
  );
  assert(
    same.message.includes(
      "--api-listen (127.0.0.1:45705) and --nbd-listen (127.0.0.1:45705) name the same port",
    ),
    same.message,
  );
  assertThrows(
    () =>
      resolveConfig(
        { "data-dir": "/d", "api-listen": "0.0.0.0:45705" },
        { BALLAST_NBD_LOCAL_LISTEN: "127.0.0.1:45705" },
        {},
        host,
      ),
    InvalidArgumentError,
    "BALLAST_NBD_LOCAL_LISTEN (127.0.0.1:45705) name the same port",
  );
  // Other ports, or other addresses: fine.
  resolveConfig(
    { "data-dir": "/d", "api-listen": "127.0.0.1:45705", "nbd-listen": "127.0.0.2:45705" },
    {},
    {},
    host,
  );
});

Deno.test("unknownBallastEnv(): a misspelt BALLAST_ variable is named, with the setting it likely meant", () => {
  assertEquals(
    unknownBallastEnv({
      BALLAST_API_LISTN: "127.0.0.1:1",
      BALLAST_API_LISTEN: "127.0.0.1:2",
      BALLAST_CACHE_DIR: "/var/cache/ballast",
      BALLAST_API: "https://n1:5705",
      BALLAST_SOMETHING_ELSE_ENTIRELY: "x",
      HOME: "/root",
    }),
    [
      { name: "BALLAST_API_LISTN", meant: "BALLAST_API_LISTEN" },
      { name: "BALLAST_SOMETHING_ELSE_ENTIRELY" },
    ],
  );
});
