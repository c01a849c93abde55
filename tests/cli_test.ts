// The command line: argument parsing in process, then main.ts as a real child process for --version,
// --help and the error paths (exit codes, one-line messages on stderr). Starting the broker itself is
// covered by the broker's own tests.

import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { helpText, parseArgs, UsageError } from "../src/config/cli.ts";
import { KEYS } from "../src/config/schema.ts";

const REPO = decodeURIComponent(new URL("../", import.meta.url).pathname);
const MAIN = `${REPO}main.ts`;

/** Runs `deno run -A main.ts ...args` from the repository root and collects its output. */
async function runMain(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, ...args],
    cwd: REPO,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  const decoder = new TextDecoder();
  return { code: output.code, stdout: decoder.decode(output.stdout), stderr: decoder.decode(output.stderr) };
}

/** An error on stderr must be one line, without a stack trace. */
function assertOneLineError(stderr: string): void {
  assert.equal(stderr.trimEnd().split("\n").length, 1, `expected one line, got:\n${stderr}`);
  assert.ok(!/\n\s+at /.test(stderr), `stack trace in:\n${stderr}`);
}

Deno.test("parseArgs: --section.key, aliases and --flag=value map to dotted keys", () => {
  assert.deepEqual(
    parseArgs([
      "--config",
      "my.yaml",
      "--server.max_clients",
      "50",
      "--port=1884",
      "--host",
      "::1",
      "--log-level",
      "debug",
      "--log-format=json",
      "--storage-backend",
      "memory",
      "--storage-path",
      "/tmp/db",
      "--metrics-port",
      "0",
      "--max-qos",
      "2",
      "--retained.enabled",
      "false",
      "--listeners",
      "[]",
      "--metrics.host=", // an empty value is a value
    ]),
    {
      command: "run",
      configPath: "my.yaml",
      flags: {
        "server.max_clients": "50",
        "server.port": "1884",
        "server.host": "::1",
        "log.level": "debug",
        "log.format": "json",
        "storage.backend": "memory",
        "storage.path": "/tmp/db",
        "metrics.port": "0",
        "qos.max_qos": "2",
        "retained.enabled": "false",
        "listeners": "[]",
        "metrics.host": "",
      },
    },
  );
});

Deno.test("parseArgs: no arguments runs with the default config path", () => {
  assert.deepEqual(parseArgs([]), { command: "run", configPath: undefined, flags: {} });
});

Deno.test("parseArgs: the last of a repeated flag wins, alias or not", () => {
  const parsed = parseArgs(["--port", "1", "--server.port", "2", "--port", "3"]);
  assert.deepEqual(parsed, { command: "run", configPath: undefined, flags: { "server.port": "3" } });
});

Deno.test("parseArgs: every schema key is accepted as a flag", () => {
  for (const { key } of KEYS) {
    const parsed = parseArgs([`--${key}`, "x"]);
    assert.equal(parsed.command, "run");
    assert.deepEqual(parsed.command === "run" && parsed.flags, { [key]: "x" });
  }
});

Deno.test("parseArgs: help, version and the passwd subcommand", () => {
  assert.deepEqual(parseArgs(["--help"]), { command: "help" });
  assert.deepEqual(parseArgs(["--port", "1", "-h"]), { command: "help" });
  assert.deepEqual(parseArgs(["--version"]), { command: "version" });
  assert.deepEqual(parseArgs(["-V"]), { command: "version" });
  assert.deepEqual(parseArgs(["passwd", "-D", "pw.txt", "alice"]), {
    command: "passwd",
    args: ["-D", "pw.txt", "alice"],
  });
});

Deno.test("parseArgs: usage errors name the offending argument", () => {
  const cases: [args: string[], message: string][] = [
    [["--bogus", "1"], "unknown flag --bogus"],
    [["--server.prot", "1"], "unknown flag --server.prot"],
    [["--port"], "flag --port needs a value"],
    [["--port", "--host", "x"], "flag --port needs a value"],
    [["--config"], "flag --config needs a value"],
    [["start"], 'unexpected argument "start"'],
    [["-p", "1"], 'unexpected argument "-p"'],
    [["--"], 'unexpected argument "--"'],
  ];
  for (const [args, message] of cases) {
    assert.throws(
      () => parseArgs(args),
      (err: unknown) => err instanceof UsageError && err.message === message,
    );
  }
});

Deno.test("helpText: lists every key's flag, the aliases and the defaults", () => {
  const text = helpText("deno-mqtt", "9.9.9");
  assert.ok(text.startsWith("deno-mqtt 9.9.9"));
  for (const { key, spec } of KEYS) {
    assert.ok(text.includes(`--${key}`), `--${key} missing from help`);
    if (spec.alias) assert.ok(text.includes(`--${key}, ${spec.alias} `), `${spec.alias} missing from help`);
  }
  assert.ok(text.includes("--server.port, --port 0..65535\n"));
  assert.ok(text.includes("(default 1883)"));
  assert.ok(text.includes("--config PATH"));
  assert.ok(text.includes("--listeners LIST"));
});

Deno.test("main.ts --version prints the version from deno.json", async () => {
  const { code, stdout, stderr } = await runMain("--version");
  assert.equal(code, 0, stderr);
  assert.equal(stdout, `deno-mqtt ${denoJson.version}\n`);
  assert.equal(stderr, "");
});

Deno.test("main.ts --help lists the flags and exits 0", async () => {
  const { code, stdout, stderr } = await runMain("--help");
  assert.equal(code, 0, stderr);
  assert.ok(stdout.includes("--server.max_clients"), stdout);
  assert.ok(stdout.includes("--log-level"), stdout);
  assert.ok(stdout.includes("passwd"), stdout);
  assert.equal(stderr, "");
});

Deno.test("main.ts: an unknown flag is a one-line error and exit code 2", async () => {
  const { code, stdout, stderr } = await runMain("--bogus", "1");
  assert.equal(code, 2);
  assert.equal(stdout, "");
  assert.equal(stderr, "error: unknown flag --bogus (run with --help to list the flags)\n");
});

Deno.test("main.ts: a bad flag value is exit code 2 naming the flag and value", async () => {
  const { code, stderr } = await runMain("--port", "99999");
  assert.equal(code, 2);
  assert.equal(stderr, "error: command line: --server.port must be an integer 0..65535, got 99999\n");
});

Deno.test("main.ts: a bad config file is a one-line error naming file, key and value, exit 1", async () => {
  const file = await Deno.makeTempFile({ prefix: "cli_test_", suffix: ".yaml" });
  try {
    await Deno.writeTextFile(file, "server:\n  max_clients: lots\n");
    const { code, stdout, stderr } = await runMain("--config", file);
    assert.equal(code, 1);
    assert.equal(stdout, "");
    assertOneLineError(stderr);
    assert.equal(stderr, `error: ${file}: server.max_clients must be an integer 1..2147483647, got "lots"\n`);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("main.ts: an explicit --config that does not exist is an error, exit 1", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cli_test_" });
  try {
    const { code, stderr } = await runMain("--config", `${dir}/missing.yaml`);
    assert.equal(code, 1);
    assertOneLineError(stderr);
    assert.equal(stderr, `error: ${dir}/missing.yaml: config file not found\n`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main.ts passwd is dispatched to the passwd subcommand", async () => {
  // Without arguments the subcommand prints its own usage and exits 2 (its bad-command-line code).
  const { code, stdout, stderr } = await runMain("passwd");
  assert.equal(code, 2);
  assert.equal(stdout, "");
  assert.ok(stderr.startsWith("passwd: "), stderr);
  assert.ok(stderr.includes("usage"), stderr);
});

/** A running main.ts whose stderr is collected line by line. */
class RunningMain {
  readonly child: Deno.ChildProcess;
  #text = "";
  #done: Promise<void>;

  constructor(args: string[], cwd = REPO) {
    this.child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", MAIN, ...args],
      cwd,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const stderr = this.child.stderr;
    this.#done = (async () => {
      for await (const chunk of stderr.pipeThrough(new TextDecoderStream())) this.#text += chunk;
    })();
  }

  get stderr(): string {
    return this.#text;
  }

  /** Resolves with the first match of `pattern` in stderr; fails after `ms`. */
  async waitFor(pattern: RegExp, ms = 10_000): Promise<RegExpMatchArray> {
    const deadline = Date.now() + ms;
    for (;;) {
      const match = this.#text.match(pattern);
      if (match) return match;
      if (Date.now() > deadline) assert.fail(`no ${pattern} in stderr within ${ms} ms:\n${this.#text}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Waits for the exit code (all of stderr read). */
  async exit(): Promise<number> {
    const status = await this.child.status;
    await this.#done;
    return status.code;
  }

  /** Kills the process if it is still running (test clean-up). */
  async kill(): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await this.exit();
  }
}

Deno.test("main.ts: a busy port is a one-line start-up error, exit 1", async () => {
  const blocker = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const proc = new RunningMain([
    "--port",
    String(blocker.addr.port),
    "--metrics.enabled",
    "false",
    "--storage-backend",
    "memory",
  ]);
  try {
    assert.equal(await proc.exit(), 1);
    const errors = proc.stderr.split("\n").filter((line) => line.includes("ERROR"));
    assert.equal(errors.length, 1, proc.stderr);
    assert.match(errors[0], new RegExp(`ERROR start-up failed: .*${blocker.addr.port}`));
    assert.ok(!/\n\s+at /.test(proc.stderr), `stack trace in:\n${proc.stderr}`);
  } finally {
    await proc.kill();
    blocker.close();
  }
});

Deno.test("main.ts: logs what it bound, reloads on SIGHUP (rejecting a broken file), stops on SIGTERM", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cli_test_" });
  const file = `${dir}/config.yaml`;
  const good = "server:\n  port: 0\nmetrics:\n  port: 0\nstorage:\n  backend: memory\n";
  await Deno.writeTextFile(file, good);
  const proc = new RunningMain(["--config", file, "--max-qos", "2"]);
  try {
    const [, port] = await proc.waitFor(/INFO {2}listening type=mqtt address=127\.0\.0\.1:(\d+)/);
    assert.notEqual(Number(port), 0, "the bound port is logged, not the configured 0");
    await proc.waitFor(/INFO {2}metrics url=http:\/\/127\.0\.0\.1:[1-9]\d*\/metrics/);
    await proc.waitFor(/INFO {2}store backend=memory/);
    assert.match(proc.stderr, /broker started version=\S+ max_qos=2/, "the --max-qos flag applies");

    await Deno.writeTextFile(file, "server:\n  port: [\n");
    proc.child.kill("SIGHUP");
    await proc.waitFor(/ERROR configuration rejected, keeping the running one: .*config\.yaml: invalid YAML/);

    await Deno.writeTextFile(file, `${good}log:\n  level: debug\n  format: json\nsys:\n  interval: 5\n`);
    proc.child.kill("SIGHUP");
    await proc.waitFor(/"change":"log\.format text -> json"/);
    await proc.waitFor(/"change":"sys\.interval 10 -> 5 needs a restart"/);

    // The file gone: rejected, not replaced by the defaults.
    await Deno.remove(file);
    proc.child.kill("SIGHUP");
    await proc.waitFor(
      /configuration rejected, keeping the running one: .*config\.yaml: config file not found/,
    );

    // Ctrl-C under `deno task start` arrives twice (terminal and task runner), `deno task dev` adds a SIGTERM:
    // the repeat is the same request, the stop stays graceful.
    proc.child.kill("SIGINT");
    proc.child.kill("SIGTERM");
    assert.equal(await proc.exit(), 0, proc.stderr);
    assert.match(proc.stderr, /"msg":"stopped"/);
    assert.doesNotMatch(proc.stderr, /second stop signal/);
  } finally {
    await proc.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("main.ts: SIGHUP after the default config file went missing keeps the running config", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cli_test_default_" });
  await Deno.mkdir(`${dir}/config`);
  const file = `${dir}/config/config.yaml`;
  await Deno.writeTextFile(
    file,
    "server:\n  port: 0\nmetrics:\n  enabled: false\nstorage:\n  backend: memory\nauth:\n  allow_anonymous: false\n",
  );
  const proc = new RunningMain([], dir);
  try {
    await proc.waitFor(/INFO {2}store backend=memory/);
    await Deno.remove(file);
    proc.child.kill("SIGHUP");
    await proc.waitFor(
      /configuration rejected, keeping the running one: config\/config\.yaml: config file not found/,
    );
    assert.doesNotMatch(proc.stderr, /allow_anonymous false -> true/);
    proc.child.kill("SIGTERM");
    assert.equal(await proc.exit(), 0, proc.stderr);
  } finally {
    await proc.kill();
    await Deno.remove(dir, { recursive: true });
  }
});
