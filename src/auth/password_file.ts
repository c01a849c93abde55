/**
 * The password file: one user per line, `username:$pbkdf2-sha512$ITERATIONS$SALT$HASH`, where SALT
 * (16 random bytes) and HASH (64 bytes) are standard base64 and HASH is PBKDF2-HMAC-SHA512 of the UTF-8
 * password (WebCrypto `deriveBits`). Lines starting with `#` and blank lines are ignored. The file is
 * written by `passwd.ts` with mode 0600.
 *
 * @module
 */

/** PBKDF2-SHA512 iterations for new hashes: the OWASP Password Storage Cheat Sheet minimum. */
export const DEFAULT_ITERATIONS = 210_000;

/** Above this a line is refused: a typo there would make every CONNECT take minutes. */
export const MAX_ITERATIONS = 10_000_000;

const SCHEME = "pbkdf2-sha512";
const SALT_BYTES = 16;
const HASH_BYTES = 64;
const MIN_SALT_BYTES = 8;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** One parsed line of a password file. */
export interface PasswordEntry {
  username: string;
  iterations: number;
  salt: Uint8Array;
  hash: Uint8Array;
  /** 1-based line number in the file. */
  line: number;
}

/** Options for {@link hashPassword}. */
export interface HashOptions {
  /** PBKDF2 iterations; default {@link DEFAULT_ITERATIONS}. Lower only in tests. */
  iterations?: number;
}

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function fromBase64(text: string): Uint8Array | undefined {
  if (text.length === 0 || !BASE64.test(text)) return undefined;
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function checkIterations(iterations: number): void {
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) {
    throw new Error(`iterations must be an integer from 1 to ${MAX_ITERATIONS}, got ${iterations}`);
  }
}

async function derive(
  password: Uint8Array,
  salt: Uint8Array,
  iterations: number,
  bytes: number,
): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", password as BufferSource, "PBKDF2", false, [
    "deriveBits",
  ]);
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-512", salt: salt as BufferSource, iterations },
    key,
    bytes * 8,
  );
  return new Uint8Array(bits);
}

/**
 * Compares two byte arrays in time that depends only on their lengths, not on where they differ, so
 * a client cannot learn a hash byte by byte from response times.
 */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/**
 * Hashes a password with a fresh 16-byte random salt; returns the part of a password-file line after
 * `username:`, i.e. `$pbkdf2-sha512$ITERATIONS$SALT$HASH`.
 */
export async function hashPassword(password: string, opts?: HashOptions): Promise<string> {
  const iterations = opts?.iterations ?? DEFAULT_ITERATIONS;
  checkIterations(iterations);
  const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
  const hash = await derive(new TextEncoder().encode(password), salt, iterations, HASH_BYTES);
  return `$${SCHEME}$${iterations}$${toBase64(salt)}$${toBase64(hash)}`;
}

/**
 * Parses the text of a password file. Throws `SOURCE:LINE: what was wrong` on the first bad line
 * (never echoing the hash), or on a username given twice.
 */
export function parsePasswordFile(text: string, source: string): PasswordEntry[] {
  const entries: PasswordEntry[] = [];
  const seen = new Map<string, number>();
  const lines = text.split("\n");
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n].trim();
    if (line === "" || line.startsWith("#")) continue;
    const fail = (message: string): never => {
      throw new Error(`${source}:${n + 1}: ${message}`);
    };
    const colon = line.indexOf(":");
    if (colon < 0) fail("expected username:$pbkdf2-sha512$ITERATIONS$SALT$HASH, found no ':'");
    const username = line.slice(0, colon);
    if (username === "") fail("empty username before ':'");
    const parts = line.slice(colon + 1).split("$");
    // "$a$b$c$d".split("$") gives ["", a, b, c, d].
    if (parts.length !== 5 || parts[0] !== "") {
      fail(`hash of user '${username}' is not $${SCHEME}$ITERATIONS$SALT$HASH`);
    }
    if (parts[1] !== SCHEME) fail(`unsupported hash scheme '${parts[1]}' for user '${username}'`);
    const iterations = /^[0-9]{1,9}$/.test(parts[2]) ? Number(parts[2]) : NaN;
    if (!(iterations >= 1 && iterations <= MAX_ITERATIONS)) {
      fail(`iterations '${parts[2]}' for user '${username}' are not an integer from 1 to ${MAX_ITERATIONS}`);
    }
    const salt = fromBase64(parts[3]);
    if (salt === undefined || salt.length < MIN_SALT_BYTES) {
      fail(`salt of user '${username}' is not base64 of at least ${MIN_SALT_BYTES} bytes`);
    }
    const hash = fromBase64(parts[4]);
    if (hash === undefined || hash.length !== HASH_BYTES) {
      fail(`hash of user '${username}' is not base64 of ${HASH_BYTES} bytes`);
    }
    const first = seen.get(username);
    if (first !== undefined) fail(`user '${username}' appears twice (first on line ${first})`);
    seen.set(username, n + 1);
    entries.push({ username, iterations, salt: salt!, hash: hash!, line: n + 1 });
  }
  return entries;
}

/** The users and password hashes of a password file, for CONNECT authentication. */
/**
 * The PBKDF2 cost of an unknown user's check: the count most lines use, so that in a file written by the
 * `passwd` subcommand (one count) an unknown user takes as long as a known one.
 */
function mostCommonIterations(entries: PasswordEntry[]): number {
  const counts = new Map<number, number>();
  let best = DEFAULT_ITERATIONS;
  let bestCount = 0;
  for (const e of entries) {
    const n = (counts.get(e.iterations) ?? 0) + 1;
    counts.set(e.iterations, n);
    if (n > bestCount) [best, bestCount] = [e.iterations, n];
  }
  return best;
}

export class PasswordFile {
  readonly #entries: Map<string, PasswordEntry>;
  /** Stands in for unknown users so that they cost the same PBKDF2 work as known ones. */
  readonly #decoy: PasswordEntry;

  private constructor(entries: PasswordEntry[]) {
    this.#entries = new Map(entries.map((e) => [e.username, e]));
    this.#decoy = {
      username: "",
      iterations: mostCommonIterations(entries),
      salt: crypto.getRandomValues(new Uint8Array(SALT_BYTES)),
      hash: crypto.getRandomValues(new Uint8Array(HASH_BYTES)),
      line: 0,
    };
  }

  /** Reads and parses a password file; rejects naming the file (and the line, for a bad line). */
  static async load(path: string): Promise<PasswordFile> {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      throw new Error(`cannot read password file ${path}: ${(e as Error).message}`);
    }
    return new PasswordFile(parsePasswordFile(text, path));
  }

  /** Builds a password file from already-parsed text (`source` names it in errors). */
  static parse(text: string, source = "<passwords>"): PasswordFile {
    return new PasswordFile(parsePasswordFile(text, source));
  }

  /** Number of users in the file. */
  get size(): number {
    return this.#entries.size;
  }

  /** True when the file has a line for `username`. */
  has(username: string): boolean {
    return this.#entries.has(username);
  }

  /** True when `username` has the same line (iterations, salt and hash) here and in `other`. */
  sameEntry(username: string, other: PasswordFile): boolean {
    const a = this.#entries.get(username);
    const b = other.#entries.get(username);
    return a !== undefined && b !== undefined && a.iterations === b.iterations &&
      constantTimeEqual(a.salt, b.salt) && constantTimeEqual(a.hash, b.hash);
  }

  /**
   * True when `password` (the CONNECT Password field, binary per §3.1.3.5) is the user's password. An
   * unknown user goes through the same PBKDF2 derivation and comparison, against a random decoy, so the
   * answer time does not reveal which usernames exist.
   */
  async verify(username: string, password: Uint8Array): Promise<boolean> {
    const entry = this.#entries.get(username);
    const target = entry ?? this.#decoy;
    const derived = await derive(password, target.salt, target.iterations, target.hash.length);
    const same = constantTimeEqual(derived, target.hash);
    return entry !== undefined && same;
  }
}
