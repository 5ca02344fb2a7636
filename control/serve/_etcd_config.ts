/**
 * The `--etcd*` settings of cluster mode: the etcd client URLs, its TLS files and the key
 * prefix, checked together (errors name the flag and the value).
 * @module
 */

import { InvalidArgumentError } from "../../mod/errors.ts";
import { type Pick, SETTINGS } from "./settings.ts";

/** Where cluster state lives (`--etcd`). File paths are read by serve(), not here. */
export interface EtcdConfig {
  /** Client URLs, all http:// or all https://, without trailing slash. */
  endpoints: string[];
  /** PEM file of the CA that signed etcd's server certificate; required for https. */
  caFile: string | undefined;
  /** PEM client certificate and key (etcd --client-cert-auth); both or neither. */
  certFile: string | undefined;
  keyFile: string | undefined;
  /** Key namespace in etcd, so several clusters (or other users) can share one etcd. */
  prefix: string;
}

/** The `--etcd*` settings; undefined without --etcd (embedded store). */
export function resolveEtcd(pick: Pick): EtcdConfig | undefined {
  const urls = pick("etcd");
  const given = (key: "etcdCacert" | "etcdCert" | "etcdKey") => {
    const p = pick(key);
    return p.value === undefined || p.value === "" ? undefined : { ...p, value: p.value };
  };
  const ca = given("etcdCacert");
  const cert = given("etcdCert");
  const key = given("etcdKey");
  if (urls.value === undefined || urls.value.trim() === "") {
    const stray = ca ?? cert ?? key;
    if (stray) {
      throw new InvalidArgumentError(
        `${stray.source} "${stray.value}" needs --etcd: the etcd TLS files only apply in cluster mode`,
        { field: SETTINGS.etcd.flag },
      );
    }
    return undefined;
  }
  const endpoints = parseEtcdUrls(urls.value, urls.source);
  const https = endpoints[0].startsWith("https:");
  if (https && !ca) {
    throw new InvalidArgumentError(
      `${urls.source} "${urls.value}" uses https: pass --etcd-cacert FILE (the CA of etcd's server certificate)`,
      { field: SETTINGS.etcdCacert.flag },
    );
  }
  if (!https) {
    const tlsOnly = ca ?? cert ?? key;
    if (tlsOnly) {
      throw new InvalidArgumentError(
        `${tlsOnly.source} "${tlsOnly.value}" only applies to https etcd URLs; ${urls.source} is "${urls.value}"`,
        { field: SETTINGS.etcd.flag },
      );
    }
  }
  if ((cert === undefined) !== (key === undefined)) {
    const [have, missing] = cert ? [cert, SETTINGS.etcdKey.flag] : [key!, SETTINGS.etcdCert.flag];
    throw new InvalidArgumentError(
      `${have.source} "${have.value}" needs --${missing} too: the etcd client certificate and key go together`,
      { field: missing },
    );
  }
  const prefix = pick("etcdPrefix");
  const p = prefix.value!;
  if (!/^\/[A-Za-z0-9._/-]*$/.test(p) || p.endsWith("/") && p.length > 1 || p.includes("//")) {
    throw new InvalidArgumentError(
      `invalid ${prefix.source} "${p}": expected a key path such as /ballast-cluster ` +
        `(starts with "/", no trailing "/", characters A-Z a-z 0-9 . _ - /)`,
      { field: SETTINGS.etcdPrefix.flag },
    );
  }
  return {
    endpoints,
    caFile: ca?.value,
    certFile: cert?.value,
    keyFile: key?.value,
    prefix: p === "/" ? "" : p,
  };
}

/**
 * Parses comma-separated etcd client URLs: http(s)://HOST:PORT, all the same scheme.
 * @throws InvalidArgumentError naming the source (flag or env) and the bad URL.
 */
export function parseEtcdUrls(text: string, source = "--etcd"): string[] {
  const parts = text.split(",").map((u) => u.trim());
  const endpoints: string[] = [];
  for (const part of parts) {
    const bad = (why: string) =>
      new InvalidArgumentError(`invalid ${source} URL "${part}": ${why}`, {
        field: SETTINGS.etcd.flag,
      });
    if (part === "") throw bad("empty entry in the comma-separated list");
    let url: URL;
    try {
      url = new URL(part);
    } catch {
      throw bad("expected http://HOST:PORT or https://HOST:PORT");
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw bad(`scheme must be http or https, not ${url.protocol.replace(/:$/, "")}`);
    }
    if (
      url.username || url.password || (url.pathname !== "/" && url.pathname !== "") ||
      url.search || url.hash
    ) {
      throw bad("expected only scheme, host and port (no user, path or query)");
    }
    if (!/:\d+\/?$/.test(part)) throw bad("missing port, e.g. http://127.0.0.1:2379");
    endpoints.push(`${url.protocol}//${part.slice(part.indexOf("//") + 2).replace(/\/$/, "")}`);
  }
  const schemes = new Set(endpoints.map((e) => e.slice(0, e.indexOf(":"))));
  if (schemes.size > 1) {
    throw new InvalidArgumentError(
      `invalid ${source} "${text}": mixes http and https URLs; use one scheme for every member`,
      { field: SETTINGS.etcd.flag },
    );
  }
  return endpoints;
}
