/**
 * Test fixtures for the control plane: a real node (SqliteStateStore on a temp dir,
 * the real data plane with NBD on a free loopback port, VolumeService, NodeRegistry,
 * the Hono app), plus fault-injecting wrappers around the real store and data plane
 * for the failure paths (lost CAS races, a full disk).
 * @module
 */

import { createApi } from "../../control/api/mod.ts";
import { type Logger, silentLogger } from "../../control/common/mod.ts";
import { NodeRegistry } from "../../control/nodes/mod.ts";
import { SqliteStateStore, type SqliteStateStoreOptions } from "../../control/store/sqlite/mod.ts";
import type { Compare, Op, StateStore } from "../../control/store/mod.ts";
import { VolumeService } from "../../control/volumes/mod.ts";
import { startDataPlane } from "../../data/mod.ts";
import type { DataPlane, VolumeSpec } from "../../data/plane.ts";

export const NODE = "node-a";

type RunningPlane = Awaited<ReturnType<typeof startDataPlane>>;

export interface TestNode {
  dir: string;
  store: SqliteStateStore;
  dataPlane: RunningPlane;
  volumes: VolumeService;
  nodes: NodeRegistry;
  app: ReturnType<typeof createApi>;
  logger: Logger;
  /** Stops everything; removes the temp dir unless `keepDir`. */
  close(options?: { keepDir?: boolean }): Promise<void>;
}

/** Starts a real node on `dir` (a new temp dir by default). */
export async function startTestNode(options: {
  dir?: string;
  storeOptions?: SqliteStateStoreOptions;
  wrapStore?: (s: StateStore) => StateStore;
  wrapPlane?: (p: DataPlane) => DataPlane;
  leaseTtlSeconds?: number;
  reconcile?: boolean;
  /** Where the node logs (default: nowhere). */
  logger?: Logger;
} = {}): Promise<TestNode> {
  const dir = options.dir ?? await Deno.makeTempDir({ prefix: "ballast-api-" });
  const logger = options.logger ?? silentLogger();
  const store = SqliteStateStore.open(`${dir}/state.db`, options.storeOptions);
  const dataPlane = await startDataPlane({
    dataDir: dir,
    nbdListen: { host: "127.0.0.1", port: 0 },
    logger,
    nodeName: NODE,
  });
  const s = options.wrapStore ? options.wrapStore(store) : store;
  const p = options.wrapPlane ? options.wrapPlane(dataPlane) : dataPlane;
  const nodes: NodeRegistry = new NodeRegistry({
    store: s,
    dataPlane: p,
    logger,
    nodeName: NODE,
    apiAddress: "http://127.0.0.1:5705",
    version: "test",
    leaseTtlSeconds: options.leaseTtlSeconds ?? 10,
  });
  await nodes.start();
  // As serve wires them: the registry's nodes (cordons) for placement.
  const volumes = new VolumeService({
    store: s,
    dataPlane: p,
    logger,
    nodeName: NODE,
    listNodes: () => nodes.list(),
    getNode: (name) => nodes.get(name),
  });
  if (options.reconcile) await volumes.reconcile();
  const app = createApi({ volumes, nodes, dataPlane: p, logger, nodeName: NODE, store: s });
  return {
    dir,
    store,
    dataPlane,
    volumes,
    nodes,
    app,
    logger,
    async close({ keepDir = false } = {}) {
      await nodes.stop();
      await dataPlane.close();
      await store.close();
      if (!keepDir) await Deno.remove(dir, { recursive: true });
    },
  };
}

// deno-lint-ignore no-explicit-any
type Json = any;

/** Sends a JSON request to the app and returns status, headers and parsed body. */
export async function call(
  app: TestNode["app"],
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; body: Json }> {
  const init: RequestInit = { method, headers: { ...headers } };
  if (body !== undefined) {
    init.body = typeof body === "string" ? body : JSON.stringify(body);
    (init.headers as Record<string, string>)["content-type"] = "application/json";
  }
  const res = await app.request(path, init);
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    // not JSON (metrics)
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** Polls `check` every `pollMs` until it holds; throws naming `what` after `ms`. */
export async function eventually(
  what: string,
  check: () => Promise<boolean> | boolean,
  ms = 5_000,
  pollMs = 50,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** Runs `fn` with an embedded store on a temp dir, then closes it and removes the dir. */
export async function withSqlite(fn: (store: SqliteStateStore) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ballast-store-" });
  const store = SqliteStateStore.open(`${dir}/state.db`);
  try {
    await fn(store);
  } finally {
    await store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * Wraps the real store so that, once armed, each of the next `count` transactions whose
 * compares `match` first runs `before` on the real store (throwing fails the transaction).
 */
export function armedTxnStore(): {
  wrap: (inner: StateStore) => StateStore;
  arm: (
    count: number,
    match: (c: Compare) => boolean,
    before: (inner: StateStore) => Promise<void>,
  ) => void;
} {
  let armed:
    | { left: number; match: (c: Compare) => boolean; before: (s: StateStore) => Promise<void> }
    | undefined;
  return {
    arm(count, match, before) {
      armed = { left: count, match, before };
    },
    wrap: (inner) =>
      new Proxy(inner, {
        get(target, prop, receiver) {
          if (prop === "txn") {
            return async (compares: Compare[], success: Op[], failure?: Op[]) => {
              const a = armed;
              if (a && a.left > 0 && compares.some(a.match)) {
                a.left--;
                await a.before(target);
              }
              return target.txn(compares, success, failure);
            };
          }
          const v = Reflect.get(target, prop, receiver);
          return typeof v === "function" ? v.bind(target) : v;
        },
      }),
  };
}

/**
 * Wraps the real store so that, once armed, the next `count` compare-and-swap
 * transactions on `key` lose a race: just before each, `interleave` rewrites the key
 * as another writer would.
 */
export function racingStore(): {
  wrap: (inner: StateStore) => StateStore;
  arm: (key: string, count: number, interleave: (value: string) => string) => void;
} {
  const armed = armedTxnStore();
  return {
    wrap: armed.wrap,
    arm: (key, count, interleave) =>
      armed.arm(count, (c) => c.key === key && c.target === "modRevision", async (store) => {
        const kv = await store.get(key);
        if (kv) await store.put(key, interleave(kv.value));
      }),
  };
}

/** A data plane whose createVolume/resizeVolume fail like a full disk (errno ENOSPC). */
export function fullDiskPlane(inner: DataPlane): DataPlane {
  const enospc = () =>
    Promise.reject(
      Object.assign(new Error("ENOSPC: no space left on device, fallocate"), { code: "ENOSPC" }),
    );
  return new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop === "createVolume") return (_spec: VolumeSpec) => enospc();
      if (prop === "resizeVolume") return (_n: string, _s: number) => enospc();
      const v = Reflect.get(target, prop, receiver);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/**
 * Opens an NBD connection to `exportName` with the fixed newstyle handshake and
 * NBD_OPT_EXPORT_NAME (doc/proto.md, "Fixed newstyle negotiation"), and keeps it open.
 */
export async function attachNbd(address: string, exportName: string): Promise<Deno.TcpConn> {
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), address.split(":").pop()!];
  const conn = await Deno.connect({ hostname: host, port: Number(port) });
  await readExactly(conn, 18); // NBDMAGIC, IHAVEOPT, handshake flags
  const name = new TextEncoder().encode(exportName);
  const msg = new Uint8Array(4 + 16 + name.length);
  const dv = new DataView(msg.buffer);
  dv.setUint32(0, 1 | 2); // client flags: FIXED_NEWSTYLE | NO_ZEROES
  dv.setBigUint64(4, 0x49484156454f5054n); // IHAVEOPT
  dv.setUint32(12, 1); // NBD_OPT_EXPORT_NAME
  dv.setUint32(16, name.length);
  msg.set(name, 20);
  await conn.write(msg);
  await readExactly(conn, 10); // export size + transmission flags
  return conn;
}

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const got = await conn.read(buf.subarray(off));
    if (got === null) throw new Error(`NBD server closed the connection after ${off} bytes`);
    off += got;
  }
  return buf;
}
