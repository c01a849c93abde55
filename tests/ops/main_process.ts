/**
 * `main.ts` as a child process with exactly the arguments a test gives (unlike `spawnBroker` in
 * tests/helpers.ts, which fixes the log level on the command line, so a SIGHUP cannot change it).
 *
 * @module
 */

const REPO = decodeURIComponent(new URL("../../", import.meta.url).pathname);

/** A running `deno run -A main.ts ...` whose stderr is collected. */
export interface MainProcess {
  readonly child: Deno.ChildProcess;
  /** Everything written to stderr so far. */
  readonly stderr: string;
  /** Resolves with the first match of `pattern` in stderr at or after `from` (a string offset). */
  waitFor(pattern: RegExp, opts?: { from?: number; timeoutMs?: number }): Promise<RegExpMatchArray>;
  /** Sends a signal (no-op when the process is gone). */
  signal(sig: Deno.Signal): void;
  /** Resolves with the exit code once the process has exited and stderr is read to the end. */
  exit(): Promise<number>;
  /** SIGKILL if still running, then waits: for `finally` blocks. */
  kill(): Promise<void>;
}

/** Starts `main.ts` from the repository root with `args`. */
export function spawnMain(args: string[]): MainProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO}main.ts`, ...args],
    cwd: REPO,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  let text = "";
  const reading = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) text += chunk;
  })();
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  const signal = (sig: Deno.Signal) => {
    try {
      child.kill(sig);
    } catch {
      // already exited
    }
  };
  const exit = async () => {
    const s = await status;
    await reading;
    return s.code;
  };
  return {
    child,
    get stderr() {
      return text;
    },
    async waitFor(pattern, opts = {}) {
      const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
      for (;;) {
        const match = text.slice(opts.from ?? 0).match(pattern);
        if (match) return match;
        if (exited) await reading;
        if (exited && !text.slice(opts.from ?? 0).match(pattern)) {
          throw new Error(`main.ts exited without logging ${pattern}:\n${text}`);
        }
        if (Date.now() > deadline) throw new Error(`no ${pattern} on stderr in time:\n${text}`);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    },
    signal,
    exit,
    async kill() {
      if (!exited) signal("SIGKILL");
      await exit();
    },
  };
}
