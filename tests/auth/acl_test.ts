import assert from "node:assert/strict";
import { Acl } from "../../src/auth/acl.ts";

const SAMPLE = `
# anonymous clients
topic read $SYS/#
topic read public/#

user alice
topic readwrite home/alice/#
topic deny home/alice/secret
topic write alerts

user bob
topic read home/#  # bob reads every home
topic deny home/alice/#

pattern read devices/%c/config          # applies to every client
pattern write devices/%u/+/telemetry
`;

Deno.test("anonymous clients get the rules before the first user line", () => {
  const acl = Acl.parse(SAMPLE);
  assert.equal(acl.canRead(undefined, "c1", "$SYS/broker/uptime"), true);
  assert.equal(acl.canRead(undefined, "c1", "public/news"), true);
  assert.equal(acl.canPublish(undefined, "c1", "public/news"), false);
  assert.equal(acl.canRead(undefined, "c1", "home/alice/x"), false);
  // A user's own block replaces the anonymous rules: alice has no $SYS rule.
  assert.equal(acl.canRead("alice", "c1", "$SYS/broker/uptime"), false);
  assert.equal(acl.canRead("alice", "c1", "public/news"), false);
});

Deno.test("user rules: readwrite, write-only, and deny wins over allow", () => {
  const acl = Acl.parse(SAMPLE);
  assert.equal(acl.canPublish("alice", "c1", "home/alice/lamp"), true);
  assert.equal(acl.canRead("alice", "c1", "home/alice/lamp"), true);
  assert.equal(acl.canRead("alice", "c1", "home/alice/secret"), false);
  assert.equal(acl.canPublish("alice", "c1", "home/alice/secret"), false);
  assert.equal(acl.canRead("alice", "c1", "home/alice/secret/more"), true, "deny is exact, not a prefix");
  assert.equal(acl.canPublish("alice", "c1", "alerts"), true);
  assert.equal(acl.canRead("alice", "c1", "alerts"), false);
  assert.equal(acl.canPublish("alice", "c1", "home/bob/lamp"), false);

  assert.equal(acl.canRead("bob", "c2", "home/bob/lamp"), true);
  assert.equal(acl.canRead("bob", "c2", "home/alice/lamp"), false, "deny home/alice/# beats read home/#");
  assert.equal(acl.canPublish("bob", "c2", "home/bob/lamp"), false);
});

Deno.test("a user with no matching rule, or not in the file, is denied", () => {
  const acl = Acl.parse(SAMPLE);
  assert.equal(acl.canPublish("carol", "c3", "home/carol/x"), false);
  assert.equal(acl.canRead("carol", "c3", "public/news"), false);
  assert.equal(acl.canSubscribe("carol", "c3", "#"), false);
  assert.equal(Acl.parse("").canRead(undefined, "c", "a"), false);
});

Deno.test("pattern %c and %u apply to every client, anonymous included", () => {
  const acl = Acl.parse(SAMPLE);
  assert.equal(acl.canRead(undefined, "dev7", "devices/dev7/config"), true);
  assert.equal(acl.canRead("alice", "dev7", "devices/dev7/config"), true);
  assert.equal(acl.canRead("alice", "dev7", "devices/dev8/config"), false);
  assert.equal(acl.canPublish("alice", "dev7", "devices/dev7/config"), false);
  assert.equal(acl.canPublish("alice", "x", "devices/alice/s1/telemetry"), true);
  assert.equal(acl.canPublish("alice", "x", "devices/bob/s1/telemetry"), false);
  assert.equal(
    acl.canPublish("carol", "x", "devices/carol/s1/telemetry"),
    true,
    "users outside the file too",
  );
  // %u never applies to a client without a username.
  assert.equal(acl.canPublish(undefined, "x", "devices//s1/telemetry"), false);
});

Deno.test("a username or client id with + # / or empty never matches a %u / %c pattern", () => {
  const acl = Acl.parse("pattern readwrite devices/%u/data\npattern read cfg/%c\npattern read %u/inbox\n");
  assert.equal(acl.canPublish("u1", "c", "devices/u1/data"), true);
  // Each of these would otherwise turn the pattern into a wildcard or a different depth.
  assert.equal(acl.canPublish("+", "c", "devices/anyone/data"), false);
  assert.equal(acl.canPublish("+", "c", "devices/+/data"), false);
  assert.equal(acl.canSubscribe("+", "c", "devices/+/data"), false);
  assert.equal(acl.canSubscribe("#", "c", "devices/#"), false);
  assert.equal(acl.canPublish("a/b", "c", "devices/a/b/data"), false);
  assert.equal(acl.canPublish("", "c", "devices//data"), false);
  assert.equal(acl.canRead("u", "#", "cfg/x"), false);
  assert.equal(acl.canRead("u", "a/b", "cfg/a/b"), false);
  assert.equal(acl.canRead("u", "c9", "cfg/c9"), true);
  // A username starting with $ must not reach $SYS through a pattern that starts with %u.
  assert.equal(acl.canRead("$SYS", "c", "$SYS/inbox"), false);
  assert.equal(acl.canRead("bob", "c", "bob/inbox"), true);
});

Deno.test("a deny pattern beats a topic grant", () => {
  const acl = Acl.parse("user alice\ntopic readwrite #\npattern deny private/%c/#\n");
  assert.equal(acl.canPublish("alice", "c1", "private/c2/x"), true);
  assert.equal(acl.canPublish("alice", "c1", "private/c1/x"), false);
  assert.equal(acl.canSubscribe("alice", "c1", "private/c1/#"), false);
});

Deno.test("an explicit anonymous block adds anonymous rules after user blocks", () => {
  const acl = Acl.parse("user alice\ntopic read a/#\nanonymous\ntopic read b/#\nuser bob\ntopic read c/#\n");
  assert.equal(acl.canRead(undefined, "x", "b/1"), true);
  assert.equal(acl.canRead(undefined, "x", "a/1"), false);
  assert.equal(acl.canRead(undefined, "x", "c/1"), false);
  assert.equal(acl.canRead("alice", "x", "b/1"), false);
  assert.equal(acl.canRead("bob", "x", "c/1"), true);
});

Deno.test("repeated user blocks are merged", () => {
  const acl = Acl.parse("user alice\ntopic read a\nuser bob\ntopic read b\nuser alice\ntopic read c\n");
  assert.equal(acl.canRead("alice", "x", "a"), true);
  assert.equal(acl.canRead("alice", "x", "c"), true);
  assert.equal(acl.canRead("alice", "x", "b"), false);
});

Deno.test("canSubscribe: allowed when a read rule covers the filter and no deny rule covers it", () => {
  const acl = Acl.parse(SAMPLE);
  assert.equal(acl.canSubscribe("alice", "c", "home/alice/#"), true);
  assert.equal(acl.canSubscribe("alice", "c", "home/alice/+/temp"), true);
  assert.equal(acl.canSubscribe("alice", "c", "home/+"), false, "wider than the rule");
  assert.equal(acl.canSubscribe("alice", "c", "home/#"), false);
  assert.equal(acl.canSubscribe("alice", "c", "home/alice/secret"), false, "covered by deny");
  assert.equal(acl.canSubscribe("alice", "c", "alerts"), false, "write-only rule does not allow reading");
  assert.equal(acl.canSubscribe("bob", "c", "home/+/lamp"), true, "deny narrower than the filter");
  assert.equal(acl.canRead("bob", "c", "home/alice/lamp"), false, "…then canRead filters deliveries");
  assert.equal(acl.canSubscribe("bob", "c", "home/alice/lamp"), false);
  assert.equal(acl.canSubscribe(undefined, "dev7", "devices/dev7/config"), true);
  assert.equal(acl.canSubscribe(undefined, "dev7", "devices/+/config"), false);
});

Deno.test("rule a/+ does not cover filter a/#, rule a/# covers a/b/+", () => {
  const acl = Acl.parse("topic read a/+\ntopic read b/#\n");
  assert.equal(acl.canSubscribe(undefined, "c", "a/#"), false);
  assert.equal(acl.canSubscribe(undefined, "c", "a/x"), true);
  assert.equal(acl.canSubscribe(undefined, "c", "b/x/+"), true);
});

Deno.test("canSubscribe checks the filter inside a $share prefix", () => {
  const acl = Acl.parse("topic read jobs/#\n");
  assert.equal(acl.canSubscribe(undefined, "c", "$share/workers/jobs/+"), true);
  assert.equal(acl.canSubscribe(undefined, "c", "$share/workers/other/+"), false);
  assert.equal(acl.canSubscribe(undefined, "c", "$share/workers"), false);
});

Deno.test("$SYS needs an explicit rule: # does not reach it", () => {
  const acl = Acl.parse("user admin\ntopic readwrite #\nuser ops\ntopic read $SYS/#\n");
  assert.equal(acl.canRead("admin", "c", "a/b"), true);
  assert.equal(acl.canRead("admin", "c", "$SYS/broker/clients"), false);
  assert.equal(acl.canSubscribe("admin", "c", "$SYS/#"), false);
  assert.equal(acl.canSubscribe("admin", "c", "#"), true);
  assert.equal(acl.canRead("ops", "c", "$SYS/broker/clients"), true);
  assert.equal(acl.canSubscribe("ops", "c", "$SYS/broker/+"), true);
  assert.equal(acl.canPublish("ops", "c", "$SYS/broker/clients"), false);
});

Deno.test("a rule without an access word is readwrite; trailing comments are ignored", () => {
  const acl = Acl.parse(
    "topic a/b\ntopic read my topic/x   # with a space\nuser root\ntopic write # # all\n",
  );
  assert.equal(
    acl.canPublish("root", "c", "any/topic"),
    true,
    "'#' right after the access word is the filter",
  );
  assert.equal(acl.canRead("root", "c", "any/topic"), false);
  assert.equal(acl.canPublish(undefined, "c", "a/b"), true);
  assert.equal(acl.canRead(undefined, "c", "a/b"), true);
  assert.equal(acl.canRead(undefined, "c", "my topic/x"), true);
  assert.equal(acl.canPublish(undefined, "c", "my topic/x"), false);
});

Deno.test("allowAll allows everything", () => {
  const acl = Acl.allowAll();
  assert.equal(acl.canPublish(undefined, "c", "$SYS/x"), true);
  assert.equal(acl.canRead("u", "c", "a"), true);
  assert.equal(acl.canSubscribe("u", "c", "#"), true);
});

Deno.test("parse errors name the source and the line", () => {
  const bad: [string, RegExp][] = [
    ["topic read a\nfrobnicate x\n", /^f\.acl:2: unknown keyword 'frobnicate'/],
    ["\n\ntopic rw a/b\n", /^f\.acl:3: unknown access 'rw'/],
    ["topic read a/#/b\n", /^f\.acl:1: '#' must be a whole level/],
    ["# c\ntopic read a+\n", /^f\.acl:2: '\+' must be a whole level/],
    ["user\n", /^f\.acl:1: 'user' needs a username/],
    ["topic\n", /^f\.acl:1: 'topic' needs a topic filter/],
    ["topic deny\n", /^f\.acl:1: 'topic deny' needs a topic filter after the access word/],
    ["topic a b\n", /^f\.acl:1: unknown access 'a' in 'topic a b'/],
    ["anonymous x\n", /^f\.acl:1: 'anonymous' takes no argument/],
    ["user a\ntopic read devices/%u\n", /^f\.acl:2: %u \/ %c are only substituted in 'pattern' lines/],
    ["pattern read %u/#/x\n", /^f\.acl:1: '#' must be a whole level/],
  ];
  for (const [text, want] of bad) {
    assert.throws(() => Acl.parse(text, "f.acl"), { message: want }, JSON.stringify(text));
  }
});

Deno.test("Acl.load reads a file and names it in errors", async () => {
  const dir = await Deno.makeTempDir({ prefix: "acl_test_" });
  try {
    const good = `${dir}/good.acl`;
    await Deno.writeTextFile(good, "user alice\r\ntopic read a/#\r\n");
    const acl = await Acl.load(good);
    assert.equal(acl.canRead("alice", "c", "a/b"), true);
    assert.equal(acl.canRead("alice", "c", "b"), false);

    const bad = `${dir}/bad.acl`;
    await Deno.writeTextFile(bad, "user alice\ntopic readd a\n");
    await assert.rejects(
      Acl.load(bad),
      (e: Error) => e.message.startsWith(`${bad}:2: unknown access 'readd'`),
    );
    await assert.rejects(
      Acl.load(`${dir}/missing.acl`),
      (e: Error) => e.message.startsWith(`cannot read ACL file ${dir}/missing.acl:`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
