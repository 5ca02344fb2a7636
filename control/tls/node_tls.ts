/**
 * TLS for one node: opens the PKI (creating the internal CA on first start), gives the
 * NBD listener its STARTTLS hook, and renews certificates before they expire, reloading
 * TLS contexts in place so live connections are not cut.
 * @module
 */

import { createSecureContext, type SecureContext } from "node:tls";
import { openPki, type Pki, type Role, tightenPrivateModes } from "../../ca/mod.ts";
import { nbdStartTls as nbdClientStartTls, type StartTls } from "../../data/mod.ts";
import { FailedPreconditionError } from "../../mod/errors.ts";
import type { ListenAddress, Logger } from "../common/mod.ts";

/** What node TLS reads of the node's configuration (a ServeConfig has all of it). */
export interface NodeTlsConfig {
  dataDir: string;
  nodeName: string;
  apiListen: ListenAddress;
  nbdListen: ListenAddress;
  /** Lifetime of the certificates the node issues (renewed at 2/3 of it). */
  certTtlSeconds: number;
  /** Cluster mode (etcd endpoints): other nodes may open volumes over NBD (nbdRoles). */
  etcd?: unknown;
}

export interface NodeTls {
  pki: Pki;
  /** NBD_OPT_STARTTLS: handshake, then the client certificate decides who it is. */
  nbdStartTls: StartTls;
  /** Rebuilds the TLS contexts from the PKI (after renewal or CA rotation). */
  reload(): void;
  /** Checks for due renewals every `intervalMs`; calls `onRenewed` after any. Returns a stop function. */
  startRenewal(onRenewed: () => void, intervalMs?: number): () => void;
  /**
   * Checks now, as the timer does (a revocation of this node's own certificate: it is
   * reissued at once, not at the next tick). Nothing before startRenewal().
   */
  renewNow(): Promise<void>;
}

const WILDCARDS = new Set(["0.0.0.0", "::", ""]);
const IPV4 = /^\d{1,3}(\.\d{1,3}){3}$/;

/** The PKI directory of a data dir: DIR/pki. */
export function pkiDirOf(dataDir: string): string {
  return `${dataDir.replace(/\/+$/, "")}/pki`;
}

/** The names and addresses the node certificate must cover for the given listeners. */
export function certificateNames(
  nodeName: string,
  listens: ListenAddress[],
  interfaces: () => string[] = () => Deno.networkInterfaces().map((i) => i.address),
): { dnsNames: string[]; ipAddresses: string[] } {
  const dns = new Set<string>([nodeName]);
  const ips = new Set<string>();
  for (const { host } of listens) {
    if (WILDCARDS.has(host)) {
      for (const a of interfaces()) ips.add(a.replace(/%.*$/, ""));
      dns.add("localhost");
    } else if (IPV4.test(host) || host.includes(":")) {
      ips.add(host);
    } else {
      dns.add(host);
    }
  }
  return { dnsNames: [...dns], ipAddresses: [...ips] };
}

export async function setupNodeTls(config: NodeTlsConfig, log: Logger): Promise<NodeTls> {
  const names = certificateNames(config.nodeName, [config.apiListen, config.nbdListen]);
  const dir = pkiDirOf(config.dataDir);
  const opened = await tightenPrivateModes(dir);
  if (opened.length > 0) {
    log.warn(
      { dir, changed: opened },
      `${dir} let other users read secrets (${opened.join(", ")}): modes set back to 0700 ` +
        "and 0600; a key that was readable may have been read: replace it (docs/TLS.md)",
    );
  }
  const pki = await openPki(dir, {
    nodeName: config.nodeName,
    dnsNames: names.dnsNames,
    ipAddresses: names.ipAddresses,
    leafTtlSeconds: config.certTtlSeconds,
  });
  let built = "";
  const build = (): SecureContext => {
    const c = pki.credentials("node");
    built = c.ca;
    return createSecureContext({ ...c, minVersion: "TLSv1.2" });
  };
  if (pki.mode === "external" && pki.pending().length > 0) {
    throw new FailedPreconditionError(
      `external CA mode: sign ${pki.pending().map((w) => `${dir}/${w}.csr`).join(" and ")} with ` +
        `your CA (keep the requested subjectAltNames; add basicConstraints CA:FALSE, keyUsage ` +
        `digitalSignature, extendedKeyUsage serverAuth+clientAuth for node and clientAuth for ` +
        `admin), then run: ballast ca init --data-dir ${config.dataDir} --import-node node.crt ` +
        `--import-admin admin.crt --node-name ${config.nodeName}`,
    );
  }
  let context = build();
  let check = (): Promise<void> => Promise.resolve();
  log.info({ mode: pki.mode, ...names }, "TLS ready: API and NBD require client certificates");

  const nbdStartTls: StartTls = nbdClientStartTls(
    () => context,
    (der) => pki.verify(der, { requiredEku: "clientAuth", allowedRoles: nbdRoles(config) }),
  );

  return {
    pki,
    nbdStartTls,
    reload() {
      context = build();
    },
    startRenewal(onRenewed, intervalMs) {
      // Check often enough for short test lifetimes, at most once a minute.
      const every = intervalMs ?? Math.max(1000, Math.min(60_000, config.certTtlSeconds * 100));
      let busy: Promise<void> | undefined;
      check = () =>
        busy ??= (async () => {
          try {
            const renewed = await pki.renewDue();
            // A retired CA whose overlap ended leaves the trust bundle: contexts built with
            // it would still name it to clients (and send it in the chain).
            const bundle = pki.trustBundlePem();
            if (renewed.length > 0 || bundle !== built) {
              context = build();
              onRenewed();
              log.info(
                { renewed, ...(bundle !== built ? { trustBundle: "changed" } : {}) },
                "certificates renewed or trust changed; TLS contexts reloaded",
              );
            }
          } catch (err) {
            log.error({ err }, "certificate renewal failed");
          } finally {
            busy = undefined;
          }
        })();
      const timer = setInterval(() => void check(), every);
      Deno.unrefTimer(timer);
      return () => {
        clearInterval(timer);
        check = () => Promise.resolve();
      };
    },
    renewNow: () => check(),
  };
}

/**
 * Who may open volumes over NBD: admins and NBD clients, and in cluster mode other nodes too,
 * which forward their own clients to a volume's master (attach anywhere, data/proxy/). A
 * single node has nobody to forward for: its node certificate opens nothing.
 */
export function nbdRoles(config: { etcd?: unknown }): Role[] {
  return config.etcd ? ["admin", "nbd-client", "node"] : ["admin", "nbd-client"];
}
