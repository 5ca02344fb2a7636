/**
 * Ballast's internal CA: keys and certificates for every endpoint, bring-your-own CA,
 * rotation, revocation, and the peer check every TLS endpoint runs (verifyPeer).
 * See ca/README.md for the directory layout, roles and the volume-grant encoding.
 * @module
 */
export { x509 } from "./_x509.ts";
export {
  ALL_VOLUMES,
  canonicalIp,
  type Eku,
  type Grant,
  grantText,
  type Identity,
  type LeafSpec,
  parseGrant,
  READ_ONLY_SUFFIX,
  readIdentity,
  type Role,
  ROLE_EKUS,
  ROLE_URI_PREFIX,
  ROLES,
  VOLUME_URI_PREFIX,
} from "./_profile.ts";
export {
  exportPrivateKeyPem,
  generateKeyPair,
  importPrivateKeyPem,
  keyMatches,
  normalizeSerial,
  parseCertificates,
} from "./_keys.ts";
export {
  createCsr,
  createRootCa,
  type CsrPolicy,
  DEFAULT_CA_TTL_SECONDS,
  DEFAULT_LEAF_TTL_SECONDS,
  issueLeaf,
  type IssueOptions,
  type Issuer,
  needsRenewal,
  renewLeaf,
  signCsr,
} from "./_issue.ts";
export {
  type PeerIdentity,
  type VerifyFailure,
  verifyPeer,
  type VerifyPeerOptions,
  type VerifyResult,
} from "./_verify.ts";
export { adoptCa, type CaMaterial, installCa, type RotateCaOptions } from "./_ca_files.ts";
export {
  FILES,
  type IssuedRecord,
  type LocalCert,
  type RetiredCa,
  type RevocationRecord,
} from "./_layout.ts";
export { openPki, type OpenPkiOptions, Pki, type PkiMode, type TlsCredentials } from "./_store.ts";
export { checkSerial, resolveSerial } from "./_registry.ts";
export { KEY_MODE, PUBLIC_MODE, readOptional, tightenPrivateModes, writeAtomic } from "./_fs.ts";
