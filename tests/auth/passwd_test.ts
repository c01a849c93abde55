import assert from "node:assert/strict";
import { type PasswdIo, runPasswd } from "../../src/auth/passwd.ts";
import { PasswordFile } from "../../src/auth/password_file.ts";

const utf8 = (s: string) => new TextEncoder().encode(s);
const FAST = ["-I", "1000"];

/** A scripted terminal or pipe: answers readLine from `input`, records prompts and errors. */
function fakeIo(input: (string | undefined)[], terminal: boolean) {
  const prompts: (string | undefined)[] = [];
  const errors: string[] = [];
  const io: PasswdIo = {
    isTerminal: () => terminal,
    readLine(prompt?: string) {
      prompts.push(prompt);
      return Promise.resolve(input.shift());
    },
    error(line: string) {
      errors.push(line);
    },
  };
  return { io, prompts, errors };
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "passwd_test_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("passwd -c -b creates a mode 0600 file that verifies, and its directory", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/data/passwd`; // data/ does not exist yet, as in a fresh checkout
    const { io, errors } = fakeIo([], false);
    assert.equal(await runPasswd(["-c", ...FAST, "-b", file, "alice", "s3cret"], io), 0);
    assert.deepEqual(errors, []);
    if (Deno.build.os !== "windows") assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
    const pf = await PasswordFile.load(file);
    assert.equal(await pf.verify("alice", utf8("s3cret")), true);
    assert.equal(await pf.verify("alice", utf8("other")), false);
    assert.match(await Deno.readTextFile(file), /^alice:\$pbkdf2-sha512\$1000\$[^\n]+\n$/);
  });
});

Deno.test("passwd -b adds and changes users, keeping other lines and comments", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/passwd`;
    const { io, errors } = fakeIo([], false);
    assert.equal(await runPasswd([...FAST, "-c", "-b", file, "alice", "one"], io), 0);
    await Deno.writeTextFile(file, "# managed by hand\n" + await Deno.readTextFile(file));
    assert.equal(await runPasswd([...FAST, "-b", file, "bob", "two"], io), 0);
    assert.equal(await runPasswd([...FAST, "-b", file, "alice", "three"], io), 0);
    assert.deepEqual(errors, []);
    const lines = (await Deno.readTextFile(file)).trimEnd().split("\n");
    assert.equal(lines.length, 3);
    assert.equal(lines[0], "# managed by hand");
    assert.ok(lines[1].startsWith("alice:"), "a changed user keeps its line");
    assert.ok(lines[2].startsWith("bob:"));
    const pf = await PasswordFile.load(file);
    assert.equal(await pf.verify("alice", utf8("three")), true);
    assert.equal(await pf.verify("alice", utf8("one")), false);
    assert.equal(await pf.verify("bob", utf8("two")), true);
  });
});

Deno.test("passwd -c overwrites an existing file with only the one user", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/passwd`;
    const { io } = fakeIo([], false);
    assert.equal(await runPasswd([...FAST, "-c", "-b", file, "alice", "a"], io), 0);
    assert.equal(await runPasswd([...FAST, "-b", file, "bob", "b"], io), 0);
    assert.equal(await runPasswd([...FAST, "-c", "-b", file, "carol", "c"], io), 0);
    const pf = await PasswordFile.load(file);
    assert.equal(pf.size, 1);
    assert.equal(pf.has("carol"), true);
    assert.equal(pf.has("alice"), false);
  });
});

Deno.test("passwd -D deletes a user and fails for an unknown one", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/passwd`;
    const { io, errors } = fakeIo([], false);
    assert.equal(await runPasswd([...FAST, "-c", "-b", file, "alice", "a"], io), 0);
    assert.equal(await runPasswd([...FAST, "-b", file, "bob", "b"], io), 0);
    assert.equal(await runPasswd(["-D", file, "alice"], io), 0);
    const pf = await PasswordFile.load(file);
    assert.equal(pf.has("alice"), false);
    assert.equal(await pf.verify("bob", utf8("b")), true);
    if (Deno.build.os !== "windows") assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);

    assert.equal(await runPasswd(["-D", file, "alice"], io), 1);
    assert.deepEqual(errors, [`passwd: user 'alice' is not in ${file}`]);
  });
});

Deno.test("passwd reads one line from stdin when it is not a terminal", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/passwd`;
    const { io, prompts, errors } = fakeIo(["piped pw"], false);
    assert.equal(await runPasswd([...FAST, "-c", file, "alice"], io), 0);
    assert.deepEqual(errors, []);
    assert.deepEqual(prompts, [undefined], "no prompt on a pipe");
    assert.equal(await (await PasswordFile.load(file)).verify("alice", utf8("piped pw")), true);

    const empty = fakeIo([undefined], false);
    assert.equal(await runPasswd([...FAST, file, "bob"], empty.io), 1);
    assert.deepEqual(empty.errors, ["passwd: no password on stdin (expected one line)"]);
  });
});

Deno.test("passwd asks twice on a terminal and refuses a mismatch", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/passwd`;
    const ok = fakeIo(["tty pw", "tty pw"], true);
    assert.equal(await runPasswd([...FAST, "-c", file, "alice"], ok.io), 0);
    assert.deepEqual(ok.prompts, ["Password: ", "Reenter password: "]);
    assert.equal(await (await PasswordFile.load(file)).verify("alice", utf8("tty pw")), true);

    const before = await Deno.readTextFile(file);
    const bad = fakeIo(["one", "two"], true);
    assert.equal(await runPasswd([...FAST, file, "alice"], bad.io), 1);
    assert.deepEqual(bad.errors, ["passwd: the passwords do not match"]);
    assert.equal(await Deno.readTextFile(file), before, "the file is unchanged after a failure");
  });
});

Deno.test("passwd reports errors in one line with an exit code", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/passwd`;
    const cases: [string[], number, RegExp][] = [
      [[], 2, /^passwd: expected 2 arguments, got 0; usage: passwd /],
      [["-x", file, "u"], 2, /^passwd: unknown option '-x'; usage:/],
      [["-b", file, "u"], 2, /^passwd: expected 3 arguments, got 2; usage:/],
      [["-D", "-b", file, "u", "p"], 2, /^passwd: -D cannot be combined with -b or -c; usage:/],
      [["-I", "0", "-b", file, "u", "p"], 2, /^passwd: -I needs an integer from 1 to \d+, got '0'; usage:/],
      [["-b", file, "u", "p"], 1, /^passwd: .*passwd does not exist \(use -c to create it\)$/],
      [["-D", file, "u"], 1, /^passwd: .*passwd does not exist$/],
      [["-c", "-b", file, "a:b", "p"], 1, /^passwd: username 'a:b' must not contain ':'$/],
      [["-c", "-b", file, "", "p"], 1, /^passwd: the username must not be empty$/],
      [["-c", "-b", file, "u", ""], 1, /^passwd: the password must not be empty$/],
    ];
    for (const [args, code, want] of cases) {
      const { io, errors } = fakeIo([], false);
      assert.equal(await runPasswd(args, io), code, args.join(" "));
      assert.equal(errors.length, 1, args.join(" "));
      assert.match(errors[0], want);
      assert.ok(!errors[0].includes("\n"), "one line");
    }
    // None of the failures created the file.
    await assert.rejects(Deno.stat(file), Deno.errors.NotFound);
  });
});

Deno.test("passwd refuses to edit a malformed file, naming the line", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/passwd`;
    await Deno.writeTextFile(file, "# ok\ngarbage\n");
    const { io, errors } = fakeIo([], false);
    assert.equal(await runPasswd([...FAST, "-b", file, "alice", "pw"], io), 1);
    assert.equal(errors.length, 1);
    assert.ok(errors[0].startsWith(`passwd: ${file}:2: expected username:`), errors[0]);
    assert.equal(await Deno.readTextFile(file), "# ok\ngarbage\n");
  });
});

Deno.test("passwd with the real stdin reads a piped password (subprocess)", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/passwd`;
    const module = new URL("../../src/auth/passwd.ts", import.meta.url).href;
    const code = `import { runPasswd } from ${JSON.stringify(module)};\n` +
      `Deno.exit(await runPasswd(["-c", "-I", "1000", ${JSON.stringify(file)}, "alice"]));`;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", code],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const writer = child.stdin.getWriter();
    await writer.write(utf8("from pipe\r\nignored second line\n"));
    await writer.close();
    const out = await child.output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.equal(await (await PasswordFile.load(file)).verify("alice", utf8("from pipe")), true);
  });
});
