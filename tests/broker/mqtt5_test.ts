/**
 * MQTT 5.0 conformance through the real broker over real sockets (our codec in RawClient, and MQTT.js):
 * CONNACK properties, Session Expiry, Message Expiry, Topic Aliases, Subscription Options and Identifiers,
 * Request / Response properties, server reason codes, shared subscriptions, flow control (Receive Maximum,
 * Maximum Packet Size), Will Delay Interval, and interoperation with 3.1.1 clients.
 *
 * Waits for the once-a-second expiry sweep are 1-2 s; everything else is event driven.
 */

import assert from "node:assert/strict";
import mqtt from "mqtt";
import type {
  AckPacket,
  ConnackPacket,
  ConnectPacket,
  DisconnectPacket,
  Properties,
  PublishPacket,
  QoS,
  SubackPacket,
  SubscriptionRequest,
  Will,
} from "../../src/mqtt/types.ts";
import { encode } from "../../src/mqtt/encode.ts";
import { collect, delay, mqttConnect, mqttEnd, RawClient, startBroker, td, te, waitFor } from "../helpers.ts";

/** Opens a raw MQTT 5 connection and returns it with the CONNACK it got (whatever its reason code). */
async function connect5(
  port: number,
  fields: Partial<ConnectPacket> = {},
): Promise<{ c: RawClient; connack: ConnackPacket }> {
  const c = await RawClient.open(port, 5);
  c.send({
    type: 1,
    protocolName: "MQTT",
    protocolVersion: 5,
    clean: true,
    keepAlive: 60,
    clientId: `v5-${crypto.randomUUID().slice(0, 8)}`,
    ...fields,
  });
  const connack = await c.expect(2) as ConnackPacket;
  return { c, connack };
}

let nextPacketId = 1;

/** Subscribes a raw client (a plain string means QoS 1, default options) and returns the SUBACK codes. */
async function subscribe(
  c: RawClient,
  filters: (string | (Partial<SubscriptionRequest> & { topicFilter: string }))[],
  properties?: Properties,
): Promise<number[]> {
  const packetId = nextPacketId++;
  c.send({
    type: 8,
    packetId,
    properties,
    subscriptions: filters.map((f) => ({
      qos: 1 as QoS,
      noLocal: false,
      retainAsPublished: false,
      retainHandling: 0 as const,
      ...(typeof f === "string" ? { topicFilter: f } : f),
    })),
  });
  const suback = await c.expect(9) as SubackPacket;
  assert.equal(suback.packetId, packetId);
  return suback.reasonCodes;
}

/** Sends a PUBLISH from a raw client; for QoS 1 waits for and returns the PUBACK, else returns at once. */
async function publish(
  c: RawClient,
  topic: string,
  payload: string | Uint8Array,
  opts: { qos?: QoS; retain?: boolean; properties?: Properties } = {},
): Promise<AckPacket | undefined> {
  const qos = opts.qos ?? 0;
  const packetId = qos > 0 ? nextPacketId++ : undefined;
  c.send({
    type: 3,
    topic,
    payload: typeof payload === "string" ? te(payload) : payload,
    qos,
    retain: opts.retain ?? false,
    dup: false,
    packetId,
    properties: opts.properties,
  });
  if (qos !== 1) return undefined;
  const ack = await c.expect(4) as AckPacket;
  assert.equal(ack.packetId, packetId);
  return ack;
}

/** Waits for the server's DISCONNECT, checks the socket is then closed, and returns the reason code. */
async function serverDisconnect(c: RawClient, timeoutMs = 3000): Promise<number | undefined> {
  const d = await c.expect(14, timeoutMs) as DisconnectPacket;
  await c.expectClosed();
  return d.reasonCode;
}

/** Connects an MQTT.js client with protocol level 5 and returns it with its CONNACK. */
function mqtt5(
  url: string,
  opts: mqtt.IClientOptions = {},
): Promise<{ client: mqtt.MqttClient; connack: mqtt.IConnackPacket }> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, {
      reconnectPeriod: 0,
      connectTimeout: 5000,
      protocolVersion: 5,
      ...opts,
    });
    client.once("connect", (connack) => resolve({ client, connack }));
    client.once("error", (err) => {
      client.end(true);
      reject(err);
    });
  });
}

// ---------------------------------------------------------------------------------------------------
// CONNACK (§3.2.2.3)

Deno.test("CONNACK advertises limits and features; an empty client id gets an Assigned Client Identifier", async () => {
  const b = await startBroker({
    qos: { max_qos: 1 },
    server: {
      max_inflight: 7,
      max_message_size: 5000,
      topic_alias_maximum: 12,
      max_keepalive: 30,
      max_session_expiry: 10,
    },
  });
  try {
    const { c, connack } = await connect5(b.port, { clientId: "", keepAlive: 120 });
    assert.equal(connack.reasonCode, 0);
    assert.equal(connack.sessionPresent, false);
    const p = connack.properties!;
    assert.equal(p.receiveMaximum, 7);
    assert.equal(p.maximumQoS, 1);
    assert.equal(p.retainAvailable, undefined, "retain is available: the property is absent (§3.2.2.3.5)");
    assert.equal(p.maximumPacketSize, 5000);
    assert.equal(p.topicAliasMaximum, 12);
    assert.equal(p.wildcardSubscriptionAvailable, 1);
    assert.equal(p.subscriptionIdentifierAvailable, 1);
    assert.equal(p.sharedSubscriptionAvailable, 1);
    // The client asked 120 s, above server.max_keepalive: the server's value applies (§3.2.2.3.14).
    assert.equal(p.serverKeepAlive, 30);
    const assigned = p.assignedClientIdentifier;
    assert.ok(assigned !== undefined && assigned.length > 0, "Assigned Client Identifier");
    assert.equal(b.broker.clients.get(assigned)?.keepAlive, 30);
    await c.close();

    // Within the limit: no Server Keep Alive; a client id of its own: nothing assigned.
    const ok = await connect5(b.port, { clientId: "own-id", keepAlive: 20 });
    assert.equal(ok.connack.properties?.serverKeepAlive, undefined);
    assert.equal(ok.connack.properties?.assignedClientIdentifier, undefined);
    assert.equal(b.broker.clients.get("own-id")?.keepAlive, 20);
    await ok.c.close();

    // A Session Expiry Interval above server.max_session_expiry is lowered and the CONNACK says so.
    const capped = await connect5(b.port, { properties: { sessionExpiryInterval: 100 } });
    assert.equal(capped.connack.properties?.sessionExpiryInterval, 10);
    // QoS 2 after Maximum QoS 1 is a protocol violation: DISCONNECT 0x9B (§3.2.2.3.4).
    capped.c.send({
      type: 3,
      topic: "q/2",
      payload: te("x"),
      qos: 2,
      retain: false,
      dup: false,
      packetId: 1,
    });
    assert.equal(await serverDisconnect(capped.c), 0x9b);

    // MQTT.js sees the same CONNACK.
    const js = await mqtt5(b.url, { clientId: "", keepalive: 100 });
    assert.equal(js.connack.properties?.receiveMaximum, 7);
    assert.equal(js.connack.properties?.maximumQoS, 1);
    assert.equal(js.connack.properties?.serverKeepAlive, 30);
    assert.ok(js.connack.properties?.assignedClientIdentifier?.startsWith("auto-"));
    await mqttEnd(js.client);
  } finally {
    await b.stop();
  }
});

Deno.test("CONNACK: Retain Available 0 when retained.enabled is false; no Maximum QoS when QoS 2 is allowed", async () => {
  const b = await startBroker({ qos: { max_qos: 2 }, retained: { enabled: false } });
  try {
    const { c, connack } = await connect5(b.port);
    assert.equal(connack.properties?.retainAvailable, 0);
    assert.equal(connack.properties?.maximumQoS, undefined);
    // A retained PUBLISH after Retain Available 0 is a protocol violation: DISCONNECT 0x9A (§3.2.2.3.5).
    await publish(c, "r/t", "x", { retain: true });
    assert.equal(await serverDisconnect(c), 0x9a);
  } finally {
    await b.stop();
  }
});

// ---------------------------------------------------------------------------------------------------
// Session Expiry Interval (§3.1.2.11.2, §4.1)

Deno.test("Session Expiry Interval 0: the session ends with the connection", async () => {
  const b = await startBroker();
  try {
    const { c } = await connect5(b.port, { clientId: "se0", clean: false });
    await subscribe(c, ["se0/#"]);
    c.send({ type: 14 });
    await c.expectClosed();
    await waitFor(() => !b.broker.sessions.has("se0"), "session se0 ended");
    const again = await connect5(b.port, { clientId: "se0", clean: false });
    assert.equal(again.connack.sessionPresent, false);
    await again.c.close();
  } finally {
    await b.stop();
  }
});

Deno.test("Session Expiry Interval > 0 keeps the session until it expires; DISCONNECT may lengthen it", async () => {
  const b = await startBroker();
  try {
    const props = { sessionExpiryInterval: 1 };
    const keep = await connect5(b.port, { clientId: "se-keep", clean: false, properties: props });
    await subscribe(keep.c, ["se/keep"]);
    const lengthened = await connect5(b.port, { clientId: "se-long", clean: false, properties: props });

    // Back within the interval: Session Present and the subscription still works.
    keep.c.send({ type: 14 });
    await keep.c.expectClosed();
    const back = await connect5(b.port, { clientId: "se-keep", clean: false, properties: props });
    assert.equal(back.connack.sessionPresent, true);
    const pub = await connect5(b.port);
    await publish(pub.c, "se/keep", "still subscribed", { qos: 1 });
    assert.equal(td((await back.c.expect(3) as PublishPacket).payload), "still subscribed");

    // se-long disconnects first, changing its interval to 300 s (§3.14.2.2.2), then se-keep with its 1 s.
    lengthened.c.send({ type: 14, reasonCode: 0, properties: { sessionExpiryInterval: 300 } });
    await lengthened.c.expectClosed();
    back.c.send({ type: 14 });
    const closedAt = Date.now();
    await back.c.expectClosed();
    await waitFor(() => !b.broker.sessions.has("se-keep"), "se-keep expired", 3000);
    assert.ok(Date.now() - closedAt >= 950, `expired after ${Date.now() - closedAt} ms, before its 1 s`);
    // se-long went offline earlier with a 1 s interval at CONNECT: only the new value keeps it.
    assert.ok(b.broker.sessions.has("se-long"), "se-long lives on with the interval set at DISCONNECT");

    const gone = await connect5(b.port, { clientId: "se-keep", clean: false, properties: props });
    assert.equal(gone.connack.sessionPresent, false);
    const alive = await connect5(b.port, { clientId: "se-long", clean: false, properties: props });
    assert.equal(alive.connack.sessionPresent, true);
    await Promise.all([gone.c.close(), alive.c.close(), pub.c.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("DISCONNECT with Session Expiry Interval 0 ends a session that would have outlived the connection", async () => {
  const b = await startBroker();
  try {
    const { c } = await connect5(b.port, {
      clientId: "se-short",
      properties: { sessionExpiryInterval: 3600 },
    });
    await subscribe(c, ["short/#"]);
    c.send({ type: 14, reasonCode: 0, properties: { sessionExpiryInterval: 0 } });
    await c.expectClosed();
    await waitFor(() => !b.broker.sessions.has("se-short"), "session ended at DISCONNECT");
    assert.equal(b.broker.tree.size, 0);
  } finally {
    await b.stop();
  }
});

Deno.test("Session Expiry Interval 0 at CONNECT and > 0 at DISCONNECT is a protocol error (0x82)", async () => {
  const b = await startBroker();
  try {
    const { c } = await connect5(b.port, { clientId: "se-bad" });
    c.send({ type: 14, reasonCode: 0, properties: { sessionExpiryInterval: 60 } });
    assert.equal(await serverDisconnect(c), 0x82);
    await waitFor(() => !b.broker.sessions.has("se-bad"), "session se-bad ended");
  } finally {
    await b.stop();
  }
  // With server.max_session_expiry 0 the CONNECT's 60 became 0: a DISCONNECT with one is no error then.
  const capped = await startBroker({ server: { max_session_expiry: 0 } });
  try {
    const { c, connack } = await connect5(capped.port, { properties: { sessionExpiryInterval: 60 } });
    assert.equal(connack.properties?.sessionExpiryInterval, 0);
    c.send({ type: 14, reasonCode: 0, properties: { sessionExpiryInterval: 60 } });
    await c.expectClosed();
    assert.equal(c.received.filter((p) => p.type === 14).length, 0, "no DISCONNECT from the server");
  } finally {
    await capped.stop();
  }
});

Deno.test("Clean Start 1 discards the existing session and its queued messages", async () => {
  const b = await startBroker();
  try {
    const props = { sessionExpiryInterval: 60 };
    const first = await connect5(b.port, { clientId: "cs", clean: false, properties: props });
    await subscribe(first.c, ["cs/#"]);
    first.c.send({ type: 14 });
    await first.c.expectClosed();
    const pub = await connect5(b.port);
    assert.equal((await publish(pub.c, "cs/x", "queued", { qos: 1 }))?.reasonCode ?? 0, 0);
    assert.equal(b.broker.sessions.get("cs")?.queuedCount, 1);

    const clean = await connect5(b.port, { clientId: "cs", clean: true, properties: props });
    assert.equal(clean.connack.sessionPresent, false);
    await clean.c.expectNone(3, 200);
    // The old subscription is gone too: nobody matches now (0x10, §3.4.2.1).
    assert.equal((await publish(pub.c, "cs/x", "after", { qos: 1 }))?.reasonCode, 0x10);
    await Promise.all([clean.c.close(), pub.c.close()]);
  } finally {
    await b.stop();
  }
});

// ---------------------------------------------------------------------------------------------------
// Message Expiry Interval (§3.3.2.3.3)

Deno.test("Message Expiry: expired messages are not delivered; the remaining interval is forwarded", async () => {
  const b = await startBroker();
  try {
    const props = { sessionExpiryInterval: 60 };
    const sub = await connect5(b.port, { clientId: "mx", clean: false, properties: props });
    await subscribe(sub.c, ["mx/#"]);
    sub.c.send({ type: 14 });
    await sub.c.expectClosed();

    const pub = await connect5(b.port);
    await publish(pub.c, "mx/short", "short", { qos: 1, properties: { messageExpiryInterval: 1 } });
    await publish(pub.c, "mx/long", "long", { qos: 1, properties: { messageExpiryInterval: 10 } });
    await publish(pub.c, "mx/none", "none", { qos: 1 });
    await publish(pub.c, "mxr/short", "retained", {
      qos: 1,
      retain: true,
      properties: { messageExpiryInterval: 1 },
    });
    await publish(pub.c, "mxr/long", "retained", {
      qos: 1,
      retain: true,
      properties: { messageExpiryInterval: 10 },
    });
    await delay(1200);

    const back = await connect5(b.port, { clientId: "mx", clean: false, properties: props });
    assert.equal(back.connack.sessionPresent, true);
    const long = await back.c.expect(3) as PublishPacket;
    const none = await back.c.expect(3) as PublishPacket;
    await back.c.expectNone(3, 150);
    assert.deepEqual([long.topic, none.topic], ["mx/long", "mx/none"]);
    const left = long.properties?.messageExpiryInterval;
    assert.ok(left !== undefined && left <= 9 && left >= 8, `remaining expiry ${left}, want 8..9`);
    assert.equal(none.properties?.messageExpiryInterval, undefined);
    assert.equal(b.broker.metrics.dropped.expired, 1);

    // An expired retained message is not sent to a new subscriber either; the other one carries its rest.
    await subscribe(back.c, ["mxr/#"]);
    const retained = await back.c.expect(3) as PublishPacket;
    await back.c.expectNone(3, 150);
    assert.equal(retained.topic, "mxr/long");
    assert.equal(retained.retain, true);
    assert.ok((retained.properties?.messageExpiryInterval ?? 99) <= 9);
    // ... and it is gone from the retained store, not only skipped.
    assert.equal(b.broker.retained.get("mxr/short"), undefined);
    assert.notEqual(b.broker.retained.get("mxr/long"), undefined);
    await Promise.all([back.c.close(), pub.c.close()]);
  } finally {
    await b.stop();
  }
});

// ---------------------------------------------------------------------------------------------------
// Topic Aliases (§3.3.2.3.4)

Deno.test("inbound Topic Alias: set, use, remap; not carried to the next connection", async () => {
  const b = await startBroker({ server: { topic_alias_maximum: 5 } });
  try {
    const sub = await connect5(b.port);
    await subscribe(sub.c, ["al/#"]);
    const { c, connack } = await connect5(b.port, { clientId: "aliaser" });
    assert.equal(connack.properties?.topicAliasMaximum, 5);
    await publish(c, "al/one", "set", { qos: 1, properties: { topicAlias: 5 } });
    await publish(c, "", "use", { qos: 1, properties: { topicAlias: 5 } });
    await publish(c, "al/two", "remap", { qos: 1, properties: { topicAlias: 5 } });
    await publish(c, "", "use again", { qos: 1, properties: { topicAlias: 5 } });
    const got: PublishPacket[] = [];
    for (let i = 0; i < 4; i++) got.push(await sub.c.expect(3) as PublishPacket);
    assert.deepEqual(got.map((p) => [p.topic, td(p.payload)]), [
      ["al/one", "set"],
      ["al/one", "use"],
      ["al/two", "remap"],
      ["al/two", "use again"],
    ]);
    // The alias is between the publisher and us: it is not forwarded (§3.3.2.3.4).
    assert.ok(got.every((p) => p.properties?.topicAlias === undefined));
    await c.close();

    // MQTT-3.3.2-7: mappings do not survive the connection.
    const next = await connect5(b.port, { clientId: "aliaser" });
    await publish(next.c, "", "stale", { properties: { topicAlias: 5 } });
    assert.equal(await serverDisconnect(next.c), 0x82);
    await sub.c.expectNone(3, 100);
    await sub.c.close();
  } finally {
    await b.stop();
  }
});

Deno.test("inbound Topic Alias above the maximum is 0x94; an unknown alias with an empty topic is 0x82", async () => {
  const b = await startBroker({ server: { topic_alias_maximum: 5 } });
  try {
    const above = await connect5(b.port);
    await publish(above.c, "al/x", "x", { properties: { topicAlias: 6 } });
    assert.equal(await serverDisconnect(above.c), 0x94);

    const unknown = await connect5(b.port);
    await publish(unknown.c, "", "x", { properties: { topicAlias: 3 } });
    assert.equal(await serverDisconnect(unknown.c), 0x82);

    // With topic_alias_maximum 0 (CONNACK says 0) any alias is invalid.
    const none = await startBroker({ server: { topic_alias_maximum: 0 } });
    try {
      const c = await connect5(none.port);
      assert.equal(c.connack.properties?.topicAliasMaximum ?? 0, 0);
      await publish(c.c, "al/x", "x", { properties: { topicAlias: 1 } });
      assert.equal(await serverDisconnect(c.c), 0x94);
    } finally {
      await none.stop();
    }
  } finally {
    await b.stop();
  }
});

Deno.test("inbound Topic Alias 0 is invalid: DISCONNECT 0x94", async () => {
  const b = await startBroker({ server: { topic_alias_maximum: 5 } });
  try {
    const { c } = await connect5(b.port);
    // Our encoder refuses alias 0, so the PUBLISH is written by hand: topic "t", property 0x23 = 0.
    await c.sendBytes(new Uint8Array([0x30, 0x08, 0x00, 0x01, 0x74, 0x03, 0x23, 0x00, 0x00, 0x78]));
    assert.equal(await serverDisconnect(c), 0x94);
  } finally {
    await b.stop();
  }
});

Deno.test("outbound Topic Alias: assigned on first use, empty topic afterwards, within the client's maximum", async () => {
  const b = await startBroker();
  try {
    const { c } = await connect5(b.port, { properties: { topicAliasMaximum: 2 } });
    await subscribe(c, [{ topicFilter: "oa/#", qos: 0 }]);
    const pub = await connect5(b.port);
    for (const t of ["oa/1", "oa/1", "oa/2", "oa/3", "oa/1", "oa/2", "oa/3"]) await publish(pub.c, t, t);
    const got: PublishPacket[] = [];
    for (let i = 0; i < 7; i++) got.push(await c.expect(3) as PublishPacket);
    assert.deepEqual(got.map((p) => [p.topic, p.properties?.topicAlias, td(p.payload)]), [
      ["oa/1", 1, "oa/1"],
      ["", 1, "oa/1"],
      ["oa/2", 2, "oa/2"],
      ["oa/3", undefined, "oa/3"], // the client allows 2 aliases
      ["", 1, "oa/1"],
      ["", 2, "oa/2"],
      ["oa/3", undefined, "oa/3"],
    ]);
    // A client that did not ask for aliases gets none.
    const plain = await connect5(b.port);
    await subscribe(plain.c, [{ topicFilter: "oa/#", qos: 0 }]);
    await publish(pub.c, "oa/1", "x");
    const p = await plain.c.expect(3) as PublishPacket;
    assert.equal(p.topic, "oa/1");
    assert.equal(p.properties?.topicAlias, undefined);

    // MQTT.js resolves the aliases it is sent.
    const js = await mqtt5(b.url, { properties: { topicAliasMaximum: 4 } });
    const jsGot = collect(js.client);
    await js.client.subscribeAsync("oa/#", { qos: 1 });
    for (const t of ["oa/a", "oa/a", "oa/b", "oa/a"]) await publish(pub.c, t, t, { qos: 1 });
    await waitFor(() => jsGot.length === 4, "4 messages at MQTT.js");
    assert.deepEqual(jsGot.map((m) => [m.topic, m.payload]), [
      ["oa/a", "oa/a"],
      ["oa/a", "oa/a"],
      ["oa/b", "oa/b"],
      ["oa/a", "oa/a"],
    ]);
    await mqttEnd(js.client);
    await Promise.all([c.close(), pub.c.close(), plain.c.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("outbound Topic Alias: a PUBLISH dropped for the client's Maximum Packet Size does not claim an alias", async () => {
  const b = await startBroker();
  try {
    const { c } = await connect5(b.port, { properties: { topicAliasMaximum: 2, maximumPacketSize: 100 } });
    await subscribe(c, [{ topicFilter: "big/#", qos: 0 }]);
    const pub = await connect5(b.port);
    await publish(pub.c, "big/t", "x".repeat(200)); // too large for the client: dropped
    await publish(pub.c, "big/t", "small");
    const p = await c.expect(3) as PublishPacket;
    // The client never saw the alias set, so the topic must be sent in full with it.
    assert.equal(p.topic, "big/t");
    assert.equal(td(p.payload), "small");
    assert.equal(b.broker.metrics.dropped.too_large, 1);
    await Promise.all([c.close(), pub.c.close()]);
  } finally {
    await b.stop();
  }
});

// ---------------------------------------------------------------------------------------------------
// Subscription Options (§3.8.3.1) and Subscription Identifiers (§3.8.2.1.2)

Deno.test("No Local: own messages are not delivered back; an overlapping subscription without it still gets one copy", async () => {
  const b = await startBroker();
  try {
    const { c } = await connect5(b.port, { clientId: "nl" });
    await subscribe(c, [{ topicFilter: "nl/t", noLocal: true }]);
    await publish(c, "nl/t", "mine", { qos: 1 });
    const other = await connect5(b.port);
    await publish(other.c, "nl/t", "theirs", { qos: 1 });
    const p = await c.expect(3) as PublishPacket;
    assert.equal(td(p.payload), "theirs");
    await c.expectNone(3, 100);

    await subscribe(c, [{ topicFilter: "nl/#", noLocal: false }]);
    await publish(c, "nl/t", "mine again", { qos: 1 });
    assert.equal(td((await c.expect(3) as PublishPacket).payload), "mine again");
    await c.expectNone(3, 100);
    await Promise.all([c.close(), other.c.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("Retain As Published keeps the RETAIN flag of live messages; without it the flag is 0", async () => {
  const b = await startBroker();
  try {
    const rap = await connect5(b.port);
    await subscribe(rap.c, [{ topicFilter: "rap/t", retainAsPublished: true }]);
    const plain = await connect5(b.port);
    await subscribe(plain.c, [{ topicFilter: "rap/t", retainAsPublished: false }]);
    const pub = await connect5(b.port);
    await publish(pub.c, "rap/t", "kept", { qos: 1, retain: true });
    await publish(pub.c, "rap/t", "live", { qos: 1, retain: false });
    const a1 = await rap.c.expect(3) as PublishPacket;
    const a2 = await rap.c.expect(3) as PublishPacket;
    const b1 = await plain.c.expect(3) as PublishPacket;
    const b2 = await plain.c.expect(3) as PublishPacket;
    assert.deepEqual([a1.retain, a2.retain], [true, false]);
    assert.deepEqual([b1.retain, b2.retain], [false, false]);
    // The same through a shared subscription (MQTT-3.3.1-13 makes no exception for them).
    const shared = await connect5(b.port);
    await subscribe(shared.c, [{ topicFilter: "$share/g/rap/s", retainAsPublished: true }]);
    await publish(pub.c, "rap/s", "kept", { qos: 1, retain: true });
    await publish(pub.c, "rap/s", "live", { qos: 1, retain: false });
    const s1 = await shared.c.expect(3) as PublishPacket;
    const s2 = await shared.c.expect(3) as PublishPacket;
    assert.deepEqual([s1.retain, s2.retain], [true, false]);
    await Promise.all([rap.c.close(), plain.c.close(), pub.c.close(), shared.c.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("Retain Handling 0 sends retained messages on every SUBSCRIBE, 1 only for a new subscription, 2 never", async () => {
  const b = await startBroker();
  try {
    const pub = await connect5(b.port);
    await publish(pub.c, "rh/t", "retained", { qos: 1, retain: true });
    const { c } = await connect5(b.port);
    const retainedAfter = async (
      filter: string,
      retainHandling: 0 | 1 | 2,
    ): Promise<PublishPacket | undefined> => {
      await subscribe(c, [{ topicFilter: filter, retainHandling }]);
      // Retained messages follow the SUBACK at once; 100 ms of silence means none.
      await delay(100);
      const i = c.received.findIndex((p) => p.type === 3);
      return i < 0 ? undefined : c.received.splice(i, 1)[0] as PublishPacket;
    };
    assert.equal((await retainedAfter("rh/#", 0))?.topic, "rh/t");
    assert.equal(
      (await retainedAfter("rh/#", 0))?.topic,
      "rh/t",
      "Retain Handling 0: again on a repeated SUBSCRIBE",
    );
    assert.equal((await retainedAfter("rh/+", 1))?.topic, "rh/t", "Retain Handling 1: new subscription");
    assert.equal(await retainedAfter("rh/+", 1), undefined, "Retain Handling 1: existing subscription");
    assert.equal(await retainedAfter("rh/t", 2), undefined, "Retain Handling 2: never");
    assert.equal(c.received.length, 0);
    await Promise.all([c.close(), pub.c.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("Subscription Identifiers: carried on deliveries; overlapping subscriptions give one copy with both", async () => {
  const b = await startBroker();
  try {
    const pub = await connect5(b.port);
    await publish(pub.c, "si/r", "retained", { qos: 1, retain: true });
    const { c } = await connect5(b.port);
    await subscribe(c, ["si/#"], { subscriptionIdentifiers: [5] });
    const retained = await c.expect(3) as PublishPacket;
    assert.deepEqual(retained.properties?.subscriptionIdentifiers, [5]);
    await subscribe(c, ["si/+"], { subscriptionIdentifiers: [70000] });
    // The retained message again, for the new subscription only (§3.8.4).
    assert.deepEqual((await c.expect(3) as PublishPacket).properties?.subscriptionIdentifiers, [70000]);
    await subscribe(c, ["si/none/#"]); // no identifier

    await publish(pub.c, "si/a", "both", { qos: 1 });
    const both = await c.expect(3) as PublishPacket;
    await c.expectNone(3, 100);
    assert.deepEqual([...both.properties!.subscriptionIdentifiers!].sort((x, y) => x - y), [5, 70000]);

    await publish(pub.c, "si/none/x", "two", { qos: 1 });
    const two = await c.expect(3) as PublishPacket;
    await c.expectNone(3, 100);
    // si/# (5) and si/none/# (no identifier) match: only the identifier that exists is sent.
    assert.deepEqual(two.properties?.subscriptionIdentifiers, [5]);

    // A subscriber without identifiers never sees one.
    const plain = await connect5(b.port);
    await subscribe(plain.c, ["si/a"]);
    await publish(pub.c, "si/a", "plain", { qos: 1 });
    assert.equal((await plain.c.expect(3) as PublishPacket).properties?.subscriptionIdentifiers, undefined);
    await Promise.all([c.close(), pub.c.close(), plain.c.close()]);
  } finally {
    await b.stop();
  }
});

// ---------------------------------------------------------------------------------------------------
// Request / Response and other PUBLISH properties (§4.10, §3.3.2.3)

Deno.test("Response Topic, Correlation Data, User Properties (in order) and Content Type pass through", async () => {
  const b = await startBroker();
  try {
    const watcher = await connect5(b.port);
    await subscribe(watcher.c, ["svc/req"]);
    // The responder answers on the request's Response Topic with its Correlation Data (MQTT.js).
    const responder = await mqtt5(b.url);
    responder.client.on("message", (_topic, payload, packet) => {
      responder.client.publish(packet.properties!.responseTopic!, `re: ${payload}`, {
        qos: 1,
        properties: { correlationData: packet.properties!.correlationData },
      });
    });
    await responder.client.subscribeAsync("svc/req", { qos: 1 });
    const requester = await connect5(b.port);
    await subscribe(requester.c, ["svc/resp/1"]);

    const properties = {
      responseTopic: "svc/resp/1",
      correlationData: new Uint8Array([0, 1, 2, 255]),
      contentType: "text/plain; charset=utf-8",
      payloadFormatIndicator: 1,
      userProperties: [["b", "1"], ["a", "2"], ["b", "3"]] as [string, string][],
    };
    assert.equal((await publish(requester.c, "svc/req", "ping", { qos: 1, properties }))?.reasonCode ?? 0, 0);

    const seen = await watcher.c.expect(3) as PublishPacket;
    assert.deepEqual(seen.properties, properties);
    const response = await requester.c.expect(3) as PublishPacket;
    assert.equal(td(response.payload), "re: ping");
    assert.deepEqual(response.properties?.correlationData, properties.correlationData);
    await mqttEnd(responder.client);
    await Promise.all([watcher.c.close(), requester.c.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("Payload Format Indicator 1 with invalid UTF-8: PUBACK 0x99 (QoS 1), DISCONNECT 0x99 (QoS 0), not delivered", async () => {
  const b = await startBroker();
  try {
    const sub = await connect5(b.port);
    await subscribe(sub.c, ["pfi/#"]);
    const { c } = await connect5(b.port);
    const bad = new Uint8Array([0x68, 0xc3, 0x28]);
    const ack = await publish(c, "pfi/t", bad, { qos: 1, properties: { payloadFormatIndicator: 1 } });
    assert.equal(ack?.reasonCode, 0x99);
    // The same bytes without the indicator are just binary.
    assert.equal((await publish(c, "pfi/t", bad, { qos: 1 }))?.reasonCode ?? 0, 0);
    const p = await sub.c.expect(3) as PublishPacket;
    assert.deepEqual(p.payload, bad);
    await sub.c.expectNone(3, 100);
    await publish(c, "pfi/t", bad, { properties: { payloadFormatIndicator: 1 } });
    assert.equal(await serverDisconnect(c), 0x99);
    await sub.c.close();
  } finally {
    await b.stop();
  }
});

// ---------------------------------------------------------------------------------------------------
// Server reason codes (§4.13, §3.14.2.1) and PUBACK reason codes (§3.4.2.1)

Deno.test("server DISCONNECT: keep-alive timeout 0x8D, enforced with the Server Keep Alive", async () => {
  const b = await startBroker({ server: { max_keepalive: 1 } });
  try {
    // The client asks 60 s; the server answers 1 s and times the client out after 1.5 s (§3.1.2.10).
    const { c, connack } = await connect5(b.port, { keepAlive: 60 });
    assert.equal(connack.properties?.serverKeepAlive, 1);
    const start = Date.now();
    assert.equal(await serverDisconnect(c, 4000), 0x8d);
    assert.ok(Date.now() - start >= 1400, `timed out after ${Date.now() - start} ms, before 1.5 x 1 s`);
  } finally {
    await b.stop();
  }
});

Deno.test("server DISCONNECT: session taken over 0x8E, malformed packet 0x81, second CONNECT 0x82, AUTH 0x82", async () => {
  const b = await startBroker();
  try {
    const first = await connect5(b.port, { clientId: "twice" });
    const second = await connect5(b.port, { clientId: "twice" });
    assert.equal(await serverDisconnect(first.c), 0x8e);

    const malformed = await connect5(b.port);
    // PUBLISH "t" whose Property Length (5) runs past the end of the packet.
    await malformed.c.sendBytes(new Uint8Array([0x30, 0x05, 0x00, 0x01, 0x74, 0x05, 0x01]));
    assert.equal(await serverDisconnect(malformed.c), 0x81);

    const again = await connect5(b.port);
    again.c.send({
      type: 1,
      protocolName: "MQTT",
      protocolVersion: 5,
      clean: true,
      keepAlive: 60,
      clientId: "x",
    });
    assert.equal(await serverDisconnect(again.c), 0x82);

    // No authentication method was negotiated at CONNECT, so AUTH is not allowed (§4.12).
    const auth = await connect5(b.port);
    auth.c.send({ type: 15, reasonCode: 0x19, properties: { authenticationMethod: "SCRAM-SHA-1" } });
    assert.equal(await serverDisconnect(auth.c), 0x82);

    // The broker still serves the connection that took over.
    second.c.send({ type: 12 });
    await second.c.expect(13);
    await second.c.close();
  } finally {
    await b.stop();
  }
});

Deno.test("CONNECT with an Authentication Method we do not support: CONNACK 0x8C", async () => {
  const b = await startBroker();
  try {
    const { c, connack } = await connect5(b.port, {
      clientId: "enhanced",
      properties: { authenticationMethod: "SCRAM-SHA-256", authenticationData: te("client-first") },
    });
    assert.equal(connack.reasonCode, 0x8c);
    await c.expectClosed();
    assert.equal(b.broker.sessions.has("enhanced"), false);
  } finally {
    await b.stop();
  }
});

Deno.test("a CONNECT that breaks a rule gets CONNACK with the reason code: Receive Maximum 0, Authentication Data alone", async () => {
  const b = await startBroker();
  try {
    // Receive Maximum 0 (§3.1.2.11.3): written by hand, our encoder would not send it.
    const bad = await RawClient.open(b.port, 5);
    const id = te("rm0");
    const body = [0, 4, ...te("MQTT"), 5, 0x02, 0, 60, 3, 0x21, 0, 0, 0, id.length, ...id];
    await bad.sendBytes(new Uint8Array([0x10, body.length, ...body]));
    const refused = await bad.expect(2) as ConnackPacket;
    assert.equal(refused.reasonCode, 0x82);
    await bad.expectClosed();
    // Authentication Data without an Authentication Method is a protocol error (§3.1.2.11.10).
    const { c, connack } = await connect5(b.port, { properties: { authenticationData: te("data") } });
    assert.equal(connack.reasonCode, 0x82);
    await c.expectClosed();
  } finally {
    await b.stop();
  }
});

Deno.test("server DISCONNECT: shutdown 0x8B to MQTT 5 clients; 3.1.1 clients are just closed", async () => {
  const b = await startBroker();
  try {
    const v5 = await connect5(b.port);
    const v4 = await RawClient.connect(b.port, { version: 4 });
    await b.stop();
    assert.equal(await serverDisconnect(v5.c), 0x8b);
    await v4.expectClosed();
    assert.equal(v4.received.length, 0);
  } finally {
    await b.stop();
  }
});

Deno.test("a PUBLISH from a client with a Subscription Identifier is a protocol error (0x82)", async () => {
  const b = await startBroker();
  try {
    const sub = await connect5(b.port);
    await subscribe(sub.c, ["sid/#"]);
    const { c } = await connect5(b.port);
    // MQTT-3.3.4-6: only the server puts Subscription Identifiers on a PUBLISH.
    await publish(c, "sid/t", "x", { properties: { subscriptionIdentifiers: [9] } });
    assert.equal(await serverDisconnect(c), 0x82);
    await sub.c.expectNone(3, 100);
    await sub.c.close();
  } finally {
    await b.stop();
  }
});

Deno.test("PUBACK 0x10 when nobody subscribes; 0x87 for a PUBLISH to $SYS", async () => {
  const b = await startBroker({ qos: { max_qos: 2 } });
  try {
    const { c } = await connect5(b.port);
    assert.equal((await publish(c, "nobody/here", "x", { qos: 1 }))?.reasonCode, 0x10);
    assert.equal((await publish(c, "$SYS/broker/uptime", "fake", { qos: 1 }))?.reasonCode, 0x87);
    // QoS 2: the same codes on PUBREC; an error code ends the exchange, 0x10 does not (§4.3.3).
    c.send({ type: 3, topic: "$SYS/x", payload: te("x"), qos: 2, retain: false, dup: false, packetId: 40 });
    assert.equal((await c.expect(5) as { reasonCode?: number }).reasonCode, 0x87);
    c.send({ type: 3, topic: "nobody/2", payload: te("x"), qos: 2, retain: false, dup: false, packetId: 41 });
    assert.equal((await c.expect(5) as { reasonCode?: number }).reasonCode, 0x10);
    c.send({ type: 6, packetId: 41 });
    assert.equal((await c.expect(7) as { reasonCode?: number }).reasonCode ?? 0, 0);
    await c.close();
  } finally {
    await b.stop();
  }
});

Deno.test("$SYS is its own first level only: $SYSTEM/x and $SYSfoo are client topics, retained and delivered", async () => {
  const b = await startBroker({ qos: { max_qos: 2 } });
  try {
    const { c: sub } = await connect5(b.port);
    assert.deepEqual(await subscribe(sub, ["$SYSTEM/#", "$SYSfoo"]), [1, 1]);
    const { c } = await connect5(b.port);
    assert.equal((await publish(c, "$SYSTEM/x", "a", { qos: 1, retain: true }))?.reasonCode ?? 0, 0);
    assert.equal((await publish(c, "$SYSfoo", "b", { qos: 1 }))?.reasonCode ?? 0, 0);
    assert.equal((await sub.expect(3) as PublishPacket).topic, "$SYSTEM/x");
    assert.equal((await sub.expect(3) as PublishPacket).topic, "$SYSfoo");
    // $SYS itself and the topics under it stay the broker's.
    assert.equal((await publish(c, "$SYS", "c", { qos: 1 }))?.reasonCode, 0x87);
    // The retained one is a client's message like any other: a new subscriber gets it.
    const { c: late } = await connect5(b.port);
    assert.deepEqual(await subscribe(late, ["$SYSTEM/x"]), [1]);
    assert.equal(td((await late.expect(3) as PublishPacket).payload), "a");
    // A will under such a topic is accepted too.
    const { connack, c: w } = await connect5(b.port, {
      will: { topic: "$SYSTEM/will", payload: te("w"), qos: 0, retain: false },
    });
    assert.equal(connack.reasonCode, 0);
    for (const x of [sub, c, late, w]) await x.close();
  } finally {
    await b.stop();
  }
});

Deno.test("UNSUBSCRIBE of an invalid filter: 0x8F in MQTT 5 (no subscription can have it), the others handled", async () => {
  const b = await startBroker();
  try {
    const { c } = await connect5(b.port);
    assert.deepEqual(await subscribe(c, ["ok/#"]), [1]);
    c.send({ type: 10, packetId: 77, topicFilters: ["a/#/b", "$share//x", "ok/#", "never"] });
    const unsuback = await c.expect(11) as { packetId: number; reasonCodes: number[] };
    assert.equal(unsuback.packetId, 77);
    assert.deepEqual(unsuback.reasonCodes, [0x8f, 0x8f, 0x00, 0x11]);
    // The connection goes on: a PING still gets its answer.
    c.send({ type: 12 });
    await c.expect(13);
    await c.close();
  } finally {
    await b.stop();
  }
});

// ---------------------------------------------------------------------------------------------------
// Interoperation between protocol levels

Deno.test("interop: a 3.1.1 subscriber gets 5.0 messages without properties; a 5.0 subscriber gets 3.1.1 ones", async () => {
  const b = await startBroker();
  try {
    const old = await RawClient.connect(b.port, { version: 4 });
    old.send({
      type: 8,
      packetId: 1,
      subscriptions: [{
        topicFilter: "mix/#",
        qos: 1,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    await old.expect(9);
    const oldJs = await mqttConnect(b.url, { protocolVersion: 4 });
    const oldGot = collect(oldJs);
    await oldJs.subscribeAsync("mix/#", { qos: 1 });
    const v5 = await connect5(b.port);
    await subscribe(v5.c, ["mix/#"], { subscriptionIdentifiers: [3] });

    await publish(v5.c, "mix/from5", "five", {
      qos: 1,
      properties: {
        userProperties: [["k", "v"]],
        contentType: "text/plain",
        messageExpiryInterval: 30,
        responseTopic: "mix/reply",
      },
    });
    const p4 = await old.expect(3) as PublishPacket;
    assert.equal(p4.topic, "mix/from5");
    assert.equal(td(p4.payload), "five", "no property bytes leak into a 3.1.1 payload");
    assert.equal(p4.properties, undefined);
    await waitFor(() => oldGot.length === 1, "MQTT.js 3.1.1 got the message");
    assert.equal(oldGot[0].payload, "five");
    assert.equal(oldGot[0].packet.properties, undefined);
    const own = await v5.c.expect(3) as PublishPacket; // v5 is subscribed too
    assert.equal(own.properties?.contentType, "text/plain");

    const pub4 = await mqttConnect(b.url, { protocolVersion: 4 });
    await pub4.publishAsync("mix/from4", "four", { qos: 1 });
    const p5 = await v5.c.expect(3) as PublishPacket;
    assert.equal(p5.topic, "mix/from4");
    assert.equal(td(p5.payload), "four");
    assert.deepEqual(p5.properties, { subscriptionIdentifiers: [3] });
    await Promise.all([mqttEnd(oldJs), mqttEnd(pub4), old.close(), v5.c.close()]);
  } finally {
    await b.stop();
  }
});

// ---------------------------------------------------------------------------------------------------
// Shared subscriptions (§4.8.2)

Deno.test("shared subscription: each member gets a share, none twice; other subscribers and groups get all", async () => {
  const b = await startBroker();
  try {
    const members = await Promise.all([1, 2, 3].map(() => mqtt5(b.url)));
    const shares = members.map((m) => collect(m.client));
    for (const m of members) await m.client.subscribeAsync("$share/g/sh/#", { qos: 1 });
    const loner = await mqtt5(b.url); // the only member of another group
    const lonerGot = collect(loner.client);
    await loner.client.subscribeAsync("$share/other/sh/#", { qos: 1 });
    const plain = await connect5(b.port);
    await subscribe(plain.c, ["sh/#"]);

    const pub = await mqtt5(b.url);
    const n = 30;
    for (let i = 0; i < n; i++) await pub.client.publishAsync(`sh/${i % 4}`, `m${i}`, { qos: 1 });
    const total = () => shares.reduce((sum, s) => sum + s.length, 0);
    await waitFor(() => total() === n && lonerGot.length === n, "every message once per group");
    await waitFor(() => plain.c.received.length === n, "every message at the non-shared subscriber");
    await delay(100);
    assert.equal(total(), n, "no duplicates within the group");
    for (const [i, s] of shares.entries()) assert.ok(s.length > 0, `member ${i} got no message`);
    const payloads = shares.flatMap((s) => s.map((m) => m.payload));
    assert.equal(new Set(payloads).size, n);
    assert.equal(lonerGot.length, n);
    assert.equal(plain.c.received.length, n);
    await Promise.all([...members, loner, pub].map((m) => mqttEnd(m.client)));
    await plain.c.close();
  } finally {
    await b.stop();
  }
});

for (const expiry of [0, 60]) {
  Deno.test(`shared subscription: unacked QoS 1 messages of a leaving member go to another (session expiry ${expiry})`, async () => {
    const b = await startBroker();
    try {
      // The raw member never acknowledges; the MQTT.js member does.
      const raw = await connect5(b.port, { properties: { sessionExpiryInterval: expiry } });
      await subscribe(raw.c, ["$share/g/rd/#"]);
      const js = await mqtt5(b.url);
      const jsGot = collect(js.client);
      await js.client.subscribeAsync("$share/g/rd/#", { qos: 1 });
      const pub = await connect5(b.port);
      const n = 6;
      for (let i = 0; i < n; i++) await publish(pub.c, "rd/x", `m${i}`, { qos: 1 });
      await waitFor(() => raw.c.received.length + jsGot.length === n, "all messages delivered once");
      const held = raw.c.received.map((p) => td((p as PublishPacket).payload));
      assert.ok(held.length > 0, "the raw member got a share");
      await raw.c.close(); // gone without acknowledging
      await waitFor(() => jsGot.length === n, "the held messages at the other member");
      await delay(100); // nothing more may come: each message once
      assert.deepEqual(jsGot.map((m) => m.payload).sort(), Array.from({ length: n }, (_, i) => `m${i}`));
      await mqttEnd(js.client);
      await pub.c.close();
    } finally {
      await b.stop();
    }
  });
}

for (const expiry of [0, 60]) {
  Deno.test(`shared subscription: a leaving member's expired messages are not started anew to another (session expiry ${expiry})`, async () => {
    const b = await startBroker();
    try {
      // The first member gets both messages (it is alone) and never acknowledges them.
      const first = await connect5(b.port, { properties: { sessionExpiryInterval: expiry } });
      await subscribe(first.c, ["$share/g/sx/#"]);
      const pub = await connect5(b.port);
      await publish(pub.c, "sx/t", "expires", { qos: 1, properties: { messageExpiryInterval: 1 } });
      await publish(pub.c, "sx/t", "stays", { qos: 1 });
      await waitFor(() => first.c.received.length === 2, "both at the first member");
      const other = await connect5(b.port);
      await subscribe(other.c, ["$share/g/sx/#"]);
      await delay(1200); // the first message's expiry passes
      await first.c.close();
      // Its delivery to the other member would be a new one, started after the expiry (MQTT-3.3.2-5).
      const got = await other.c.expect(3) as PublishPacket;
      assert.equal(td(got.payload), "stays");
      other.c.send({ type: 4, packetId: got.packetId! });
      await other.c.expectNone(3, 200);
      assert.equal(b.broker.metrics.dropped.expired, 1);
      await Promise.all([other.c.close(), pub.c.close()]);
    } finally {
      await b.stop();
    }
  });
}

for (const expiry of [0, 60]) {
  Deno.test(`shared subscription: QoS 2 messages sent to a leaving member stay with it, never to another (session expiry ${expiry})`, async () => {
    const b = await startBroker({ qos: { max_qos: 2 } });
    try {
      const clientId = `q2-member-${expiry}`;
      const first = await connect5(b.port, { clientId, properties: { sessionExpiryInterval: expiry } });
      await subscribe(first.c, [{ topicFilter: "$share/g/q2/#", qos: 2 }]);
      const pub = await connect5(b.port);
      for (const text of ["one", "two"]) {
        const packetId = nextPacketId++;
        pub.c.send({
          type: 3,
          topic: "q2/t",
          payload: te(text),
          qos: 2,
          retain: false,
          dup: false,
          packetId,
        });
        assert.equal((await pub.c.expect(5) as AckPacket).packetId, packetId);
        pub.c.send({ type: 6, packetId });
        await pub.c.expect(7);
      }
      // Both went to the first member, alone in the group then; it answers neither with PUBREC.
      const sent = [await first.c.expect(3) as PublishPacket, await first.c.expect(3) as PublishPacket];
      assert.deepEqual(sent.map((p) => [td(p.payload), p.qos]), [["one", 2], ["two", 2]]);
      const other = await connect5(b.port);
      await subscribe(other.c, [{ topicFilter: "$share/g/q2/#", qos: 2 }]);
      await first.c.close();
      // MQTT-4.8.2-4 / -5: the delivery is the first member's to complete, or nobody's.
      await other.c.expectNone(3, 300);
      if (expiry === 0) {
        await waitFor(
          () => b.broker.metrics.dropped.session_ended === 2,
          "both counted as lost with the session",
        );
      } else {
        assert.equal(b.broker.metrics.dropped.session_ended, 0);
        const back = await connect5(b.port, {
          clientId,
          clean: false,
          properties: { sessionExpiryInterval: 60 },
        });
        assert.equal(back.connack.sessionPresent, true);
        const again = [await back.c.expect(3) as PublishPacket, await back.c.expect(3) as PublishPacket];
        assert.deepEqual(
          again.map((p) => [td(p.payload), p.packetId, p.dup]),
          sent.map((p) => [td(p.payload), p.packetId, true]),
        );
        for (const p of again) {
          back.c.send({ type: 5, packetId: p.packetId! });
          assert.equal((await back.c.expect(6) as AckPacket).packetId, p.packetId);
          back.c.send({ type: 7, packetId: p.packetId! });
        }
        await other.c.expectNone(3, 100);
        await back.c.close();
      }
      await Promise.all([other.c.close(), pub.c.close()]);
    } finally {
      await b.stop();
    }
  });
}

Deno.test("shared subscription: a leaving member's unacked message goes to the group made anew after it unsubscribed", async () => {
  const b = await startBroker();
  try {
    const first = await connect5(b.port);
    await subscribe(first.c, ["$share/g/rn/#"]);
    const pub = await connect5(b.port);
    await publish(pub.c, "rn/t", "held", { qos: 1 });
    await first.c.expect(3); // never acknowledged
    // The only member leaves the group, which ends with it; a new member makes it anew.
    first.c.send({ type: 10, packetId: 500, topicFilters: ["$share/g/rn/#"] });
    await first.c.expect(11);
    const other = await connect5(b.port);
    await subscribe(other.c, ["$share/g/rn/#"]);
    await first.c.close();
    // As when the group had lasted: the message goes to a member still in it.
    assert.equal(td((await other.c.expect(3) as PublishPacket).payload), "held");
    await Promise.all([other.c.close(), pub.c.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("shared subscription: messages queued to an offline member stay shared across a restart (kv store)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-shared-restart-" });
  const storage = { backend: "kv" as const, path: `${dir}/mqtt.db` };
  let b = await startBroker({ storage });
  try {
    const props = { sessionExpiryInterval: 300 };
    for (const clientId of ["sr-a", "sr-b"]) {
      const m = await connect5(b.port, { clientId, properties: props });
      await subscribe(m.c, ["$share/g/sr/#"]);
      m.c.send({ type: 14, reasonCode: 0 });
      await m.c.expectClosed();
    }
    // Both members offline: each gets its turn queued.
    const pub = await connect5(b.port);
    for (let i = 0; i < 4; i++) await publish(pub.c, "sr/t", `m${i}`, { qos: 1 });
    await pub.c.close();
    assert.equal(b.broker.sessions.get("sr-a")!.queuedCount, 2);
    await b.stop();

    b = await startBroker({ storage });
    const member = await connect5(b.port, { clientId: "sr-b", clean: false, properties: props });
    assert.equal(member.connack.sessionPresent, true);
    const own = [await member.c.expect(3) as PublishPacket, await member.c.expect(3) as PublishPacket];
    for (const p of own) member.c.send({ type: 4, packetId: p.packetId! });
    // The other member's session ends: what was queued for it goes to the rest of the group, as it does
    // without a restart.
    const gone = await connect5(b.port, { clientId: "sr-a", clean: true });
    assert.equal(gone.connack.sessionPresent, false);
    const moved = [await member.c.expect(3) as PublishPacket, await member.c.expect(3) as PublishPacket];
    assert.deepEqual(
      [...own, ...moved].map((p) => td(p.payload)).sort(),
      ["m0", "m1", "m2", "m3"],
    );
    await Promise.all([member.c.close(), gone.c.close()]);
  } finally {
    await b.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("shared subscription: no retained messages on subscribe; No Local is a protocol error", async () => {
  const b = await startBroker();
  try {
    const pub = await connect5(b.port);
    await publish(pub.c, "shr/t", "retained", { qos: 1, retain: true });
    const { c } = await connect5(b.port);
    assert.deepEqual(await subscribe(c, ["$share/g/shr/#"]), [1]);
    await c.expectNone(3, 200);
    await publish(pub.c, "shr/t", "live", { qos: 1 });
    assert.equal(td((await c.expect(3) as PublishPacket).payload), "live");
    // MQTT-3.8.3-4: No Local on a shared subscription.
    c.send({
      type: 8,
      packetId: 99,
      subscriptions: [{
        topicFilter: "$share/g/x",
        qos: 0,
        noLocal: true,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    assert.equal(await serverDisconnect(c), 0x82);
    await pub.c.close();
  } finally {
    await b.stop();
  }
});

// ---------------------------------------------------------------------------------------------------
// Flow control (§4.9) and Maximum Packet Size (§3.1.2.11.4, §3.2.2.3.6)

Deno.test("Receive Maximum of the client: at most that many unacknowledged QoS 1 PUBLISHes", async () => {
  const b = await startBroker();
  try {
    const { c } = await connect5(b.port, { properties: { receiveMaximum: 2 } });
    await subscribe(c, ["fc/#"]);
    const pub = await connect5(b.port);
    for (let i = 0; i < 5; i++) await publish(pub.c, "fc/t", `m${i}`, { qos: 1 });
    const got: string[] = [];
    for (let acked = 0; acked < 5; acked++) {
      // Every PUBLISH taken is acknowledged, so what waits in `received` is what is unacknowledged.
      const window = Math.min(2, 5 - acked);
      await waitFor(() => c.received.length === window, `${window} unacknowledged PUBLISH`);
      await delay(acked === 0 ? 200 : 50);
      assert.equal(c.received.length, window, `no more than 2 unacknowledged after ${acked} acks`);
      const p = c.received.shift() as PublishPacket;
      got.push(td(p.payload));
      c.send({ type: 4, packetId: p.packetId! });
    }
    assert.deepEqual(got, ["m0", "m1", "m2", "m3", "m4"]);
    await Promise.all([c.close(), pub.c.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("resend after a reconnect: within the new, smaller Receive Maximum; what no longer fits is dropped", async () => {
  const b = await startBroker();
  try {
    const session = { sessionExpiryInterval: 60 };
    const first = await connect5(b.port, {
      clientId: "rs",
      clean: false,
      properties: { ...session, receiveMaximum: 10 },
    });
    await subscribe(first.c, ["rs/#"]);
    const pub = await connect5(b.port);
    for (let i = 0; i < 5; i++) await publish(pub.c, "rs/t", `m${i}`, { qos: 1 });
    await waitFor(() => first.c.received.length === 5, "five unacknowledged");
    await first.c.close();
    // Back with Receive Maximum 2: two resent at a time (MQTT-3.3.4-9), the rest as acks make room.
    const again = await connect5(b.port, {
      clientId: "rs",
      clean: false,
      properties: { ...session, receiveMaximum: 2 },
    });
    await publish(pub.c, "rs/t", "m5", { qos: 1 });
    const got: string[] = [];
    for (let acked = 0; acked < 6; acked++) {
      const window = Math.min(2, 6 - acked);
      await waitFor(() => again.c.received.length === window, `${window} unacknowledged PUBLISH`);
      await delay(acked === 0 ? 200 : 30);
      assert.equal(again.c.received.length, window, `no more than 2 unacknowledged after ${acked} acks`);
      const p = again.c.received.shift() as PublishPacket;
      got.push(`${td(p.payload)}${p.dup ? " dup" : ""}`);
      again.c.send({ type: 4, packetId: p.packetId! });
    }
    assert.deepEqual(got, ["m0 dup", "m1 dup", "m2 dup", "m3 dup", "m4 dup", "m5"]);
    await again.c.close();

    // A message acknowledged before its turn to be resent (the client had it) leaves the wait: the window
    // still holds two unacknowledged ones, not one less.
    const third = await connect5(b.port, {
      clientId: "rs",
      clean: false,
      properties: { ...session, receiveMaximum: 10 },
    });
    for (let i = 0; i < 4; i++) await publish(pub.c, "rs/t", `n${i}`, { qos: 1 });
    await waitFor(() => third.c.received.length === 4, "four unacknowledged");
    const n3 = third.c.received[3] as PublishPacket;
    await third.c.close();
    const fourth = await connect5(b.port, {
      clientId: "rs",
      clean: false,
      properties: { ...session, receiveMaximum: 2 },
    });
    fourth.c.send({ type: 4, packetId: n3.packetId! }); // n3 is waiting behind n0 and n1
    await waitFor(() => fourth.c.received.length === 2, "two resent");
    await delay(200);
    assert.equal(fourth.c.received.length, 2);
    const resent: string[] = [];
    while (resent.length < 3) {
      await waitFor(() => fourth.c.received.length > 0, "the next");
      const p = fourth.c.received.shift() as PublishPacket;
      resent.push(td(p.payload));
      fourth.c.send({ type: 4, packetId: p.packetId! });
      await delay(50);
      assert.ok(fourth.c.received.length <= 2, "no more than 2 unacknowledged");
    }
    assert.deepEqual(resent, ["n0", "n1", "n2"]);
    await fourth.c.close();

    // A message in flight that is larger than the Maximum Packet Size the client comes back with is dropped
    // as if sent (MQTT-3.1.2-25): it must not hold the window shut.
    const big = await connect5(b.port, {
      clientId: "rs-big",
      clean: false,
      properties: { ...session, receiveMaximum: 1 },
    });
    await subscribe(big.c, ["rb/#"]);
    await publish(pub.c, "rb/t", "x".repeat(300), { qos: 1 });
    await big.c.expect(3);
    await big.c.close();
    const small = await connect5(b.port, {
      clientId: "rs-big",
      clean: false,
      properties: { ...session, receiveMaximum: 1, maximumPacketSize: 100 },
    });
    await publish(pub.c, "rb/t", "small", { qos: 1 });
    assert.equal(td((await small.c.expect(3) as PublishPacket).payload), "small");
    await Promise.all([small.c.close(), pub.c.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("our Receive Maximum: one more unacknowledged QoS 2 PUBLISH than announced is DISCONNECT 0x93", async () => {
  const b = await startBroker({ qos: { max_qos: 2 }, server: { max_inflight: 3 } });
  try {
    const { c, connack } = await connect5(b.port);
    assert.equal(connack.properties?.receiveMaximum, 3);
    const send = (packetId: number) =>
      c.send({ type: 3, topic: "rm/t", payload: te("x"), qos: 2, retain: false, dup: false, packetId });
    for (const id of [1, 2, 3]) {
      send(id);
      await c.expect(5);
    }
    // Completing one exchange frees its slot.
    c.send({ type: 6, packetId: 1 });
    await c.expect(7);
    send(4);
    await c.expect(5);
    send(5); // 2, 3, 4 and 5 unreleased: 4 > 3
    assert.equal(await serverDisconnect(c), 0x93);
  } finally {
    await b.stop();
  }
});

Deno.test("Maximum Packet Size of the client: larger PUBLISHes are dropped and counted, the rest flows", async () => {
  const b = await startBroker();
  try {
    const pub = await connect5(b.port);
    await publish(pub.c, "mp/retained", "r".repeat(150), { qos: 1, retain: true });
    const { c } = await connect5(b.port, { properties: { maximumPacketSize: 100 } });
    await subscribe(c, ["mp/#"]);
    await publish(pub.c, "mp/t", "small-1", { qos: 1 });
    await publish(pub.c, "mp/t", "b".repeat(200), { qos: 1 });
    await publish(pub.c, "mp/t", "c".repeat(200), { qos: 0 });
    await publish(pub.c, "mp/t", "small-2", { qos: 1 });
    const first = await c.expect(3) as PublishPacket;
    const second = await c.expect(3) as PublishPacket;
    await c.expectNone(3, 150);
    assert.deepEqual([td(first.payload), td(second.payload)], ["small-1", "small-2"]);
    assert.equal(b.broker.metrics.dropped.too_large, 3); // retained, QoS 1 and QoS 0
    // A dropped QoS 1 message does not hold a slot of the in-flight window.
    c.send({ type: 4, packetId: first.packetId! });
    c.send({ type: 4, packetId: second.packetId! });
    const clientId = [...b.broker.clients.keys()].find((id) =>
      b.broker.clients.get(id)?.maxPacketSize === 100
    )!;
    await waitFor(() => b.broker.sessions.get(clientId)!.inflight.size === 0, "nothing in flight");
    await Promise.all([c.close(), pub.c.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("server.max_message_size: a larger packet from the client is DISCONNECT 0x95", async () => {
  const b = await startBroker({ server: { max_message_size: 200 } });
  try {
    const { c, connack } = await connect5(b.port);
    assert.equal(connack.properties?.maximumPacketSize, 200);
    assert.equal((await publish(c, "mx/t", "y".repeat(150), { qos: 1 }))?.reasonCode, 0x10);
    await publish(c, "mx/t", "z".repeat(300), { qos: 0 });
    assert.equal(await serverDisconnect(c), 0x95);
  } finally {
    await b.stop();
  }
});

// ---------------------------------------------------------------------------------------------------
// Will Delay Interval (§3.1.3.2.2)

/** A will for raw CONNECT fields. */
function will(topic: string, willDelayInterval?: number): Will {
  return {
    topic,
    payload: te(`will of ${topic}`),
    qos: 1,
    retain: false,
    properties: {
      contentType: "text/plain",
      userProperties: [["reason", "lost"]],
      ...(willDelayInterval === undefined ? {} : { willDelayInterval }),
    },
  };
}

Deno.test("Will Delay Interval: published after the delay; a reconnect or a takeover within it cancels the will", async () => {
  const b = await startBroker();
  try {
    const watcher = await connect5(b.port);
    await subscribe(watcher.c, ["wd/#"]);
    const session = { sessionExpiryInterval: 60 };
    const connectWithWill = (id: string) =>
      connect5(b.port, { clientId: id, clean: false, properties: session, will: will(`wd/${id}`, 1) });
    const [returns, takenOver, gone] = await Promise.all(["a", "c", "b"].map(connectWithWill));
    // c is taken over by a new connection: the old connection's will is delayed, then cancelled (§3.1.3.2.2).
    const takeover = await connect5(b.port, { clientId: "c", clean: false, properties: session });
    assert.equal(await serverDisconnect(takenOver.c), 0x8e);
    await returns.c.close(); // abnormal: the will is due in 1 s
    await gone.c.close();
    const lostAt = Date.now();
    const back = await connect5(b.port, { clientId: "a", clean: false, properties: session });
    assert.equal(back.connack.sessionPresent, true);
    await watcher.c.expectNone(3, 300);

    const w = await watcher.c.expect(3, 3000) as PublishPacket;
    const after = Date.now() - lostAt;
    assert.equal(w.topic, "wd/b");
    assert.ok(after >= 950, `will published after ${after} ms, before the 1 s delay`);
    // Will Properties travel with the message, except the Will Delay Interval, which is not a PUBLISH one.
    assert.deepEqual(w.properties, { contentType: "text/plain", userProperties: [["reason", "lost"]] });
    // a and c lost their connections first with the same delay: had their wills not been cancelled they
    // would have come with or before b's.
    await watcher.c.expectNone(3, 150);
    back.c.send({ type: 14 });
    takeover.c.send({ type: 14 });
    await Promise.all([back.c.expectClosed(), takeover.c.expectClosed()]);
    await watcher.c.expectNone(3, 100);
    await watcher.c.close();
  } finally {
    await b.stop();
  }
});

Deno.test("Will Delay Interval: each delayed will goes at its own time, not at the next once-a-second sweep", async () => {
  const b = await startBroker();
  try {
    const watcher = await connect5(b.port);
    await subscribe(watcher.c, ["wt/#"]);
    const ids = ["x", "y", "z"];
    const clients = await Promise.all(ids.map((id) =>
      connect5(b.port, {
        clientId: id,
        clean: false,
        properties: { sessionExpiryInterval: 60 },
        will: will(`wt/${id}`, 1),
      })
    ));
    // Lost a third of a second apart: a sweep once a second would publish one of them >= 0.66 s late.
    const lostAt = new Map<string, number>();
    for (let i = 0; i < ids.length; i++) {
      if (i > 0) await delay(333);
      await clients[i].c.close();
      lostAt.set(ids[i], Date.now());
    }
    for (let i = 0; i < ids.length; i++) {
      const w = await watcher.c.expect(3, 3000) as PublishPacket;
      const after = Date.now() - lostAt.get(w.topic.slice(3))!;
      assert.ok(
        after >= 950 && after < 1400,
        `will ${w.topic} published ${after} ms after its connection was lost`,
      );
    }
    await watcher.c.close();
  } finally {
    await b.stop();
  }
});

Deno.test("Will Delay Interval of 30 days (longer than a timer takes): the will waits, a reconnect cancels it", async () => {
  const b = await startBroker();
  try {
    const watcher = await connect5(b.port);
    await subscribe(watcher.c, ["wl/#"]);
    const long = { sessionExpiryInterval: 5_000_000 };
    const first = await connect5(b.port, {
      clientId: "wl",
      clean: false,
      properties: long,
      will: will("wl/x", 2_592_000),
    });
    await first.c.close();
    await watcher.c.expectNone(3, 500);
    const session = b.broker.sessions.get("wl")!;
    assert.ok(session.willDueAt! - Date.now() > 2_500_000_000, "due in 30 days");
    const back = await connect5(b.port, { clientId: "wl", clean: false, properties: long });
    assert.equal(session.willDueAt, undefined);
    assert.equal(session.willTimer, undefined, "the reconnect cleared the will's timer");
    back.c.send({ type: 14 });
    await back.c.expectClosed();
    await watcher.c.expectNone(3, 200);
    await watcher.c.close();
  } finally {
    await b.stop();
  }
});

Deno.test("Message Expiry: messages in flight when it passes are resent on reconnect with 0 seconds left, a PUBREL as is", async () => {
  // Onward delivery started, so MQTT-3.3.2-5 does not delete them, and MQTT-4.4.0-1 has them resent: a
  // receiver may hold the QoS 2 packet id already, and a PUBREL belongs to a message it has. The interval is
  // the received one minus the time waited, which cannot go below 0 (Mosquitto 2.0.11 drops all three).
  const b = await startBroker({ qos: { max_qos: 2 } });
  try {
    const props = { sessionExpiryInterval: 60 };
    const sub = await connect5(b.port, { clientId: "mxf", clean: false, properties: props });
    await subscribe(sub.c, [{ topicFilter: "mxf/#", qos: 2 }]);
    const pub = await connect5(b.port);
    const expiring = { properties: { messageExpiryInterval: 1 } };
    await publish(pub.c, "mxf/a", "q1", { qos: 1, ...expiring });
    await publish(pub.c, "mxf/b", "q2", { qos: 2, ...expiring });
    await publish(pub.c, "mxf/c", "q2 received", { qos: 2, ...expiring });
    await waitFor(() => sub.c.received.length === 3, "the three deliveries");
    const first = sub.c.received.splice(0) as PublishPacket[];
    sub.c.send({ type: 5, packetId: first[2].packetId! });
    await sub.c.expect(6);
    await sub.c.close();
    await delay(1300);

    const back = await connect5(b.port, { clientId: "mxf", clean: false, properties: props });
    assert.equal(back.connack.sessionPresent, true);
    await waitFor(() => back.c.received.length === 3, "the resends");
    const [q1, q2, rel] = back.c.received.splice(0) as [PublishPacket, PublishPacket, AckPacket];
    assert.deepEqual(
      [q1.packetId, q1.dup, q1.properties?.messageExpiryInterval, td(q1.payload)],
      [first[0].packetId, true, 0, "q1"],
    );
    assert.deepEqual(
      [q2.packetId, q2.dup, q2.properties?.messageExpiryInterval, td(q2.payload)],
      [first[1].packetId, true, 0, "q2"],
    );
    assert.deepEqual([rel.type, rel.packetId], [6, first[2].packetId]);
    back.c.send({ type: 14, reasonCode: 0, properties: { sessionExpiryInterval: 0 } });
    await back.c.expectClosed();
    await pub.c.close();
  } finally {
    await b.stop();
  }
});

Deno.test("an expired retained message is deleted by itself, not only when a SUBSCRIBE meets it", async () => {
  const b = await startBroker();
  try {
    const { c } = await connect5(b.port);
    const before = b.broker.retained.size;
    await publish(c, "exp/r", "soon gone", {
      qos: 1,
      retain: true,
      properties: { messageExpiryInterval: 1 },
    });
    await publish(c, "exp/keep", "stays", { qos: 1, retain: true });
    assert.equal(b.broker.retained.size, before + 2);
    await waitFor(() => b.broker.retained.size === before + 1, "the expired retained message to go", 3500);
    assert.equal(b.broker.retained.get("exp/r"), undefined);
    assert.notEqual(b.broker.retained.get("exp/keep"), undefined);
    await c.close();
  } finally {
    await b.stop();
  }
});

Deno.test("Will Delay Interval longer than the session: the will is published when the session ends", async () => {
  const b = await startBroker();
  try {
    const watcher = await connect5(b.port);
    await subscribe(watcher.c, ["we/#"]);
    // Session Expiry 0: the session ends with the connection, so the will goes at once.
    const now = await connect5(b.port, { will: will("we/now", 30) });
    await now.c.close();
    assert.equal((await watcher.c.expect(3, 500) as PublishPacket).topic, "we/now");

    const later = await connect5(b.port, {
      clientId: "we-later",
      properties: { sessionExpiryInterval: 1 },
      will: will("we/later", 30),
    });
    await later.c.close();
    const lostAt = Date.now();
    assert.equal((await watcher.c.expect(3, 3000) as PublishPacket).topic, "we/later");
    assert.ok(Date.now() - lostAt >= 950, "not before the session expired");
    assert.equal(b.broker.sessions.has("we-later"), false);
    await watcher.c.close();
  } finally {
    await b.stop();
  }
});

Deno.test("DISCONNECT with reason 0x04 or an error code publishes the will; reason 0x00 does not", async () => {
  const b = await startBroker();
  try {
    const watcher = await connect5(b.port);
    await subscribe(watcher.c, ["wr/#"]);
    const keep = await connect5(b.port, { will: will("wr/normal") });
    keep.c.send({ type: 14, reasonCode: 0 });
    await keep.c.expectClosed();
    const send = await connect5(b.port, { will: will("wr/with-will") });
    send.c.send({ type: 14, reasonCode: 0x04 });
    await send.c.expectClosed();
    assert.equal((await watcher.c.expect(3) as PublishPacket).topic, "wr/with-will");
    // 0x80 Unspecified error: not a normal disconnection, so the will goes (MQTT-3.1.2-8).
    const failing = await connect5(b.port, { will: will("wr/error") });
    failing.c.send({ type: 14, reasonCode: 0x80 });
    await failing.c.expectClosed();
    assert.equal((await watcher.c.expect(3) as PublishPacket).topic, "wr/error");
    await watcher.c.expectNone(3, 100);
    await watcher.c.close();
  } finally {
    await b.stop();
  }
});

Deno.test("Maximum Packet Size of the client: a DISCONNECT's Reason String is left out when it would not fit", async () => {
  const b = await startBroker({ server: { topic_alias_maximum: 5 } });
  try {
    const { c } = await connect5(b.port, { properties: { maximumPacketSize: 20 } });
    await publish(c, "al/x", "x", { properties: { topicAlias: 6 } });
    const d = await c.expect(14) as DisconnectPacket;
    assert.equal(d.reasonCode, 0x94);
    assert.ok(encode(d, 5).length <= 20, `DISCONNECT of ${encode(d, 5).length} bytes > 20 (MQTT-3.1.2-24)`);
    // With room, the Reason String says what was wrong.
    const roomy = await connect5(b.port);
    await publish(roomy.c, "al/x", "x", { properties: { topicAlias: 6 } });
    assert.match((await roomy.c.expect(14) as DisconnectPacket).properties?.reasonString ?? "", /alias 6/);
  } finally {
    await b.stop();
  }
});
