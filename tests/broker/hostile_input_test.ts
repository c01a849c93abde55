/**
 * Hostile input over raw sockets: a peer's long strings end up cut in Reason Strings and log lines (a 64 KiB
 * topic quoted whole once made a Reason String that could not be encoded, and the broker died of it), each
 * bad packet gets one answer with a reason code its packet type allows, and other clients go on.
 */

import assert from "node:assert/strict";
import type { ConnackPacket, DisconnectPacket, Packet } from "../../src/mqtt/types.ts";
import { RawClient, startBroker, te, type TestBroker, waitFor } from "../helpers.ts";
import { pkt as packet, s as str, vbi as varint } from "../mqtt/packet_table.ts";

/** An MQTT 5 CONNECT body with `name` and `level` as protocol name and level, clean, no properties. */
function connectBody(name: string, level: number, clientId: string): number[] {
  return [...str(name), level, 0x02, 0, 60, 0, ...str(clientId)];
}

/** A QoS 1 round trip between two fresh clients: the broker still serves others. */
async function stillServes(b: TestBroker): Promise<void> {
  const sub = await RawClient.connect(b.port, { version: 5 });
  await sub.subscribe("alive/t", 1);
  const pub = await RawClient.connect(b.port, { version: 5 });
  pub.send({ type: 3, topic: "alive/t", payload: te("x"), qos: 1, retain: false, dup: false, packetId: 5 });
  await pub.expect(4);
  await sub.expect(3);
  await pub.close();
  await sub.close();
}

function longestLogLine(b: TestBroker): number {
  return Math.max(0, ...b.logs.map((l) => l.length));
}

async function disconnectOf(c: RawClient): Promise<DisconnectPacket> {
  const d = await c.expect(14) as DisconnectPacket;
  await c.expectClosed();
  return d;
}

const CONTROL = "\u0001".repeat(11_000); // 66,000 characters once JSON-escaped

Deno.test("a SUBSCRIBE with QoS 3 on an 11,000-character filter: DISCONNECT 0x82 with a short Reason String", async () => {
  const b = await startBroker();
  try {
    const c = await RawClient.connect(b.port, { version: 5 });
    await c.sendBytes(packet(0x82, [0, 1, 0, ...str(CONTROL), 0x03]));
    const d = await disconnectOf(c);
    assert.equal(d.reasonCode, 0x82);
    const why = d.properties?.reasonString ?? "";
    assert.ok(why.includes("QoS 3") && why.length < 1024, why.slice(0, 200));
    assert.ok(longestLogLine(b) < 2048, `a log line of ${longestLogLine(b)} characters`);
    await stillServes(b);
  } finally {
    await b.stop();
  }
});

Deno.test("a second CONNECT with a long bad protocol name: DISCONNECT 0x82 (0x84 is a CONNACK code)", async () => {
  const b = await startBroker();
  try {
    const c = await RawClient.connect(b.port, { version: 5 });
    await c.sendBytes(packet(0x10, connectBody(CONTROL, 5, "again")));
    assert.equal((await disconnectOf(c)).reasonCode, 0x82);
    await stillServes(b);
  } finally {
    await b.stop();
  }
});

Deno.test("a first CONNECT with protocol name MQIsdp and level 5 gets one CONNACK (0x84), then the close", async () => {
  const b = await startBroker();
  try {
    const c = await RawClient.open(b.port, 5);
    await c.sendBytes(packet(0x10, connectBody("MQIsdp", 5, "odd")));
    await c.expectClosed();
    const connacks = c.received.filter((p: Packet) => p.type === 2) as ConnackPacket[];
    assert.deepEqual(connacks.map((p) => p.reasonCode), [0x84]);
    // A level the server does not know gets the 3.1.1 form of "unacceptable protocol version", alone too.
    const old = await RawClient.open(b.port, 4);
    await old.sendBytes(packet(0x10, connectBody("MQTT", 7, "odd2")));
    await old.expectClosed();
    assert.deepEqual(old.received.map((p) => [p.type, (p as ConnackPacket).reasonCode]), [[2, 1]]);
  } finally {
    await b.stop();
  }
});

Deno.test("a PUBLISH to a 65,530-byte topic with a wildcard: DISCONNECT 0x90, the topic cut in the Reason String", async () => {
  const b = await startBroker();
  try {
    const c = await RawClient.connect(b.port, { version: 5 });
    const topic = "#" + "a".repeat(65_529);
    await c.sendBytes(packet(0x30, [...str(topic), 0, ...te("x")]));
    const d = await disconnectOf(c);
    assert.equal(d.reasonCode, 0x90);
    assert.ok((d.properties?.reasonString ?? "").length < 1024);
    assert.ok(longestLogLine(b) < 2048, `a log line of ${longestLogLine(b)} characters`);
    await stillServes(b);
  } finally {
    await b.stop();
  }
});

Deno.test("a topic of 10,000 levels: published, retained and matched by #, a/# and +/+/# like any other", async () => {
  const b = await startBroker();
  try {
    const deep = Array(10_000).fill("a").join("/");
    const live = await RawClient.connect(b.port, { version: 5 });
    await live.subscribe("a/#", 1);
    const pub = await RawClient.connect(b.port, { version: 5 });
    pub.send({ type: 3, topic: deep, payload: te("deep"), qos: 1, retain: true, dup: false, packetId: 9 });
    assert.equal(((await pub.expect(4)) as { reasonCode?: number }).reasonCode ?? 0, 0);
    assert.equal(((await live.expect(3)) as { topic: string }).topic, deep);
    for (const filter of ["#", "a/#", "+/+/#", deep]) {
      const sub = await RawClient.connect(b.port, { version: 5 });
      await sub.subscribe(filter, 0);
      assert.equal(((await sub.expect(3)) as { topic: string }).topic, deep, filter);
      await sub.close();
    }
    await live.close();
    await pub.close();
    await stillServes(b);
  } finally {
    await b.stop();
  }
});

Deno.test("one SUBSCRIBE repeating a filter 2,000 times: every copy acknowledged, the retained messages sent once", async () => {
  const b = await startBroker();
  try {
    const pub = await RawClient.connect(b.port);
    for (let i = 0; i < 50; i++) {
      pub.send({
        type: 3,
        topic: `r/${i}`,
        payload: te("v"),
        qos: 1,
        retain: true,
        dup: false,
        packetId: i + 1,
      });
      await pub.expect(4);
    }
    const c = await RawClient.connect(b.port, { version: 5 });
    const copies = Array.from({ length: 2000 }, () => ({
      topicFilter: "r/#",
      qos: 0 as const,
      noLocal: false,
      retainAsPublished: false,
      retainHandling: 0 as const,
    }));
    c.send({ type: 8, packetId: 3, subscriptions: copies });
    const suback = await c.expect(9) as { reasonCodes: number[] };
    assert.equal(suback.reasonCodes.length, 2000);
    await c.expectNone(99, 500); // let everything arrive
    assert.equal(c.received.filter((p) => p.type === 3).length, 50);
    await c.close();
    await pub.close();
  } finally {
    await b.stop();
  }
});

Deno.test("a SUBACK larger than the client's Maximum Packet Size is not sent: DISCONNECT 0x95 instead", async () => {
  const b = await startBroker();
  try {
    const c = await RawClient.open(b.port, 5);
    c.send({
      type: 1,
      protocolName: "MQTT",
      protocolVersion: 5,
      clean: true,
      keepAlive: 60,
      clientId: "small-max",
      properties: { maximumPacketSize: 64 },
    });
    await c.expect(2);
    const filters = Array.from({ length: 70 }, (_, i) => ({
      topicFilter: `f/${i}`,
      qos: 0 as const,
      noLocal: false,
      retainAsPublished: false,
      retainHandling: 0 as const,
    }));
    c.send({ type: 8, packetId: 1, subscriptions: filters }); // its SUBACK: 75 bytes
    assert.equal((await disconnectOf(c)).reasonCode, 0x95);
    assert.equal(c.received.filter((p) => p.type === 9).length, 0);
    await stillServes(b);
  } finally {
    await b.stop();
  }
});

Deno.test("connections without CONNECT are bounded by server.max_clients: a new one closes the oldest", async () => {
  const b = await startBroker({ server: { max_clients: 5 } });
  try {
    const idle: RawClient[] = [];
    for (let i = 0; i < 5; i++) {
      idle.push(await RawClient.open(b.port));
      await waitFor(() => b.broker.connections.size === i + 1, `connection ${i + 1} accepted`);
    }
    const extra = await RawClient.open(b.port);
    await idle[0].expectClosed(1000); // long before server.connect_timeout
    assert.equal(b.broker.metrics.connectionsEvicted, 1);
    assert.ok(b.logs.some((l) => /oldest connection without CONNECT/.test(l)), b.logs.join("\n"));
    // A real client is not locked out by the silent ones: it connects, and the next oldest makes room.
    const ok = await RawClient.connect(b.port);
    await idle[1].expectClosed(1000);
    ok.send({ type: 12 });
    await ok.expect(13);
    assert.equal(extra.closed, false);
    assert.equal(idle[4].closed, false);
    for (const c of [ok, extra, ...idle]) await c.close();
  } finally {
    await b.stop();
  }
});

Deno.test("a packet header announcing 200 MiB (max_message_size raised) with a few bytes behind it takes no 200 MiB", async () => {
  const b = await startBroker({ server: { max_message_size: 268_435_460 } });
  try {
    const c = await RawClient.connect(b.port);
    const before = Deno.memoryUsage().external;
    const size = 200 * 1024 * 1024;
    await c.sendBytes(new Uint8Array([0x30, ...varint(size), 0, 1, 0x74, 1, 2, 3, 4, 5]));
    await waitFor(
      () => b.broker.metrics.bytesReceived > 0 && [...b.broker.connections][0].decoder.buffered > 0,
      "bytes buffered",
    );
    const grown = Deno.memoryUsage().external - before;
    assert.ok(grown < 16 * 1024 * 1024, `external memory grew by ${grown} bytes`);
    await c.close();
  } finally {
    await b.stop();
  }
});
