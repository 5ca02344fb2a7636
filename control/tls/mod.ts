/**
 * This node's TLS: the PKI opened for the node (the internal CA made on first start), the
 * NBD STARTTLS hook that checks client certificates, and renewal that reloads the TLS
 * contexts in place.
 * @module
 */

export {
  certificateNames,
  nbdRoles,
  type NodeTls,
  type NodeTlsConfig,
  pkiDirOf,
  setupNodeTls,
} from "./node_tls.ts";
