/// <reference lib="deno.worker" />
/**
 * A data worker's entry point (a module Web Worker started by pool.ts): it receives the
 * init message, then serves the NBD connections the main thread hands it, until told to
 * shut down. Its log lines go to the main thread, which writes them with its own logger
 * (one format, one stream). An uncaught error ends the worker; the pool replaces it.
 * @module
 */

import pino from "pino";
import { currentThreadId } from "./_cpu.ts";
import { WorkerPlane } from "./_worker_plane.ts";
import { checkToWorker, type FromWorker } from "./protocol.ts";

const post = (m: FromWorker) => self.postMessage(m);
let plane: WorkerPlane | undefined;

self.onmessage = (e: MessageEvent) => {
  let m;
  try {
    m = checkToWorker(e.data);
  } catch (err) {
    post({ type: "fatal", message: (err as Error).message });
    return;
  }
  switch (m.type) {
    case "init": {
      const log = pino(
        { level: m.logLevel, base: { worker: m.worker } },
        { write: (line: string) => post({ type: "log", line }) },
      );
      plane = new WorkerPlane(m, log, post);
      post({ type: "ready", worker: m.worker, tid: currentThreadId() });
      post({ type: "clock", sentAt: performance.now() });
      break;
    }
    case "clock":
      plane!.setClock(m.mainNow - m.sentAt);
      break;
    case "serve":
      plane!.serve(m.fd, m.listener, m.remote, m.conn);
      break;
    case "export":
      plane!.export(m.volume);
      break;
    case "unexport":
      plane!.unexport(m.name, m.reason);
      break;
    case "resize":
      plane!.resize(m.name, m.sizeBytes);
      break;
    case "tls":
      plane!.updateTls(m.tls);
      break;
    case "revoked":
      plane!.revoked(m.serials);
      break;
    case "directory":
      plane!.directory(m.entries);
      break;
    case "replication":
      plane!.replication(m.name, m.epoch, m.targets);
      break;
    case "replicas-failed-result":
      plane!.replicasFailedResult(m.id, m.ok, m.message, m.errno);
      break;
    case "verdict":
      plane!.verdict(m.id, m.verdict);
      break;
    case "gate-result":
      plane!.gateResult(m.name, m.ok, m.message, m.errno);
      break;
    case "shutdown":
      plane!.shutdown().finally(() => post({ type: "stopped" }));
      break;
    case "sync":
      post({ type: "synced", id: m.id });
      break;
    case "debug-crash":
      // A bug's uncaught error, outside any handler: the worker dies of it.
      setTimeout(() => {
        throw new Error(m.message);
      });
      break;
  }
};
