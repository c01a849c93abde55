import assert from "node:assert/strict";
import {
  constantTimeEqual,
  DEFAULT_ITERATIONS,
  hashPassword,
  parsePasswordFile,
  PasswordFile,
} from "../../src/auth/password_file.ts";

const FAST = { iterations: 1000 };
const utf8 = (s: string) => new TextEncoder().encode(s);

Deno.test("the default iteration count is at least OWASP's 210000", () => {
  assert.ok(DEFAULT_ITERATIONS >= 210_000, `DEFAULT_ITERATIONS = ${DEFAULT_ITERATIONS}`);
});

Deno.test("hashPassword without options uses the default iterations", async () => {
  const hash = await hashPassword("pw");
  assert.equal(hash.split("$")[2], String(DEFAULT_ITERATIONS));
});

Deno.test("hashPassword: format, 16-byte salt, 64-byte hash, fresh salt each time", async () => {
  const a = await hashPassword("secret", FAST);
  const b = await hashPassword("secret", FAST);
  assert.match(a, /^\$pbkdf2-sha512\$1000\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
  const [, , , salt, hash] = a.split("$");
  assert.equal(atob(salt).length, 16);
  assert.equal(atob(hash).length, 64);
  assert.notEqual(a, b, "two hashes of the same password must differ by salt");
  await assert.rejects(hashPassword("x", { iterations: 0 }), /iterations must be an integer .* got 0/);
});

Deno.test("verify accepts the right password and refuses a wrong one or an unknown user", async () => {
  const text = `# users\nalice:${await hashPassword("wonderland", FAST)}\n\nbob:${await hashPassword(
    "ünïcode",
    FAST,
  )}\n`;
  const file = PasswordFile.parse(text);
  assert.equal(file.size, 2);
  assert.equal(file.has("alice"), true);
  assert.equal(file.has("carol"), false);
  assert.equal(await file.verify("alice", utf8("wonderland")), true);
  assert.equal(await file.verify("alice", utf8("Wonderland")), false);
  assert.equal(await file.verify("alice", utf8("")), false);
  assert.equal(await file.verify("bob", utf8("ünïcode")), true);
  assert.equal(await file.verify("bob", utf8("wonderland")), false, "alice's password is not bob's");
  assert.equal(await file.verify("carol", utf8("wonderland")), false);
});

Deno.test("an unknown user costs the same PBKDF2 work as a known one", async () => {
  // With 200000 iterations a derivation takes about 100 ms; a shortcut for unknown users would answer
  // in well under a millisecond.
  const file = PasswordFile.parse(`alice:${await hashPassword("pw", { iterations: 200_000 })}\n`);
  const time = async (user: string) => {
    const t = performance.now();
    await file.verify(user, utf8("nope"));
    return performance.now() - t;
  };
  const known = await time("alice");
  const unknown = await time("nobody");
  // A floor rather than a ratio: CPU contention can only make both slower.
  assert.ok(unknown > 20, `unknown user took ${unknown} ms (known ${known} ms): no PBKDF2 work done`);
});

Deno.test("constantTimeEqual compares content and length", () => {
  assert.equal(constantTimeEqual(utf8("abc"), utf8("abc")), true);
  assert.equal(constantTimeEqual(utf8("abc"), utf8("abd")), false);
  assert.equal(constantTimeEqual(utf8("abc"), utf8("abcd")), false);
});

Deno.test("parse errors name the file and the line, without echoing the hash", async () => {
  const good = await hashPassword("pw", FAST);
  const [, , , salt, hash] = good.split("$");
  const bad: [string, RegExp][] = [
    [
      `alice:${good}\nbob\n`,
      /^p\.txt:2: expected username:\$pbkdf2-sha512\$ITERATIONS\$SALT\$HASH, found no ':'/,
    ],
    [`:${good}\n`, /^p\.txt:1: empty username/],
    [`\n# c\nbob:$sha256$1$${salt}$${hash}\n`, /^p\.txt:3: unsupported hash scheme 'sha256' for user 'bob'/],
    [`bob:$pbkdf2-sha512$0$${salt}$${hash}\n`, /^p\.txt:1: iterations '0' for user 'bob'/],
    [`bob:$pbkdf2-sha512$many$${salt}$${hash}\n`, /^p\.txt:1: iterations 'many'/],
    [`bob:$pbkdf2-sha512$10$%%%$${hash}\n`, /^p\.txt:1: salt of user 'bob' is not base64/],
    [`bob:$pbkdf2-sha512$10$${salt}$AAAA\n`, /^p\.txt:1: hash of user 'bob' is not base64 of 64 bytes/],
    [`bob:$pbkdf2-sha512$10$${salt}\n`, /^p\.txt:1: hash of user 'bob' is not \$pbkdf2-sha512/],
    [`bob:${good}\nalice:${good}\nbob:${good}\n`, /^p\.txt:3: user 'bob' appears twice \(first on line 1\)/],
  ];
  for (const [text, want] of bad) {
    assert.throws(() => parsePasswordFile(text, "p.txt"), (e: Error) => {
      assert.match(e.message, want);
      assert.ok(!e.message.includes(hash), "the hash must not appear in the error");
      return true;
    });
  }
});

Deno.test("PasswordFile.load reads a file and names it in errors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "password_file_test_" });
  try {
    const path = `${dir}/passwd`;
    await Deno.writeTextFile(path, `alice:${await hashPassword("pw", FAST)}\r\n`);
    const file = await PasswordFile.load(path);
    assert.equal(await file.verify("alice", utf8("pw")), true);

    await Deno.writeTextFile(path, "alice:nothing\n");
    await assert.rejects(PasswordFile.load(path), (e: Error) => e.message.startsWith(`${path}:1: `));
    await assert.rejects(PasswordFile.load(`${dir}/missing`), /cannot read password file .*missing/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
