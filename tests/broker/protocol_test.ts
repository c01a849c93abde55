/**
 * Protocol violations over raw sockets: each closes the offending connection (with the right code where
 * the protocol has one), is logged, and the broker keeps serving everyone else.
 */

import assert from "node:assert/strict";
import { delay, RawClient, startBroker, te, type TestBroker } from "../helpers.ts";

/** A healthy client must still get service after each violation. */
async function assertStillServing(b: TestBroker): Promise<void> {
  const c = await RawClient.connect(b.port);
  c.send({
    type: 8,
    packetId: 1,
    subscriptions: [{
      topicFilter: "health",
      qos: 1,
      noLocal: false,
      retainAsPublished: false,
      retainHandling: 0,
    }],
  });
  await c.expect(9);
  c.send({ type: 3, topic: "health", payload: te("ok"), qos: 1, retain: false, dup: false, packetId: 2 });
  await c.expect(4);
  await c.expect(3);
  await c.close();
}

const CONNECT_311 = [
  0x10,
  0x10,
  0x00,
  0x04,
  0x4d,
  0x51,
  0x54,
  0x54,
  0x04,
  0x02,
  0x00,
  0x3c,
  0x00,
  0x04,
  0x72,
  0x61,
  0x77,
  0x31,
];

const violations: { name: string; bytes: number[]; afterConnect: boolean; log: RegExp }[] = [
  { name: "second CONNECT", bytes: CONNECT_311, afterConnect: true, log: /second CONNECT/ },
  {
    name: "PUBLISH before CONNECT",
    bytes: [0x30, 0x03, 0x00, 0x01, 0x61],
    afterConnect: false,
    log: /first packet must be CONNECT/,
  },
  {
    name: "reserved packet type 0",
    bytes: [0x00, 0x00],
    afterConnect: true,
    log: /disconnecting client .*reason=(MalformedPacket|ProtocolError)/,
  },
  {
    name: "SUBSCRIBE with wrong fixed-header flags",
    bytes: [0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x00],
    afterConnect: true,
    log: /disconnecting client .*reason=(MalformedPacket|ProtocolError)/,
  },
  {
    name: "PUBLISH with QoS 3",
    bytes: [0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01],
    afterConnect: true,
    log: /disconnecting client .*reason=(MalformedPacket|ProtocolError)/,
  },
  {
    name: "remaining length longer than 4 bytes",
    bytes: [0x30, 0xff, 0xff, 0xff, 0xff, 0x01],
    afterConnect: true,
    log: /disconnecting client .*reason=(MalformedPacket|ProtocolError)/,
  },
  {
    name: "PINGREQ with a body (wrong remaining length)",
    bytes: [0xc0, 0x01, 0x00],
    afterConnect: true,
    log: /disconnecting client .*reason=(MalformedPacket|ProtocolError)/,
  },
  {
    name: "PUBLISH topic with a wildcard",
    bytes: [0x30, 0x04, 0x00, 0x02, 0x61, 0x23],
    afterConnect: true,
    log: /TopicNameInvalid/,
  },
  {
    // Read as a "PUBACK" header announcing 32 bytes, it would wait for connect_timeout (10 s) for the rest.
    name: "an HTTP request instead of CONNECT is refused at its first byte",
    bytes: [...new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n")],
    afterConnect: false,
    log: /disconnecting client .*first packet must be CONNECT, got first byte 0x47/,
  },
  {
    name: "PUBACK with truncated packet id, then close",
    bytes: [0x40, 0x01, 0x00],
    afterConnect: true,
    log: /disconnecting client .*reason=(MalformedPacket|ProtocolError)/,
  },
];

for (const v of violations) {
  Deno.test(`protocol violation closes the connection: ${v.name}`, async () => {
    const b = await startBroker();
    try {
      const c = v.afterConnect ? await RawClient.connect(b.port) : await RawClient.open(b.port);
      await c.sendBytes(new Uint8Array(v.bytes));
      await c.expectClosed();
      assert.ok(b.logs.some((l) => v.log.test(l)), `no log line matching ${v.log} in:\n${b.logs.join("\n")}`);
      await assertStillServing(b);
    } finally {
      await b.stop();
    }
  });
}

Deno.test("keep-alive counts whole packets: bytes trickling in without completing one do not keep a client", async () => {
  const b = await startBroker();
  try {
    const c = await RawClient.connect(b.port, { keepAlive: 1 });
    // The start of a 100-byte PUBLISH, then a byte every 200 ms: the packet would take 20 s to complete.
    await c.sendBytes(new Uint8Array([0x30, 100, 0, 3, 0x61]));
    const started = Date.now();
    while (!c.closed && Date.now() - started < 6000) {
      await c.sendBytes(new Uint8Array([0x62]));
      await delay(200);
    }
    assert.equal(c.closed, true, "still open 6 s into a trickle with a keep-alive of 1 s");
    assert.ok(b.logs.some((l) => /reason=KeepAliveTimeout/.test(l)), b.logs.join("\n"));
  } finally {
    await b.stop();
  }
});

Deno.test("truncated packet: the connection stays open waiting for the rest, then a close is clean", async () => {
  const b = await startBroker();
  try {
    const c = await RawClient.connect(b.port);
    await c.sendBytes(new Uint8Array([0x30, 0x0a, 0x00, 0x01])); // announces 10 bytes, sends 2
    await c.expectNone(3, 200);
    assert.equal(c.closed, false);
    await c.close();
    await assertStillServing(b);
  } finally {
    await b.stop();
  }
});

Deno.test("unknown protocol level gets CONNACK return code 1 and is closed", async () => {
  const b = await startBroker();
  try {
    const c = await RawClient.open(b.port);
    const bytes = [...CONNECT_311];
    bytes[8] = 0x09; // protocol level 9
    await c.sendBytes(new Uint8Array(bytes));
    const ack = await c.expect(2) as { reasonCode: number };
    assert.equal(ack.reasonCode, 1);
    await c.expectClosed();
  } finally {
    await b.stop();
  }
});

Deno.test("a PUBLISH over server.max_message_size closes the connection and is counted", async () => {
  const b = await startBroker({ server: { max_message_size: 1024 } });
  try {
    const c = await RawClient.connect(b.port);
    c.send({ type: 3, topic: "big", payload: new Uint8Array(2000), qos: 0, retain: false, dup: false });
    await c.expectClosed();
    assert.ok(b.logs.some((l) => /PacketTooLarge|too large/i.test(l)), b.logs.join("\n"));
    await assertStillServing(b);
  } finally {
    await b.stop();
  }
});

Deno.test("random bytes from many clients never crash the broker", async () => {
  const b = await startBroker();
  try {
    let seed = 12345;
    const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    for (let i = 0; i < 30; i++) {
      const c = i % 2 === 0 ? await RawClient.connect(b.port) : await RawClient.open(b.port);
      const junk = new Uint8Array(1 + Math.floor(rand() * 300));
      for (let j = 0; j < junk.length; j++) junk[j] = Math.floor(rand() * 256);
      await c.sendBytes(junk);
      await c.close();
    }
    await assertStillServing(b);
  } finally {
    await b.stop();
  }
});
