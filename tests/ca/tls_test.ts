/**
 * Real node:tls handshakes with certificates from the CA: the server requires client
 * certificates, and every accepted connection is also checked with verifyPeer (what
 * endpoints do after a handshake, since server-side STARTTLS does not refuse foreign CAs).
 */
import * as tls from "node:tls";
import type { AddressInfo } from "node:net";
import {
  createRootCa,
  exportPrivateKeyPem,
  generateKeyPair,
  importPrivateKeyPem,
  installCa,
  issueLeaf,
  openPki,
  type Pki,
  type Role,
  type VerifyResult,
} from "../../ca/mod.ts";
import { assert, assertEquals } from "../_assert.ts";
import { DAY, fakeClock, HAVE_OPENSSL, opensslTest, operatorCa, tempDir } from "./_helpers.ts";

interface Server {
  port: number;
  /** verifyPeer results of connections that completed the handshake. */
  results: VerifyResult[];
  close(): Promise<void>;
}

/**
 * A mutual-TLS server from `pki`. With `rejectUnauthorized: false` it behaves like the NBD
 * STARTTLS path: the handshake lets anything through and verifyPeer alone decides.
 */
function serve(pki: Pki, rejectUnauthorized: boolean, allowedRoles?: Role[]): Promise<Server> {
  const results: VerifyResult[] = [];
  const creds = pki.credentials("node");
  const server = tls.createServer({
    key: creds.key,
    cert: creds.cert,
    ca: creds.ca,
    requestCert: true,
    rejectUnauthorized,
  }, async (socket) => {
    const peer = socket.getPeerCertificate(true);
    const r = await pki.verify(peer.raw ?? new Uint8Array(), {
      requiredEku: "clientAuth",
      allowedRoles,
    });
    results.push(r);
    socket.end(r.ok ? `hello ${r.identity.role}:${r.identity.name}\n` : `refused: ${r.code}\n`);
  });
  server.on("tlsClientError", () => {}); // refused handshakes
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      resolve({
        port: (server.address() as AddressInfo).port,
        results,
        close: () => new Promise((r) => server.close(() => r())),
      });
    });
  });
}

/** Connects with a client certificate; resolves to what the server said, or the error. */
function connect(
  port: number,
  client: { key: string; cert: string },
  ca: string,
): Promise<{ authorized: boolean; said: string; error?: string }> {
  return new Promise((resolve) => {
    let said = "";
    let authorized = false;
    // key and cert only: a TlsCredentials' own `ca` must not override the trust given here.
    const socket = tls.connect({
      host: "127.0.0.1",
      port,
      ca,
      key: client.key,
      cert: client.cert,
    }, () => {
      authorized = socket.authorized; // the client's view of the server
    });
    socket.on("data", (d) => (said += d.toString()));
    socket.on("error", (e) => resolve({ authorized, said, error: e.message }));
    socket.on("close", () => resolve({ authorized, said }));
  });
}

async function foreignClient(role: Role = "admin", now?: Date, ttlSeconds?: number) {
  const other = await createRootCa({ commonName: "Somebody Else" });
  const keys = await generateKeyPair();
  const cert = await issueLeaf(
    { cert: other.cert, key: other.keys.privateKey },
    keys.publicKey,
    { role, name: "intruder" },
    { now, ttlSeconds },
  );
  return { key: await exportPrivateKeyPem(keys.privateKey), cert: cert.toString("pem") };
}

const NODE = { nodeName: "node-1", ipAddresses: ["127.0.0.1"] };

Deno.test("node:tls: the admin certificate is authorized; a foreign-CA certificate is refused", async () => {
  await using t = await tempDir();
  const pki = await openPki(t.dir, NODE);
  const server = await serve(pki, true);
  try {
    const ok = await connect(server.port, pki.credentials("admin"), pki.trustBundlePem());
    assert(ok.authorized, "client verified the node certificate (IP SAN 127.0.0.1)");
    assertEquals(ok.said, "hello admin:admin\n");
    const bad = await connect(server.port, await foreignClient(), pki.trustBundlePem());
    assertEquals(bad.said, "", "the foreign client got no data");
    assertEquals(server.results.length, 1, "only the admin reached the application");
  } finally {
    await server.close();
  }
});

Deno.test("STARTTLS-like server: verifyPeer refuses foreign, expired, revoked and wrong-role certificates", async () => {
  await using t = await tempDir();
  // verifyPeer reads the Pki's clock: a fake one lets the 1-second certificate below be
  // live and then expired however long this machine takes between the two handshakes
  // (on real time, X.509's 1 s resolution left it between 0 and 1 s of life).
  const clock = fakeClock(new Date());
  const pki = await openPki(t.dir, { ...NODE, clock: clock.now });
  const server = await serve(pki, false, ["admin", "nbd-client"]);
  const ca = pki.trustBundlePem();
  try {
    assertEquals(
      (await connect(server.port, await foreignClient(), ca)).said,
      "refused: untrusted\n",
    );

    const keys = await generateKeyPair();
    const key = await exportPrivateKeyPem(keys.privateKey);
    const issued = await pki.issue({ role: "nbd-client", name: "vm", volumes: ["db"] }, {
      ttlSeconds: 1,
    });
    const live = await connect(server.port, { key: issued.keyPem!, cert: issued.certPem }, ca);
    assertEquals(live.said, "hello nbd-client:vm\n");
    clock.advance(2); // past the 1-second TTL (1 s resolution)
    const expired = await connect(server.port, { key: issued.keyPem!, cert: issued.certPem }, ca);
    assertEquals(expired.said, "refused: expired\n");

    const admin2 = await pki.issue({ role: "admin", name: "bob" }, { publicKey: keys.publicKey });
    assertEquals(
      (await connect(server.port, { key, cert: admin2.certPem }, ca)).said,
      "hello admin:bob\n",
    );
    await pki.revoke(admin2.cert.serialNumber);
    assertEquals(
      (await connect(server.port, { key, cert: admin2.certPem }, ca)).said,
      "refused: revoked\n",
    );

    // A node certificate is valid but not accepted at this endpoint.
    assertEquals(
      (await connect(server.port, pki.credentials("node"), ca)).said,
      "refused: wrong-role\n",
    );
  } finally {
    await server.close();
  }
});

Deno.test("node:tls refuses a client certificate issued 40 days ago in the handshake", async () => {
  await using t = await tempDir();
  const pki = await openPki(t.dir, NODE);
  const keys = await generateKeyPair();
  const past = new Date(Date.now() - 40 * DAY * 1000);
  const old = await issueLeaf(
    { cert: pki.caCertificates[0], key: await caKey(t.dir) },
    keys.publicKey,
    { role: "admin", name: "old" },
    { now: past },
  );
  const server = await serve(pki, true);
  try {
    const r = await connect(server.port, {
      key: await exportPrivateKeyPem(keys.privateKey),
      cert: old.toString("pem"),
    }, pki.trustBundlePem());
    assertEquals(r.said, "");
    assertEquals(server.results.length, 0);
  } finally {
    await server.close();
  }
});

async function caKey(dir: string): Promise<CryptoKey> {
  return await importPrivateKeyPem(await Deno.readTextFile(`${dir}/ca.key`), "ca.key");
}
Deno.test("node:tls across a CA rotation: old-root client accepted during the overlap", async () => {
  await using t = await tempDir();
  const pki = await openPki(t.dir, NODE);
  const oldAdmin = pki.credentials("admin");
  await pki.rotateCa({ overlapSeconds: 3600 });
  const server = await serve(pki, true); // serves the reissued node.crt, trusts both roots
  try {
    // An old-root client that refreshed its trust bundle (both roots) is accepted.
    const r = await connect(server.port, oldAdmin, pki.trustBundlePem());
    assertEquals(r.said, "hello admin:admin\n");
    // With only the old root it cannot verify the reissued node certificate: clients must
    // fetch the new bundle before leaves switch (README.md, "Rotation").
    const stale = await connect(server.port, oldAdmin, oldAdmin.ca);
    assertEquals(stale.said, "");
    const fresh = await connect(server.port, pki.credentials("admin"), pki.trustBundlePem());
    assertEquals(fresh.said, "hello admin:admin\n");
  } finally {
    await server.close();
  }
});

Deno.test(
  opensslTest(
    "node:tls with a bring-your-own intermediate: clients trusting the operator root connect",
  ),
  {
    ignore: !HAVE_OPENSSL,
  },
  async () => {
    await using t = await tempDir();
    const op = await operatorCa(t.dir);
    await installCa(`${t.dir}/pki`, { certPem: op.int, keyPem: op.intKey, chainPem: op.root });
    const pki = await openPki(`${t.dir}/pki`, NODE);
    const server = await serve(pki, true);
    try {
      // The client trusts only the operator's root: node.crt must carry the intermediate.
      const r = await connect(server.port, pki.credentials("admin"), op.root);
      assert(r.authorized);
      assertEquals(r.said, "hello admin:admin\n");
    } finally {
      await server.close();
    }
  },
);
