/**
 * Attach anywhere: a node forwards the clients of volumes that another node serves to that
 * volume's master (an NBD client over TLS with this node's certificate), and follows the
 * master across failovers so that the client sees a pause, not an error.
 * @module
 */

export { Directory, type DirectoryEntry, sameMaster } from "./directory.ts";
export { type ConnectUpstream, EIO_GRACE_MS, FAILOVER_MS, Forwarder } from "./forwarder.ts";
export { RemoteExports } from "./remote_exports.ts";
export { upstreamConnector } from "./connector.ts";
export {
  Upstream,
  UpstreamError,
  type UpstreamOptions,
  type UpstreamReply,
  type UpstreamRequest,
  type UpstreamTls,
} from "./upstream.ts";
