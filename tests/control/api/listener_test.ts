/**
 * The API over HTTPS with client certificates: real handshakes against listenApi, each
 * refusal failing closed with a clear error while the server keeps serving everyone else.
 */

import {
  createRootCa,
  exportPrivateKeyPem,
  generateKeyPair,
  issueLeaf,
  type Role,
} from "../../../ca/mod.ts";
import pino from "pino";
import { listenApi } from "../../../control/api/mod.ts";
import { BallastClient } from "../../../mod/client.ts";
import { BallastError, UnavailableError } from "../../../mod/errors.ts";
import { assert, assertEquals, assertRejects } from "../../_assert.ts";
import { nodeHttpsGet, startTlsNode, tlsFetch, type TlsNode } from "../_tls_node.ts";

async function withNode(
  fn: (t: TlsNode) => Promise<void>,
  options: { allowAnonymousHealth?: boolean; clock?: () => Date } = {},
): Promise<void> {
  const t = await startTlsNode(options);
  try {
    await fn(t);
  } finally {
    await t.close();
  }
}

/** A client certificate of `role` from the node's CA (key generated here). */
async function issued(t: TlsNode, role: Role, name: string, ttlSeconds?: number) {
  const r = await t.pki.issue(
    { role, name, ...(role === "nbd-client" ? { volumes: ["db1"] } : {}) },
    { ttlSeconds },
  );
  return { ca: t.admin.ca, cert: r.certPem, key: r.keyPem!, serial: r.cert.serialNumber };
}

Deno.test("https api: the admin certificate gets 200 over Deno and node:https clients", async () => {
  await withNode(async (t) => {
    assert(t.url.startsWith("https://127.0.0.1:"), t.url);
    const viaDeno = await tlsFetch(`${t.url}/v1/volumes`, t.admin);
    assertEquals([viaDeno.status, viaDeno.body], [200, { items: [] }]);
    const viaNode = await nodeHttpsGet(`${t.url}/v1/version`, t.admin);
    assertEquals([viaNode.status, viaNode.body.apiVersion], [200, "v1"]);

    using client = new BallastClient(t.url, {
      caCertPem: t.admin.ca,
      certPem: t.admin.cert,
      keyPem: t.admin.key,
    });
    const v = await client.createVolume({ name: "db1", size: "1MiB" });
    assertEquals(v.name, "db1");
    assertEquals((await client.listVolumes()).map((x) => x.name), ["db1"]);
    assertEquals((await client.caInfo()).mode, "internal");
  });
});

Deno.test("https api: no client certificate is 401, health only when anonymous health is on", async () => {
  await withNode(async (t) => {
    const ca = { ca: t.admin.ca };
    const r = await tlsFetch(`${t.url}/v1/volumes`, ca);
    assertEquals([r.status, r.body.error.code], [401, "UNAUTHENTICATED"]);
    assert(r.body.error.message.includes("no client certificate"), r.body.error.message);
    assertEquals((await tlsFetch(`${t.url}/v1/health`, ca)).status, 401);
    assertEquals((await nodeHttpsGet(`${t.url}/v1/health`, ca)).status, 401);
    using client = new BallastClient(t.url, { caCertPem: t.admin.ca });
    await assertRejects(() => client.listVolumes(), BallastError, "no client certificate");
  });
  await withNode(async (t) => {
    const ca = { ca: t.admin.ca };
    const h = await tlsFetch(`${t.url}/v1/health`, ca);
    assertEquals([h.status, h.body.status], [200, "ok"]);
    // Without a certificate: whether each check passes, no paths, sizes or volume names.
    for (const x of Object.values(h.body.checks) as { ok: boolean; message: string }[]) {
      assertEquals(x.message, "ok", JSON.stringify(h.body.checks));
    }
    const admin = await tlsFetch(`${t.url}/v1/health`, t.admin);
    assert(admin.body.checks.dataPlane.message.includes("bytes free"), "details for a client");
    assertEquals((await tlsFetch(`${t.url}/v1/version`, ca)).status, 401);
    assertEquals((await tlsFetch(`${t.url}/v1/volumes`, ca)).status, 401);
  }, { allowAnonymousHealth: true });
});

Deno.test("https api: a certificate from another CA is 401 naming the untrusted issuer", async () => {
  await withNode(async (t) => {
    const other = await createRootCa({ commonName: "Somebody Else" });
    const keys = await generateKeyPair();
    const cert = await issueLeaf({ cert: other.cert, key: other.keys.privateKey }, keys.publicKey, {
      role: "admin",
      name: "intruder",
    });
    const creds = {
      ca: t.admin.ca,
      cert: cert.toString("pem"),
      key: await exportPrivateKeyPem(keys.privateKey),
    };
    const r = await tlsFetch(`${t.url}/v1/volumes`, creds);
    assertEquals([r.status, r.body.error.code], [401, "UNAUTHENTICATED"]);
    assert(
      r.body.error.message.includes("not signed by a trusted Ballast CA"),
      r.body.error.message,
    );
    assertEquals((await nodeHttpsGet(`${t.url}/v1/volumes`, creds)).status, 401);
    assertEquals((await tlsFetch(`${t.url}/v1/volumes`, t.admin)).status, 200, "others served");
  });
});

Deno.test("https api: an expired certificate is 401", async () => {
  // The API checks certificates on the Pki's clock: a fake one lets the 1-second
  // certificate be valid at first and expired later however slow this machine is (on
  // real time, X.509's 1 s resolution left it between 0 and 1 s of life).
  let now = Date.now();
  await withNode(async (t) => {
    const c = await issued(t, "admin", "shortlived", 1);
    assertEquals((await tlsFetch(`${t.url}/v1/volumes`, c)).status, 200, "valid at first");
    now += 2000; // past the 1 s TTL (1 s resolution in X.509 times)
    const r = await tlsFetch(`${t.url}/v1/volumes`, c);
    assertEquals([r.status, r.body.error.code], [401, "UNAUTHENTICATED"]);
    assert(r.body.error.message.includes("expired"), r.body.error.message);
  }, { clock: () => new Date(now) });
});

Deno.test("https api: a certificate revoked through the API is refused on the next connection", async () => {
  await withNode(async (t) => {
    const bob = await issued(t, "admin", "bob");
    assertEquals((await tlsFetch(`${t.url}/v1/volumes`, bob)).status, 200);
    using admin = new BallastClient(t.url, {
      caCertPem: t.admin.ca,
      certPem: t.admin.cert,
      keyPem: t.admin.key,
    });
    const rec = await admin.revokeCertificate(bob.serial, "left the team");
    assertEquals(rec.reason, "left the team");
    const r = await tlsFetch(`${t.url}/v1/volumes`, bob); // a new connection
    assertEquals([r.status, r.body.error.code], [401, "UNAUTHENTICATED"]);
    assert(r.body.error.message.includes("revoked"), r.body.error.message);
    const listed = (await admin.listCertificates()).find((c) => c.name === "bob");
    assert(listed?.revokedAt, "ca list shows the revocation");
  });
});

Deno.test("https api: nbd-client and node certificates get 403 on admin routes", async () => {
  await withNode(async (t) => {
    const nbd = await issued(t, "nbd-client", "vm1");
    const r = await tlsFetch(`${t.url}/v1/volumes`, nbd);
    assertEquals([r.status, r.body.error.code], [403, "PERMISSION_DENIED"]);
    assert(r.body.error.message.includes("nbd-client"), r.body.error.message);
    assertEquals((await tlsFetch(`${t.url}/v1/health`, nbd)).status, 200);
    assertEquals((await tlsFetch(`${t.url}/v1/version`, nbd)).status, 403);
    assertEquals((await tlsFetch(`${t.url}/v1/ca`, nbd)).status, 403);

    const node = { ...t.pki.credentials("node"), ca: t.admin.ca };
    const n = await tlsFetch(`${t.url}/v1/volumes`, node);
    assertEquals([n.status, n.body.error.code], [403, "PERMISSION_DENIED"]);
    assertEquals((await tlsFetch(`${t.url}/v1/version`, node)).status, 200);
    assertEquals((await tlsFetch(`${t.url}/v1/health`, node)).status, 200);
    assertEquals((await tlsFetch(`${t.url}/v1/ca/rotate`, node, "POST", {})).status, 403);
  });
});

Deno.test("https api: TRACE (no Request can carry it) is 501, not an internal error; TRACK, unknown to the parser, 400", async () => {
  await withNode(async (t) => {
    const port = Number(new URL(t.url).port);
    for (const method of ["TRACE", "TRACK"]) {
      // Raw: Fetch and node:https clients cannot send these either.
      const conn = await Deno.connectTls({
        hostname: "127.0.0.1",
        port,
        caCerts: [t.admin.ca],
        cert: t.admin.cert,
        key: t.admin.key,
      });
      await conn.write(
        new TextEncoder().encode(
          `${method} /v1/volumes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
        ),
      );
      let text = "";
      const buf = new Uint8Array(4096);
      for (;;) {
        // The server ends without a TLS close_notify: that is the end too.
        const n = await conn.read(buf).catch(() => null);
        if (n === null) break;
        text += new TextDecoder().decode(buf.subarray(0, n));
      }
      conn.close();
      if (method === "TRACK") {
        assert(text.startsWith("HTTP/1.1 400 Bad Request"), text);
        continue;
      }
      assert(text.startsWith("HTTP/1.1 501 "), text);
      const body = JSON.parse(text.slice(text.indexOf("\r\n\r\n") + 4));
      assertEquals(body.error.code, "INVALID_ARGUMENT");
      assertEquals(body.error.message, `method ${method} is not implemented`);
    }
    const after = await nodeHttpsGet(`${t.url}/v1/volumes`, t.admin);
    assertEquals(after.status, 200);
  });
});

Deno.test("https api: plaintext HTTP and garbage bytes fail cleanly; the server keeps serving", async () => {
  await withNode(async (t) => {
    const port = Number(new URL(t.url).port);
    await assertRejects(() => fetch(`http://127.0.0.1:${port}/v1/health`));
    using plain = new BallastClient(`http://127.0.0.1:${port}`);
    await assertRejects(() => plain.health(), UnavailableError);

    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(crypto.getRandomValues(new Uint8Array(4096)));
    const buf = new Uint8Array(1024);
    // The server answers with at most an alert, then closes.
    while ((await conn.read(buf).catch(() => null)) !== null) { /* drain */ }
    conn.close();

    const half = await Deno.connect({ hostname: "127.0.0.1", port });
    await half.write(new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])); // truncated hello
    assertEquals((await tlsFetch(`${t.url}/v1/volumes`, t.admin)).status, 200, "others served");
    half.close();
    assertEquals((await nodeHttpsGet(`${t.url}/v1/health`, t.admin)).status, 200);
  });
});

Deno.test("https api: clients get clear errors for an untrusted server and bad credentials", async () => {
  await withNode(async (t) => {
    const other = await createRootCa({ commonName: "Not The Node CA" });
    using wrong = new BallastClient(t.url, {
      caCertPem: other.cert.toString("pem"),
      certPem: t.admin.cert,
      keyPem: t.admin.key,
    });
    const e = await assertRejects(() => wrong.version(), UnavailableError);
    assert(e.message.includes("server certificate not trusted"), e.message);
    const half = () => new BallastClient(t.url, { certPem: t.admin.cert });
    const err = (() => {
      try {
        half();
      } catch (x) {
        return x as BallastError;
      }
    })();
    assertEquals(err?.code, "INVALID_ARGUMENT");
  });
});

Deno.test("https api: CA rotation reloads the listener in place; old and new admins both work", async () => {
  await withNode(async (t) => {
    const before = t.admin;
    using keepAlive = new BallastClient(t.url, {
      caCertPem: before.ca,
      certPem: before.cert,
      keyPem: before.key,
    });
    await keepAlive.listVolumes(); // a live pooled connection across the rotation
    const info = await keepAlive.rotateCa("1h");
    assertEquals(info.trusted.length, 2, "old and new roots trusted during the overlap");
    assert(info.certificates[0].sha256Fingerprint.match(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/));
    await keepAlive.listVolumes();

    const fresh = { ...t.pki.credentials("admin"), ca: info.bundlePem };
    assert(fresh.cert !== before.cert, "admin.crt was reissued under the new root");
    assertEquals((await tlsFetch(`${t.url}/v1/volumes`, fresh)).status, 200, "new root");
    const oldCert = { ...before, ca: info.bundlePem };
    assertEquals((await tlsFetch(`${t.url}/v1/volumes`, oldCert)).status, 200, "overlap");
    // New handshakes get a node certificate from the new root: trusting only it works.
    const newRoot = t.pki.caCertificates[0].toString("pem");
    assertEquals((await tlsFetch(`${t.url}/v1/volumes`, { ...fresh, ca: newRoot })).status, 200);
  });
});

Deno.test("https api: one body limit, 64 KiB, answers 413 declared or streamed, without reading it all", async () => {
  await withNode(async (t) => {
    const big = "x".repeat(2 * 1024 * 1024);
    const r = await tlsFetch(`${t.url}/v1/volumes`, t.admin, "POST", { name: "a", pad: big });
    assertEquals(r.status, 413);
    const medium = "x".repeat(100 * 1024); // over the JSON limit, under the old listener one
    const m = await tlsFetch(`${t.url}/v1/volumes`, t.admin, "POST", { name: "a", pad: medium });
    assertEquals([m.status, m.body.error.code], [413, "INVALID_ARGUMENT"]);
    assert(m.body.error.message.includes("larger than 65536 bytes"), m.body.error.message);
    // Chunked (no content-length): the stream is cut at the cap.
    const client = Deno.createHttpClient({
      caCerts: [t.admin.ca],
      cert: t.admin.cert,
      key: t.admin.key,
    });
    try {
      const chunk = new TextEncoder().encode("y".repeat(64 * 1024));
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          if (sent++ < 40) c.enqueue(chunk);
          else c.close();
        },
      });
      const res = await fetch(`${t.url}/v1/volumes`, {
        method: "POST",
        body,
        client,
        headers: { "content-type": "application/json" },
      });
      const err = await res.json();
      assertEquals([res.status, err.error.code], [413, "INVALID_ARGUMENT"]);
      assert(err.error.message.includes("larger than"), err.error.message);
    } finally {
      client.close();
    }
    assertEquals((await tlsFetch(`${t.url}/v1/volumes`, t.admin)).status, 200);
  });
});

Deno.test("https api: a port in use is one clear error, not also an error logged with its stack", async () => {
  await withNode(async (t) => {
    const lines: string[] = [];
    const logger = pino({ level: "info" }, { write: (s: string) => void lines.push(s) });
    const port = Number(new URL(t.url).port);
    const err = await assertRejects(
      () =>
        listenApi({ fetch: () => new Response() }, { host: "127.0.0.1", port, pki: t.pki, logger }),
      UnavailableError,
    );
    assert(err.message.includes(`127.0.0.1:${port}: address already in use`), err.message);
    const errors = lines.map((l) => JSON.parse(l)).filter((l) => l.level >= 50);
    assertEquals(errors, [], "nothing logged at error level for the refused listen");
    // An address this host does not have (TEST-NET-1): said so, as for the NBD listener.
    const absent = await assertRejects(
      () =>
        listenApi({ fetch: () => new Response() }, {
          host: "192.0.2.1",
          port: 0,
          pki: t.pki,
          logger,
        }),
      UnavailableError,
    );
    assert(absent.message.includes("192.0.2.1:0: no such address on this host"), absent.message);
  });
});
