/**
 * Loading the configuration: defaults from the schema, then the YAML file, then command-line flags, each
 * layer validated key by key. Every failure is a {@link ConfigError} naming the file (or the command
 * line), the dotted key and the value.
 *
 * Relative paths in the configuration (storage.path, auth.password_file, auth.acl_file and the listener
 * certificate files) are kept as written and so resolve against the current working directory, not
 * against the directory of the config file.
 *
 * @module
 */

import { parse } from "yaml";
import { COMMAND_LINE, ConfigError } from "./errors.ts";
import {
  accepts,
  type AnySpec,
  defaultConfig,
  expectation,
  fromFlagString,
  KEYS,
  LISTENER_SCHEMA,
  SCHEMA,
  type SectionName,
} from "./schema.ts";
import type { Config, ListenerConfig } from "./types.ts";

/** The config file read when no `--config` is given. Its absence means "all defaults". */
export const DEFAULT_CONFIG_PATH = "config/config.yaml";

/**
 * Overrides from the command line: dotted key (`server.port`, `listeners`) to the text given after the
 * flag. Aliases such as `--port` are already resolved to their dotted key by `parseArgs`.
 */
export type CliFlags = Readonly<Record<string, string>>;

/**
 * Loads the configuration: schema defaults, overridden by the YAML file, overridden by `flags`.
 *
 * @param path the file to read; `undefined` means {@link DEFAULT_CONFIG_PATH}, which may be missing
 *   (then the defaults apply). An explicitly given path that does not exist is an error.
 * @param flags command-line overrides, validated like file values.
 * @throws {ConfigError} on an unreadable file, bad YAML, unknown key, wrong type or out-of-range value.
 */
export async function loadConfig(path: string | undefined, flags: CliFlags): Promise<Config> {
  const file = path ?? DEFAULT_CONFIG_PATH;
  const text = await readConfigFile(file, path === undefined);
  const config = defaultConfig();
  if (text !== undefined) applyDocument(config, parseYaml(file, text), file);
  applyFlags(config, flags);
  return finish(config);
}

/**
 * Validates an already parsed YAML document (a plain object) on top of the defaults, as `loadConfig`
 * does for a file. `source` names the origin in error messages.
 *
 * @throws {ConfigError} on an unknown key, wrong type or out-of-range value.
 */
export function configFromObject(document: unknown, source: string): Config {
  const config = defaultConfig();
  applyDocument(config, document, source);
  return finish(config);
}

async function readConfigFile(file: string, mayBeMissing: boolean): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      if (mayBeMissing) return undefined;
      throw new ConfigError(file, "config file not found");
    }
    throw new ConfigError(file, `cannot read config file: ${errorText(err)}`);
  }
}

function parseYaml(source: string, text: string): unknown {
  try {
    return parse(text);
  } catch (err) {
    // The yaml package puts line and column in its message; keep only its first line.
    throw new ConfigError(source, `invalid YAML: ${errorText(err)}`);
  }
}

/** Overlays one YAML document onto `config`, validating every key. */
function applyDocument(config: Config, document: unknown, source: string): void {
  // An empty file (or one with every line commented out) parses to null: all defaults.
  if (document === null || document === undefined) return;
  if (!isMapping(document)) {
    throw new ConfigError(source, `the top level must be a mapping of sections, got ${show(document)}`);
  }
  for (const [section, body] of Object.entries(document)) {
    if (section === "listeners") {
      config.listeners = parseListeners(body, source, "listeners");
      continue;
    }
    if (!Object.hasOwn(SCHEMA, section)) {
      throw new ConfigError(
        source,
        `unknown section ${section} (value ${show(body)}); known: ${
          [...Object.keys(SCHEMA), "listeners"].join(", ")
        }`,
      );
    }
    // A section whose keys are all commented out parses to null: keep its defaults.
    if (body === null) continue;
    if (!isMapping(body)) throw new ConfigError(source, `${section} must be a mapping, got ${show(body)}`);
    const specs = SCHEMA[section as SectionName] as Record<string, AnySpec>;
    const values = config[section as SectionName] as Record<string, unknown>;
    for (const [name, value] of Object.entries(body)) {
      const key = `${section}.${name}`;
      if (!Object.hasOwn(specs, name)) {
        throw new ConfigError(
          source,
          `unknown key ${key} (value ${show(value)}); known in ${section}: ${Object.keys(specs).join(", ")}`,
        );
      }
      values[name] = checked(specs[name], value, source, key);
    }
  }
}

/** Overlays command-line flags onto `config`. */
function applyFlags(config: Config, flags: CliFlags): void {
  for (const [key, text] of Object.entries(flags)) {
    if (key === "listeners") {
      let document: unknown;
      try {
        document = parse(text);
      } catch (err) {
        throw new ConfigError(COMMAND_LINE, `--listeners must be a YAML or JSON list: ${errorText(err)}`);
      }
      config.listeners = parseListeners(document, COMMAND_LINE, "--listeners");
      continue;
    }
    const entry = KEYS.find((k) => k.key === key);
    if (entry === undefined) {
      throw new ConfigError(COMMAND_LINE, `unknown flag --${key} (value ${show(text)})`);
    }
    const values = config[entry.section] as Record<string, unknown>;
    values[entry.name] = checked(entry.spec, fromFlagString(entry.spec, text), COMMAND_LINE, `--${key}`);
  }
}

function checked(spec: AnySpec, value: unknown, source: string, key: string): unknown {
  if (!accepts(spec, value)) {
    throw new ConfigError(source, `${key} must be ${expectation(spec)}, got ${show(value)}`);
  }
  return value;
}

/** Validates the `listeners` list; `key` is how the list is named in messages. */
function parseListeners(value: unknown, source: string, key: string): ListenerConfig[] {
  if (value === null) return [];
  if (!Array.isArray(value)) throw new ConfigError(source, `${key} must be a list, got ${show(value)}`);
  return value.map((item, index) => parseListener(item, source, `${key}[${index}]`));
}

const TLS_FIELDS = ["cert_file", "key_file", "ca_file", "require_client_cert", "use_cn_as_username"] as const;

function parseListener(item: unknown, source: string, key: string): ListenerConfig {
  if (!isMapping(item)) throw new ConfigError(source, `${key} must be a mapping, got ${show(item)}`);
  const specs = LISTENER_SCHEMA as Record<string, AnySpec & { required?: boolean }>;
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(item)) {
    if (!Object.hasOwn(specs, name)) {
      throw new ConfigError(
        source,
        `unknown key ${key}.${name} (value ${show(value)}); known: ${Object.keys(specs).join(", ")}`,
      );
    }
    out[name] = checked(specs[name], value, source, `${key}.${name}`);
  }
  for (const [name, spec] of Object.entries(specs)) {
    if (spec.required && !(name in out)) {
      throw new ConfigError(source, `${key}.${name} is required (${expectation(spec)}), got nothing`);
    }
  }
  const listener = out as unknown as ListenerConfig;
  const tls = listener.type === "mqtts" || listener.type === "wss";
  const ws = listener.type === "ws" || listener.type === "wss";
  if (tls) {
    for (const name of ["cert_file", "key_file"] as const) {
      if (listener[name] === undefined) {
        throw new ConfigError(
          source,
          `${key}.${name} is required for a ${listener.type} listener, got nothing`,
        );
      }
    }
    listener.require_client_cert ??= false;
    listener.use_cn_as_username ??= false;
    if (listener.require_client_cert && listener.ca_file === undefined) {
      // Without a CA there is nothing to verify client certificates against.
      throw new ConfigError(
        source,
        `${key}.ca_file is required when require_client_cert is true, got nothing`,
      );
    }
    if (listener.use_cn_as_username && !listener.require_client_cert) {
      // An unverified certificate's CN is whatever the client chose: not an identity.
      throw new ConfigError(source, `${key}.use_cn_as_username needs require_client_cert: true, got false`);
    }
  } else {
    for (const name of TLS_FIELDS) {
      if (name in out) {
        throw new ConfigError(
          source,
          `${key}.${name} is only valid on mqtts/wss listeners, this one is ${listener.type} (value ${
            show(out[name])
          })`,
        );
      }
    }
  }
  if (ws) {
    listener.path ??= LISTENER_SCHEMA.path.default;
    if (!listener.path.startsWith("/")) {
      throw new ConfigError(source, `${key}.path must start with "/", got ${show(listener.path)}`);
    }
  } else if (listener.path !== undefined) {
    throw new ConfigError(
      source,
      `${key}.path is only valid on ws/wss listeners, this one is ${listener.type} (value ${
        show(listener.path)
      })`,
    );
  }
  listener.host ??= "";
  return listener;
}

/** Cross-key defaults, resolved once every layer is applied. */
function finish(config: Config): Config {
  // "" means "same as server.host" for the metrics server and for each listener.
  if (config.metrics.host === "") config.metrics.host = config.server.host;
  for (const listener of config.listeners) {
    if (listener.host === "") listener.host = config.server.host;
  }
  return config;
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A value as it appears in an error message: strings quoted, long values cut. */
function show(value: unknown): string {
  let text: string;
  try {
    text = value === undefined ? "nothing" : JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

function errorText(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split("\n")[0];
}
