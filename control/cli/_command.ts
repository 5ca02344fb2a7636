/**
 * Command specs: one description per command drives both argument parsing
 * (node:util parseArgs, strict) and its --help text, so the two never disagree.
 * Exit codes, one rule whoever finds the mistake: 2 when the command as typed is invalid (a
 * UsageError the CLI finds, or INVALID_ARGUMENT from the CLI's own checks or the server's),
 * 1 when a valid request failed (not found, exists, unavailable, refused, ...).
 * @module
 */

import { parseArgs } from "node:util";
import { DEFAULT_API_URL } from "../../mod/client.ts";
import { BallastError, errorMessage } from "../../mod/errors.ts";
import { CREDENTIAL_FLAGS } from "./_credentials.ts";
import type { Io } from "./_output.ts";
import type { CommandSpec, FlagSpec, Parsed } from "./_spec.ts";

export type { CommandSpec, FlagSpec, Parsed };

/** A command: gets its arguments (after the command word) and returns an exit code. */
export type Command = (args: string[], io: Io) => Promise<number>;

/** A command-line mistake: exit code 2 with the relevant usage hint. */
export class UsageError extends Error {
  override name = "UsageError";
  constructor(message: string, readonly usage: string) {
    super(message);
  }
}

export const GLOBAL_FLAGS: FlagSpec[] = [
  {
    name: "api",
    value: "URL",
    help: "API address of a Ballast node",
    env: "BALLAST_API",
    default: "the URL the --data-dir node recorded (DIR/api-url), else https://127.0.0.1:5705 " +
      "when credentials are found, else http://127.0.0.1:5705",
  },
  { name: "output", short: "o", value: "FORMAT", help: "table or json", default: "table" },
  {
    name: "request-timeout",
    value: "DURATION",
    help: "how long to wait for each answer of the node, e.g. 5s or 2m (drain and verify " +
      "wait for their own longer bounds)",
    env: "BALLAST_REQUEST_TIMEOUT",
    default: "30s",
  },
  ...CREDENTIAL_FLAGS,
];
const HELP_FLAG: FlagSpec = { name: "help", short: "h", help: "show this help" };

/** Renders the --help text of a command. */
export function helpText(spec: CommandSpec): string {
  const lines = [
    `Usage: ballast ${spec.path}${spec.args ? " " + spec.args : ""}`,
    "",
    spec.summary,
  ];
  if (spec.subcommands?.length) {
    lines.push("", "Commands:");
    const w = Math.max(...spec.subcommands.map(([n]) => n.length));
    for (const [n, h] of spec.subcommands) lines.push(`  ${n.padEnd(w)}   ${h}`);
  }
  const globals = [...(spec.client ? GLOBAL_FLAGS : []), HELP_FLAG];
  const leftOf = (f: FlagSpec) =>
    `${f.short ? `-${f.short}, ` : "    "}--${f.name}${f.value ? ` ${f.value}` : ""}`;
  const w = Math.max(...[...spec.flags, ...globals].map((f) => leftOf(f).length));
  const flagLines = (flags: FlagSpec[]) => {
    const left = flags.map(leftOf);
    return flags.map((f, i) => {
      const extra = [
        f.multiple ? "repeatable" : "",
        f.env ? `env ${f.env}` : "",
        f.default !== undefined ? `default ${f.default}` : "",
      ].filter(Boolean).join(", ");
      return `  ${left[i].padEnd(w)}   ${f.help}${extra ? ` (${extra})` : ""}`;
    });
  };
  if (spec.flags.length) lines.push("", "Flags:", ...flagLines(spec.flags));
  const not = spec.offline?.length ? ` (not for ${spec.offline.join(", ")})` : "";
  lines.push("", `Global flags${spec.client ? not : ""}:`, ...flagLines(globals));
  if (spec.examples.length) {
    lines.push("", spec.examples.length > 1 ? "Examples:" : "Example:");
    for (const e of spec.examples) lines.push(`  ${e}`);
  }
  return lines.join("\n") + "\n";
}

/**
 * Parses a group command (`ballast volume create ...`): picks the subcommand's spec and
 * parses its flags. Prints the group's or the subcommand's help and returns undefined
 * for --help; throws UsageError for a missing or unknown subcommand.
 */
export function parseGroup(
  group: CommandSpec,
  specs: Readonly<Record<string, CommandSpec>>,
  args: string[],
  io: Io,
): { sub: string; spec: CommandSpec; p: Parsed } | undefined {
  const split = splitCommandWord(args);
  const sub = split.word;
  const spec = sub === undefined ? undefined : specs[sub];
  if (!spec) {
    if (sub === "-h" || sub === "--help" || sub === "help") {
      // `ballast volume help create` is `ballast volume create --help`, as `help volume create`.
      const named = sub === "help" ? specs[split.rest[0] ?? ""] : undefined;
      io.out(helpText(named ?? group));
      return undefined;
    }
    throw new UsageError(
      sub === undefined ? "missing command" : `unknown command "${group.path} ${sub}"`,
      usageHint(group),
    );
  }
  const p = parseCommand(spec, [...split.rest, ...split.globals], io);
  if (p.help) {
    io.out(helpText(spec));
    return undefined;
  }
  return { sub: sub!, spec, p };
}

/** Parses `args` per `spec`; throws UsageError on unknown flags or missing values. */
export function parseCommand(spec: CommandSpec, args: string[], io: Io): Parsed {
  const options: Record<
    string,
    { type: "string" | "boolean"; short?: string; multiple?: boolean }
  > = {};
  // A command that talks to no node takes none of the client flags (--api, -o, credentials):
  // `systemd-unit -o json` or `ca init --cacert F` would otherwise be silently ignored.
  for (const f of [...spec.flags, ...(spec.client === false ? [] : GLOBAL_FLAGS), HELP_FLAG]) {
    options[f.name] = {
      type: f.value ? "string" : "boolean",
      ...(f.short ? { short: f.short } : {}),
      ...(f.multiple ? { multiple: true } : {}),
    };
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: normalizeArgs(args, options),
      options,
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError(cleanParseError(err as Error), usageHint(spec));
  }
  const values = parsed.values as Parsed["values"];
  const output = (values.output as string | undefined) ?? "table";
  if (output !== "table" && output !== "json") {
    throw new UsageError(
      `invalid --output "${output}": expected table or json`,
      usageHint(spec),
    );
  }
  const fromFlag = values.api as string | undefined;
  const api = fromFlag ?? (io.env("BALLAST_API") || undefined) ?? DEFAULT_API_URL; // empty: unset
  const source = fromFlag !== undefined ? "--api" : "BALLAST_API";
  if (!/^https?:\/\/[^/\s]+/.test(api)) {
    throw new UsageError(
      `invalid ${source} "${api}": expected a URL such as https://127.0.0.1:5705 ` +
        "(http:// only for a node run with --tls off)",
      usageHint(spec),
    );
  }
  if (!/^https?:\/\/[^/\s]+\/?$/.test(api)) {
    throw new UsageError(
      `invalid ${source} "${api}": give the node's address without a path, such as ` +
        "https://127.0.0.1:5705 (the CLI adds /v1/...)",
      usageHint(spec),
    );
  }
  return { values, positionals: parsed.positionals, help: values.help === true, api, output };
}

/**
 * Two spellings parseArgs gets wrong, before it sees them: `-o=json` (parseArgs would read
 * the value "=json") becomes `-o json`, and `--size -1GiB` becomes `--size=-1GiB` (parseArgs
 * would say "needs a value"), so the flag's own check can say what is wrong with it.
 */
function normalizeArgs(
  args: string[],
  options: Record<string, { type: "string" | "boolean"; short?: string }>,
): string[] {
  const shortWithValue = new Set(
    Object.values(options).filter((o) => o.type === "string" && o.short).map((o) => o.short),
  );
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--") {
      out.push(...args.slice(i));
      break;
    }
    const short = /^-([A-Za-z])=(.*)$/s.exec(args[i]);
    if (short && shortWithValue.has(short[1])) {
      out.push(`-${short[1]}`, short[2]);
      continue;
    }
    const name = /^--([^=]+)$/.exec(args[i])?.[1];
    const next = args[i + 1];
    if (
      name !== undefined && options[name]?.type === "string" && next !== undefined &&
      /^-[\d.]/.test(next)
    ) {
      out.push(`${args[i]}=${next}`);
      i++;
    } else {
      out.push(args[i]);
    }
  }
  return out;
}

/** Requires exactly the named positional arguments. */
export function requirePositionals(spec: CommandSpec, parsed: Parsed, names: string[]): string[] {
  const got = parsed.positionals;
  if (got.length < names.length) {
    throw new UsageError(`missing argument ${names[got.length]}`, usageHint(spec));
  }
  if (got.length > names.length) {
    throw new UsageError(`unexpected argument "${got[names.length]}"`, usageHint(spec));
  }
  return got;
}

/** The short hint printed after a usage error. */
export function usageHint(spec: CommandSpec): string {
  return `usage: ballast ${spec.path}${spec.args ? " " + spec.args : ""}\n` +
    `Run 'ballast ${spec.path} --help' for details.`;
}

function cleanParseError(err: Error): string {
  const m = err.message;
  const unknown = /Unknown option '([^']+)'/.exec(m);
  if (unknown) return `unknown flag ${unknown[1]}`;
  const missing = /Option '([^']+)' argument (missing|is ambiguous)/.exec(m);
  if (missing) {
    return `flag ${missing[1].replace(/^-\w, /, "").replace(/ <value>$/, "")} needs a value`;
  }
  const noValue = /Option '([^']+)' does not take an argument/.exec(m);
  if (noValue) return `flag ${noValue[1].replace(/^-\w, /, "")} does not take a value`;
  return m.split("\n")[0].replace(/\. To specify.*$/, "");
}

/** Exit code of a valid request that failed. */
export const EXIT_FAILED = 1;
/** Exit code of an invalid command line or request, found by the CLI or by the server. */
export const EXIT_INVALID = 2;

/** The API's field names that stand for a flag of the CLI, as the server's messages name them. */
const FIELD_FLAGS: Readonly<Record<string, string>> = {
  spreadBy: "--spread-by",
  replicas: "--replicas",
  size: "--size",
  sizeBytes: "--size",
  labels: "--label",
  description: "--description",
  ttl: "--ttl",
  overlap: "--overlap",
};

/** The message of `err`, "invalid spreadBy ..." said as "invalid --spread-by ..." (a server's). */
function asFlags(err: BallastError): string {
  const field = err.details?.field;
  const flag = typeof field === "string" && Object.hasOwn(FIELD_FLAGS, field)
    ? FIELD_FLAGS[field]
    : undefined;
  return flag ? err.message.replace(`invalid ${field} `, `invalid ${flag} `) : err.message;
}

/**
 * Runs a command body and turns errors into exit codes: 0 ok, EXIT_FAILED (`error: ...` on
 * stderr), EXIT_INVALID for a UsageError (message and usage hint on stderr) or any
 * INVALID_ARGUMENT, whether the CLI or the server found it.
 */
export async function runGuarded(io: Io, body: () => Promise<number | void>): Promise<number> {
  try {
    return (await body()) ?? 0;
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`error: ${err.message}\n${err.usage}\n`);
      return EXIT_INVALID;
    }
    if (err instanceof BallastError) {
      io.err(`error: ${asFlags(err)}\n`);
      return err.code === "INVALID_ARGUMENT" ? EXIT_INVALID : EXIT_FAILED;
    }
    io.err(`error: ${errorMessage(err)}\n`);
    return EXIT_FAILED;
  }
}

/**
 * The entry point of a command without subcommands (`serve`, `version`, `ca init`): parses
 * `args` per `spec`, prints --help, and runs `body` under runGuarded's exit codes.
 */
export function command(
  spec: CommandSpec,
  body: (p: Parsed, io: Io) => Promise<number | void>,
): Command {
  return (args, io) =>
    runGuarded(io, async () => {
      const p = parseCommand(spec, args, io);
      if (p.help) {
        io.out(helpText(spec));
        return 0;
      }
      return await body(p, io);
    });
}

/**
 * The entry point of a group command (`volume`, `node`, `ca`, `cluster`): picks the
 * subcommand, prints the group's or the subcommand's --help, and runs `body` under
 * runGuarded's exit codes.
 */
export function groupCommand(
  group: CommandSpec,
  specs: Readonly<Record<string, CommandSpec>>,
  body: (cmd: { sub: string; spec: CommandSpec; p: Parsed }, io: Io) => Promise<number | void>,
): Command {
  return (args, io) =>
    runGuarded(io, async () => {
      const parsed = parseGroup(group, specs, args, io);
      if (!parsed) return 0;
      return await body(parsed, io);
    });
}

/** Global flags that take a value (--api, -o/--output, the credential flags), as typed. */
const HOISTED_WITH_VALUE = new Set(
  GLOBAL_FLAGS.filter((f) => f.value).flatMap((f) => [
    `--${f.name}`,
    ...(f.short ? [`-${f.short}`] : []),
  ]),
);

/**
 * Splits global flags (--api URL, -o FORMAT, --cacert FILE, ...) given before the command
 * word from the rest, so `ballast -o json volume list` works like `ballast volume list -o json`.
 * Returns the command word, the remaining args and the hoisted globals (to append).
 */
export function splitCommandWord(
  args: string[],
): { word: string | undefined; rest: string[]; globals: string[] } {
  const globals: string[] = [];
  let i = 0;
  while (i < args.length) {
    const a = args[i];
    const eq = a.indexOf("=");
    if (HOISTED_WITH_VALUE.has(a)) {
      globals.push(a, ...(i + 1 < args.length ? [args[i + 1]] : []));
      i += 2;
    } else if ((eq > 0 && HOISTED_WITH_VALUE.has(a.slice(0, eq))) || /^-o(table|json)$/.test(a)) {
      globals.push(a);
      i++;
    } else {
      if (a === "--") i++; // the end of the flags: the command follows
      break;
    }
  }
  return { word: args[i], rest: args.slice(i + 1), globals };
}
