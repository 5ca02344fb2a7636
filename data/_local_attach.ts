/**
 * Local attach over Unix sockets (docs/NBD.md, "Local attach"): plaintext NBD for whoever the
 * socket file's mode and group let in, read-write (`--nbd-unix`) or read-only
 * (`--nbd-unix-ro`). The data workers get these listeners' connections like the TCP ones;
 * on the main thread, serveUnix() accepts them for an NbdServer.
 * @module
 */

import { dirname } from "node:path";
import type { Logger } from "pino";
import { FdListener, groupId, UnixSocketError } from "./net/fd_listener.ts";
import { openFdTransport } from "./nbd/node_transport.ts";
import type { NbdServer } from "./nbd/server.ts";

/** A Unix-socket NBD listener for local attach: its file decides who may connect. */
export interface UnixListenAt {
  path: string;
  /** File mode of the socket, e.g. 0o660. */
  mode: number;
  /** Group of the socket file (name or id); absent: the process's group. */
  group?: string;
}

/** Opens a Unix-socket listener with its mode and group, and says so. */
export function openUnixListener(at: UnixListenAt, readOnly: boolean, log: Logger): FdListener {
  let gid: number | undefined;
  try {
    gid = at.group === undefined ? undefined : groupId(at.group);
  } catch (err) {
    throw new UnixSocketError(at.path, `--nbd-unix-group: ${(err as Error).message}`);
  }
  const l = FdListener.openUnix(at.path, { mode: at.mode, gid });
  const info = Deno.lstatSync(at.path);
  log.info(
    {
      nbdUnix: at.path,
      mode: `0${(info.mode! & 0o777).toString(8)}`,
      gid: info.gid,
      ...(readOnly ? { readOnly } : {}),
    },
    `NBD Unix-socket listener started (plaintext local attach${
      readOnly ? ", read-only" : ""
    }; the file's mode and group decide who may connect)`,
  );
  const dir = dirname(at.path);
  const dirMode = Deno.statSync(dir).mode! & 0o777;
  if (at.group !== undefined && (dirMode & 0o011) === 0) {
    // Connecting needs search permission on every directory above the socket.
    log.warn(
      { nbdUnix: at.path, dir, dirMode: `0${dirMode.toString(8)}` },
      `members of group ${at.group} cannot reach the socket: its directory lets only its ` +
        "owner in; put the socket in a directory the group may enter (e.g. /run/ballast, 0750)",
    );
  }
  return l;
}

/** Serves the connections of a Unix-socket listener with `server` (main thread). */
export function serveUnix(
  l: FdListener,
  server: NbdServer,
  acceptAfter?: Promise<unknown>,
): { close(): Promise<void> } {
  const accepting = (async () => {
    await acceptAfter?.catch(() => {});
    for (;;) {
      const c = await l.accept();
      if (c === null) return;
      server.serve(openFdTransport(c.fd, c.remote, { direct: true }));
    }
  })();
  return {
    close: async () => {
      l.close();
      await accepting;
    },
  };
}
