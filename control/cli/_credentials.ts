/**
 * Where the CLI finds its TLS credentials, like a kubeconfig. For each of the CA bundle, the
 * client certificate and its key, the first of:
 *
 *   1. flags       --cacert FILE  --cert FILE  --key FILE
 *   2. env         BALLAST_CACERT BALLAST_CERT BALLAST_KEY
 *   3. a data dir  --data-dir DIR or BALLAST_DATA_DIR: DIR/pki/{ca-bundle.crt,admin.crt,admin.key}
 *   4. the data dir of `deno task start`: ./.ballast/data/pki/ (used only when it exists; its
 *      admin certificate and key only when neither --cert nor --key, nor their env, is given)
 *
 * The API URL: --api or BALLAST_API; else the one the data dir's node recorded at its start
 * (DIR/api-url); else https://127.0.0.1:5705 when credentials were found, and
 * http://127.0.0.1:5705 otherwise. Errors name the file
 * that is missing or unreadable, never its content.
 * @module
 */

import { createPrivateKey, X509Certificate } from "node:crypto";
import { join } from "node:path";
import { ageSeconds, BallastClient, DEFAULT_API_URL } from "../../mod/client.ts";
import { BallastError } from "../../mod/errors.ts";
import { parseDurationMs } from "../../mod/duration.ts";
import type { FlagSpec, Parsed } from "./_spec.ts";
import type { Io } from "./_output.ts";

/** The flags every API command accepts for credentials. */
export const CREDENTIAL_FLAGS: FlagSpec[] = [
  {
    name: "cacert",
    value: "FILE",
    help: "CA bundle that signs the node's certificate",
    env: "BALLAST_CACERT",
  },
  { name: "cert", value: "FILE", help: "client certificate (PEM)", env: "BALLAST_CERT" },
  { name: "key", value: "FILE", help: "client private key (PEM)", env: "BALLAST_KEY" },
  {
    name: "data-dir",
    value: "DIR",
    help: "use DIR/pki/{ca-bundle.crt,admin.crt,admin.key}",
    env: "BALLAST_DATA_DIR",
    default: ".ballast/data when it exists",
  },
];

/** The data dir `deno task start` uses (deno.json), relative to the working directory. */
export const DEFAULT_DATA_DIR = ".ballast/data";
/** Where `serve` records its API's URL in the data directory (serve/_node_identity.ts). */
const API_URL_FILE = "api-url";

/** The URL in `path` (DIR/api-url), or undefined when there is none. */
async function readApiUrl(path: string): Promise<string | undefined> {
  try {
    const url = (await Deno.readTextFile(path)).trim();
    return /^https?:\/\/\S+$/.test(url) ? url : undefined;
  } catch {
    return undefined;
  }
}
export const HTTPS_DEFAULT_API = "https://127.0.0.1:5705";

/** Resolved credentials: PEM contents plus where each came from (for messages). */
export interface Credentials {
  api: string;
  caCertPem?: string;
  certPem?: string;
  keyPem?: string;
  /** The files read, by kind. */
  files: { cacert?: string; cert?: string; key?: string };
  /**
   * Said when the API cannot be reached: with no credentials found, where the CLI looked;
   * with the URL the data dir's node recorded, where it came from.
   */
  hint?: string;
}

async function readPem(path: string, what: string, origin: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    throw new BallastError(
      "INVALID_ARGUMENT",
      `${what} file ${path} (${origin}) ${unreadable(err)}`,
    );
  }
}

/**
 * The text of a file named on the command line (INVALID_ARGUMENT when unreadable, naming the
 * flag `what` when given).
 */
export async function readArg(file: unknown, what?: string): Promise<string> {
  try {
    return await Deno.readTextFile(String(file));
  } catch (err) {
    const named = what ? `${what}: file` : "file";
    throw new BallastError("INVALID_ARGUMENT", `${named} ${file} ${unreadable(err)}`);
  }
}

/** Why a file could not be read, as a predicate: "does not exist", "is not readable ...". */
export function unreadable(err: unknown): string {
  return err instanceof Deno.errors.NotFound
    ? "does not exist"
    : err instanceof Deno.errors.PermissionDenied
    ? "is not readable (permission denied)"
    : err instanceof Deno.errors.IsADirectory
    ? "is a directory"
    : `cannot be read (${(err as Error).name}: ${(err as Error).message})`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Resolves the API URL and credentials from parsed flags and the environment.
 * `cwd` is where the default data dir is looked for (default: the working directory).
 */
export async function resolveCredentials(
  p: Pick<Parsed, "values" | "api">,
  io: Io,
  cwd: string = Deno.cwd(),
): Promise<Credentials> {
  const flag = (n: string) => p.values[n] as string | undefined;
  const explicitDir = flag("data-dir") ?? io.env("BALLAST_DATA_DIR");
  const dirOrigin = flag("data-dir") !== undefined ? "--data-dir" : "BALLAST_DATA_DIR";
  const kinds = [
    ["cacert", "BALLAST_CACERT", "ca-bundle.crt", "CA bundle"],
    ["cert", "BALLAST_CERT", "admin.crt", "client certificate"],
    ["key", "BALLAST_KEY", "admin.key", "client key"],
  ] as const;
  let dir = explicitDir;
  let origin = dirOrigin;
  // A client certificate or key given by flag or env is never paired with the default dir's
  // admin files; the default dir's CA bundle (public) still serves when none is given.
  const pairGiven = kinds.some(([n, env]) =>
    n !== "cacert" && (flag(n) !== undefined || io.env(env) !== undefined)
  );
  if (dir === undefined) {
    const def = join(cwd, DEFAULT_DATA_DIR);
    if (await exists(join(def, "pki", "ca-bundle.crt"))) {
      dir = def;
      origin = "default data dir";
    }
  }
  const out: Credentials = { api: "", files: {} };
  for (const [n, env, file, what] of kinds) {
    let path = flag(n);
    let from = `--${n}`;
    if (path === undefined && io.env(env) !== undefined) [path, from] = [io.env(env), env];
    const skipDefault = explicitDir === undefined && n !== "cacert" && pairGiven;
    if (path === undefined && dir !== undefined && !skipDefault) {
      // From a data dir, a missing client certificate pair is an error only when the
      // operator named the dir; the CA bundle is always expected there.
      path = join(dir, "pki", file);
      from = origin;
    }
    if (path === undefined) continue;
    const pem = await readPem(path, what, from);
    out.files[n] = path;
    if (n === "cacert") out.caCertPem = pem;
    else if (n === "cert") out.certPem = pem;
    else out.keyPem = pem;
  }
  if (!!out.certPem !== !!out.keyPem) {
    throw new BallastError(
      "INVALID_ARGUMENT",
      out.certPem
        ? `client certificate ${out.files.cert} given without its key (--key or BALLAST_KEY)`
        : `client key ${out.files.key} given without its certificate (--cert or BALLAST_CERT)`,
    );
  }
  const explicitApi = (p.values.api as string | undefined) ?? io.env("BALLAST_API");
  const found = out.caCertPem !== undefined || out.certPem !== undefined;
  // On the node: where its API is, as `serve` recorded it (--api-listen anywhere).
  const recorded = dir === undefined ? undefined : await readApiUrl(join(dir, API_URL_FILE));
  out.api = explicitApi ?? recorded ?? (found ? HTTPS_DEFAULT_API : DEFAULT_API_URL);
  if (!found && explicitApi === undefined) {
    out.hint = "no credentials found: looked for --cacert/--cert/--key, " +
      "BALLAST_CACERT/BALLAST_CERT/BALLAST_KEY, --data-dir or BALLAST_DATA_DIR (none set) and " +
      `${join(cwd, DEFAULT_DATA_DIR, "pki", "ca-bundle.crt")} (missing); on the node, pass ` +
      "--data-dir DIR (its pki/ holds the admin credentials)";
  } else if (explicitApi === undefined && recorded !== undefined) {
    out.hint = `the address is the one ${join(dir!, API_URL_FILE)} holds (written by the ` +
      "node at its start); give --api URL if the node now listens elsewhere";
  }
  return out;
}

/**
 * Checks that the files hold what their flags promise: the CA bundle and the client certificate
 * parse as PEM certificates, the key as a private key, and the key belongs to the certificate.
 * Messages name the files and never their content.
 */
export function checkCredentials(
  c: Pick<Credentials, "caCertPem" | "certPem" | "keyPem" | "files">,
) {
  const bad = (message: string) => new BallastError("INVALID_ARGUMENT", message);
  const cert = (pem: string, what: string, file?: string) => {
    try {
      return new X509Certificate(pem);
    } catch {
      throw bad(`${what} ${file} is not a PEM certificate (BEGIN CERTIFICATE)`);
    }
  };
  if (c.caCertPem !== undefined) cert(c.caCertPem, "CA bundle", c.files.cacert);
  if (c.certPem === undefined || c.keyPem === undefined) return;
  const leaf = cert(c.certPem, "client certificate", c.files.cert);
  let key;
  try {
    key = createPrivateKey(c.keyPem);
  } catch {
    throw bad(`client key ${c.files.key} is not an unencrypted PEM private key`);
  }
  if (!leaf.checkPrivateKey(key)) {
    throw bad(
      `client key ${c.files.key} does not belong to the client certificate ${c.files.cert} ` +
        `(${leaf.subject.replaceAll("\n", ", ")}): pass the key issued with it`,
    );
  }
}

/** A BallastClient for the resolved URL and credentials (close it when done). */
export async function clientFromFlags(
  p: Pick<Parsed, "values" | "api">,
  io: Io,
  options: { timeoutMs?: number } = {},
): Promise<BallastClient> {
  const c = await resolveCredentials(p, io);
  checkCredentials(c);
  let warned = false;
  const flag = p.values["request-timeout"] as string | undefined;
  const text = flag ?? (io.env("BALLAST_REQUEST_TIMEOUT") || undefined); // empty: unset
  const asked = text === undefined
    ? undefined
    : parseDurationMs(text, flag !== undefined ? "--request-timeout" : "BALLAST_REQUEST_TIMEOUT", {
      field: "request-timeout",
    });
  return new BallastClient(c.api, {
    timeoutMs: asked ?? options.timeoutMs,
    onStale: (since, _request, age) => {
      if (warned) return;
      warned = true;
      const ago = age ?? ageSeconds(new Date(since), new Date());
      io.err(
        `warning: etcd unreachable; showing state as of ${ago} s ago (${since}), cached by the node\n`,
      );
    },
    caCertPem: c.caCertPem,
    certPem: c.certPem,
    keyPem: c.keyPem,
    ...(c.hint ? { unreachableHint: c.hint } : {}),
  });
}
