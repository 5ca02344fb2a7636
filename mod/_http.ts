/**
 * The typed client's connection layer (private): the Deno HTTP client that carries the CA
 * and the client certificate, and connection failures put in words.
 * @module
 */

import { BallastError, UnavailableError } from "./errors.ts";

/** PEM material for https (see BallastClientOptions). */
export interface TlsFiles {
  caCertPem?: string;
  certPem?: string;
  keyPem?: string;
}

/** The Deno HTTP client carrying the CA and client certificate for https. */
export function tlsClient(options: TlsFiles): Deno.HttpClient | undefined {
  if (!options.caCertPem && !options.certPem && !options.keyPem) return undefined;
  if (!!options.certPem !== !!options.keyPem) {
    throw new BallastError(
      "INVALID_ARGUMENT",
      `a client certificate needs both certPem and keyPem (got only ${
        options.certPem ? "certPem" : "keyPem"
      })`,
    );
  }
  try {
    return Deno.createHttpClient({
      ...(options.caCertPem ? { caCerts: [options.caCertPem] } : {}),
      ...(options.certPem ? { cert: options.certPem, key: options.keyPem } : {}),
    });
  } catch (err) {
    // The underlying message is dropped: it must never echo key material.
    throw new BallastError(
      "INVALID_ARGUMENT",
      "invalid TLS credentials: expected PEM CA certificate(s), a PEM certificate and its " +
        `PEM private key (${(err as Error)?.name ?? "error"})`,
    );
  }
}

/** A TLS handshake failure, in words; undefined when `text` is not one. */
function tlsProblem(
  text: string,
): { code: "UNAVAILABLE" | "UNAUTHENTICATED"; why: string } | undefined {
  const name = /certificate not valid for name "([^"]*)"; certificate is only valid for ([^\n]*)/
    .exec(text);
  if (name) {
    const names = [...name[2].matchAll(/(?:DnsName\("([^"]*)"\)|IpAddress\(([^)]*)\))/g)]
      .map((m) => m[1] ?? m[2]);
    return {
      code: "UNAVAILABLE",
      why: `the node's certificate is not valid for "${name[1]}"; it names ` +
        `${names.length ? names.join(", ") : "other hosts"}: use one of those in --api ` +
        "or BALLAST_API",
    };
  }
  const peer = /invalid peer certificate: ([^\n]+)/.exec(text);
  if (peer) {
    const what = peer[1].trim();
    const expired = /^certificate expired:.*not valid after (\d+)/.exec(what);
    return {
      code: "UNAVAILABLE",
      why: expired
        ? "the node's certificate expired at " +
          `${new Date(Number(expired[1]) * 1000).toISOString()} (a running node renews its own ` +
          "at two thirds of their life: check that it runs, its clock and its log)"
        : `server certificate not trusted: ${what} ` +
          "(pass the node's ca-bundle.crt with --cacert or BALLAST_CACERT)",
    };
  }
  if (
    /alert.*(CertificateRequired|BadCertificate|UnknownCA|CertificateRevoked|CertificateExpired|AccessDenied|HandshakeFailure)/i
      .test(text)
  ) {
    return { code: "UNAUTHENTICATED", why: "the server refused the client certificate" };
  }
  if (/invalid HTTP version/i.test(text)) {
    return {
      code: "UNAVAILABLE",
      why: "the server speaks HTTPS, not plain HTTP (use an https:// URL and the node's " +
        "credentials)",
    };
  }
  if (/InvalidContentType|corrupt message|wrong version/i.test(text)) {
    return {
      code: "UNAVAILABLE",
      why: "the server did not answer TLS: a plain HTTP API (use an http:// URL), or not " +
        "the API at all (an NBD port? the API listens on --api-listen, 5705 by default)",
    };
  }
  return undefined;
}

/** A clear UnavailableError for a failed connection (UNAUTHENTICATED for a refused certificate). */
export function unreachable(
  baseUrl: string,
  err: unknown,
  timeoutMs: number,
  hint?: string,
): BallastError {
  const e = err as { name?: string; message?: string; cause?: { message?: string } };
  const text = `${e?.message ?? ""} ${e?.cause?.message ?? ""}`;
  const tls = tlsProblem(text);
  if (tls?.code === "UNAUTHENTICATED") {
    return new BallastError("UNAUTHENTICATED", `${baseUrl}: ${tls.why}`, { cause: err });
  }
  const more = hint ? `; ${hint}` : "";
  if (tls) {
    return new UnavailableError(`cannot reach the Ballast API at ${baseUrl}: ${tls.why}${more}`, {
      cause: err,
    });
  }
  let why = "connection failed";
  if (e?.name === "TimeoutError") why = `no answer within ${timeoutMs / 1000} s`;
  else if (/refused/i.test(text)) why = "connection refused";
  else if (/dns error|not known|lookup/i.test(text)) why = "host name not found";
  else if (/reset/i.test(text)) why = "connection reset";
  else if (e?.cause?.message) why = e.cause.message;
  else if (e?.message) why = e.message;
  return new UnavailableError(
    `cannot reach the Ballast API at ${baseUrl}: ${why}; is \`ballast serve\` running?${more}`,
    { cause: err },
  );
}
