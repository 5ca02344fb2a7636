/**
 * The shapes of a command's description and of its parsed arguments, shared by the parser
 * (_command.ts) and the credential flags (_credentials.ts).
 * @module
 */

export interface FlagSpec {
  name: string;
  short?: string;
  /** Placeholder of the value; absent for a boolean flag. */
  value?: string;
  help: string;
  default?: string;
  env?: string;
  multiple?: boolean;
}

export interface CommandSpec {
  /** "volume create" */
  path: string;
  /** "NAME --size SIZE [flags]" */
  args: string;
  summary: string;
  flags: FlagSpec[];
  /** Whether the global --api/-o flags apply. */
  client: boolean;
  /** Group commands: subcommands that talk to no node, so take none of the global flags. */
  offline?: string[];
  examples: string[];
  /** Subcommands, for group commands such as `volume`. */
  subcommands?: Array<[string, string]>;
}

/** Parsed arguments of a command. */
export interface Parsed {
  values: Record<string, string | string[] | boolean | undefined>;
  positionals: string[];
  help: boolean;
  api: string;
  output: "table" | "json";
}
