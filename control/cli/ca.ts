/**
 * `ballast ca show|list|issue|revoke|rotate|csr|import`: the node's CA through the API
 * (admin certificate required). `ca issue` generates the client's key locally and sends only
 * a CSR; the key never leaves this machine.
 * @module
 */

import { join, resolve } from "node:path";
import { createCsr, exportPrivateKeyPem, type Grant, type Role } from "../../ca/mod.ts";
import type { BallastClient } from "../../mod/client.ts";
import type { CaCertificateInfo, CaInfo } from "../../mod/types.ts";
import { BallastError, errorMessage } from "../../mod/errors.ts";
import { parseDuration } from "../../mod/duration.ts";
import {
  type Command,
  type CommandSpec,
  groupCommand,
  type Parsed,
  requirePositionals,
  splitCommandWord,
  UsageError,
  usageHint,
} from "./_command.ts";
import { clientFromFlags, readArg } from "./_credentials.ts";
import { caInitCommand } from "./ca_init.ts";
import { certTable } from "./_cert_view.ts";
import { fields, type Io, json } from "./_output.ts";

/** File names qemu's tls-creds-x509 `dir` and libnbd's `tls-certificates` expect. */
export const CLIENT_FILES = {
  key: "client-key.pem",
  cert: "client-cert.pem",
  ca: "ca-cert.pem",
} as const;

const spec = (
  path: string,
  args: string,
  summary: string,
  flags: CommandSpec["flags"],
  examples: string[],
): CommandSpec => ({
  path: `ca ${path}`,
  args,
  summary,
  flags,
  client: true,
  examples,
});

export const CA_SPECS: Record<string, CommandSpec> = {
  show: spec("show", "[--pem]", "Show the CA mode, CA certificates and trust bundle.", [
    { name: "pem", help: "print only the trust bundle (PEM), e.g. to save as ca-cert.pem" },
  ], ["ballast ca show", "ballast ca show --pem > ca-bundle.crt"]),
  list: spec(
    "list",
    "",
    "List every certificate the CA issued, revoked ones included, with its status: valid, " +
      "expired, revoked, or CA no longer trusted (rotated out, overlap over); a grant bound to " +
      "a deleted volume shows as NAME (deleted).",
    [],
    ["ballast ca list", "ballast ca list -o json"],
  ),
  issue: spec(
    "issue",
    "NAME --role nbd-client|admin [--volumes a,b:ro|*] [--any-incarnation] [--ttl 30d] --out DIR",
    "Issue a client certificate. The key is generated here and only a CSR is sent; writes " +
      `DIR/${CLIENT_FILES.key} (0600), DIR/${CLIENT_FILES.cert} and DIR/${CLIENT_FILES.ca}. ` +
      "A grant of a volume that exists is bound to that volume: if it is deleted and a " +
      "volume of the same name created, the certificate does not open the new one.",
    [
      { name: "role", value: "ROLE", help: "nbd-client or admin; required" },
      {
        name: "volumes",
        value: "LIST",
        help: "nbd-client (required): comma-separated volumes it may open, or '*' for all; " +
          "NAME:ro (or *:ro) may read but not write",
      },
      {
        name: "any-incarnation",
        help: "bind the grants by name only: they also open a volume created later under a " +
          "granted name",
      },
      {
        name: "ttl",
        value: "DURATION",
        help: "lifetime, e.g. 30d, 12h",
        default: "the node's leaf lifetime",
      },
      {
        name: "out",
        value: "DIR",
        help:
          "directory to write the files to, the private key among them (keep it out of source trees); required",
      },
    ],
    [
      "ballast ca issue vm1 --role nbd-client --volumes db1 --out ~/vm1-tls",
      "ballast ca issue backup --role nbd-client --volumes 'db1:ro,db2:ro' --out ~/backup-tls",
      "ballast ca issue alice --role admin --ttl 7d --out ~/alice-admin",
    ],
  ),
  revoke: spec(
    "revoke",
    "SERIAL [--reason TEXT]",
    "Revoke a certificate (see ca list). SERIAL is the full serial or an unambiguous prefix " +
      "of one, at least 8 digits (a revocation cannot be undone); an unknown serial is " +
      "refused (exit 1) and the full serial revoked is printed.",
    [{ name: "reason", value: "TEXT", help: "why, recorded with the revocation" }],
    ["ballast ca revoke 5f0c2a9e --reason 'laptop lost'"],
  ),
  rotate: spec(
    "rotate",
    "[--overlap DURATION] [--ca-cert FILE [--ca-key FILE] [--ca-chain FILE]]",
    "Create a new root CA; the old one stays trusted for the overlap. Clients must fetch " +
      "the new trust bundle (ca show --pem) before the overlap ends. In cluster mode the " +
      "cluster CA rotates in etcd and every member adopts it (docs/TLS.md). A node on your " +
      "own CA (ca init) rotates to the new CA you give with --ca-cert (single node only).",
    [
      {
        name: "overlap",
        value: "DURATION",
        help: "e.g. 7d; also bounds every root retired before (after a key leak: 1m)",
        default: "the leaf lifetime",
      },
      { name: "ca-cert", value: "FILE", help: "your new CA certificate (PEM)" },
      {
        name: "ca-key",
        value: "FILE",
        help: "its private key (PKCS#8 PEM); omit in external mode",
      },
      { name: "ca-chain", value: "FILE", help: "certificates above --ca-cert, nearest first" },
    ],
    [
      "ballast ca rotate --overlap 7d",
      "ballast ca rotate --overlap 7d --ca-cert int2.crt --ca-key int2.key --ca-chain root.crt",
    ],
  ),
  csr: spec(
    "csr",
    "--out FILE [--which node|admin]",
    "External CA mode: make the node generate a key and write its CSR to FILE for your CA.",
    [
      { name: "out", value: "FILE", help: "where to write the CSR; required" },
      { name: "which", value: "CERT", help: "node or admin", default: "node" },
    ],
    ["ballast ca csr --out node.csr"],
  ),
  import: spec(
    "import",
    "FILE [--which node|admin]",
    "External CA mode: install the certificate your CA signed (PEM, chain may follow).",
    [{ name: "which", value: "CERT", help: "node or admin", default: "node" }],
    ["ballast ca import node.crt"],
  ),
};

export const CA_GROUP: CommandSpec = {
  path: "ca",
  args: "COMMAND [flags]",
  summary: "The node's certificate authority: client certificates, revocation, rotation.",
  flags: [],
  client: true,
  offline: ["ca init"],
  examples: [
    "ballast ca show",
    "ballast ca issue vm1 --role nbd-client --volumes db1 --out ~/vm1-tls",
  ],
  subcommands: [
    ["show", "show the CA and trust bundle"],
    ["list", "list issued certificates"],
    ["issue", "issue a client certificate (key generated locally)"],
    ["revoke", "revoke a certificate"],
    ["rotate", "rotate the root CA with an overlap"],
    ["csr", "external CA: write the node's CSR"],
    ["import", "external CA: install a signed certificate"],
    ["init", "offline: bring your own CA, or install externally signed certs"],
  ],
};

/** `ballast ca SUBCOMMAND` through the API. */
const caApiCommand: Command = groupCommand(CA_GROUP, CA_SPECS, async ({ sub, spec: s, p }, io) => {
  const checked = checkArgs(sub, s, p);
  using client = await clientFromFlags(p, io);
  return await run(sub, s, p, checked, client, io);
});

/** Entry point of `ballast ca ...` (`ca init` works offline, without the API). */
export const caCommand: Command = (args, io) => {
  const first = splitCommandWord(args);
  if (first.word === "init") return caInitCommand([...first.rest, ...first.globals], io);
  return caApiCommand(args, io);
};

interface Checked {
  positional: string[];
  role?: Role;
  volumes?: string[];
  ttl?: string;
  overlap?: string;
  which?: "node" | "admin";
}

/** Everything that can be checked before talking to the node (usage errors, exit 2). */
function checkArgs(sub: string, s: CommandSpec, p: Parsed): Checked {
  const str = (n: string) => p.values[n] as string | undefined;
  const duration = (n: string) => {
    const v = str(n);
    if (v === undefined) return undefined;
    try {
      parseDuration(v, `--${n}`);
    } catch (err) {
      throw new UsageError(errorMessage(err), usageHint(s));
    }
    return v;
  };
  const which = str("which") ?? "node";
  if (which !== "node" && which !== "admin") {
    throw new UsageError(`invalid --which "${which}": expected node or admin`, usageHint(s));
  }
  const names = sub === "issue"
    ? ["NAME"]
    : sub === "revoke"
    ? ["SERIAL"]
    : sub === "import"
    ? ["FILE"]
    : [];
  const out: Checked = { positional: requirePositionals(s, p, names), which };
  if (sub === "revoke" && out.positional[0].trim() === "") {
    throw new UsageError("missing argument SERIAL (see ballast ca list)", usageHint(s));
  }
  if (sub === "issue") {
    const role = str("role");
    if (role !== "nbd-client" && role !== "admin") {
      throw new UsageError(
        role === undefined
          ? "missing flag --role (nbd-client or admin)"
          : `invalid --role "${role}": expected nbd-client or admin`,
        usageHint(s),
      );
    }
    out.role = role;
    const vols = str("volumes");
    out.volumes = vols === undefined ? [] : vols.split(",").map((v) => v.trim()).filter(Boolean);
    if (role === "admin" && (out.volumes.length || p.values["any-incarnation"] === true)) {
      throw new UsageError(
        "--volumes and --any-incarnation are only for --role nbd-client",
        usageHint(s),
      );
    }
    if (role === "nbd-client" && out.volumes.length === 0) {
      throw new UsageError(
        "--role nbd-client needs --volumes: the volumes the certificate may open " +
          "(e.g. --volumes db1,db2), or --volumes '*' for all; without it it would open none",
        usageHint(s),
      );
    }
    if (str("out") === undefined) throw new UsageError("missing flag --out DIR", usageHint(s));
    out.ttl = duration("ttl");
  }
  if (sub === "csr" && str("out") === undefined) {
    throw new UsageError("missing flag --out FILE", usageHint(s));
  }
  if (sub === "show" && p.values.pem === true && p.output === "json") {
    throw new UsageError(
      "--pem prints the bundle as PEM, -o json as JSON (its bundlePem): choose one",
      usageHint(s),
    );
  }
  if (sub === "rotate") {
    out.overlap = duration("overlap");
    if (str("ca-cert") === undefined && (str("ca-key") ?? str("ca-chain")) !== undefined) {
      throw new UsageError("--ca-key and --ca-chain need --ca-cert", usageHint(s));
    }
  }
  return out;
}

async function run(
  sub: string,
  s: CommandSpec,
  p: Parsed,
  a: Checked,
  client: BallastClient,
  io: Io,
): Promise<number> {
  const asJson = p.output === "json";
  switch (sub) {
    case "show": {
      const info = await client.caInfo();
      if (p.values.pem === true) io.out(info.bundlePem);
      else io.out(asJson ? json(info) : caFields(info));
      return 0;
    }
    case "list": {
      const items = await client.listCertificates();
      if (asJson) {
        io.out(json({ items }));
        return 0;
      }
      const [info, volumes] = await Promise.all([
        client.caInfo(),
        client.listVolumes().catch(() => undefined), // the table then shows grants as issued
      ]);
      io.out(certTable(items, {
        trustedCaSerials: info.trusted.map((c) => c.serial),
        volumeUuids: volumes && new Map(volumes.map((v) => [v.name, v.uuid])),
        now: new Date(),
      }));
      return 0;
    }
    case "issue":
      return await issue(s, p, a, client, io);
    case "revoke": {
      const rec = await client.revokeCertificate(a.positional[0], p.values.reason as string);
      io.out(
        asJson
          ? json(rec)
          : rec.alreadyRevoked
          ? `certificate ${rec.serial} was already revoked at ${rec.revokedAt}\n`
          : `certificate ${rec.serial} revoked at ${rec.revokedAt}\n` +
            (rec.sharePending
              ? "etcd is unreachable: refused on this node now, on the other members once " +
                "this node reaches etcd again\n"
              : ""),
      );
      return 0;
    }
    case "rotate": {
      const file = (n: string) =>
        p.values[n] === undefined ? undefined : readArg(p.values[n], `--${n}`);
      const certPem = await file("ca-cert");
      const ca = certPem === undefined ? undefined : {
        certPem,
        keyPem: await file("ca-key"),
        chainPem: await file("ca-chain"),
      };
      const info = await client.rotateCa(a.overlap, ca);
      io.out(
        asJson ? json(info) : `CA rotated; now trusted:\n${caFields(info)}` +
          "Clients need the new trust bundle: ballast ca show --pem > ca-bundle.crt\n",
      );
      return 0;
    }
    case "csr": {
      const out = p.values.out as string;
      const csr = await client.createNodeCsr(a.which);
      await writeNew(out, csr.endsWith("\n") ? csr : csr + "\n", 0o644);
      io.out(
        asJson ? json({ which: a.which, file: out }) : `wrote ${out}: have your CA sign ` +
          `it (copying its subjectAltNames), then run: ballast ca import SIGNED.crt\n`,
      );
      return 0;
    }
    default: {
      const file = a.positional[0];
      const pem = await readArg(file);
      const info = await client.importCertificate(pem, a.which);
      io.out(asJson ? json(info) : `imported ${file} as the ${a.which} certificate\n`);
      return 0;
    }
  }
}

/** Writes a file that must not exist yet, with `mode`. */
async function writeNew(path: string, text: string, mode: number): Promise<void> {
  try {
    await Deno.writeTextFile(path, text, { createNew: true, mode });
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) {
      throw new BallastError("ALREADY_EXISTS", `${path} already exists: remove it or pick --out`);
    }
    throw new BallastError("INVALID_ARGUMENT", `cannot write ${path}: ${errorMessage(err)}`);
  }
  await Deno.chmod(path, mode); // createNew's mode is subject to the umask
}

async function issue(
  s: CommandSpec,
  p: Parsed,
  a: Checked,
  client: BallastClient,
  io: Io,
): Promise<number> {
  const [name] = a.positional;
  const dir = resolve(p.values.out as string);
  let csr;
  try {
    csr = await createCsr({ role: a.role!, name, volumes: a.volumes });
  } catch (err) {
    throw new UsageError(errorMessage(err), usageHint(s));
  }
  const paths = {
    key: join(dir, CLIENT_FILES.key),
    cert: join(dir, CLIENT_FILES.cert),
    ca: join(dir, CLIENT_FILES.ca),
  };
  for (const f of Object.values(paths)) {
    const there = await Deno.lstat(f).then(() => true, () => false);
    if (there) throw new BallastError("ALREADY_EXISTS", `${f} already exists: pick another --out`);
  }
  const signed = await client.signCertificate({ // before anything is written (a refusal)
    csr: csr.csrPem,
    role: a.role as "admin" | "nbd-client",
    name,
    ...(a.volumes?.length ? { volumes: a.volumes } : {}),
    ...(a.ttl ? { ttl: a.ttl } : {}),
    ...(p.values["any-incarnation"] === true ? { anyIncarnation: true } : {}),
  });
  const existed = await Deno.stat(dir).then((st) => st.mode, () => undefined);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  if (existed !== undefined && existed !== null && (existed & 0o077) !== 0) {
    io.err(
      `note: ${dir} is mode 0${(existed & 0o777).toString(8)}: others may list it (the key ` +
        "itself is 0600); chmod 0700 it, or use a directory of its own\n",
    );
  }
  await writeNew(paths.key, await exportPrivateKeyPem(csr.keys.privateKey), 0o600);
  await writeNew(paths.cert, signed.certificatePem, 0o644);
  await writeNew(paths.ca, signed.caBundlePem, 0o644);
  if (p.output === "json") {
    io.out(json({ ...signed, certificatePem: undefined, caBundlePem: undefined, files: paths }));
    return 0;
  }
  io.out(fields([
    ["Name", signed.name],
    ["Role", signed.role],
    ["Volumes", signed.grants.map(describeGrant).join(", ") || "<none>"],
    ["Serial", signed.serial],
    ["Not after", signed.notAfter],
    ["Key", `${paths.key} (0600, generated here, never sent)`],
    ["Certificate", paths.cert],
    ["CA bundle", paths.ca],
  ]));
  if (signed.role === "nbd-client") {
    const vol = signed.grants.find((g) => g.volume !== "*")?.volume ?? "VOLUME";
    const nbd = await nbdAddress(client, vol === "VOLUME" ? undefined : vol);
    const [host, port] = [nbd.slice(0, nbd.lastIndexOf(":")), nbd.split(":").pop()];
    io.out(
      "\nUse it with libnbd and qemu:\n" +
        `  nbdinfo 'nbds://${nbd}/${vol}?tls-certificates=${dir}'\n` +
        `  qemu-io --object tls-creds-x509,id=tls0,dir=${dir},endpoint=client \\\n` +
        `    --image-opts driver=nbd,host=${host},port=${port},export=${vol},tls-creds=tls0 ` +
        "-c 'read 0 4k'\n",
    );
  } else {
    io.out(
      `\nUse it with: ballast --api ${client.baseUrl} --cacert ${paths.ca} --cert ${paths.cert} ` +
        `--key ${paths.key}\n`,
    );
  }
  return 0;
}

/** A grant for people: `db1 (read-only, this volume only: uuid ...)`. */
function describeGrant(g: Grant): string {
  const notes = [
    ...(g.readOnly ? ["read-only"] : []),
    ...(g.uuid ? [`this volume only: uuid ${g.uuid}`] : g.volume === "*" ? [] : ["by name"]),
  ];
  return notes.length ? `${g.volume} (${notes.join(", ")})` : g.volume;
}

/**
 * The NBD address for the printed examples (best effort): the master of `volume` (in a
 * cluster only it serves the volume), else the node the CLI talks to, else the default.
 */
async function nbdAddress(client: BallastClient, volume?: string): Promise<string> {
  try {
    const nodes = await client.listNodes();
    const master = volume ? await client.getVolume(volume).then((v) => v.master, () => "") : "";
    const info = await client.health().catch(() => undefined);
    const pick = nodes.find((n) => n.name === master) ?? nodes.find((n) => n.name === info?.node);
    return pick?.nbdAddress ?? nodes[0]?.nbdAddress ?? "127.0.0.1:10809";
  } catch {
    return "127.0.0.1:10809";
  }
}

function caFields(info: CaInfo): string {
  const line = (c: CaCertificateInfo) =>
    `${c.subject} (serial ${c.serial}, ${c.notBefore} .. ${c.notAfter})\n    SHA-256 ${c.sha256Fingerprint}`;
  return fields([
    ["Mode", info.mode],
    ["Issuing CA", info.certificates.map(line).join("\n  ")],
    ["Trusted", info.trusted.map((c) => c.subject).join("; ")],
    ["Pending", info.pending.join(", ") || "<none>"],
  ]);
}
