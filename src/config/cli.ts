/**
 * Command-line parsing, by hand. Every config key is a flag `--section.key VALUE` (or
 * `--section.key=VALUE`); the short aliases (`--port`, `--log-level`...) come from the schema, so the
 * flags, the help text and the config file cannot drift apart.
 *
 * @module
 */

import { DEFAULT_CONFIG_PATH } from "./load.ts";
import type { CliFlags } from "./load.ts";
import { type AnySpec, KEYS, LISTENERS_DOC } from "./schema.ts";

/** What the command line asks for. */
export type ParsedArgs =
  /** Run the broker with this config file (undefined = the default path) and these overrides. */
  | { command: "run"; configPath: string | undefined; flags: CliFlags }
  | { command: "help" }
  | { command: "version" }
  /** `passwd FILE USER [-D]`: manage the password file; `args` are the words after `passwd`. */
  | { command: "passwd"; args: string[] };

/** A malformed command line (unknown flag, missing value...): print it with a hint, exit 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** Flag name (without `--`) to dotted config key, for every key and every alias. */
const FLAG_TO_KEY: ReadonlyMap<string, string> = new Map([
  ...KEYS.map(({ key }) => [key, key] as const),
  ...KEYS.filter(({ spec }) => spec.alias !== undefined).map(({ key, spec }) =>
    [spec.alias!.slice(2), key] as const
  ),
  ["listeners", "listeners"],
]);

/**
 * Parses the program arguments (without the program name).
 *
 * @throws {UsageError} on an unknown flag, a flag without its value or a stray positional argument.
 */
export function parseArgs(args: readonly string[]): ParsedArgs {
  if (args[0] === "passwd") return { command: "passwd", args: args.slice(1) };
  let configPath: string | undefined;
  let wantsHelp = false;
  let wantsVersion = false;
  const flags: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--help" || arg === "-h") {
      wantsHelp = true;
      continue;
    }
    if (arg === "--version" || arg === "-V") {
      wantsVersion = true;
      continue;
    }
    if (!arg.startsWith("--") || arg === "--") {
      throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
    }
    const equals = arg.indexOf("=");
    const name = equals === -1 ? arg.slice(2) : arg.slice(2, equals);
    let value: string;
    if (equals !== -1) {
      value = arg.slice(equals + 1);
    } else {
      const next = args[i + 1];
      if (next === undefined || next.startsWith("--")) throw new UsageError(`flag --${name} needs a value`);
      value = next;
      i++;
    }
    if (name === "config") {
      configPath = value;
      continue;
    }
    const key = FLAG_TO_KEY.get(name);
    if (key === undefined) throw new UsageError(`unknown flag --${name}`);
    flags[key] = value;
  }
  if (wantsHelp) return { command: "help" };
  if (wantsVersion) return { command: "version" };
  return { command: "run", configPath, flags };
}

/** The `--help` text, listing every flag with its default. */
export function helpText(name: string, version: string): string {
  const rows: [string, string][] = [
    ["--config PATH", `YAML config file (default ${DEFAULT_CONFIG_PATH}; may be absent only at that path)`],
    ["--help, -h", "print this help and exit"],
    ["--version, -V", "print the version and exit"],
  ];
  for (const { key, spec } of KEYS) {
    const flag = spec.alias === undefined ? `--${key}` : `--${key}, ${spec.alias}`;
    rows.push([`${flag} ${placeholder(spec)}`, `${spec.doc} (default ${showDefault(spec)})`]);
  }
  rows.push(["--listeners LIST", `${LISTENERS_DOC} (default [])`]);
  return [
    `${name} ${version}: an MQTT 3.1 / 3.1.1 / 5.0 broker`,
    "",
    "Usage:",
    "  deno task start [flags]        run the broker (compiled binary: deno-mqtt [flags])",
    "  deno task start passwd ARGS    manage the password file (auth.password_file);",
    "                                 `passwd` without arguments prints its usage",
    "",
    "Flags override the config file; every config key is a flag --section.key VALUE (or =VALUE).",
    "",
    ...rows.map(([flag, text]) => `  ${flag}\n      ${text}`),
    "",
  ].join("\n");
}

function placeholder(spec: AnySpec): string {
  switch (spec.kind) {
    case "integer":
      return `${spec.min}..${spec.max}`;
    case "boolean":
      return "true|false";
    case "string":
      return "STRING";
    case "enum":
      return spec.values.join("|");
  }
}

function showDefault(spec: AnySpec): string {
  return typeof spec.default === "string" ? JSON.stringify(spec.default) : String(spec.default);
}
