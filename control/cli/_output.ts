/**
 * CLI output: stdout for results, stderr for errors and notes, written with
 * writeSync (no console.*). Tables are aligned in columns like kubectl's.
 * @module
 */

/** Where the CLI writes. Tests pass a capturing implementation. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
  env(name: string): string | undefined;
  /**
   * stdout's width when it is a terminal (live views redraw in place; 0: width unknown);
   * undefined when it is not one.
   */
  terminal?(): { columns: number } | undefined;
  /** Calls `fn` on Ctrl-C (SIGINT) until the returned function is called. */
  onInterrupt?(fn: () => void): () => void;
}

function writeAll(file: { writeSync(p: Uint8Array): number }, text: string): void {
  const bytes = new TextEncoder().encode(text);
  let off = 0;
  while (off < bytes.length) off += file.writeSync(bytes.subarray(off));
}

/** The process's stdout/stderr and environment. */
export const processIo: Io = {
  out: (text) => {
    try {
      writeAll(Deno.stdout, text);
    } catch (err) {
      // The reader went away (`ballast ca list | head`): stop quietly, like other Unix tools.
      if (err instanceof Deno.errors.BrokenPipe) Deno.exit(0);
      throw err;
    }
  },
  err: (text) => writeAll(Deno.stderr, text),
  env: (name) => Deno.env.get(name),
  terminal: () => {
    if (!Deno.stdout.isTerminal()) return undefined;
    try {
      return { columns: Deno.consoleSize().columns };
    } catch {
      return { columns: 80 };
    }
  },
  onInterrupt: (fn) => {
    Deno.addSignalListener("SIGINT", fn);
    return () => Deno.removeSignalListener("SIGINT", fn);
  },
};

/** An Io that records everything (tests). */
export function captureIo(
  env: Record<string, string> = {},
): Io & { stdout: string; stderr: string } {
  const io = {
    stdout: "",
    stderr: "",
    out(text: string) {
      io.stdout += text;
    },
    err(text: string) {
      io.stderr += text;
    },
    env: (name: string) => env[name],
  };
  return io;
}

/** Renders rows under headers, columns separated by three spaces, no trailing blanks. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => i === cells.length - 1 ? c : c.padEnd(widths[i])).join("   ").trimEnd();
  return [line(headers), ...rows.map(line)].join("\n") + "\n";
}

/** "Key:   value" lines with values aligned. */
export function fields(pairs: Array<[string, string]>): string {
  const w = Math.max(...pairs.map(([k]) => k.length)) + 1;
  return pairs.map(([k, v]) => `${(k + ":").padEnd(w)}  ${v}`.trimEnd()).join("\n") + "\n";
}

/** kubectl-style age: 45s, 12m, 3h, 5d, 2y. */
export function age(since: string, now = Date.now()): string {
  const t = Date.parse(since);
  if (Number.isNaN(t)) return "-";
  const s = Math.max(0, Math.floor((now - t) / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 120) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h`;
  const d = Math.floor(h / 24);
  if (d < 730) return `${d}d`;
  return `${Math.floor(d / 365)}y`;
}

/** Pretty JSON with a trailing newline. */
export function json(value: unknown): string {
  return JSON.stringify(value, null, 2) + "\n";
}
