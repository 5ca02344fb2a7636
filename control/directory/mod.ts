/**
 * The directory of where each volume is served (its master's NBD address and epoch), fed to
 * the data plane so that a node forwards the clients of volumes it does not serve (attach
 * anywhere, data/proxy/).
 * @module
 */

export { feedDirectory, type Placed } from "./feed.ts";
