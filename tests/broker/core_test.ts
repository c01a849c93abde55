/**
 * Broker core over real sockets with MQTT 3.1 / 3.1.1 clients: MQTT.js, mosquitto_pub/sub and raw packets.
 */

import assert from "node:assert/strict";
import mqtt from "mqtt";
import type { AckPacket, PublishPacket, SubackPacket } from "../../src/mqtt/types.ts";
import { encode } from "../../src/mqtt/encode.ts";
import {
  collect,
  delay,
  hasCommand,
  heldKv,
  mqttConnect,
  mqttEnd,
  RawClient,
  startBroker,
  td,
  te,
  waitFor,
} from "../helpers.ts";

Deno.test("MQTT.js publishes and subscribes at QoS 0, 1 and 2", async () => {
  const b = await startBroker({ qos: { max_qos: 2 } });
  try {
    const sub = await mqttConnect(b.url, { clientId: "sub" });
    const got = collect(sub);
    await sub.subscribeAsync("a/+/c", { qos: 2 });
    const pub = await mqttConnect(b.url, { clientId: "pub" });
    await pub.publishAsync("a/b/c", "zero", { qos: 0 });
    await pub.publishAsync("a/b/c", "one", { qos: 1 });
    await pub.publishAsync("a/x/c", "two", { qos: 2 });
    await pub.publishAsync("a/b/d", "nomatch", { qos: 1 });
    await waitFor(() => got.length === 3, "3 messages");
    assert.deepEqual(got.map((m) => [m.topic, m.payload, m.packet.qos]), [
      ["a/b/c", "zero", 0],
      ["a/b/c", "one", 1],
      ["a/x/c", "two", 2],
    ]);
    await mqttEnd(pub);
    await mqttEnd(sub);
  } finally {
    await b.stop();
  }
});

Deno.test("granted QoS is capped by qos.max_qos and deliveries are downgraded", async () => {
  const b = await startBroker({ qos: { max_qos: 1 } });
  try {
    const sub = await RawClient.connect(b.port);
    sub.send({
      type: 8,
      packetId: 7,
      subscriptions: [
        { topicFilter: "t/2", qos: 2, noLocal: false, retainAsPublished: false, retainHandling: 0 },
        { topicFilter: "t/0", qos: 0, noLocal: false, retainAsPublished: false, retainHandling: 0 },
        { topicFilter: "bad/#/x", qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0 },
      ],
    });
    const suback = await sub.expect(9) as SubackPacket;
    assert.equal(suback.packetId, 7);
    assert.deepEqual(suback.reasonCodes, [1, 0, 0x80]);
    const pub = await mqttConnect(b.url);
    await pub.publishAsync("t/2", "x", { qos: 2 });
    const p = await sub.expect(3) as PublishPacket;
    assert.equal(p.qos, 1);
    assert.equal(td(p.payload), "x");
    await mqttEnd(pub);
    await sub.close();
  } finally {
    await b.stop();
  }
});

Deno.test({
  name: "mosquitto_pub and mosquitto_sub interoperate through the broker",
  ignore: !hasCommand("mosquitto_pub") || !hasCommand("mosquitto_sub"),
}, async () => {
  const b = await startBroker();
  try {
    const sub = new Deno.Command("mosquitto_sub", {
      args: [
        "-h",
        "127.0.0.1",
        "-p",
        String(b.port),
        "-t",
        "sensors/#",
        "-q",
        "1",
        "-C",
        "2",
        "-v",
        "-W",
        "10",
      ],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    await waitFor(() => b.broker.tree.size === 1, "mosquitto_sub subscribed");
    for (const [topic, msg] of [["sensors/t1", "21.5"], ["sensors/t2", "19.0"]]) {
      const out = await new Deno.Command("mosquitto_pub", {
        args: ["-h", "127.0.0.1", "-p", String(b.port), "-t", topic, "-m", msg, "-q", "1"],
      }).output();
      assert.equal(out.code, 0);
    }
    const { code, stdout } = await sub.output();
    assert.equal(code, 0);
    assert.deepEqual(td(stdout).trim().split("\n"), ["sensors/t1 21.5", "sensors/t2 19.0"]);
  } finally {
    await b.stop();
  }
});

Deno.test("retained messages: stored, replaced, cleared, delivered with RETAIN on subscribe", async () => {
  const b = await startBroker();
  try {
    const pub = await mqttConnect(b.url);
    await pub.publishAsync("home/temp", "20", { qos: 1, retain: true });
    await pub.publishAsync("home/temp", "21", { qos: 1, retain: true });
    await pub.publishAsync("home/hum", "40", { qos: 1, retain: true });
    await pub.publishAsync("home/hum", "", { qos: 1, retain: true }); // clears
    const sub = await mqttConnect(b.url);
    const got = collect(sub);
    await sub.subscribeAsync("home/#", { qos: 1 });
    await waitFor(() => got.length === 1, "retained message");
    await delay(100);
    assert.equal(got.length, 1);
    assert.equal(got[0].topic, "home/temp");
    assert.equal(got[0].payload, "21");
    assert.equal(got[0].packet.retain, true);
    // A live message to an existing subscription is not flagged retained (§3.3.1.3).
    await pub.publishAsync("home/temp", "22", { qos: 1, retain: true });
    await waitFor(() => got.length === 2, "live message");
    assert.equal(got[1].packet.retain, false);
    assert.equal(b.broker.retained.size, 1);
    await mqttEnd(pub);
    await mqttEnd(sub);
  } finally {
    await b.stop();
  }
});

Deno.test("retained.enabled false: nothing is retained", async () => {
  const b = await startBroker({ retained: { enabled: false, max_messages: 10 } });
  try {
    const pub = await mqttConnect(b.url);
    await pub.publishAsync("r/x", "v", { qos: 1, retain: true });
    const sub = await mqttConnect(b.url);
    const got = collect(sub);
    await sub.subscribeAsync("r/#");
    await delay(200);
    assert.equal(got.length, 0);
    assert.equal(b.broker.retained.size, 0);
    await mqttEnd(pub);
    await mqttEnd(sub);
  } finally {
    await b.stop();
  }
});

Deno.test("wildcards: + and # match, $-topics are not matched by a leading wildcard", async () => {
  const b = await startBroker();
  try {
    const sub = await mqttConnect(b.url);
    const got = collect(sub);
    await sub.subscribeAsync(["#", "+/status"]);
    const dollar = await mqttConnect(b.url);
    const dollarGot = collect(dollar);
    await dollar.subscribeAsync("$internal/#");
    const pub = await mqttConnect(b.url);
    await pub.publishAsync("$internal/x", "hidden", { qos: 1 });
    await pub.publishAsync("dev/status", "ok", { qos: 1 });
    await waitFor(() => got.length >= 1 && dollarGot.length === 1, "deliveries");
    await delay(100);
    // One copy despite two matching subscriptions (§3.3.4 overlapping).
    assert.deepEqual(got.map((m) => m.topic), ["dev/status"]);
    assert.deepEqual(dollarGot.map((m) => m.topic), ["$internal/x"]);
    await Promise.all([mqttEnd(sub), mqttEnd(pub), mqttEnd(dollar)]);
  } finally {
    await b.stop();
  }
});

Deno.test("overlapping subscriptions deliver one copy at the highest granted QoS", async () => {
  const b = await startBroker({ qos: { max_qos: 2 } });
  try {
    const sub = await RawClient.connect(b.port);
    sub.send({
      type: 8,
      packetId: 1,
      subscriptions: [
        { topicFilter: "o/#", qos: 0, noLocal: false, retainAsPublished: false, retainHandling: 0 },
        { topicFilter: "o/+", qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0 },
      ],
    });
    await sub.expect(9);
    const pub = await mqttConnect(b.url);
    await pub.publishAsync("o/a", "m", { qos: 2 });
    const p = await sub.expect(3) as PublishPacket;
    assert.equal(p.qos, 1);
    await sub.expectNone(3, 200);
    await mqttEnd(pub);
    await sub.close();
  } finally {
    await b.stop();
  }
});

Deno.test("unsubscribe stops deliveries", async () => {
  const b = await startBroker();
  try {
    const sub = await mqttConnect(b.url);
    const got = collect(sub);
    await sub.subscribeAsync("u/1");
    await sub.unsubscribeAsync("u/1");
    const pub = await mqttConnect(b.url);
    await pub.publishAsync("u/1", "x", { qos: 1 });
    await delay(150);
    assert.equal(got.length, 0);
    assert.equal(b.broker.tree.size, 0);
    await Promise.all([mqttEnd(sub), mqttEnd(pub)]);
  } finally {
    await b.stop();
  }
});

Deno.test("persistent session: queued QoS 1 delivered on reconnect, session present set", async () => {
  const b = await startBroker();
  try {
    const sub = await mqttConnect(b.url, { clientId: "persist-1", clean: false });
    await sub.subscribeAsync("q/#", { qos: 1 });
    await mqttEnd(sub);
    const pub = await mqttConnect(b.url);
    for (let i = 0; i < 5; i++) await pub.publishAsync("q/x", `m${i}`, { qos: 1 });
    await pub.publishAsync("q/x", "qos0-dropped-offline", { qos: 0 });
    await mqttEnd(pub);
    // Handlers are attached before CONNACK: the queued messages follow it in the same TCP segment.
    const againClient = mqtt.connect(b.url, { clientId: "persist-1", clean: false, reconnectPeriod: 0 });
    const got = collect(againClient);
    const present = await new Promise<boolean>((resolve, reject) => {
      againClient.once("connect", (ack) => resolve(ack.sessionPresent));
      againClient.once("error", reject);
    });
    const again = { client: againClient, present };
    assert.equal(again.present, true);
    await waitFor(() => got.length === 5, "5 queued messages");
    await delay(100);
    assert.deepEqual(got.map((m) => m.payload), ["m0", "m1", "m2", "m3", "m4"]);
    await mqttEnd(again.client);
    // A clean connect discards the session.
    const clean = await RawClient.connect(b.port, { clientId: "persist-1", clean: true });
    assert.equal(b.broker.sessions.get("persist-1")?.subscriptions.size, 0);
    await clean.close();
  } finally {
    await b.stop();
  }
});

Deno.test("a PUBLISH forwarded as received still gets the subscriber's packet id, DUP 0 and RETAIN 0", async () => {
  const b = await startBroker();
  try {
    const sub = await RawClient.connect(b.port);
    await sub.subscribe("fw/#", 1);
    const pub = await RawClient.connect(b.port);
    // A first message shows where the subscriber's packet ids stand; the publisher's ids are far from them.
    pub.send({ type: 3, topic: "fw/z", payload: te("zero"), qos: 1, retain: false, dup: false, packetId: 1 });
    const zero = (await sub.expect(3)) as PublishPacket;
    sub.send({ type: 4, packetId: zero.packetId! });
    const base = ((zero.packetId! + 30000) % 65000) + 1; // base + 2 stays a valid id
    // A retransmission (DUP 1) with the publisher's packet id, then a retained one, then a plain one.
    pub.send({
      type: 3,
      topic: "fw/a",
      payload: te("one"),
      qos: 1,
      retain: false,
      dup: true,
      packetId: base,
    });
    pub.send({
      type: 3,
      topic: "fw/a",
      payload: te("two"),
      qos: 1,
      retain: true,
      dup: false,
      packetId: base + 1,
    });
    pub.send({
      type: 3,
      topic: "fw/b",
      payload: te("three"),
      qos: 1,
      retain: false,
      dup: false,
      packetId: base + 2,
    });
    const got: PublishPacket[] = [];
    for (let i = 0; i < 3; i++) {
      const p = await sub.expect(3) as PublishPacket;
      got.push(p);
      sub.send({ type: 4, packetId: p.packetId! });
    }
    assert.deepEqual(got.map((p) => [p.topic, td(p.payload), p.dup, p.retain]), [
      ["fw/a", "one", false, false],
      ["fw/a", "two", false, false],
      ["fw/b", "three", false, false],
    ]);
    const ids = got.map((p) => p.packetId!);
    // The subscriber's own ids, in sequence after the first message's (65535 wraps to 1).
    assert.deepEqual(ids, [1, 2, 3].map((k) => ((zero.packetId! + k - 1) % 65535) + 1));
    // A new subscriber gets the retained one with RETAIN 1.
    const late = await RawClient.connect(b.port);
    await late.subscribe("fw/a", 0);
    const retained = await late.expect(3) as PublishPacket;
    assert.deepEqual([td(retained.payload), retained.retain, retained.qos], ["two", true, 0]);
    await Promise.all([sub.close(), pub.close(), late.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("a PUBREC for an unknown packet id gets PUBREL: short form with its fixed flags in 3.1.1, 0x92 in 5.0", async () => {
  const b = await startBroker({ qos: { max_qos: 2 } });
  try {
    const v4 = await RawClient.connect(b.port, { version: 4 });
    v4.send({ type: 5, packetId: 77 });
    // The decoder refuses a PUBREL whose fixed header flags are not 0b0010 (MQTT-3.6.1-1).
    const rel4 = await v4.expect(6) as AckPacket;
    assert.equal(rel4.packetId, 77);
    const v5 = await RawClient.connect(b.port, { version: 5 });
    v5.send({ type: 5, packetId: 78, reasonCode: 0 });
    const rel5 = await v5.expect(6) as AckPacket;
    assert.deepEqual([rel5.packetId, rel5.reasonCode], [78, 0x92]);
    await Promise.all([v4.close(), v5.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("unacknowledged QoS 1 is redelivered with DUP on reconnect", async () => {
  const b = await startBroker();
  try {
    const sub = await RawClient.connect(b.port, { clientId: "dup-1", clean: false });
    sub.send({
      type: 8,
      packetId: 1,
      subscriptions: [{
        topicFilter: "d",
        qos: 1,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    await sub.expect(9);
    const pub = await mqttConnect(b.url);
    await pub.publishAsync("d", "payload", { qos: 1 });
    const first = await sub.expect(3) as PublishPacket;
    assert.equal(first.dup, false);
    await sub.close(); // no PUBACK
    const again = await RawClient.open(b.port);
    again.send({
      type: 1,
      protocolName: "MQTT",
      protocolVersion: 4,
      clean: false,
      keepAlive: 30,
      clientId: "dup-1",
    });
    const connack = await again.expect(2) as { sessionPresent: boolean };
    assert.equal(connack.sessionPresent, true);
    const redelivered = await again.expect(3) as PublishPacket;
    assert.equal(redelivered.dup, true);
    assert.equal(redelivered.packetId, first.packetId);
    assert.equal(td(redelivered.payload), "payload");
    again.send({ type: 4, packetId: redelivered.packetId! });
    await waitFor(() => b.broker.sessions.get("dup-1")!.inflight.size === 0, "ack processed");
    await mqttEnd(pub);
    await again.close();
  } finally {
    await b.stop();
  }
});

Deno.test("QoS 2 inbound is exactly once: a resent PUBLISH with the same id is not delivered twice", async () => {
  const b = await startBroker({ qos: { max_qos: 2 } });
  try {
    const sub = await mqttConnect(b.url);
    const got = collect(sub);
    await sub.subscribeAsync("e/1", { qos: 2 });
    const pub = await RawClient.connect(b.port);
    const msg = {
      type: 3,
      topic: "e/1",
      payload: te("once"),
      qos: 2,
      retain: false,
      dup: false,
      packetId: 9,
    } as const;
    pub.send(msg);
    await pub.expect(5);
    pub.send({ ...msg, dup: true });
    await pub.expect(5);
    pub.send({ type: 6, packetId: 9 });
    await pub.expect(7);
    await delay(150);
    assert.equal(got.length, 1);
    await mqttEnd(sub);
    await pub.close();
  } finally {
    await b.stop();
  }
});

Deno.test("will: published on abnormal close, not after DISCONNECT; QoS and retain honoured", async () => {
  const b = await startBroker({ qos: { max_qos: 2 } });
  try {
    const watcher = await mqttConnect(b.url);
    const got = collect(watcher);
    await watcher.subscribeAsync("wills/#", { qos: 1 });
    const will = { topic: "wills/a", payload: te("gone"), qos: 1 as const, retain: true };
    const a = await RawClient.connect(b.port, { clientId: "will-a", will });
    await a.close(); // abnormal
    await waitFor(() => got.length === 1, "will of a");
    assert.equal(got[0].payload, "gone");
    assert.equal(got[0].packet.qos, 1);
    assert.equal(b.broker.retained.get("wills/a")?.payload.length, 4);
    const c = await RawClient.connect(b.port, { clientId: "will-c", will: { ...will, topic: "wills/c" } });
    c.send({ type: 14 });
    await c.expectClosed();
    await delay(150);
    assert.equal(got.length, 1);
    await mqttEnd(watcher);
  } finally {
    await b.stop();
  }
});

Deno.test("keep-alive: a silent client is closed after 1.5x and its will published", async () => {
  const b = await startBroker();
  try {
    const watcher = await mqttConnect(b.url);
    const got = collect(watcher);
    await watcher.subscribeAsync("ka/#");
    const silent = await RawClient.connect(b.port, {
      keepAlive: 1,
      will: { topic: "ka/dead", payload: te("x"), qos: 0, retain: false },
    });
    await silent.expectClosed(4000);
    await waitFor(() => got.length === 1, "keep-alive will");
    await mqttEnd(watcher);
  } finally {
    await b.stop();
  }
});

Deno.test("takeover: a second connection with the same client id closes the first and publishes its will", async () => {
  const b = await startBroker();
  try {
    const watcher = await mqttConnect(b.url);
    const got = collect(watcher);
    await watcher.subscribeAsync("to/#");
    const first = await RawClient.connect(b.port, {
      clientId: "same",
      will: { topic: "to/will", payload: te("first"), qos: 0, retain: false },
    });
    const second = await RawClient.connect(b.port, { clientId: "same" });
    await first.expectClosed();
    await waitFor(() => got.length === 1, "will of the taken-over connection");
    assert.equal(b.broker.clients.size, 2);
    second.send({ type: 12 });
    await second.expect(13);
    await second.close();
    await mqttEnd(watcher);
  } finally {
    await b.stop();
  }
});

Deno.test("client id rules: empty id needs clean session (3.1.1 return code 2)", async () => {
  const b = await startBroker();
  try {
    const refused = await RawClient.open(b.port);
    refused.send({
      type: 1,
      protocolName: "MQTT",
      protocolVersion: 4,
      clean: false,
      keepAlive: 10,
      clientId: "",
    });
    const ack = await refused.expect(2) as { reasonCode: number };
    assert.equal(ack.reasonCode, 2);
    await refused.expectClosed();
    const ok = await RawClient.connect(b.port, { clientId: "", clean: true });
    ok.send({ type: 12 });
    await ok.expect(13);
    await ok.close();
  } finally {
    await b.stop();
  }
});

Deno.test("MQTT 3.1 (MQIsdp, level 3) clients connect and exchange messages", async () => {
  const b = await startBroker();
  try {
    const sub = await RawClient.connect(b.port, { version: 3, clientId: "v31" });
    sub.send({
      type: 8,
      packetId: 1,
      subscriptions: [{
        topicFilter: "v3",
        qos: 1,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    await sub.expect(9);
    const pub = await mqttConnect(b.url, { protocolVersion: 3, protocolId: "MQIsdp" });
    await pub.publishAsync("v3", "old", { qos: 1 });
    const p = await sub.expect(3) as PublishPacket;
    assert.equal(td(p.payload), "old");
    await mqttEnd(pub);
    await sub.close();
  } finally {
    await b.stop();
  }
});

Deno.test("CONNACK bytes: Session Present is set for a resumed 3.1.1 session, never at MQTT 3.1", async () => {
  const b = await startBroker();
  /** Connects with Clean Session 0, returns the 4 bytes of the CONNACK exactly as sent, then disconnects. */
  async function connack(version: 3 | 4, clientId: string): Promise<number[]> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: b.port });
    try {
      const connect = encode({
        type: 1,
        protocolName: version === 3 ? "MQIsdp" : "MQTT",
        protocolVersion: version,
        clean: false,
        keepAlive: 30,
        clientId,
      }, version);
      await conn.write(connect);
      const got: number[] = [];
      const buf = new Uint8Array(16);
      while (got.length < 4) {
        const n = await conn.read(buf);
        if (n === null) break;
        got.push(...buf.subarray(0, n));
      }
      await conn.write(new Uint8Array([0xe0, 0x00])); // DISCONNECT
      await waitFor(() => b.broker.clients.get(clientId) === undefined, "disconnect processed");
      return got;
    } finally {
      conn.close();
    }
  }
  try {
    assert.deepEqual(await connack(4, "sp-311"), [0x20, 0x02, 0x00, 0x00]);
    assert.deepEqual(await connack(4, "sp-311"), [0x20, 0x02, 0x01, 0x00]);
    assert.deepEqual(await connack(3, "sp-31"), [0x20, 0x02, 0x00, 0x00]);
    // 3.1 has no Session Present flag (its first CONNACK byte is reserved), though the session is resumed.
    assert.deepEqual(await connack(3, "sp-31"), [0x20, 0x02, 0x00, 0x00]);
    assert.ok(b.broker.sessions.get("sp-31")?.persistent);
  } finally {
    await b.stop();
  }
});

Deno.test("max_clients: the next client gets CONNACK server unavailable", async () => {
  const b = await startBroker({ server: { max_clients: 2 } });
  try {
    const a = await RawClient.connect(b.port);
    const c = await RawClient.connect(b.port);
    const third = await RawClient.open(b.port);
    third.send({
      type: 1,
      protocolName: "MQTT",
      protocolVersion: 4,
      clean: true,
      keepAlive: 10,
      clientId: "third",
    });
    const ack = await third.expect(2) as { reasonCode: number };
    assert.equal(ack.reasonCode, 3);
    await third.expectClosed();
    await Promise.all([a.close(), c.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("connect timeout: a socket that never sends CONNECT is closed", async () => {
  const b = await startBroker({ server: { connect_timeout: 1 } });
  try {
    const idle = await RawClient.open(b.port);
    await idle.expectClosed(4000);
  } finally {
    await b.stop();
  }
});

Deno.test("flow control: a subscriber that acknowledges slowly pauses its publishers; one that only pings does not", async () => {
  const b = await startBroker({ server: { max_queued_messages: 100, max_inflight: 10 } });
  try {
    const publishAll = async (pub: RawClient, topic: string, n: number) => {
      for (let i = 0; i < n; i++) {
        pub.send({
          type: 3,
          topic,
          payload: te(`m${i}`),
          qos: 1,
          retain: false,
          dup: false,
          packetId: i + 1,
        });
      }
      await waitFor(() => pub.received.filter((p) => p.type === 4).length === n, `${n} PUBACKs`);
      pub.received.length = 0;
    };
    // Acknowledges one message every 3 ms: its queue passes half the limit, so the publisher is paused
    // instead of the subscriber losing messages.
    const slow = await RawClient.connect(b.port, { clientId: "fc-slow", clean: false });
    await slow.subscribe("fc/slow", 1);
    let acking = true;
    const acker = (async () => {
      const seen: string[] = [];
      while (acking) {
        const p = slow.received.find((q) => q.type === 3) as PublishPacket | undefined;
        if (p === undefined) {
          await delay(3);
          continue;
        }
        slow.received.splice(slow.received.indexOf(p), 1);
        seen.push(td(p.payload));
        slow.send({ type: 4, packetId: p.packetId! });
        await delay(3);
      }
      return seen;
    })();
    const pub = await RawClient.connect(b.port, { clientId: "fc-pub" });
    await publishAll(pub, "fc/slow", 300);
    await waitFor(() => b.broker.sessions.get("fc-slow")!.queuedCount === 0, "the slow queue drained", 10000);
    await delay(100);
    acking = false;
    const seen = await acker;
    assert.equal(seen.length, 300, "nothing dropped for a subscriber that keeps acknowledging");
    assert.equal(b.broker.metrics.dropped.queue_full, 0);
    const pauses = b.broker.metrics.publisherPauses;
    assert.ok(pauses > 0, "the publisher was paused for it");

    // Never acknowledges but pings: once its first 2 s are over, it is not waited for. It keeps its window and
    // its queue limit, and loses the rest.
    const stuck = await RawClient.connect(b.port, { clientId: "fc-stuck", clean: false });
    await stuck.subscribe("fc/stuck", 1);
    const pinger = setInterval(() => stuck.send({ type: 12 }), 300);
    try {
      await delay(2200);
      await publishAll(pub, "fc/stuck", 300);
      assert.equal(
        b.broker.metrics.publisherPauses,
        pauses,
        "no pause for a subscriber that does not acknowledge",
      );
      assert.equal(b.broker.metrics.dropped.queue_full, 300 - 10 - 100);
    } finally {
      clearInterval(pinger);
    }
    await Promise.all([slow.close(), stuck.close(), pub.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("kv store: retained messages of a SUBSCRIBE come before live ones published while its SUBACK waits", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-retained-order-" });
  const b = await startBroker({ storage: { backend: "kv", path: `${dir}/mqtt.db` } });
  try {
    const pub = await RawClient.connect(b.port);
    pub.send({ type: 3, topic: "ro/t", payload: te("old"), qos: 1, retain: true, dup: false, packetId: 1 });
    await pub.expect(4);
    // A persistent session: its SUBACK waits for the subscription's commit. A live message on the topic
    // arrives in the same segment, so it is routed while that commit is pending.
    const sub = await RawClient.connect(b.port, { clientId: "ro-sub", clean: false });
    const subscribe = encode({
      type: 8,
      packetId: 5,
      subscriptions: [{
        topicFilter: "ro/#",
        qos: 1,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    }, 4);
    const live = encode(
      { type: 3, topic: "ro/t", payload: te("live"), qos: 0, retain: false, dup: false },
      4,
    );
    const live1 = encode({
      type: 3,
      topic: "ro/u",
      payload: te("live1"),
      qos: 1,
      retain: false,
      dup: false,
      packetId: 9,
    }, 4);
    await sub.sendBytes(new Uint8Array([...subscribe, ...live, ...live1]));
    await waitFor(
      () => sub.received.filter((p) => p.type === 3).length === 3,
      "the retained and two live messages",
    );
    const order = sub.received.filter((p) => p.type === 9 || p.type === 3).map((p) =>
      p.type === 9
        ? "SUBACK"
        : `${td((p as PublishPacket).payload)}${(p as PublishPacket).retain ? " retained" : ""}`
    );
    assert.deepEqual(order, ["SUBACK", "old retained", "live", "live1"]);
    await Promise.all([pub.close(), sub.close()]);
  } finally {
    await b.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server.max_queued_messages 0 is no limit (as in Mosquitto); max_queued_bytes still holds", async () => {
  const b = await startBroker({ server: { max_queued_messages: 0, max_queued_bytes: 100 } });
  try {
    const sub = await RawClient.connect(b.port, { clientId: "mq0", clean: false });
    await sub.subscribe("mq0/#", 1);
    await sub.close();
    const pub = await RawClient.connect(b.port);
    for (let i = 0; i < 12; i++) {
      // 12 messages of 10 bytes: the first 10 fit in 100 bytes, the last two do not.
      pub.send({
        type: 3,
        topic: "mq0/t",
        payload: te(`message-${i.toString().padStart(2, "0")}`.slice(0, 10)),
        qos: 1,
        retain: false,
        dup: false,
        packetId: i + 1,
      });
      await pub.expect(4);
    }
    assert.equal(b.broker.sessions.get("mq0")!.queuedCount, 10);
    assert.equal(b.broker.metrics.dropped.queue_full, 2);
    await pub.close();
  } finally {
    await b.stop();
  }
});

Deno.test("kv store: a QoS 2 message to a persistent subscriber is not overtaken by the QoS 0 and 1 messages after it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-qos2-order-" });
  const b = await startBroker({ qos: { max_qos: 2 }, storage: { backend: "kv", path: `${dir}/mqtt.db` } });
  try {
    const sub = await RawClient.connect(b.port, { clientId: "q2o-sub", clean: false });
    await sub.subscribe("q2o/#", 2);
    const pub = await RawClient.connect(b.port, { clientId: "q2o-pub" });
    const order: string[] = [];
    for (let round = 0; round < 5; round++) {
      // The QoS 2 PUBLISH waits for its in-flight record to commit; the QoS 1 and 0 ones right behind it must
      // wait too (they are in one segment, so they are routed while that commit is pending).
      const q2 = encode({
        type: 3,
        topic: "q2o/t",
        payload: te(`a${round}`),
        qos: 2,
        retain: false,
        dup: false,
        packetId: 1,
      }, 4);
      const q1 = encode({
        type: 3,
        topic: "q2o/t",
        payload: te(`b${round}`),
        qos: 1,
        retain: false,
        dup: false,
        packetId: 2,
      }, 4);
      const q0 = encode({
        type: 3,
        topic: "q2o/t",
        payload: te(`c${round}`),
        qos: 0,
        retain: false,
        dup: false,
      }, 4);
      await pub.sendBytes(new Uint8Array([...q2, ...q1, ...q0]));
      const got: PublishPacket[] = [];
      while (got.length < 3) {
        const p = (await sub.expect(3)) as PublishPacket;
        got.push(p);
        if (p.qos === 1) sub.send({ type: 4, packetId: p.packetId! });
        if (p.qos === 2) sub.send({ type: 5, packetId: p.packetId! });
      }
      order.push(got.map((p) => td(p.payload)).join(" "));
      await sub.expect(6); // PUBREL
      sub.send({ type: 7, packetId: got.find((p) => p.qos === 2)!.packetId! });
      await pub.expect(5); // PUBREC
      pub.send({ type: 6, packetId: 1 });
      await pub.expect(7);
      await pub.expect(4);
    }
    assert.deepEqual(order, [0, 1, 2, 3, 4].map((r) => `a${r} b${r} c${r}`));
    await Promise.all([pub.close(), sub.close()]);
  } finally {
    await b.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("server.max_session_expiry also ends offline 3.1.1 persistent sessions (as persistent_client_expiration)", async () => {
  const b = await startBroker({ server: { max_session_expiry: 1 } });
  try {
    const c = await RawClient.connect(b.port, { clientId: "old-311", clean: false });
    await c.subscribe("x/#", 1);
    await c.close();
    await waitFor(
      () => b.broker.sessions.has("old-311") && b.broker.sessions.get("old-311")!.client === undefined,
      "offline",
    );
    await waitFor(() => !b.broker.sessions.has("old-311"), "the session expired", 4000);
  } finally {
    await b.stop();
  }
  const never = await startBroker();
  try {
    const c = await RawClient.connect(never.port, { clientId: "kept-311", clean: false });
    await c.close();
    await delay(1500);
    assert.equal(never.broker.sessions.has("kept-311"), true, "without a maximum it stays");
  } finally {
    await never.stop();
  }
});

Deno.test("a retained message nobody subscribes to is kept, not counted as dropped; a plain one is", async () => {
  const b = await startBroker();
  try {
    const pub = await RawClient.connect(b.port);
    pub.send({
      type: 3,
      topic: "nobody/r",
      payload: te("kept"),
      qos: 1,
      retain: true,
      dup: false,
      packetId: 1,
    });
    await pub.expect(4);
    assert.equal(b.broker.metrics.dropped.no_subscribers, 0);
    pub.send({
      type: 3,
      topic: "nobody/p",
      payload: te("lost"),
      qos: 1,
      retain: false,
      dup: false,
      packetId: 2,
    });
    await pub.expect(4);
    assert.equal(b.broker.metrics.dropped.no_subscribers, 1);
    await pub.close();
  } finally {
    await b.stop();
  }
});

function hasIpv6Loopback(): boolean {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "IPv6: log lines write a client's address and a busy listener's as [::1]:port",
  ignore: !hasIpv6Loopback(),
}, async () => {
  const b = await startBroker({ server: { host: "::1" } });
  try {
    const conn = await Deno.connect({ hostname: "::1", port: b.port });
    const connect = encode({
      type: 1,
      protocolName: "MQTT",
      protocolVersion: 4,
      clean: true,
      keepAlive: 30,
      clientId: "v6",
    }, 4);
    await conn.write(connect);
    await waitFor(() => b.logs.some((l) => l.includes("client connected")), "the connect log line");
    assert.match(b.logs.find((l) => l.includes("client connected"))!, /addr=\[::1\]:\d+/);
    conn.close();
    await assert.rejects(
      startBroker({ server: { host: "::1", port: b.port } }),
      new RegExp(`\\[::1\\]:${b.port} is already in use`),
    );
  } finally {
    await b.stop();
  }
});

Deno.test("kv store: a PUBACK waits for the commit of its message even when a hold asked for a flush first", async () => {
  // A hold (here: a SUBSCRIBE of the subscriber waiting for its commit) makes routing ask for a flush for the
  // subscriber in the middle of handling the PUBLISH; the publisher's PUBACK must still wait for that commit.
  const dir = await Deno.makeTempDir({ prefix: "mqtt-ack-hold-" });
  const { store, hold, release } = heldKv(`${dir}/mqtt.db`);
  const b = await startBroker({}, store);
  try {
    const sub = await RawClient.connect(b.port, { clientId: "ah-sub", clean: false });
    await sub.subscribe("ah/#", 1);
    const pub = await RawClient.connect(b.port, { clientId: "ah-pub" });
    hold();
    // The subscriber's SUBACK now waits (a hold), then a QoS 1 message for it arrives.
    sub.send({
      type: 8,
      packetId: 2,
      subscriptions: [{
        topicFilter: "other/#",
        qos: 1,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    await delay(50);
    pub.send({ type: 3, topic: "ah/t", payload: te("m"), qos: 1, retain: false, dup: false, packetId: 1 });
    await pub.expectNone(4, 300); // not acknowledged before the commit
    release();
    await pub.expect(4);
    await sub.expect(9);
    assert.equal(td(((await sub.expect(3)) as PublishPacket).payload), "m");
    await Promise.all([pub.close(), sub.close()]);
  } finally {
    await b.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kv store: QoS 2 messages that wait in the queue keep their place among QoS 0 and 1 ones", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-qos2-queue-order-" });
  const b = await startBroker({ qos: { max_qos: 2 }, storage: { backend: "kv", path: `${dir}/mqtt.db` } });
  try {
    const sub = await RawClient.connect(b.port, { clientId: "q2q-sub", clean: false });
    await sub.subscribe("q2q/#", 2);
    const pub = await RawClient.connect(b.port, { clientId: "q2q-pub" });
    const qos = [2, 1, 2, 0, 1, 2, 2, 1] as const;
    const bytes: number[] = [];
    qos.forEach((q, i) => {
      bytes.push(...encode({
        type: 3,
        topic: "q2q/t",
        payload: te(String(i)),
        qos: q,
        retain: false,
        dup: false,
        packetId: q > 0 ? i + 1 : undefined,
      }, 4));
    });
    await pub.sendBytes(new Uint8Array(bytes)); // one segment: routed while earlier commits are pending
    const got: string[] = [];
    while (got.length < qos.length) {
      const p = (await sub.expect(3)) as PublishPacket;
      got.push(td(p.payload));
      if (p.qos === 1) sub.send({ type: 4, packetId: p.packetId! });
      if (p.qos === 2) sub.send({ type: 5, packetId: p.packetId! });
    }
    assert.deepEqual(got, ["0", "1", "2", "3", "4", "5", "6", "7"]);
    await Promise.all([pub.close(), sub.close()]);
  } finally {
    await b.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
