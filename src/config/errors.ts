/**
 * The error type of configuration loading.
 *
 * @module
 */

/**
 * A configuration that cannot be used: unreadable file, bad YAML, unknown key, wrong type or value out
 * of range. The message is one line naming the source (file path or "command line"), the key and the
 * offending value, so it can be printed as is.
 */
export class ConfigError extends Error {
  /** Where the bad value came from: the config file path, or {@link COMMAND_LINE}. */
  readonly source: string;

  constructor(source: string, message: string) {
    super(`${source}: ${message}`);
    this.name = "ConfigError";
    this.source = source;
  }
}

/** The {@link ConfigError.source} of errors in command-line flags (a usage error, exit code 2). */
export const COMMAND_LINE = "command line";
