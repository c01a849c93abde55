/**
 * The command-line entry point: `deno task start [flags]` or the compiled `deno-mqtt` binary.
 *
 * Start-up order: flags -> config (file + flags) -> logger -> store -> broker. Signals: SIGINT/SIGTERM
 * stop the broker gracefully (a second one forces exit 1), SIGHUP reloads the config file.
 *
 * Exit codes: 0 clean stop, 1 start-up or run failure (bad config file, busy port, locked database),
 * 2 bad command line.
 *
 * @module
 */

import denoJson from "./deno.json" with { type: "json" };
import type { Broker } from "./src/broker/broker.ts";
import { helpText, parseArgs, type ParsedArgs, UsageError } from "./src/config/cli.ts";
import { COMMAND_LINE, ConfigError } from "./src/config/errors.ts";
import { type CliFlags, DEFAULT_CONFIG_PATH, loadConfig } from "./src/config/load.ts";
import type { Config } from "./src/config/types.ts";
import { createLogger, type Logger } from "./src/log.ts";

/** Program name shown by `--version` and `--help`. */
export const NAME = "deno-mqtt";
/** The version, from deno.json. */
export const VERSION: string = denoJson.version;

/**
 * Runs the program with `args` (without the program name) and resolves with the exit code once the
 * broker has stopped (or at once for `--help`, `--version`, `passwd` and errors). Never throws: every
 * failure is one line on stderr.
 */
export async function main(args: string[]): Promise<number> {
  try {
    return await dispatch(args);
  } catch (err) {
    printError(errorText(err));
    return 1;
  }
}

async function dispatch(args: string[]): Promise<number> {
  let parsed: ParsedArgs;
  try {
    parsed = parseArgs(args);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    printError(`${err.message} (run with --help to list the flags)`);
    return 2;
  }
  switch (parsed.command) {
    case "help":
      print(helpText(NAME, VERSION));
      return 0;
    case "version":
      print(`${NAME} ${VERSION}\n`);
      return 0;
    case "passwd": {
      // Loaded only for this subcommand, so that running the broker never depends on it.
      const { runPasswd } = await import("./src/auth/passwd.ts");
      return await runPasswd(parsed.args);
    }
    case "run":
      return await run(parsed.configPath, parsed.flags);
  }
}

/** Loads the config, starts the broker and serves until a stop signal. */
async function run(configPath: string | undefined, flags: CliFlags): Promise<number> {
  let config: Config;
  try {
    config = await loadConfig(configPath, flags);
  } catch (err) {
    printError(errorText(err));
    return err instanceof ConfigError && err.source === COMMAND_LINE ? 2 : 1;
  }
  const logger = createLogger({ level: config.log.level, format: config.log.format });
  let broker: Broker;
  try {
    // Imported here rather than at the top so that --help, --version and passwd do not load the broker.
    const [{ Broker }, { createStore }] = await Promise.all([
      import("./src/broker/broker.ts"),
      import("./src/store/mod.ts"),
    ]);
    const store = createStore(config.storage);
    broker = new Broker({ config, store, logger });
    await broker.start();
  } catch (err) {
    // A busy port, a locked database...: one clear line, no stack trace.
    logger.error(`start-up failed: ${errorText(err)}`);
    return 1;
  }
  // A reload needs the file the broker started from: a default config file that has gone missing since (a
  // deploy, an editor's rename) is an error then, not "all defaults", which would turn authentication off.
  const reloadPath = configPath ?? (await exists(DEFAULT_CONFIG_PATH) ? DEFAULT_CONFIG_PATH : undefined);
  // Signal handlers first: whoever reads the start-up lines may signal at once.
  const stopped = serve(broker, logger, () => loadConfig(reloadPath, flags));
  logStartup(logger, config, broker);
  return await stopped;
}

/** What start-up bound and with which settings, one line each. */
function logStartup(logger: Logger, config: Config, broker: Broker): void {
  logger.info("broker started", { version: VERSION, max_qos: config.qos.max_qos });
  // The bound addresses, not the configured ones: port 0 becomes the port the system chose.
  for (const listener of broker.addresses) {
    logger.info("listening", { type: listener.type, address: hostPort(listener.host, listener.port) });
  }
  const metricsPort = broker.metricsPort;
  if (config.metrics.enabled && metricsPort !== undefined) {
    logger.info("metrics", { url: `http://${hostPort(config.metrics.host, metricsPort)}/metrics` });
  } else {
    logger.info("metrics disabled");
  }
  logger.info("store", {
    backend: config.storage.backend,
    path: config.storage.backend === "kv" ? config.storage.path : undefined,
    clean_session_default: config.server.clean_session_default,
  });
  if (broker.store.emptyFileAtOpen) {
    logger.warn("storage.path was an empty (0-byte) file: started with an empty store", {
      path: config.storage.path,
    });
  }
}

/**
 * A stop signal that repeats the first one within this time is the same request delivered twice, not an
 * operator insisting: Ctrl-C under `deno task start` reaches the broker from the terminal and again from the
 * task runner, and `deno task dev`'s watcher sends SIGTERM right behind the SIGINT.
 */
const REPEATED_SIGNAL_MS = 1500;

/**
 * Waits for signals: SIGINT/SIGTERM stop the broker (exit code 0, or 1 when stopping fails; another stop
 * signal while stopping, more than {@link REPEATED_SIGNAL_MS} after the first, exits 1 at once), SIGHUP
 * reloads the configuration.
 */
function serve(broker: Broker, logger: Logger, reloadConfig: () => Promise<Config>): Promise<number> {
  // Windows delivers only SIGINT (and SIGBREAK) to Deno; there is no SIGTERM or SIGHUP to listen to.
  const posix = Deno.build.os !== "windows";
  const stopSignals: Deno.Signal[] = posix ? ["SIGINT", "SIGTERM"] : ["SIGINT"];
  return new Promise((resolve) => {
    let stopping = false;
    let stoppingSince = 0;
    let reloading = Promise.resolve();
    const handlers = new Map<Deno.Signal, () => void>();
    const finish = (code: number) => {
      for (const [signal, handler] of handlers) Deno.removeSignalListener(signal, handler);
      resolve(code);
    };
    for (const signal of stopSignals) {
      handlers.set(signal, () => {
        if (stopping) {
          if (performance.now() - stoppingSince < REPEATED_SIGNAL_MS) {
            logger.debug("stop signal repeated, already stopping", { signal });
            return;
          }
          logger.warn("second stop signal: exiting without waiting", { signal });
          Deno.exit(1);
        }
        stopping = true;
        stoppingSince = performance.now();
        logger.info("stopping", { signal });
        broker.stop().then(
          () => {
            logger.info("stopped");
            finish(0);
          },
          (err) => {
            logger.error(`stop failed: ${errorText(err)}`);
            finish(1);
          },
        );
      });
    }
    if (posix) {
      handlers.set("SIGHUP", () => {
        // One reload at a time, in signal order.
        reloading = reloading.then(() => reload(broker, logger, reloadConfig));
      });
    }
    for (const [signal, handler] of handlers) Deno.addSignalListener(signal, handler);
  });
}

/** SIGHUP: re-reads the config; a broken file is rejected and the running config kept. */
async function reload(broker: Broker, logger: Logger, reloadConfig: () => Promise<Config>): Promise<void> {
  logger.info("reloading configuration");
  let next: Config;
  try {
    next = await reloadConfig();
  } catch (err) {
    logger.error(`configuration rejected, keeping the running one: ${errorText(err)}`);
    return;
  }
  try {
    const changes = await broker.reload(next);
    // The logger belongs to main: its level and format follow the file (the broker may report the level).
    logger.level = next.log.level;
    if (logger.format !== next.log.format) {
      changes.push(`log.format ${logger.format} -> ${next.log.format}`);
      logger.format = next.log.format;
    }
    if (changes.length === 0) logger.info("configuration reloaded: nothing changed");
    for (const change of changes) logger.info("configuration changed", { change });
  } catch (err) {
    logger.error(`configuration reload failed: ${errorText(err)}`);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

function hostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The first line of an error's message: what an operator needs, without a stack trace. */
function errorText(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split("\n")[0];
}

const encoder = new TextEncoder();

function print(text: string): void {
  writeAll(Deno.stdout, text);
}

function printError(message: string): void {
  writeAll(Deno.stderr, `error: ${message}\n`);
}

/** writeSync may write only part of a buffer (a full pipe): loop until all of it is out. */
function writeAll(stream: { writeSync(p: Uint8Array): number }, text: string): void {
  const bytes = encoder.encode(text);
  let written = 0;
  while (written < bytes.length) written += stream.writeSync(bytes.subarray(written));
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
