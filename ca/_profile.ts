/**
 * Certificate profiles: what each Ballast role looks like in a leaf certificate, and how a
 * role and its volume grants are written into (and read back from) the certificate.
 *
 * Role and grants are URI subjectAltNames (see README.md, "Volume grants"):
 *   ballast:role:<node|admin|nbd-client>   exactly one per Ballast leaf
 *   ballast:volume:<volume name>[;ro][;uuid=<uuid>]
 *                                           one per granted volume; `ballast:volume:*` = all;
 *                                           `;ro` read only; `;uuid=` only that incarnation
 * @module
 */
import { isIP } from "node:net";
import { InvalidArgumentError } from "../mod/errors.ts";
import { x509 } from "./_x509.ts";

/** The roles a Ballast leaf certificate can carry. */
export type Role = "node" | "admin" | "nbd-client";
/** Every role, in a stable order. */
export const ROLES: readonly Role[] = ["node", "admin", "nbd-client"];

/** extendedKeyUsage purposes Ballast checks. */
export type Eku = "serverAuth" | "clientAuth";

/** Which EKUs a role's certificate carries. */
export const ROLE_EKUS: Readonly<Record<Role, readonly Eku[]>> = {
  node: ["serverAuth", "clientAuth"],
  admin: ["clientAuth"],
  "nbd-client": ["clientAuth"],
};

/** OIDs of the EKU purposes (RFC 5280 section 4.2.1.12). */
export const EKU_OID: Readonly<Record<Eku, string>> = {
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
};

export const ROLE_URI_PREFIX = "ballast:role:";
export const VOLUME_URI_PREFIX = "ballast:volume:";
/** The grant that allows every volume. */
export const ALL_VOLUMES = "*";

/** A grant's text (CLI, API) ends with this to make it read-only: `db1:ro`, `*:ro`. */
export const READ_ONLY_SUFFIX = ":ro";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** What a certificate lets its holder do with a volume (docs/TLS.md, "Volume grants"). */
export interface Grant {
  /** The volume's name, or `*` for every volume. */
  volume: string;
  /** The holder may read but not change the volume. */
  readOnly: boolean;
  /**
   * The uuid of the volume that had this name when the certificate was issued: only that
   * volume opens, not one created later under the same name. Absent: bound by name.
   */
  uuid?: string;
}

/** Same rule as volume names (control/volumes/rules.ts), repeated so ca/ stands alone. */
const VOLUME_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/i;
/** Subject common names: printable, no DN metacharacters. */
const COMMON_NAME = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;

/** What a leaf certificate says about its holder. */
export interface LeafSpec {
  role: Role;
  /** Subject CN: the node name, admin name or NBD consumer name. */
  name: string;
  /** DNS subjectAltNames (node certificates: the node name is added when it is a DNS name). */
  dnsNames?: readonly string[];
  /** IP subjectAltNames: the addresses a node listens on. */
  ipAddresses?: readonly string[];
  /**
   * nbd-client only: grant texts, `NAME` or `NAME:ro` (read-only); `["*"]` for all. Ignored
   * when `grants` is given.
   */
  volumes?: readonly string[];
  /** nbd-client only: the grants, with the volumes' uuids where bound. */
  grants?: readonly Grant[];
}

/** A spec after normalizeSpec(): names canonical, grants parsed and sorted. */
export interface NormalSpec {
  role: Role;
  name: string;
  dnsNames: string[];
  ipAddresses: string[];
  grants: Grant[];
}

/** The identity read from a verified certificate. */
export interface Identity {
  role: Role;
  name: string;
  /** The grants as texts (`db1`, `db1:ro`, `*`), without the uuids they are bound to. */
  volumes: string[];
  grants: Grant[];
  dnsNames: string[];
  ipAddresses: string[];
}

export function isRole(v: unknown): v is Role {
  return typeof v === "string" && (ROLES as readonly string[]).includes(v);
}

export function isDnsName(name: string): boolean {
  return name.length <= 253 && name.split(".").every((l) => DNS_LABEL.test(l));
}

/** Canonical text of an IP address (lower case, IPv6 compressed the way node:net prints it). */
export function canonicalIp(ip: string): string {
  const v = isIP(ip);
  if (v === 4) return ip;
  if (v !== 6) throw new InvalidArgumentError(`not an IP address: ${JSON.stringify(ip)}`);
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}

/** Checks a spec and returns it with defaults applied and names canonical. */
export function normalizeSpec(spec: LeafSpec): NormalSpec {
  if (!isRole(spec.role)) {
    throw new InvalidArgumentError(
      `invalid role ${JSON.stringify(spec.role)}: expected one of ${ROLES.join(", ")}`,
      { field: "role" },
    );
  }
  if (typeof spec.name !== "string" || !COMMON_NAME.test(spec.name)) {
    throw new InvalidArgumentError(
      `invalid certificate name ${JSON.stringify(spec.name)}: expected 1-64 characters ` +
        `of letters, digits, '.', '_', '@', '-'`,
      { field: "name" },
    );
  }
  const dns = new Set<string>();
  for (const d of spec.dnsNames ?? []) {
    if (!isDnsName(d)) {
      throw new InvalidArgumentError(`invalid DNS name ${JSON.stringify(d)}`, {
        field: "dnsNames",
      });
    }
    dns.add(d.toLowerCase());
  }
  if (spec.role === "node" && isDnsName(spec.name)) dns.add(spec.name.toLowerCase());
  const ips = new Set<string>();
  for (const ip of spec.ipAddresses ?? []) {
    const c = canonicalIp(ip);
    if (c === "0.0.0.0" || c === "::") {
      throw new InvalidArgumentError(
        `${ip} is a wildcard listen address, not a name peers can dial: pass concrete addresses`,
        { field: "ipAddresses" },
      );
    }
    ips.add(c);
  }
  const grants = normalizeGrants(spec.grants ?? (spec.volumes ?? []).map(parseGrant));
  if (grants.length > 0 && spec.role !== "nbd-client") {
    throw new InvalidArgumentError(`volume grants are only for role nbd-client, not ${spec.role}`, {
      field: "volumes",
    });
  }
  if (spec.role !== "node" && (dns.size > 0 || ips.size > 0)) {
    throw new InvalidArgumentError(`DNS/IP names are only for role node, not ${spec.role}`, {
      field: "dnsNames",
    });
  }
  return { role: spec.role, name: spec.name, dnsNames: [...dns], ipAddresses: [...ips], grants };
}

/** Reads a grant's text: `NAME`, `NAME:ro`, `*` or `*:ro`. */
export function parseGrant(text: string): Grant {
  const readOnly = text.endsWith(READ_ONLY_SUFFIX);
  const volume = readOnly ? text.slice(0, -READ_ONLY_SUFFIX.length) : text;
  if (volume !== ALL_VOLUMES && !VOLUME_NAME.test(volume)) {
    throw new InvalidArgumentError(
      `invalid volume grant ${JSON.stringify(text)}: expected a volume name or '*', ` +
        `optionally followed by ${READ_ONLY_SUFFIX} (read-only)`,
      { field: "volumes" },
    );
  }
  return { volume, readOnly };
}

/** The text of a grant (without its uuid): `db1`, `db1:ro`. */
export function grantText(g: Grant): string {
  return g.readOnly ? g.volume + READ_ONLY_SUFFIX : g.volume;
}

/**
 * Checks grants and puts them in a stable order; one grant per volume name. A read-write `*`
 * bound by name covers everything else, so it stands alone.
 */
function normalizeGrants(grants: readonly Grant[]): Grant[] {
  const byVolume = new Map<string, Grant>();
  for (const g of grants) {
    parseGrant(g.volume);
    if (g.uuid !== undefined && (g.volume === ALL_VOLUMES || !UUID.test(g.uuid))) {
      throw new InvalidArgumentError(`invalid volume uuid ${JSON.stringify(g.uuid)}`, {
        field: "volumes",
      });
    }
    const seen = byVolume.get(g.volume);
    if (seen && (seen.readOnly !== g.readOnly || seen.uuid !== g.uuid)) {
      throw new InvalidArgumentError(
        `volume ${JSON.stringify(g.volume)} is granted twice, differently: grant it once`,
        { field: "volumes" },
      );
    }
    byVolume.set(g.volume, {
      volume: g.volume,
      readOnly: g.readOnly === true,
      ...(g.uuid ? { uuid: g.uuid } : {}),
    });
  }
  const all = byVolume.get(ALL_VOLUMES);
  if (all && !all.readOnly) return [all];
  return [...byVolume.values()].sort((a, b) => a.volume < b.volume ? -1 : 1);
}

/** A grant as a subjectAltName URI. */
function grantUri(g: Grant): string {
  return VOLUME_URI_PREFIX + g.volume + (g.readOnly ? ";ro" : "") +
    (g.uuid ? `;uuid=${g.uuid}` : "");
}

/** A grant from its URI (after the prefix), or a reason it cannot be read (fail closed). */
function readGrantUri(text: string): Grant | string {
  const [volume, ...params] = text.split(";");
  const g: Grant = { volume, readOnly: false };
  for (const p of params) {
    if (p === "ro") g.readOnly = true;
    else if (p.startsWith("uuid=") && UUID.test(p.slice(5))) g.uuid = p.slice(5);
    else return `volume grant ${JSON.stringify(text)} has an unknown part ${JSON.stringify(p)}`;
  }
  return g;
}

/** The subject DN of a leaf. */
export function leafSubject(spec: LeafSpec): string {
  return `CN=${spec.name}, O=Ballast`;
}

/** The subjectAltName entries that encode a (normalized) spec. */
export function specAltNames(spec: NormalSpec): x509.JsonGeneralNames {
  return [
    ...spec.dnsNames.map((value) => ({ type: "dns" as const, value })),
    ...spec.ipAddresses.map((value) => ({ type: "ip" as const, value })),
    { type: "url" as const, value: ROLE_URI_PREFIX + spec.role },
    ...spec.grants.map((g) => ({ type: "url" as const, value: grantUri(g) })),
  ];
}

/** The subjectAltName entries of a certificate or CSR ([] if none). */
export function altNames(
  source: x509.X509Certificate | x509.Pkcs10CertificateRequest,
): x509.JsonGeneralNames {
  const ext = source instanceof x509.X509Certificate
    ? source.getExtension(x509.SubjectAlternativeNameExtension)
    : source.getExtension("2.5.29.17");
  if (!ext) return [];
  const san = ext instanceof x509.SubjectAlternativeNameExtension
    ? ext
    : new x509.SubjectAlternativeNameExtension(ext.rawData);
  return san.names.toJSON();
}

/**
 * Reads role, name and grants from a certificate or CSR. Returns a reason string when the
 * Ballast markers are missing or contradictory (callers fail closed on it).
 */
export function readIdentity(
  source: x509.X509Certificate | x509.Pkcs10CertificateRequest,
): Identity | string {
  const names = altNames(source);
  const roles = names.filter((n) => n.type === "url" && n.value.startsWith(ROLE_URI_PREFIX))
    .map((n) => n.value.slice(ROLE_URI_PREFIX.length));
  if (roles.length === 0) return `no Ballast role (no ${ROLE_URI_PREFIX}* subjectAltName)`;
  if (roles.length > 1) return `more than one Ballast role: ${roles.join(", ")}`;
  const role = roles[0];
  if (!isRole(role)) return `unknown Ballast role ${JSON.stringify(role)}`;
  const cn = source.subjectName.getField("CN");
  if (cn.length !== 1) return "subject must have exactly one CN";
  const grants: Grant[] = [];
  for (const n of names) {
    if (n.type !== "url" || !n.value.startsWith(VOLUME_URI_PREFIX)) continue;
    const g = readGrantUri(n.value.slice(VOLUME_URI_PREFIX.length));
    if (typeof g === "string") return g;
    grants.push(g);
  }
  return {
    role,
    name: cn[0],
    volumes: grants.map(grantText),
    grants,
    dnsNames: names.filter((n) => n.type === "dns").map((n) => n.value),
    ipAddresses: names.filter((n) => n.type === "ip").map((n) => canonicalIp(n.value)),
  };
}
