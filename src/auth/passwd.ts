/**
 * The `passwd` subcommand: adds, changes and deletes users in a password file (see
 * `password_file.ts` for the format).
 *
 * ```
 * passwd [-c] [-I ITERATIONS] FILE USER            password from the terminal (asked twice), or one line of stdin
 * passwd [-c] [-I ITERATIONS] -b FILE USER PASSWORD
 * passwd -D FILE USER
 * ```
 *
 * `-c` creates (or overwrites) the file with only this user; without it the file must exist and other
 * lines, comments included, are kept. The file is replaced atomically (write a temporary file, rename)
 * and always left with mode 0600, since the hashes allow offline guessing.
 *
 * @module
 */

import { dirname } from "node:path";
import { DEFAULT_ITERATIONS, hashPassword, MAX_ITERATIONS, parsePasswordFile } from "./password_file.ts";

/** The terminal / stdin / stderr seen by {@link runPasswd}; replaceable in tests. */
export interface PasswdIo {
  /** True when stdin is a terminal: the password is asked twice, without echo. */
  isTerminal(): boolean;
  /**
   * Reads one line without its line ending; undefined at end of input (or Ctrl-C / Ctrl-D on a
   * terminal). With a prompt, the prompt is shown and the terminal does not echo the input.
   */
  readLine(prompt?: string): Promise<string | undefined>;
  /** Writes one line to stderr. */
  error(line: string): void;
}

const USAGE =
  "usage: passwd [-c] [-I ITERATIONS] FILE USER | passwd [-c] [-I ITERATIONS] -b FILE USER PASSWORD" +
  " | passwd -D FILE USER";

/** Largest username / password in a CONNECT packet: a two-byte length prefix (§1.5.4, §3.1.3.5). */
const MAX_FIELD_BYTES = 65_535;

/** Exit codes: 0 done, 1 failed, 2 bad command line. */
const EXIT_OK = 0;
const EXIT_FAILED = 1;
const EXIT_USAGE = 2;

/** Failure with a message for stderr. */
class PasswdError extends Error {
  constructor(message: string, readonly exitCode = EXIT_FAILED) {
    super(message);
  }
}

interface Command {
  batch: boolean;
  create: boolean;
  remove: boolean;
  iterations: number;
  file: string;
  user: string;
  password?: string;
}

function parseArgs(args: string[]): Command {
  const usage = (why: string) => new PasswdError(`${why}; ${USAGE}`, EXIT_USAGE);
  const cmd: Command = {
    batch: false,
    create: false,
    remove: false,
    iterations: DEFAULT_ITERATIONS,
    file: "",
    user: "",
  };
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      positional.push(...args.slice(i + 1));
      break;
    }
    if (a === "-b") cmd.batch = true;
    else if (a === "-c") cmd.create = true;
    else if (a === "-D") cmd.remove = true;
    else if (a === "-I") {
      const value = args[++i];
      const n = value !== undefined && /^[0-9]+$/.test(value) ? Number(value) : NaN;
      if (!(n >= 1 && n <= MAX_ITERATIONS)) {
        throw usage(`-I needs an integer from 1 to ${MAX_ITERATIONS}, got '${value ?? ""}'`);
      }
      cmd.iterations = n;
    } else if (a.startsWith("-") && a !== "-") throw usage(`unknown option '${a}'`);
    else positional.push(a);
  }
  if (cmd.remove && (cmd.batch || cmd.create)) throw usage("-D cannot be combined with -b or -c");
  const want = cmd.batch ? 3 : 2;
  if (positional.length !== want) throw usage(`expected ${want} arguments, got ${positional.length}`);
  [cmd.file, cmd.user, cmd.password] = positional;
  return cmd;
}

function checkUsername(user: string): void {
  if (user === "") throw new PasswdError("the username must not be empty");
  if (user.includes(":")) throw new PasswdError(`username '${user}' must not contain ':'`);
  // deno-lint-ignore no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(user)) {
    throw new PasswdError(`username ${JSON.stringify(user)} has control characters`);
  }
  if (user.trim() !== user) {
    throw new PasswdError(`username '${user}' must not start or end with white space`);
  }
  const bytes = new TextEncoder().encode(user).length;
  if (bytes > MAX_FIELD_BYTES) {
    throw new PasswdError(`username is ${bytes} bytes, more than ${MAX_FIELD_BYTES}`);
  }
}

function checkPassword(password: string): void {
  if (password === "") throw new PasswdError("the password must not be empty");
  const bytes = new TextEncoder().encode(password).length;
  if (bytes > MAX_FIELD_BYTES) {
    throw new PasswdError(`password is ${bytes} bytes, more than ${MAX_FIELD_BYTES}`);
  }
}

async function readPassword(io: PasswdIo): Promise<string> {
  if (!io.isTerminal()) {
    const line = await io.readLine();
    if (line === undefined) throw new PasswdError("no password on stdin (expected one line)");
    return line;
  }
  const first = await io.readLine("Password: ");
  if (first === undefined) throw new PasswdError("no password entered");
  checkPassword(first);
  const again = await io.readLine("Reenter password: ");
  if (again !== first) throw new PasswdError("the passwords do not match");
  return first;
}

/** Reads the existing file, or undefined when it does not exist. */
async function readExisting(file: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new PasswdError(`cannot read ${file}: ${(e as Error).message}`);
  }
}

/** Replaces `file` with `text` atomically, mode 0600. */
async function writeFileAtomically(file: string, text: string): Promise<void> {
  const temp = `${file}.tmp-${crypto.randomUUID()}`;
  try {
    // The directory too (data/ of a fresh checkout, say), as the broker does for storage.path.
    await Deno.mkdir(dirname(file), { recursive: true });
    await Deno.writeTextFile(temp, text, { mode: 0o600, createNew: true });
    // `mode` is filtered by the umask on creation; set it exactly.
    if (Deno.build.os !== "windows") await Deno.chmod(temp, 0o600);
    await Deno.rename(temp, file);
  } catch (e) {
    await Deno.remove(temp).catch(() => {});
    throw new PasswdError(`cannot write ${file}: ${(e as Error).message}`);
  }
}

async function execute(cmd: Command, io: PasswdIo): Promise<void> {
  checkUsername(cmd.user);
  const existing = cmd.create ? undefined : await readExisting(cmd.file);
  if (existing === undefined && !cmd.create) {
    throw new PasswdError(`${cmd.file} does not exist${cmd.remove ? "" : " (use -c to create it)"}`);
  }
  const lines = existing === undefined ? [] : existing.split("\n");
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  let entries;
  try {
    entries = parsePasswordFile(existing ?? "", cmd.file);
  } catch (e) {
    throw new PasswdError((e as Error).message);
  }
  const entry = entries.find((e) => e.username === cmd.user);

  if (cmd.remove) {
    if (entry === undefined) throw new PasswdError(`user '${cmd.user}' is not in ${cmd.file}`);
    lines.splice(entry.line - 1, 1);
  } else {
    const password = cmd.batch ? cmd.password! : await readPassword(io);
    checkPassword(password);
    const line = `${cmd.user}:${await hashPassword(password, { iterations: cmd.iterations })}`;
    if (entry === undefined) lines.push(line);
    else lines[entry.line - 1] = line;
  }
  await writeFileAtomically(cmd.file, lines.length === 0 ? "" : lines.join("\n") + "\n");
}

/**
 * Runs `passwd` with its arguments (after the subcommand name). Returns the exit code: 0 done, 1 failed,
 * 2 bad command line; on failure one line goes to stderr.
 */
export async function runPasswd(args: string[], io: PasswdIo = denoIo()): Promise<number> {
  try {
    await execute(parseArgs(args), io);
    return EXIT_OK;
  } catch (e) {
    const code = e instanceof PasswdError ? e.exitCode : EXIT_FAILED;
    io.error(`passwd: ${(e as Error).message}`);
    return code;
  }
}

// --- the real terminal ---------------------------------------------------------------------------

const CR = 0x0d;
const LF = 0x0a;
const CTRL_C = 0x03;
const CTRL_D = 0x04;
const BACKSPACE = 0x08;
const DEL = 0x7f;

/** Reads stdin byte by byte until a line ending; in raw mode nothing is echoed. */
async function readStdinLine(raw: boolean): Promise<string | undefined> {
  const bytes: number[] = [];
  const buf = new Uint8Array(1);
  for (;;) {
    const n = await Deno.stdin.read(buf);
    if (n === null) {
      if (bytes.length === 0) return undefined;
      break;
    }
    const b = buf[0];
    if (b === LF || b === CR) break;
    if (raw) {
      if (b === CTRL_C || (b === CTRL_D && bytes.length === 0)) return undefined;
      if (b === BACKSPACE || b === DEL) {
        // Remove one whole UTF-8 character: its continuation bytes (10xxxxxx) and its lead byte.
        while (bytes.length > 0 && (bytes[bytes.length - 1] & 0xc0) === 0x80) bytes.pop();
        bytes.pop();
        continue;
      }
    }
    bytes.push(b);
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

/** {@link PasswdIo} on the process's stdin and stderr. */
export function denoIo(): PasswdIo {
  const encoder = new TextEncoder();
  return {
    isTerminal: () => Deno.stdin.isTerminal(),
    async readLine(prompt?: string): Promise<string | undefined> {
      if (prompt === undefined || !Deno.stdin.isTerminal()) return await readStdinLine(false);
      Deno.stderr.writeSync(encoder.encode(prompt));
      Deno.stdin.setRaw(true);
      try {
        return await readStdinLine(true);
      } finally {
        Deno.stdin.setRaw(false);
        Deno.stderr.writeSync(encoder.encode("\n"));
      }
    },
    error(line: string): void {
      Deno.stderr.writeSync(encoder.encode(line + "\n"));
    },
  };
}
