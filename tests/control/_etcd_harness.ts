/**
 * Starts real etcd members (Debian etcd-server 3.4) on loopback for tests: one
 * member or a 3-member cluster, optionally with client TLS and client-certificate
 * authentication (certificates made with openssl). Every member gets a temp data
 * dir and free ports on 127.0.0.1; all of it is removed by stop(), and any member
 * still running when the test process exits is killed.
 * @module
 */

import { freePort } from "../_ports.ts";

/** Whether the etcd binaries are installed (tests skip honestly when not). */
export const ETCD_INSTALLED: boolean = ["etcd", "etcdctl"].every(onPath);

function onPath(cmd: string): boolean {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${cmd}`).isFile) return true;
    } catch { /* not here */ }
  }
  return false;
}

/** PEM material of a cluster started with tls: the CA, and one cert valid as server and client. */
export interface EtcdTlsMaterial {
  caPem: string;
  certPem: string;
  keyPem: string;
}

export interface EtcdCluster {
  /** Client URLs, one per member, e.g. http://127.0.0.1:40123. */
  endpoints: string[];
  /** Present when started with tls. */
  tls?: EtcdTlsMaterial;
  /** Member data dirs' parent (logs are in <dir>/m<i>.log). */
  dir: string;
  stop(): Promise<void>;
  /** SIGKILLs member i. */
  killMember(i: number): Promise<void>;
  /** Starts member i again on its data dir and ports; waits until it is healthy. */
  restartMember(i: number): Promise<void>;
  /** Index of the current leader (waits for one to be elected). */
  leaderIndex(): Promise<number>;
  /** SIGSTOPs member i (it keeps its sockets but answers nothing); undo with resumeMember. */
  pauseMember(i: number): void;
  /** SIGCONTs member i after pauseMember. */
  resumeMember(i: number): void;
  /** Process id of member i while it runs (the etcd process itself), else undefined. */
  memberPid(i: number): number | undefined;
}

const running = new Set<Deno.ChildProcess>();
const dirs = new Set<string>();
globalThis.addEventListener("unload", () => {
  for (const child of running) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }
  for (const dir of dirs) {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch { /* gone */ }
  }
});

async function run(cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed: ${text}`);
  return text;
}

/** A CA and one certificate for 127.0.0.1 with serverAuth + clientAuth (X.509 v3). */
async function makeTls(dir: string): Promise<EtcdTlsMaterial> {
  await run("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=etcd test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ], dir);
  await run("openssl", [
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    "node.key",
    "-out",
    "node.csr",
    "-subj",
    "/CN=etcd",
  ], dir);
  await Deno.writeTextFile(
    `${dir}/ext.cnf`,
    [
      "basicConstraints=critical,CA:FALSE",
      "keyUsage=critical,digitalSignature,keyEncipherment",
      "extendedKeyUsage=serverAuth,clientAuth",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
      "",
    ].join("\n"),
  );
  await run("openssl", [
    "x509",
    "-req",
    "-in",
    "node.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "node.pem",
    "-days",
    "2",
    "-extfile",
    "ext.cnf",
  ], dir);
  return {
    caPem: await Deno.readTextFile(`${dir}/ca.pem`),
    certPem: await Deno.readTextFile(`${dir}/node.pem`),
    keyPem: await Deno.readTextFile(`${dir}/node.key`),
  };
}

/** Starts `members` etcd members on loopback and waits until all are healthy. */
export async function startEtcd(
  options: { members?: 1 | 3; tls?: boolean } = {},
): Promise<EtcdCluster> {
  const n = options.members ?? 1;
  const dir = await Deno.makeTempDir({ prefix: "ballast-etcd-" });
  dirs.add(dir);
  const tls = options.tls ? await makeTls(dir) : undefined;
  const scheme = tls ? "https" : "http";
  const members = Array.from({ length: n }, (_, i) => ({
    name: `m${i}`,
    client: "",
    peer: "",
    child: undefined as Deno.ChildProcess | undefined,
  }));
  let initialCluster = "";
  const pickPorts = () => {
    for (const m of members) {
      m.client = `${scheme}://127.0.0.1:${freePort()}`;
      m.peer = `http://127.0.0.1:${freePort()}`;
    }
    initialCluster = members.map((m) => `${m.name}=${m.peer}`).join(",");
  };
  const tlsArgs = tls
    ? [
      "--client-cert-auth",
      `--trusted-ca-file=${dir}/ca.pem`,
      `--cert-file=${dir}/node.pem`,
      `--key-file=${dir}/node.key`,
    ]
    : [];
  const ctlTls = tls
    ? [`--cacert=${dir}/ca.pem`, `--cert=${dir}/node.pem`, `--key=${dir}/node.key`]
    : [];

  const spawn = (i: number) => {
    const m = members[i];
    const args = [
      `--name=${m.name}`,
      `--data-dir=${dir}/${m.name}`,
      `--listen-client-urls=${m.client}`,
      `--advertise-client-urls=${m.client}`,
      `--listen-peer-urls=${m.peer}`,
      `--initial-advertise-peer-urls=${m.peer}`,
      `--initial-cluster=${initialCluster}`,
      "--initial-cluster-state=new",
      `--initial-cluster-token=${dir}`,
      "--log-level=warn",
      "--logger=zap",
      ...tlsArgs,
    ];
    const quoted = args.map((a) => `'${a}'`).join(" ");
    m.child = new Deno.Command("sh", {
      args: ["-c", `exec etcd ${quoted} >>'${dir}/${m.name}.log' 2>&1`],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    running.add(m.child);
  };

  const ctl = (endpoints: string[], args: string[]) =>
    run("etcdctl", [`--endpoints=${endpoints.join(",")}`, "--dial-timeout=1s", ...ctlTls, ...args]);

  const waitHealthy = async (endpoints: string[]) => {
    const deadline = Date.now() + 30_000;
    while (true) {
      try {
        await ctl(endpoints, ["endpoint", "health", "--command-timeout=2s"]);
        return;
      } catch (err) {
        const logs = await Promise.all(
          members.map((m) => Deno.readTextFile(`${dir}/${m.name}.log`).catch(() => "")),
        );
        // A member that lost its port exits at once: no use waiting out the deadline.
        if (Date.now() > deadline || logs.some((l) => l.includes("address already in use"))) {
          throw new Error(`etcd did not become healthy: ${err}\n${logs.join("\n")}`);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };

  const kill = async (i: number) => {
    const child = members[i].child;
    if (!child) return;
    members[i].child = undefined;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
    running.delete(child);
  };

  // A port free when picked can still be taken by another process before etcd binds it: start
  // again on fresh ports (and fresh member dirs) when a member says so, up to three times.
  for (let attempt = 1;; attempt++) {
    pickPorts();
    for (let i = 0; i < n; i++) spawn(i);
    try {
      await waitHealthy(members.map((m) => m.client));
      break;
    } catch (err) {
      for (let i = 0; i < n; i++) await kill(i);
      if (attempt >= 3 || !/address already in use/.test(String(err))) throw err;
      for (const m of members) {
        await Deno.remove(`${dir}/${m.name}`, { recursive: true }).catch(() => {});
        await Deno.rename(`${dir}/${m.name}.log`, `${dir}/${m.name}.attempt${attempt}.log`)
          .catch(() => {});
      }
    }
  }

  return {
    endpoints: members.map((m) => m.client),
    tls,
    dir,
    async stop() {
      for (let i = 0; i < n; i++) await kill(i);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      dirs.delete(dir);
    },
    killMember: kill,
    pauseMember(i) {
      const child = members[i].child;
      if (!child) throw new Error(`etcd member ${i} is not running`);
      Deno.kill(child.pid, "SIGSTOP");
    },
    resumeMember(i) {
      const child = members[i].child;
      if (child) Deno.kill(child.pid, "SIGCONT");
    },
    memberPid: (i) => members[i].child?.pid,
    async restartMember(i) {
      await kill(i);
      spawn(i);
      await waitHealthy([members[i].client]);
    },
    async leaderIndex() {
      const deadline = Date.now() + 20_000;
      while (true) {
        const live = members.filter((m) => m.child).map((m) => m.client);
        try {
          const out = await ctl(live, ["endpoint", "status", "-w", "json"]);
          const statuses = JSON.parse(out) as {
            Endpoint: string;
            Status: { header: { member_id: number }; leader: number };
          }[];
          const leader = statuses.find((s) => s.Status.leader === s.Status.header.member_id);
          if (leader) return members.findIndex((m) => m.client === leader.Endpoint);
        } catch { /* no quorum yet */ }
        if (Date.now() > deadline) throw new Error("etcd elected no leader in 20 s");
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
}
