/**
 * What a CONNECT is checked for before the session is set up, over raw sockets: the Will (a valid topic
 * name, not $SYS, within what this server supports), a 3.1 / 3.1.1 keep-alive above `server.max_keepalive`,
 * and the MQTT 3.1 client id length. Each refusal gets the CONNACK code its protocol level has (or, for a
 * malformed 3.1.1 CONNECT, a close without one), a log line, and no will published afterwards.
 */

import assert from "node:assert/strict";
import type { ConnackPacket, ProtocolVersion, QoS, Will } from "../../src/mqtt/types.ts";
import { delay, RawClient, startBroker, te, type TestBroker } from "../helpers.ts";

/** Sends a CONNECT and returns the CONNACK, or "closed" when the broker closes without one. */
async function connectResult(
  b: TestBroker,
  opts: { version?: ProtocolVersion; clientId?: string; keepAlive?: number; will?: Will },
): Promise<{ c: RawClient; connack: ConnackPacket | "closed" }> {
  const version = opts.version ?? 4;
  const c = await RawClient.open(b.port, version);
  c.send({
    type: 1,
    protocolName: version === 3 ? "MQIsdp" : "MQTT",
    protocolVersion: version,
    clean: true,
    keepAlive: opts.keepAlive ?? 60,
    clientId: opts.clientId ?? `chk-${crypto.randomUUID().slice(0, 8)}`,
    will: opts.will,
  });
  try {
    return { c, connack: await c.expect(2) as ConnackPacket };
  } catch {
    return { c, connack: "closed" };
  }
}

function will(topic: string, qos: QoS = 0, retain = false): Will {
  return { topic, payload: te("gone"), qos, retain };
}

/** A subscriber to everything (and to $SYS/#), to see that a refused client's will is never published. */
async function watcher(b: TestBroker): Promise<RawClient> {
  const w = await RawClient.connect(b.port, { clientId: "watcher" });
  await w.subscribe("#", 0);
  await w.subscribe("$SYS/#", 0, 2);
  return w;
}

Deno.test("a Will Topic with a wildcard or empty: 3.1.1 closes without CONNACK, MQTT 5 gets 0x90; never published", async () => {
  const b = await startBroker();
  try {
    const w = await watcher(b);
    for (const topic of ["a/#", "b/+", ""]) {
      const { c, connack } = await connectResult(b, { will: will(topic) });
      assert.equal(connack, "closed", `3.1.1 will topic "${topic}"`);
      await c.close();
    }
    assert.ok(
      b.logs.some((l) => /disconnecting client .*TopicNameInvalid.*Will Topic/.test(l)),
      b.logs.join("\n"),
    );
    const { c, connack } = await connectResult(b, { version: 5, will: will("a/+") });
    assert.notEqual(connack, "closed");
    assert.equal((connack as ConnackPacket).reasonCode, 0x90);
    await c.expectClosed();
    await w.expectNone(3, 300);
    await w.close();
  } finally {
    await b.stop();
  }
});

Deno.test("a Will on $SYS is refused as not authorized (3.1.1 return code 5, MQTT 5 0x87) and never retained", async () => {
  const b = await startBroker();
  try {
    for (const version of [4, 5] as const) {
      const { c, connack } = await connectResult(b, { version, will: will("$SYS/broker/version", 0, true) });
      assert.notEqual(connack, "closed");
      assert.equal((connack as ConnackPacket).reasonCode, version === 5 ? 0x87 : 5);
      await c.expectClosed();
    }
    const s = await RawClient.connect(b.port);
    await s.subscribe("$SYS/broker/version", 0);
    await s.expectNone(3, 300); // sys.interval is 0 here: only a will could have put something there
    await s.close();
  } finally {
    await b.stop();
  }
});

Deno.test("MQTT 5 Will QoS above the maximum gets 0x9B, Will Retain with retained disabled 0x9A; 3.1.1 is accepted", async () => {
  const b = await startBroker({ qos: { max_qos: 1 }, retained: { enabled: false } });
  try {
    const w = await watcher(b);
    const qos = await connectResult(b, { version: 5, will: will("w/q", 2) });
    assert.equal((qos.connack as ConnackPacket).reasonCode, 0x9b);
    const retain = await connectResult(b, { version: 5, will: will("w/r", 1, true) });
    assert.equal((retain.connack as ConnackPacket).reasonCode, 0x9a);
    await qos.c.expectClosed();
    await retain.c.expectClosed();
    await w.expectNone(3, 200);

    // 3.1.1 cannot be told: the will is accepted, published at the maximum QoS and not retained.
    const old = await connectResult(b, { clientId: "old-will", will: will("w/old", 2, true) });
    assert.equal((old.connack as ConnackPacket).reasonCode, 0);
    assert.equal(b.broker.sessions.get("old-will")?.will?.qos, 1);
    await old.c.close(); // abnormal end: the will goes out
    const got = await w.expect(3);
    assert.equal((got as { topic: string }).topic, "w/old");
    await w.close();
  } finally {
    await b.stop();
  }
});

Deno.test("3.1 / 3.1.1 keep-alive above server.max_keepalive (or 0) gets return code 2; MQTT 5 is told the maximum", async () => {
  const b = await startBroker({ server: { max_keepalive: 30 } });
  try {
    for (const version of [3, 4] as const) {
      for (const keepAlive of [31, 0]) {
        const { c, connack } = await connectResult(b, { version, keepAlive, will: will("ka/will") });
        assert.equal((connack as ConnackPacket).reasonCode, 2, `version ${version}, keep-alive ${keepAlive}`);
        await c.expectClosed();
      }
      const ok = await connectResult(b, { version, keepAlive: 30 });
      assert.equal((ok.connack as ConnackPacket).reasonCode, 0);
      await ok.c.close();
    }
    assert.ok(
      b.logs.some((l) =>
        /connection refused .*keep-alive 0 \(none\) exceeds server.max_keepalive 30/.test(l)
      ),
    );
    const v5 = await connectResult(b, { version: 5, keepAlive: 0 });
    assert.equal((v5.connack as ConnackPacket).reasonCode, 0);
    assert.equal((v5.connack as ConnackPacket).properties?.serverKeepAlive, 30);
    await v5.c.close();
  } finally {
    await b.stop();
  }
});

Deno.test("an MQTT 3.1 client id longer than 23 characters gets return code 2; 23 are accepted, and longer at 3.1.1", async () => {
  const b = await startBroker();
  try {
    const long = await connectResult(b, { version: 3, clientId: "x".repeat(24) });
    assert.equal((long.connack as ConnackPacket).reasonCode, 2);
    await long.c.expectClosed();
    for (const [version, clientId] of [[3, "y".repeat(23)], [4, "z".repeat(24)]] as const) {
      const ok = await connectResult(b, { version, clientId });
      assert.equal((ok.connack as ConnackPacket).reasonCode, 0, `version ${version}`);
      await ok.c.close();
    }
  } finally {
    await b.stop();
  }
});

Deno.test("PUBLISH checks: QoS 0 with DUP is malformed; MQTT 5 empty topic without alias and a wildcard Response Topic are protocol errors", async () => {
  const b = await startBroker();
  try {
    const dup = await RawClient.connect(b.port);
    await dup.sendBytes(new Uint8Array([0x38, 0x03, 0x00, 0x01, 0x61])); // QoS 0, DUP, topic "a"
    await dup.expectClosed();
    assert.ok(b.logs.some((l) => /MalformedPacket.*DUP/.test(l)), b.logs.join("\n"));

    const empty = await RawClient.connect(b.port, { version: 5 });
    empty.send({ type: 3, topic: "", payload: te("x"), qos: 0, retain: false, dup: false });
    assert.equal((await empty.expect(14) as { reasonCode: number }).reasonCode, 0x82);

    const response = await RawClient.connect(b.port, { version: 5 });
    response.send({
      type: 3,
      topic: "req",
      payload: te("x"),
      qos: 0,
      retain: false,
      dup: false,
      properties: { responseTopic: "reply/#" },
    });
    assert.equal((await response.expect(14) as { reasonCode: number }).reasonCode, 0x82);
    await delay(0);
  } finally {
    await b.stop();
  }
});
