/**
 * Authentication through the real broker: a password file (PBKDF2 hashes from `hashPassword`) with
 * anonymous clients refused, for MQTT 3.1.1 (CONNACK return codes) and MQTT 5 (reason codes).
 */

import assert from "node:assert/strict";
import { hashPassword } from "../../src/auth/password_file.ts";
import type { ConnackPacket, ConnectPacket, ProtocolVersion, PublishPacket } from "../../src/mqtt/types.ts";
import {
  heldKv,
  mqttConnect,
  mqttEnd,
  RawClient,
  startBroker,
  te,
  type TestBroker,
  waitFor,
} from "../helpers.ts";

/** Test-only iteration count: fast, still the real PBKDF2 code path. */
const ITERATIONS = 1000;

async function withPasswordBroker(fn: (b: TestBroker) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-auth-test-" });
  try {
    const file = `${dir}/passwd`;
    const lines = [
      "# test users",
      `alice:${await hashPassword("wonderland", { iterations: ITERATIONS })}`,
      `bob:${await hashPassword("b0b-p@ss word", { iterations: ITERATIONS })}`,
    ];
    await Deno.writeTextFile(file, lines.join("\n") + "\n");
    const b = await startBroker({ auth: { password_file: file, allow_anonymous: false } });
    try {
      await fn(b);
    } finally {
      await b.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Sends one CONNECT and returns the CONNACK code; checks that a refusal closes the connection. */
async function connackCode(
  port: number,
  version: ProtocolVersion,
  credentials: { username?: string; password?: string },
): Promise<number> {
  const c = await RawClient.open(port, version);
  const connect: ConnectPacket = {
    type: 1,
    protocolName: version === 3 ? "MQIsdp" : "MQTT",
    protocolVersion: version,
    clean: true,
    keepAlive: 30,
    clientId: `auth-${crypto.randomUUID().slice(0, 8)}`,
    username: credentials.username,
    password: credentials.password === undefined ? undefined : te(credentials.password),
  };
  c.send(connect);
  const connack = await c.expect(2) as ConnackPacket;
  if (connack.reasonCode !== 0) await c.expectClosed();
  await c.close();
  return connack.reasonCode;
}

Deno.test("password file: good credentials connect, bad get 0x86 / 4, none get 0x87 / 5", async () => {
  await withPasswordBroker(async (b) => {
    const cases: [string, { username?: string; password?: string }, number, number][] = [
      ["good alice", { username: "alice", password: "wonderland" }, 0, 0],
      ["good bob (space and symbols)", { username: "bob", password: "b0b-p@ss word" }, 0, 0],
      ["wrong password", { username: "alice", password: "wonderlant" }, 0x86, 4],
      ["another user's password", { username: "bob", password: "wonderland" }, 0x86, 4],
      ["unknown user", { username: "mallory", password: "wonderland" }, 0x86, 4],
      ["empty password", { username: "alice", password: "" }, 0x86, 4],
      ["username without password", { username: "alice" }, 0x86, 4],
      ["no credentials", {}, 0x87, 5],
    ];
    // All at once: each refusal waits the broker's anti-guessing delay.
    const results = await Promise.all(cases.map(async ([name, creds, code5, code4]) => {
      const [v5, v4, v3] = await Promise.all([
        connackCode(b.port, 5, creds),
        connackCode(b.port, 4, creds),
        connackCode(b.port, 3, creds),
      ]);
      return { name, got: [v5, v4, v3], want: [code5, code4, code4] };
    }));
    for (const r of results) assert.deepEqual(r.got, r.want, r.name);
    assert.equal(b.broker.metrics.authFailures, 18);
    assert.equal(b.broker.clients.size, 0);
  });
});

Deno.test("password file: MQTT.js with credentials connects, sets the username, and works", async () => {
  await withPasswordBroker(async (b) => {
    const c = await mqttConnect(b.url, { clientId: "alice-1", username: "alice", password: "wonderland" });
    assert.equal(b.broker.clients.get("alice-1")?.username, "alice");
    await c.subscribeAsync("a/t");
    await c.publishAsync("a/t", "x", { qos: 1 });
    await mqttEnd(c);
    await assert.rejects(
      mqttConnect(b.url, { clientId: "alice-2", username: "alice", password: "nope", protocolVersion: 5 }),
      /Bad User Name or Password/i,
    );
    await assert.rejects(mqttConnect(b.url, { clientId: "anon" }), /Not authorized/i);
  });
});

Deno.test("SIGHUP: connected clients whose credentials no longer pass are disconnected, the others stay", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-auth-reload-" });
  try {
    const file = `${dir}/passwd`;
    const alice = `alice:${await hashPassword("wonderland", { iterations: ITERATIONS })}`;
    const bob = `bob:${await hashPassword("builder", { iterations: ITERATIONS })}`;
    const carol = `carol:${await hashPassword("c4rol", { iterations: ITERATIONS })}`;
    await Deno.writeTextFile(file, [alice, bob, carol].join("\n") + "\n");
    const b = await startBroker({ auth: { password_file: file, allow_anonymous: true } });
    try {
      const connect = (
        username: string | undefined,
        password: string | undefined,
        version: ProtocolVersion = 5,
      ) =>
        RawClient.connect(b.port, {
          version,
          username,
          password: password === undefined ? undefined : te(password),
        });
      const keeps = await connect("alice", "wonderland");
      const removed = await connect("bob", "builder");
      const changed = await connect("carol", "c4rol", 4);
      const anonymous = await connect(undefined, undefined);
      // bob leaves the file, carol gets a new password, anonymous clients are no longer allowed.
      const carolNew = `carol:${await hashPassword("n3w", { iterations: ITERATIONS })}`;
      await Deno.writeTextFile(file, [alice, carolNew].join("\n") + "\n");
      await b.broker.reload({ ...b.config, auth: { ...b.config.auth, allow_anonymous: false } });
      for (const c of [removed, anonymous]) {
        const d = await c.expect(14);
        assert.equal((d as { reasonCode: number }).reasonCode, 0x87);
        await c.expectClosed();
      }
      await changed.expectClosed(); // 3.1.1: just closed
      keeps.send({ type: 12 });
      await keeps.expect(13); // still connected
      assert.equal(await connackCode(b.port, 4, { username: "carol", password: "n3w" }), 0);
      await keeps.close();
    } finally {
      await b.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGHUP during a CONNECT's password check: the check is made again against the new file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-auth-reload-mid-" });
  try {
    const file = `${dir}/passwd`;
    // Enough iterations that the check is still running when the reload comes.
    await Deno.writeTextFile(file, `alice:${await hashPassword("wonderland", { iterations: 400_000 })}\n`);
    const b = await startBroker({ auth: { password_file: file, allow_anonymous: false } });
    try {
      const c = await RawClient.open(b.port, 5);
      c.send({
        type: 1,
        protocolName: "MQTT",
        protocolVersion: 5,
        clean: true,
        keepAlive: 30,
        clientId: "mid-login",
        username: "alice",
        password: te("wonderland"),
      });
      await new Promise((resolve) => setTimeout(resolve, 30));
      await Deno.writeTextFile(file, `bob:${await hashPassword("builder", { iterations: ITERATIONS })}\n`);
      await b.broker.reload(b.config);
      const connack = await c.expect(2, 5000) as ConnackPacket;
      assert.equal(connack.reasonCode, 0x86, "alice is no longer in the file");
      await c.close();
    } finally {
      await b.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A persistent MQTT 5 CONNECT of alice with a will. */
function aliceConnect(clientId: string, password: string, sessionExpiryInterval: number): ConnectPacket {
  return {
    type: 1,
    protocolName: "MQTT",
    protocolVersion: 5,
    clean: false,
    keepAlive: 30,
    clientId,
    username: "alice",
    password: te(password),
    properties: { sessionExpiryInterval },
    will: { topic: "cw/will", payload: te("alice is gone"), qos: 0, retain: false },
  };
}

Deno.test("SIGHUP while a CONNECT waits for its session's commit: refused if the password no longer passes, and the session is left as after any connection", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-auth-reload-commit-" });
  try {
    const file = `${dir}/passwd`;
    const alice = `alice:${await hashPassword("wonderland", { iterations: ITERATIONS })}`;
    await Deno.writeTextFile(file, alice + "\n");
    const kv = heldKv(`${dir}/mqtt.db`);
    const b = await startBroker(
      { auth: { password_file: file, allow_anonymous: true }, storage: { backend: "kv" } },
      kv.store,
    );
    try {
      const watcher = await RawClient.connect(b.port, { version: 5 });
      await watcher.subscribe("cw/#", 0);
      // The session exists already, with a subscription.
      const first = await RawClient.connect(b.port, {
        version: 5,
        ...aliceConnect("cw-alice", "wonderland", 2),
      });
      await first.subscribe("cw/q", 1);
      first.send({ type: 14, reasonCode: 0 });
      await first.expectClosed();

      kv.hold();
      const c = await RawClient.open(b.port, 5);
      c.send(aliceConnect("cw-alice", "wonderland", 2));
      // The password passed: the CONNECT now waits for the commit of its session record.
      await waitFor(() => b.broker.clients.has("cw-alice"), "the CONNECT to wait for its commit");
      await c.expectNone(2, 100);
      await Deno.writeTextFile(file, `alice:${await hashPassword("n3w", { iterations: ITERATIONS })}\n`);
      await b.broker.reload(b.config);
      kv.release();
      const connack = await c.expect(2) as ConnackPacket;
      assert.equal(connack.reasonCode, 0x87, "the password file changed for alice while the CONNECT waited");
      await c.expectClosed();

      // Nothing of the refused connection stays behind: the session is offline from now, its will (of a
      // connection that was never accepted) is not published, and it ends after its Session Expiry Interval.
      const session = b.broker.sessions.get("cw-alice");
      assert.ok(session !== undefined, "the session itself stays (the refused CONNECT did not end it)");
      assert.equal(session.client, undefined);
      assert.notEqual(session.disconnectedAt, undefined, "the session counts as offline");
      assert.equal(session.will, undefined, "the refused connection's will is not kept");
      assert.equal(b.broker.clients.has("cw-alice"), false);
      await waitFor(() => !b.broker.sessions.has("cw-alice"), "the session to expire", 4000);
      await watcher.expectNone(3, 100);

      // The new password works.
      const again = await RawClient.connect(b.port, { version: 5, ...aliceConnect("cw-alice", "n3w", 2) });
      again.send({ type: 14, reasonCode: 0 });
      await again.expectClosed();
      await watcher.close();
    } finally {
      await b.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGHUP while a CONNECT waits for its session's commit: an unchanged password is accepted, under the new ACL", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-auth-reload-commit-acl-" });
  try {
    const file = `${dir}/passwd`;
    const aclFile = `${dir}/acl`;
    await Deno.writeTextFile(file, `alice:${await hashPassword("wonderland", { iterations: ITERATIONS })}\n`);
    await Deno.writeTextFile(aclFile, "user alice\ntopic readwrite cw/#\n");
    const kv = heldKv(`${dir}/mqtt.db`);
    const b = await startBroker(
      {
        auth: { password_file: file, acl_file: aclFile, allow_anonymous: false },
        storage: { backend: "kv" },
      },
      kv.store,
    );
    try {
      const first = await RawClient.connect(b.port, {
        version: 5,
        ...aliceConnect("cwa-alice", "wonderland", 60),
      });
      await first.subscribe("cw/#", 1);
      first.send({ type: 14, reasonCode: 0 });
      await first.expectClosed();
      const pub = await RawClient.connect(b.port, {
        version: 5,
        ...aliceConnect("cwa-pub", "wonderland", 0),
      });
      for (const [i, topic] of ["cw/secret", "cw/ok"].entries()) {
        pub.send({ type: 3, topic, payload: te(topic), qos: 1, retain: false, dup: false, packetId: i + 1 });
        await pub.expect(4);
      }
      assert.equal(b.broker.sessions.get("cwa-alice")?.queuedCount, 2);

      kv.hold();
      const c = await RawClient.open(b.port, 5);
      c.send(aliceConnect("cwa-alice", "wonderland", 60));
      await waitFor(() => b.broker.clients.has("cwa-alice"), "the CONNECT to wait for its commit");
      // The password file is read again unchanged; the ACL no longer lets alice read cw/secret.
      await Deno.writeTextFile(aclFile, "user alice\ntopic readwrite cw/#\ntopic deny cw/secret\n");
      await b.broker.reload(b.config);
      kv.release();
      const connack = await c.expect(2) as ConnackPacket;
      assert.equal(connack.reasonCode, 0);
      assert.equal(connack.sessionPresent, true);
      const got = await c.expect(3) as PublishPacket;
      assert.equal(got.topic, "cw/ok", "the queued message alice may no longer read is not sent");
      c.send({ type: 4, packetId: got.packetId! });
      await c.expectNone(3, 200);
      assert.equal(b.broker.metrics.dropped.not_authorized, 1);
      c.send({ type: 14, reasonCode: 0, properties: { sessionExpiryInterval: 0 } });
      await c.expectClosed();
      await pub.close();
    } finally {
      await b.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a CONNECT whose session's commit outlasts server.connect_timeout leaves the session offline, to expire", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-connect-commit-timeout-" });
  try {
    const kv = heldKv(`${dir}/mqtt.db`);
    const b = await startBroker({ server: { connect_timeout: 1 }, storage: { backend: "kv" } }, kv.store);
    try {
      const watcher = await RawClient.connect(b.port, { version: 5 });
      await watcher.subscribe("cw/#", 0);
      kv.hold();
      const c = await RawClient.open(b.port, 5);
      c.send(aliceConnect("cw-slow", "", 1));
      await waitFor(() => b.broker.clients.has("cw-slow"), "the CONNECT to wait for its commit");
      // The once-a-second sweep closes a connection still without CONNACK after connect_timeout.
      await c.expectClosed(4000);
      kv.release();
      const session = b.broker.sessions.get("cw-slow");
      assert.ok(session !== undefined);
      assert.notEqual(session.disconnectedAt, undefined, "the session counts as offline");
      await waitFor(() => !b.broker.sessions.has("cw-slow"), "the session to expire", 3000);
      await watcher.expectNone(3, 100); // no will: the connection was never accepted
      await watcher.close();
    } finally {
      await b.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
