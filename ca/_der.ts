/**
 * Just enough DER reading to see what @peculiar/x509 does not expose: the certificate
 * version (RFC 5280 section 4.1: `version [0] EXPLICIT Version DEFAULT v1`).
 * @module
 */

interface Tlv {
  tag: number;
  start: number; // first content byte
  end: number; // one past the last content byte
}

function readTlv(der: Uint8Array, at: number): Tlv {
  if (at + 2 > der.length) throw new RangeError("truncated DER");
  const tag = der[at];
  let len = der[at + 1];
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || start + n > der.length) throw new RangeError("bad DER length");
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + der[start + i];
    start += n;
  }
  if (start + len > der.length) throw new RangeError("truncated DER");
  return { tag, start, end: start + len };
}

/** X.509 version number as printed by openssl (1, 2 or 3) of a DER certificate. */
export function certificateVersion(der: Uint8Array): number {
  const cert = readTlv(der, 0);
  if (cert.tag !== 0x30) throw new RangeError("certificate is not a SEQUENCE");
  const tbs = readTlv(der, cert.start);
  if (tbs.tag !== 0x30) throw new RangeError("tbsCertificate is not a SEQUENCE");
  const first = readTlv(der, tbs.start);
  if (first.tag !== 0xa0) return 1; // version absent: DEFAULT v1
  const int = readTlv(der, first.start);
  if (int.tag !== 0x02 || int.end - int.start !== 1) throw new RangeError("bad version field");
  return der[int.start] + 1;
}
