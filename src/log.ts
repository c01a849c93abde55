/**
 * A small structured logger. Two formats:
 *
 * - text: `2026-11-25T10:00:00.000Z INFO  client connected client_id=abc addr=127.0.0.1:5000 proto=5`
 * - json: one object per line, `{"ts":"...","level":"info","msg":"client connected","client_id":"abc",...}`
 *
 * Lines go to stderr synchronously by default: logging is not on the publish path, and a synchronous
 * write keeps lines whole and ordered, even when the process exits right after.
 *
 * @module
 */

import type { LogLevel } from "./config/types.ts";

export type { LogLevel };

/** Output format of log lines. */
export type LogFormat = "text" | "json";

/** Extra key/value pairs attached to a log line. */
export type LogFields = Record<string, unknown>;

/** The logger every module receives. */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** Least severe level written; may be changed at run time (SIGHUP reload). */
  level: LogLevel;
  /** Line format; may be changed at run time (SIGHUP reload). */
  format: LogFormat;
  /** True when a message at `level` would be written: guard expensive field building with it. */
  isEnabled(level: LogLevel): boolean;
}

/** Options for {@link createLogger}. */
export interface LoggerOptions {
  level: LogLevel;
  format: LogFormat;
  /** Receives each line without its trailing newline; defaults to a synchronous write to stderr. */
  write?: (line: string) => void;
  /** Clock, for tests; defaults to `() => new Date()`. */
  now?: () => Date;
}

/** Severity order of the levels. */
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

const SEVERITY: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** Creates a logger. */
export function createLogger(options: LoggerOptions): Logger {
  const write = options.write ?? writeStderr;
  const now = options.now ?? (() => new Date());
  const logger: Logger = {
    level: options.level,
    format: options.format,
    isEnabled(level: LogLevel): boolean {
      return SEVERITY[level] >= SEVERITY[logger.level];
    },
    debug: (msg, fields) => emit("debug", msg, fields),
    info: (msg, fields) => emit("info", msg, fields),
    warn: (msg, fields) => emit("warn", msg, fields),
    error: (msg, fields) => emit("error", msg, fields),
  };
  function emit(level: LogLevel, msg: string, fields: LogFields | undefined): void {
    if (!logger.isEnabled(level)) return;
    const ts = now().toISOString();
    write(logger.format === "json" ? jsonLine(ts, level, msg, fields) : textLine(ts, level, msg, fields));
  }
  return logger;
}

/** Formats one text line: timestamp, level padded to 5, message, then `key=value` pairs. */
export function textLine(ts: string, level: LogLevel, msg: string, fields?: LogFields): string {
  let line = `${ts} ${level.toUpperCase().padEnd(5)} ${msg}`;
  if (fields !== undefined) {
    for (const [key, value] of Object.entries(fields)) {
      if (value !== undefined) line += ` ${key}=${textValue(value)}`;
    }
  }
  return line;
}

/** Formats one JSON line; `ts`, `level` and `msg` come first and fields cannot overwrite them. */
export function jsonLine(ts: string, level: LogLevel, msg: string, fields?: LogFields): string {
  const record: Record<string, unknown> = { ts, level, msg };
  if (fields !== undefined) {
    for (const [key, value] of Object.entries(fields)) {
      if (!(key in record)) record[key] = plain(value);
    }
  }
  return JSON.stringify(record, (_key, value) => typeof value === "bigint" ? value.toString() : value);
}

/** A value made JSON-friendly: Errors become their message, Dates ISO strings. */
function plain(value: unknown): unknown {
  if (value instanceof Error) return value.message;
  if (value instanceof Date) return value.toISOString();
  return value;
}

function textValue(value: unknown): string {
  const v = plain(value);
  if (typeof v === "string") {
    // Bare when unambiguous; quoted (JSON escapes) when it has spaces, quotes, "=" or is empty, so a
    // line can still be split into key=value pairs.
    return v !== "" && /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  }
  if (typeof v === "number" || typeof v === "boolean" || typeof v === "bigint" || v === null) {
    return String(v);
  }
  try {
    return JSON.stringify(v, (_key, x) => typeof x === "bigint" ? x.toString() : x) ?? String(v);
  } catch {
    return JSON.stringify(String(v));
  }
}

const encoder = new TextEncoder();

function writeStderr(line: string): void {
  const bytes = encoder.encode(line + "\n");
  try {
    // writeSync may write part of the buffer; loop so that a line is never cut.
    let written = 0;
    while (written < bytes.length) written += Deno.stderr.writeSync(bytes.subarray(written));
  } catch {
    // stderr closed (e.g. the reading end of a pipe went away): losing a log line must not stop the broker.
  }
}

/**
 * A gate for a log line that a flood would repeat (evictions, failed accepts): true at most once per `ms`,
 * false in between.
 */
export function onceEvery(ms: number): () => boolean {
  let last = -Infinity;
  return () => {
    const now = Date.now();
    if (now - last < ms) return false;
    last = now;
    return true;
  };
}
