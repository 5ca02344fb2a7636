/**
 * `ballast ca ...` against a real HTTPS node, and the CLI's credential discovery.
 */

import { createCsr, normalizeSerial } from "../../../ca/mod.ts";
import { captureIo } from "../../../control/cli/mod.ts";
import { resolveCredentials } from "../../../control/cli/_credentials.ts";
import { main } from "../../../main.ts";
import { BallastClient } from "../../../mod/client.ts";
import { BallastError } from "../../../mod/errors.ts";
import { assert, assertEquals, assertRejects } from "../../_assert.ts";
import { startTlsNode, tlsFetch, type TlsNode } from "../_tls_node.ts";

/** Runs the CLI in-process with the node's data dir as the credential source. */
async function run(t: TlsNode | undefined, env: Record<string, string>, ...args: string[]) {
  const io = captureIo({
    ...(t ? { BALLAST_API: t.url, BALLAST_DATA_DIR: t.node.dir } : {}),
    ...env,
  });
  const code = await main(args, io);
  return { code, stdout: io.stdout, stderr: io.stderr };
}

Deno.test("ca cli: issue writes a 0600 key and a certificate whose role and volumes verify", async () => {
  const t = await startTlsNode();
  const out = await Deno.makeTempDir({ prefix: "ballast-ca-issue-" });
  try {
    const r = await run(
      t,
      {},
      "ca",
      "issue",
      "vm1",
      "--role",
      "nbd-client",
      "--volumes",
      "db1,db2",
      "--ttl",
      "7d",
      "--out",
      `${out}/vm1`,
    );
    assertEquals(r.code, 0, r.stderr);
    assert(r.stdout.includes("nbdinfo 'nbds://"), r.stdout);
    assert(r.stdout.includes("tls-creds-x509,id=tls0,dir="), r.stdout);
    const key = await Deno.stat(`${out}/vm1/client-key.pem`);
    assertEquals(key.mode! & 0o777, 0o600);
    const certPem = await Deno.readTextFile(`${out}/vm1/client-cert.pem`);
    const caPem = await Deno.readTextFile(`${out}/vm1/ca-cert.pem`);
    assertEquals(caPem, t.pki.trustBundlePem());
    const v = await t.pki.verify(certPem, { requiredEku: "clientAuth" });
    assert(v.ok, v.ok ? "" : v.reason);
    assertEquals([v.identity.role, v.identity.name, v.identity.volumes], [
      "nbd-client",
      "vm1",
      ["db1", "db2"],
    ]);
    const days = (v.identity.notAfter.getTime() - Date.now()) / 86_400_000;
    assert(days > 6.9 && days <= 7, `ttl 7d, got ${days}`);
    // The issued client certificate works at the TLS level and is limited by its role.
    const keyPem = await Deno.readTextFile(`${out}/vm1/client-key.pem`);
    const vol = await tlsFetch(`${t.url}/v1/volumes`, { ca: caPem, cert: certPem, key: keyPem });
    assertEquals(vol.status, 403);

    const again = await run(
      t,
      {},
      "ca",
      "issue",
      "vm1",
      "--role",
      "nbd-client",
      "--volumes",
      "db1",
      "--out",
      `${out}/vm1`,
    );
    assertEquals(again.code, 1, "refuses to overwrite");
    assert(again.stderr.includes("already exists"), again.stderr);

    const list = await run(t, {}, "ca", "list", "-o", "json");
    assertEquals(list.code, 0, list.stderr);
    const item = JSON.parse(list.stdout).items.find((c: { name: string }) => c.name === "vm1");
    assertEquals(item.volumes, ["db1", "db2"]);
    const table = await run(t, {}, "ca", "list");
    assert(table.stdout.includes(item.serial) && table.stdout.includes("valid"), table.stdout);

    const rev = await run(t, {}, "ca", "revoke", item.serial, "--reason", "decommissioned");
    assertEquals(rev.code, 0, rev.stderr);
    assert(rev.stdout.includes(`certificate ${item.serial} revoked at`), rev.stdout);
    const twice = await run(t, {}, "ca", "revoke", item.serial);
    assertEquals(twice.code, 0, twice.stderr);
    assert(twice.stdout.includes("was already revoked"), twice.stdout);
    const after = await run(t, {}, "ca", "list");
    assert(after.stdout.includes("revoked"), after.stdout);
    const refused = await tlsFetch(`${t.url}/v1/health`, { ca: caPem, cert: certPem, key: keyPem });
    assertEquals(refused.status, 401, "revoked: even health is refused");
  } finally {
    await Deno.remove(out, { recursive: true });
    await t.close();
  }
});

Deno.test("ca cli: revoke refuses unknown serials and ambiguous prefixes, expands a prefix; nbd-client needs volumes", async () => {
  const t = await startTlsNode();
  try {
    // Enough certificates that two share a first hex digit (pigeonhole over 16 digits).
    const serials: string[] = (await t.pki.list()).map((r) => r.serial);
    for (let i = 0; i < 17; i++) {
      const { cert } = await t.pki.issue({ role: "nbd-client", name: `vm${i}`, volumes: ["db1"] });
      serials.push(normalizeSerial(cert.serialNumber));
    }
    const unknown = await run(t, {}, "ca", "revoke", "deadbeef");
    assertEquals(unknown.code, 1, unknown.stdout);
    assert(unknown.stderr.includes('"deadbeef"'), unknown.stderr);
    assert(!unknown.stdout.includes("revoked"), unknown.stdout);
    assert(unknown.stderr.includes("ballast ca list"), unknown.stderr);

    // A revocation cannot be undone: a prefix that short is refused, whatever it matches
    // (ambiguous prefixes of 8 digits and more: tests/ca/store_test.ts).
    const digit = serials[0].slice(0, 1);
    const short = await run(t, {}, "ca", "revoke", digit);
    assertEquals(short.code, 2, `an invalid request: ${short.stderr}`);
    assert(short.stderr.includes("too short: give at least 8 digits"), short.stderr);
    const empty = await run(t, {}, "ca", "revoke", "");
    assertEquals(empty.code, 2, empty.stderr);
    assert(empty.stderr.includes("missing argument SERIAL"), empty.stderr);
    assertEquals(t.pki.revokedSerials().size, 0, "nothing revoked by refused requests");

    const noGrant = await run(
      t,
      {},
      "ca",
      "issue",
      "x",
      "--role",
      "nbd-client",
      "--out",
      "/nonexistent",
    );
    assert(noGrant.stderr.includes("--role nbd-client needs --volumes"), noGrant.stderr);
    // The API refuses it too, for clients other than this CLI.
    const bare = await createCsr({ role: "nbd-client", name: "x", volumes: [] });
    const api = await tlsFetch(`${t.url}/v1/ca/certificates`, t.admin, "POST", {
      csr: bare.csrPem,
      role: "nbd-client",
      name: "x",
    });
    assertEquals([api.status, api.body.error.details.field], [400, "volumes"]);
    assert(!(await t.pki.list()).some((c) => c.name === "x"), "nothing issued");
    // Grant texts are NAME or NAME:ro; anyIncarnation is a boolean.
    const one = await createCsr({ role: "nbd-client", name: "x", volumes: ["db1"] });
    for (
      const [extra, field] of [
        [{ volumes: ["db1:rw"] }, "volumes"],
        [{ volumes: ["db1"], anyIncarnation: "yes" }, "anyIncarnation"],
      ] as const
    ) {
      const bad = await tlsFetch(`${t.url}/v1/ca/certificates`, t.admin, "POST", {
        csr: one.csrPem,
        role: "nbd-client",
        name: "x",
        ...extra,
      });
      assertEquals([bad.status, bad.body.error.details.field], [400, field]);
    }
    const rw = await run(
      t,
      {},
      "ca",
      "issue",
      "x",
      "--role",
      "nbd-client",
      "--volumes",
      "db1:rw",
      "--out",
      "/nonexistent",
    );
    assertEquals(rw.code, 2, rw.stderr);
    assert(rw.stderr.includes('invalid volume grant "db1:rw"'), rw.stderr);
    const adminAny = await run(
      t,
      {},
      "ca",
      "issue",
      "x",
      "--role",
      "admin",
      "--any-incarnation",
      "--out",
      "/nonexistent",
    );
    assertEquals(adminAny.code, 2, adminAny.stderr);
    assert(!(await t.pki.list()).some((c) => c.name === "x"), "nothing issued");

    const target = serials.at(-1)!;
    const prefix = target.slice(0, 8).toUpperCase();
    const rev = await run(t, {}, "ca", "revoke", prefix);
    assertEquals(rev.code, 0, rev.stderr);
    assert(rev.stdout.includes(`certificate ${target} revoked at`), rev.stdout);
    assertEquals([...t.pki.revokedSerials()], [target]);
  } finally {
    await t.close();
  }
});

Deno.test("ca cli: show, rotate and admin issue; usage errors exit 2", async () => {
  const t = await startTlsNode();
  const out = await Deno.makeTempDir({ prefix: "ballast-ca-admin-" });
  try {
    const show = await run(t, {}, "ca", "show", "-o", "json");
    assertEquals(show.code, 0, show.stderr);
    const info = JSON.parse(show.stdout);
    assertEquals(info.mode, "internal");
    assertEquals(info.bundlePem, t.pki.trustBundlePem());
    const pem = await run(t, {}, "ca", "show", "--pem");
    assertEquals(pem.stdout, t.pki.trustBundlePem());
    assert((await run(t, {}, "ca", "show")).stdout.includes("SHA-256"));

    const rot = await run(t, {}, "ca", "rotate", "--overlap", "1h");
    assertEquals(rot.code, 0, rot.stderr);
    // The data dir's admin.crt was reissued and the bundle rewritten; the CLI keeps working.
    const list = await run(t, {}, "ca", "list", "-o", "json");
    assertEquals(list.code, 0, list.stderr);

    // The node cannot be reached (its credentials, a port nobody listens on): nothing written.
    const refusedOut = `${out}-refused`;
    const refused = await run(
      t,
      { BALLAST_API: "https://127.0.0.1:1" },
      "ca",
      "issue",
      "y",
      "--role",
      "admin",
      "--out",
      refusedOut,
    );
    assertEquals(refused.code, 1, refused.stdout);
    assertEquals(await Deno.stat(refusedOut).then(() => true, () => false), false, "no directory");
    const admin = await run(t, {}, "ca", "issue", "alice", "--role", "admin", "--out", out);
    assertEquals(admin.code, 0, admin.stderr);
    assert(admin.stdout.includes(`Use it with: ballast --api ${t.url} --cacert`), admin.stdout);
    const viaFlags = await run(
      undefined,
      { BALLAST_API: t.url },
      "ca",
      "list",
      "--cacert",
      `${out}/ca-cert.pem`,
      "--cert",
      `${out}/client-cert.pem`,
      "--key",
      `${out}/client-key.pem`,
    );
    assertEquals(viaFlags.code, 0, viaFlags.stderr);

    for (
      const args of [
        ["ca", "issue", "x", "--out", out],
        ["ca", "issue", "x", "--role", "node", "--out", out],
        ["ca", "issue", "x", "--role", "admin", "--volumes", "a", "--out", out],
        ["ca", "issue", "x", "--role", "admin"],
        ["ca", "issue", "x", "--role", "nbd-client", "--out", out],
        ["ca", "issue", "x", "--role", "nbd-client", "--volumes", ",", "--out", out],
        ["ca", "rotate", "--overlap", "soon"],
        ["ca", "revoke"],
        ["ca", "frobnicate"],
      ]
    ) {
      const r = await run(t, {}, ...args);
      assertEquals(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert(r.stderr.includes("usage: ballast ca"), r.stderr);
    }
    for (const sub of ["", "show", "list", "issue", "revoke", "rotate", "csr", "import"]) {
      const r = await run(t, {}, "ca", ...(sub ? [sub] : []), "--help");
      assertEquals(r.code, 0, sub);
      assert(r.stdout.includes("Usage: ballast ca"), r.stdout);
    }
    const csr = await run(t, {}, "ca", "csr", "--out", `${out}/node.csr`);
    assertEquals(csr.code, 1, "internal mode has no CSR flow");
    assert(csr.stderr.includes("external mode"), csr.stderr);
  } finally {
    await Deno.remove(out, { recursive: true });
    await t.close();
  }
});

Deno.test("ca cli: without credentials the TLS API says why; a missing file is named", async () => {
  const t = await startTlsNode();
  try {
    const none = await run(
      undefined,
      { BALLAST_API: t.url, BALLAST_CACERT: "/nonexistent/ca.crt" },
      "ca",
      "show",
    );
    assertEquals(none.code, 2, "a bad credential path is an invalid argument");
    assert(
      none.stderr.includes("/nonexistent/ca.crt (BALLAST_CACERT) does not exist"),
      none.stderr,
    );

    const bundle = `${t.node.dir}/pki/ca-bundle.crt`;
    const noCert = await run(undefined, { BALLAST_API: t.url }, "ca", "show", "--cacert", bundle);
    assertEquals(noCert.code, 1);
    assert(noCert.stderr.includes("no client certificate"), noCert.stderr);

    const badDir = await run(
      undefined,
      { BALLAST_API: t.url },
      "ca",
      "show",
      "--data-dir",
      "/nope",
    );
    assertEquals(badDir.code, 2);
    assert(
      badDir.stderr.includes("/nope/pki/ca-bundle.crt (--data-dir) does not exist"),
      badDir.stderr,
    );
  } finally {
    await t.close();
  }
});

Deno.test("ca cli: with no credentials found, plain HTTP to the TLS API says so and where the CLI looked", async () => {
  const t = await startTlsNode();
  const cwd = await Deno.makeTempDir({ prefix: "ballast-nocred-" });
  try {
    const creds = await resolveCredentials({ values: {}, api: "" }, captureIo({}), cwd);
    assertEquals(creds.api, "http://127.0.0.1:5705");
    for (const m of ["BALLAST_CACERT", "--data-dir", `${cwd}/.ballast/data/pki/ca-bundle.crt`]) {
      assert(creds.hint?.includes(m), `${m}: ${creds.hint}`);
    }
    // What the CLI builds from them, pointed at the TLS node's port over plain HTTP.
    using client = new BallastClient(t.url.replace("https:", "http:"), {
      unreachableHint: creds.hint,
    });
    const err = await assertRejects(() => client.health(), BallastError);
    assert(err.message.includes("speaks HTTPS, not plain HTTP"), err.message);
    assert(err.message.includes("no credentials found: looked for"), err.message);
    assert(!err.message.includes("invalid HTTP version"), err.message);
    const explicit = await resolveCredentials(
      { values: { api: "http://127.0.0.1:1" }, api: "" },
      captureIo({}),
      cwd,
    );
    assertEquals(explicit.hint, undefined, "an explicit plain URL needs no credentials");
  } finally {
    await Deno.remove(cwd, { recursive: true });
    await t.close();
  }
});

Deno.test("credentials: flags beat env beat data dir; the default dir switches the URL to https", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "ballast-cred-" });
  try {
    const io = (env: Record<string, string> = {}) => captureIo(env);
    const bare = await resolveCredentials({ values: {}, api: "" }, io(), cwd);
    assertEquals([bare.api, bare.caCertPem], ["http://127.0.0.1:5705", undefined]);

    await Deno.mkdir(`${cwd}/.ballast/data/pki`, { recursive: true });
    for (const f of ["ca-bundle.crt", "admin.crt", "admin.key"]) {
      await Deno.writeTextFile(`${cwd}/.ballast/data/pki/${f}`, `default ${f}`);
    }
    await Deno.writeTextFile(`${cwd}/flag.crt`, "flag cert");
    await Deno.writeTextFile(`${cwd}/env.key`, "env key");
    const def = await resolveCredentials({ values: {}, api: "" }, io(), cwd);
    assertEquals(def.api, "https://127.0.0.1:5705");
    assertEquals([def.caCertPem, def.certPem, def.keyPem], [
      "default ca-bundle.crt",
      "default admin.crt",
      "default admin.key",
    ]);
    const mixed = await resolveCredentials(
      { values: { cert: `${cwd}/flag.crt`, "data-dir": `${cwd}/.ballast/data` }, api: "" },
      io({ BALLAST_KEY: `${cwd}/env.key`, BALLAST_API: "https://node1:5705" }),
      cwd,
    );
    assertEquals([mixed.api, mixed.caCertPem, mixed.certPem, mixed.keyPem], [
      "https://node1:5705",
      "default ca-bundle.crt",
      "flag cert",
      "env key",
    ]);
    await assertRejects(
      () => resolveCredentials({ values: { cert: `${cwd}/flag.crt` }, api: "" }, io(), cwd),
      Error,
      "without its key",
    );
    // A certificate and key of one's own still find the default dir's CA bundle, and are
    // never paired with its admin files.
    await Deno.writeTextFile(`${cwd}/flag.key`, "flag key");
    const own = await resolveCredentials(
      { values: { cert: `${cwd}/flag.crt`, key: `${cwd}/flag.key` }, api: "" },
      io(),
      cwd,
    );
    assertEquals([own.api, own.caCertPem, own.certPem, own.keyPem], [
      "https://127.0.0.1:5705",
      "default ca-bundle.crt",
      "flag cert",
      "flag key",
    ]);
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});
