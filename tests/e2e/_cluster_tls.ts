/**
 * Helpers for end-to-end tests of TLS in cluster mode: TLS members on a real etcd, the CLI
 * with a member's admin credentials, client certificates made through the CLI, and fresh
 * handshakes against a member's API and NBD endpoints.
 * @module
 */

import { assertEquals } from "../_assert.ts";
import type { EtcdCluster } from "../control/_etcd_harness.ts";
import { type BallastProcess, cli, run, startBallast } from "./_harness.ts";

/** A TLS `ballast serve` on `etcd`, named `name` (on `dataDir`, kept, when given). */
export function member(
  etcd: EtcdCluster,
  name: string,
  extra: string[] = [],
  dataDir?: string,
): Promise<BallastProcess> {
  return startBallast({
    tls: true,
    dataDir,
    args: ["--etcd", etcd.endpoints.join(","), "--node-name", name, ...extra],
  });
}

/** The CLI against `b`, with `b`'s own admin credentials. */
export function admin(b: BallastProcess, args: string[]) {
  return cli([...args, "--data-dir", b.dataDir], { api: b.api });
}

/** `ballast ca issue` through `b`; the key is made here and written to a fresh dir. */
export async function issue(b: BallastProcess, name: string, extra: string[]) {
  const dir = await Deno.makeTempDir({ prefix: `ballast-cert-${name}-` });
  await Deno.remove(dir);
  const r = await admin(b, ["ca", "issue", name, "--out", dir, "-o", "json", ...extra]);
  assertEquals(r.code, 0, r.stderr);
  return { dir, serial: JSON.parse(r.stdout).serial as string };
}

/** A new TLS connection to `api` presenting the certificate in `dir`: the HTTP status. */
export async function apiStatus(api: string, dir: string): Promise<number | string> {
  const read = (f: string) => Deno.readTextFile(`${dir}/${f}`);
  const client = Deno.createHttpClient({
    caCerts: [await read("ca-cert.pem")],
    cert: await read("client-cert.pem"),
    key: await read("client-key.pem"),
  });
  try {
    const res = await fetch(`${api}/v1/nodes`, { client } as RequestInit);
    const body = await res.text();
    return res.status === 401 ? `401 ${body}` : res.status;
  } catch (err) {
    return `error ${(err as Error).message}`;
  } finally {
    client.close();
  }
}

/** nbdinfo opens `volume` on `b`'s NBD endpoint with the certificate in `dir`. */
export async function canOpen(b: BallastProcess, volume: string, dir: string): Promise<boolean> {
  const uri = `nbds://${b.nbdHost}:${b.nbdPort}/${volume}?tls-certificates=${dir}`;
  return (await run("nbdinfo", ["--size", uri])).code === 0;
}

export interface Listed {
  serial: string;
  name: string;
  role: string;
  revokedAt?: string;
}

export async function caList(b: BallastProcess): Promise<Listed[]> {
  const r = await admin(b, ["ca", "list", "-o", "json"]);
  assertEquals(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { items: Listed[] }).items;
}
