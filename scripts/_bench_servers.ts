/**
 * The servers scripts/bench.ts measures: `ballast serve`, `nbdkit file` and `qemu-nbd`, each
 * serving one file in the temp directory, plaintext or (for --tls) with TLS required and
 * client certificates verified, all certificates from the TLS Ballast's CA.
 * @module
 */

import { MIB } from "./_bench_fio.ts";
import {
  freePort,
  lastLines,
  type Proc,
  ROOT,
  sleep,
  spawn,
  waitForPort,
  waitOrStop,
} from "./_bench_proc.ts";

export type ServerKind = "ballast" | "nbdkit" | "qemu-nbd";
export const ALL_SERVERS: readonly ServerKind[] = ["ballast", "nbdkit", "qemu-nbd"];
export const EXPORT = "bench";

export interface Server {
  /** `ballast`, `nbdkit`, `qemu-nbd`, or with `+tls` for the TLS variants. */
  name: string;
  kind: ServerKind;
  tls: boolean;
  uri: string;
  proc: Proc;
  file: string;
}

export function serverName(kind: ServerKind, tls: boolean): string {
  return tls ? `${kind}+tls` : kind;
}

/**
 * Certificates for the TLS runs. `serverDir` holds ca-cert.pem (Ballast's CA bundle),
 * server-cert.pem and server-key.pem (Ballast's node certificate and key), the names nbdkit
 * --tls-certificates and qemu's tls-creds-x509 expect; `clientDir` holds the nbd-client
 * certificate from `ballast ca issue` (ca-cert.pem, client-cert.pem, client-key.pem).
 */
export interface TlsMaterial {
  serverDir: string;
  clientDir: string;
}

export interface ServerOptions {
  qemuStockMalloc: boolean;
}

async function sparseFile(path: string, size: number): Promise<void> {
  const f = await Deno.open(path, { create: true, write: true, truncate: true });
  await f.truncate(size);
  f.close();
}

/**
 * qemu-nbd allocates a bounce buffer per request; for 1 MiB requests glibc
 * serves each from a fresh mmap, and the page faults cap it near 200-400 MiB/s
 * here. Raising the mmap threshold lets it reach ~2-2.5 GB/s, a fairer
 * baseline; --qemu-stock-malloc runs it without this.
 */
const QEMU_MALLOC_ENV = {
  GLIBC_TUNABLES: "glibc.malloc.mmap_threshold=67108864:glibc.malloc.trim_threshold=268435456",
};

/** Starts one server; `tls` needs `material` for nbdkit and qemu-nbd. */
export async function startServer(
  kind: ServerKind,
  tls: boolean,
  dir: string,
  size: number,
  opts: ServerOptions,
  material?: TlsMaterial,
): Promise<Server> {
  if (kind === "ballast") return await startBallast(dir, size, tls);
  if (tls && !material) throw new Error(`${serverName(kind, tls)} needs the TLS certificates`);
  const name = serverName(kind, tls);
  const file = `${dir}/${name.replace("+", "-")}.img`;
  await sparseFile(file, size);
  const port = freePort();
  const scheme = tls ? "nbds" : "nbd";
  let proc: Proc;
  if (kind === "nbdkit") {
    const tlsArgs = tls
      ? ["--tls=require", `--tls-certificates=${material!.serverDir}`, "--tls-verify-peer"]
      : [];
    proc = spawn(name, "nbdkit", [
      "--foreground",
      "--exit-with-parent",
      "--port",
      String(port),
      "--ipaddr",
      "127.0.0.1",
      ...tlsArgs,
      "file",
      file,
    ]);
  } else {
    const tlsArgs = tls
      ? [
        "--object",
        `tls-creds-x509,id=tls0,endpoint=server,verify-peer=on,dir=${material!.serverDir}`,
        "--tls-creds=tls0",
      ]
      : [];
    proc = spawn(name, "qemu-nbd", [
      "--format=raw",
      "--persistent",
      "--shared=8",
      `--export-name=${EXPORT}`,
      `--port=${port}`,
      "--bind=127.0.0.1",
      "--cache=writeback",
      ...tlsArgs,
      file,
    ], opts.qemuStockMalloc ? {} : QEMU_MALLOC_ENV);
  }
  await waitOrStop(proc, () => waitForPort(proc, port));
  return { name, kind, tls, proc, file, uri: `${scheme}://127.0.0.1:${port}/${EXPORT}` };
}

/** A started Ballast, with what `issueBenchCerts` needs. */
export interface BallastServer extends Server {
  api: string;
  dataDir: string;
}

const MAIN = `${ROOT}main.ts`;
/** The repository root, without the trailing slash. */
export const ROOT_DIR = ROOT.replace(/\/$/, "");

/** Runs the Ballast CLI (`deno run -A main.ts ARGS`); throws with its stderr on failure. */
export async function ballastCli(args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    cwd: ROOT,
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  if (!out.success) {
    throw new Error(
      `ballast ${args.slice(0, 2).join(" ")} failed (exit ${out.code}):\n${
        lastLines(new TextDecoder().decode(out.stderr))
      }`,
    );
  }
  return new TextDecoder().decode(out.stdout);
}

/** A `ballast serve` that logged "ballast ready": its API URL and NBD addresses. */
export interface LaunchedBallast {
  proc: Proc;
  api: string;
  nbd: string;
  /** The plaintext local-attach listener (--nbd-local-listen), when it has one. */
  nbdLocal?: string;
}

/**
 * `ballast serve --data-dir DATADIR --api-listen/--nbd-listen 127.0.0.1:0 ARGS`; waits for
 * "ballast ready" (stops the process and throws with its last log lines when it does not come).
 */
export async function launchBallast(
  name: string,
  dataDir: string,
  args: string[],
  options: { logFile?: string; readyTimeoutMs?: number; tree?: string } = {},
): Promise<LaunchedBallast> {
  // `tree`: another source tree of Ballast (e.g. an older commit), run with its own deno.json.
  const main = options.tree ? `${options.tree}/main.ts` : MAIN;
  try {
    await Deno.stat(main);
  } catch {
    throw new Error(`${main} does not exist (run with --servers nbdkit,qemu-nbd to skip ballast)`);
  }
  await Deno.mkdir(dataDir, { recursive: true });
  const proc = spawn(
    name,
    Deno.execPath(),
    [
      "run",
      "-A",
      ...(options.tree ? ["--config", `${options.tree}/deno.json`] : []),
      main,
      "serve",
      "--data-dir",
      dataDir,
      "--api-listen",
      "127.0.0.1:0",
      "--nbd-listen",
      "127.0.0.1:0",
      "--log-level",
      "info",
      ...args,
    ],
    {},
    options.logFile,
  );
  const timeoutMs = options.readyTimeoutMs ?? 30_000;
  let ready: Omit<LaunchedBallast, "proc"> | undefined;
  await waitOrStop(proc, async () => {
    const deadline = Date.now() + timeoutMs;
    while (!ready) {
      ready = findReady(proc.logs());
      if (ready) break;
      const st = proc.exitStatus();
      if (st) throw new Error(`${name} exited (code ${st.code}) before logging "ballast ready"`);
      if (Date.now() > deadline) {
        throw new Error(`${name} did not log "ballast ready" within ${timeoutMs / 1000} s`);
      }
      await sleep(100);
    }
  });
  return { proc, ...ready! };
}

/**
 * `ballast serve` in DIR/ballast (plaintext, --tls off) or DIR/ballast-tls (the default: TLS
 * with an internal CA in DATA/pki, STARTTLS and a client certificate required on NBD), with
 * one volume created through the API.
 */
export async function startBallast(
  dir: string,
  size: number,
  tls: boolean,
): Promise<BallastServer> {
  const name = serverName("ballast", tls);
  const dataDir = `${dir}/${name.replace("+", "-")}`;
  const { proc, api, nbd } = await launchBallast(name, dataDir, ["--tls", tls ? "on" : "off"]);
  // With TLS the CLI takes the admin certificate and CA bundle from DATA/pki.
  const creds = tls ? ["--data-dir", dataDir] : [];
  try {
    await ballastCli([
      "volume",
      "create",
      EXPORT,
      "--size",
      `${size / MIB}MiB`,
      "--api",
      api,
      ...creds,
    ]);
  } catch (err) {
    await proc.stop();
    throw err;
  }
  return {
    name,
    kind: "ballast",
    tls,
    proc,
    api,
    dataDir,
    file: `${dataDir}/volumes/*.vol`,
    uri: `${tls ? "nbds" : "nbd"}://${nbd}/${EXPORT}`,
  };
}

function findReady(text: string): Omit<LaunchedBallast, "proc"> | undefined {
  for (const line of text.split("\n")) {
    if (!line.includes("ballast ready")) continue;
    try {
      const r = JSON.parse(line);
      if (typeof r.api === "string" && typeof r.nbd === "string") {
        return {
          api: r.api,
          nbd: r.nbd,
          ...(typeof r.nbdLocal === "string" ? { nbdLocal: r.nbdLocal } : {}),
        };
      }
    } catch { /* not JSON */ }
  }
  return undefined;
}

/**
 * Issues an nbd-client certificate for every volume from the TLS Ballast (`ballast ca issue`)
 * into DIR/client-pki, and copies that Ballast's CA bundle, node certificate and node key into
 * DIR/server-pki for nbdkit and qemu-nbd, so every server presents a certificate of one CA.
 */
export async function issueBenchCerts(
  b: { api: string; dataDir: string },
  dir: string,
): Promise<TlsMaterial> {
  const clientDir = `${dir}/client-pki`;
  const serverDir = `${dir}/server-pki`;
  await ballastCli([
    "ca",
    "issue",
    "bench",
    "--role",
    "nbd-client",
    "--volumes",
    "*",
    "--out",
    clientDir,
    "--api",
    b.api,
    "--data-dir",
    b.dataDir,
  ]);
  await Deno.mkdir(serverDir, { recursive: true, mode: 0o700 });
  const pki = `${b.dataDir}/pki`;
  await Deno.copyFile(`${pki}/ca-bundle.crt`, `${serverDir}/ca-cert.pem`);
  await Deno.copyFile(`${pki}/node.crt`, `${serverDir}/server-cert.pem`);
  await Deno.writeFile(`${serverDir}/server-key.pem`, await Deno.readFile(`${pki}/node.key`), {
    mode: 0o600,
  });
  return { serverDir, clientDir };
}
