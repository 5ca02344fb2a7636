/**
 * The state store a node opens: the embedded one at DIR/state.db, or etcd with `--etcd`
 * (its TLS files read here, errors naming the flag and the file).
 * @module
 */

import { errorMessage, InvalidArgumentError, UnavailableError } from "../../mod/errors.ts";
import { EtcdStateStore, type EtcdTls } from "../store/etcd/mod.ts";
import type { StateStore } from "../store/mod.ts";
import { SqliteStateStore } from "../store/sqlite/mod.ts";
import type { EtcdConfig } from "./_etcd_config.ts";
import type { ServeConfig } from "./config.ts";

/** The embedded store at DIR/state.db, or etcd when `--etcd` is set. */
export async function openStore(config: ServeConfig): Promise<StateStore> {
  if (!config.etcd) {
    return SqliteStateStore.open(`${config.dataDir.replace(/\/+$/, "")}/state.db`);
  }
  const tls = await readEtcdTls(config.etcd);
  try {
    return await EtcdStateStore.connect({
      endpoints: config.etcd.endpoints,
      tls,
      prefix: config.etcd.prefix,
    });
  } catch (err) {
    if (!tls || !(err instanceof UnavailableError)) throw err;
    // A TLS refusal (unknown CA, missing or foreign client certificate) looks like a
    // broken connection from here; point at the files.
    throw new UnavailableError(
      `${err.message} (with TLS: check that --etcd-cacert signed etcd's certificate and that ` +
        `etcd accepts the client certificate${
          tls.certPem ? " in --etcd-cert" : "; none was given (--etcd-cert, --etcd-key)"
        })`,
      { cause: err },
    );
  }
}

/** Reads the `--etcd-cacert/-cert/-key` files; errors name the flag and the file. */
async function readEtcdTls(etcd: EtcdConfig): Promise<EtcdTls | undefined> {
  if (!etcd.caFile) return undefined;
  const read = async (file: string, flag: string) => {
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch (err) {
      throw new InvalidArgumentError(
        `cannot read --${flag} "${file}": ${errorMessage(err)}`,
        { field: flag, cause: err },
      );
    }
    if (!text.includes("-----BEGIN ")) {
      throw new InvalidArgumentError(`--${flag} "${file}" is not a PEM file`, { field: flag });
    }
    return text;
  };
  return {
    caPem: await read(etcd.caFile, "etcd-cacert"),
    ...(etcd.certFile && etcd.keyFile
      ? {
        certPem: await read(etcd.certFile, "etcd-cert"),
        keyPem: await read(etcd.keyFile, "etcd-key"),
      }
      : {}),
  };
}
