/**
 * Process helpers for scripts/bench.ts: spawning servers with captured logs, waiting for
 * ports, looking up tools.
 * @module
 */

import { fileURLToPath } from "node:url";

/** The repository root (cwd of every spawned process). */
export const ROOT = fileURLToPath(new URL("..", import.meta.url));

export interface Proc {
  name: string;
  command: string;
  child: Deno.ChildProcess;
  logs(): string;
  exitStatus(): Deno.CommandStatus | undefined;
  stop(): Promise<void>;
}

/**
 * Starts `cmd args` with its output captured: the last 64 KiB in memory (`logs()`), and
 * everything appended to `logFile` when given (for lines that must not be missed, e.g. a
 * node's "resync finished").
 */
export function spawn(
  name: string,
  cmd: string,
  args: string[],
  env: Record<string, string> = {},
  logFile?: string,
): Proc {
  const child = new Deno.Command(cmd, {
    args,
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  let text = "";
  const file = logFile
    ? Deno.openSync(logFile, { write: true, create: true, append: true })
    : undefined;
  const pump = async (s: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of s) {
      for (let off = 0; file && off < chunk.length;) off += file.writeSync(chunk.subarray(off));
      text = (text + decoder.decode(chunk, { stream: true })).slice(-64 * 1024);
    }
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]).finally(() => file?.close());
  let status: Deno.CommandStatus | undefined;
  const done = child.status.then(async (s) => {
    status = s;
    await pumps;
  });
  return {
    name,
    command: [...Object.entries(env).map(([k, v]) => `${k}=${v}`), cmd, ...args].join(" "),
    child,
    logs: () => text,
    exitStatus: () => status,
    stop: async () => {
      if (!status) {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        const t = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch { /* gone */ }
        }, 10_000);
        await done;
        clearTimeout(t);
      }
      await done;
    },
  };
}

export function lastLines(text: string, n = 15): string {
  return text.trimEnd().split("\n").slice(-n).map((l) => `    | ${l}`).join("\n");
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until something listens on 127.0.0.1:port, or throws if the process exits or time runs out. */
export async function waitForPort(p: Proc, port: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const st = p.exitStatus();
    if (st) throw new Error(`${p.name} exited (code ${st.code}) before listening on port ${port}`);
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      return;
    } catch {
      await sleep(100);
    }
  }
  throw new Error(`${p.name} did not listen on 127.0.0.1:${port} within ${timeoutMs} ms`);
}

/** Runs `wait`; on failure stops the process and rethrows with its command and last log lines. */
export async function waitOrStop(proc: Proc, wait: () => Promise<void>): Promise<void> {
  try {
    await wait();
  } catch (err) {
    await proc.stop();
    throw new Error(
      `${(err as Error).message}\n  command: ${proc.command}\n${lastLines(proc.logs())}`,
    );
  }
}

export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

export async function haveTool(name: string): Promise<boolean> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    try {
      const st = await Deno.stat(`${dir}/${name}`);
      if (st.isFile && ((st.mode ?? 0) & 0o111) !== 0) return true;
    } catch { /* next */ }
  }
  return false;
}

export async function toolVersion(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stdin: "null" }).output();
    return new TextDecoder().decode(out.stdout).split("\n")[0].trim();
  } catch {
    return "unknown";
  }
}
