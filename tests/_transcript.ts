/**
 * Scenario transcripts for pure cores, in the style of etcd-io/raft's `testdata/*.txt`
 * (cockroachdb/datadriven): a file of cases, each a command line, `----`, and the output
 * the core must produce, ending at a blank line. `#` lines are comments.
 *
 *     # A client that asks for TLS first
 *     option STARTTLS
 *     ----
 *     reply STARTTLS ACK
 *     action starttls
 *
 * runTranscript() feeds every command to a handler (one per file, state carried between
 * cases) and compares what it returns with the file. A mismatch names the file and line
 * and shows both. With BALLAST_REWRITE=1 the files are rewritten with what the handler
 * produced instead (review the diff before committing it).
 * @module
 */

import { assertEquals, fail } from "./_assert.ts";

/** One command line: its name, positional words and key=value arguments. */
export interface Command {
  name: string;
  args: string[];
  kv: Map<string, string>;
  /** The whole line, for messages. */
  line: string;
  /** Where it stands in its file. */
  where: string;
}

interface Case {
  command: Command;
  /** Lines before the command (comments, blank lines), kept when rewriting. */
  preamble: string[];
  expected: string;
}

/** Splits a command line; values may be double-quoted (`msg="a b"`). */
export function parseCommand(line: string, where: string): Command {
  const words: string[] = [];
  const re = /(\S+?=)?"((?:[^"\\]|\\.)*)"|\S+/g;
  for (const m of line.matchAll(re)) {
    words.push(m[2] !== undefined ? `${m[1] ?? ""}${m[2].replace(/\\(.)/g, "$1")}` : m[0]);
  }
  const [name, ...rest] = words;
  const args: string[] = [];
  const kv = new Map<string, string>();
  for (const w of rest) {
    const eq = w.indexOf("=");
    if (eq > 0) kv.set(w.slice(0, eq), w.slice(eq + 1));
    else args.push(w);
  }
  return { name, args, kv, line, where };
}

function parseFile(path: string, text: string): { cases: Case[]; trailer: string[] } {
  const lines = text.split("\n");
  const cases: Case[] = [];
  let preamble: string[] = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "" || line.startsWith("#")) {
      preamble.push(line);
      i++;
      continue;
    }
    const where = `${path}:${i + 1}`;
    if (lines[i + 1] !== "----") fail(`${where}: expected "----" after the command`);
    const out: string[] = [];
    i += 2;
    while (i < lines.length && lines[i] !== "") out.push(lines[i++]);
    cases.push({ command: parseCommand(line, where), preamble, expected: out.join("\n") });
    preamble = [];
  }
  return { cases, trailer: preamble };
}

/**
 * Runs every case of the transcript at `path` through `handle` (which returns the output,
 * several lines joined by "\n", never a blank line) and compares.
 */
export async function runTranscript(
  path: string,
  handle: (c: Command) => string,
): Promise<void> {
  const text = await Deno.readTextFile(path);
  const { cases, trailer } = parseFile(path, text);
  if (cases.length === 0) fail(`${path}: no cases`);
  const rewrite = Deno.env.get("BALLAST_REWRITE") === "1";
  const out: string[] = [];
  for (const c of cases) {
    let got: string;
    try {
      got = handle(c.command).trimEnd();
    } catch (err) {
      got = `error: ${err instanceof Error ? err.message : String(err)}`;
    }
    if (got.split("\n").some((l) => l.trim() === "")) {
      fail(`${c.command.where}: the handler produced a blank line for ${c.command.line}`);
    }
    if (rewrite) out.push(...c.preamble, c.command.line, "----", got);
    else assertEquals(got, c.expected, `${c.command.where}: ${c.command.line}`);
  }
  if (rewrite) await Deno.writeTextFile(path, [...out, ...trailer].join("\n"));
}

/** The transcript files under `dir` (a path relative to the calling test's URL). */
export function transcriptFiles(dir: URL): string[] {
  const files: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    if (e.isFile && e.name.endsWith(".txt")) files.push(new URL(e.name, dir).pathname);
  }
  return files.sort();
}
