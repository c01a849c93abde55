/**
 * ACL file through the real broker: per-filter SUBSCRIBE refusals (0x80 in 3.1.1, 0x87 in MQTT 5), refused
 * PUBLISH (dropped in 3.1.1, PUBACK 0x87 in MQTT 5), reads filtered for live, retained and queued messages,
 * and %u / %c patterns.
 */

import assert from "node:assert/strict";
import type { ListenerConfig } from "../../src/config/types.ts";
import type {
  AckPacket,
  ConnackPacket,
  ProtocolVersion,
  PublishPacket,
  SubackPacket,
} from "../../src/mqtt/types.ts";
import {
  mqttConnect,
  mqttEnd,
  RawClient,
  startBroker,
  td,
  te,
  type TestBroker,
  waitFor,
} from "../helpers.ts";
import { CLIENT_CN, sharedPki } from "../transport/certs.ts";

const ACL = `
# Anonymous clients: nothing at all.

user reader
topic read sensors/#
topic deny sensors/secret/#

user writer
topic write sensors/#
topic readwrite private/writer/#

user monitor
topic read devices/#

# Every client, by its own username or client id.
pattern readwrite users/%u/#
pattern write devices/%c/status
pattern read devices/%c/config
`;

/** Anyone may connect with any username (no password file); the ACL decides the rest. */
async function withAclBroker(
  fn: (b: TestBroker) => Promise<void>,
  listeners: ListenerConfig[] = [],
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-acl-test-" });
  try {
    const file = `${dir}/acl`;
    await Deno.writeTextFile(file, ACL);
    const b = await startBroker({
      auth: { acl_file: file, allow_anonymous: true },
      qos: { max_qos: 2 },
      listeners,
    });
    try {
      await fn(b);
    } finally {
      await b.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function connect(
  b: TestBroker,
  clientId: string,
  username: string | undefined,
  version: ProtocolVersion = 4,
  clean = true,
): Promise<RawClient> {
  return RawClient.connect(b.port, { clientId, username, version, clean });
}

let nextId = 1;

async function subscribe(c: RawClient, filters: string[], qos: 0 | 1 | 2 = 1): Promise<number[]> {
  const packetId = nextId++;
  c.send({
    type: 8,
    packetId,
    subscriptions: filters.map((topicFilter) => ({
      topicFilter,
      qos,
      noLocal: false,
      retainAsPublished: false,
      retainHandling: 0 as const,
    })),
  });
  const suback = await c.expect(9) as SubackPacket;
  assert.equal(suback.packetId, packetId);
  return suback.reasonCodes;
}

/** Publishes at QoS 1 and returns the PUBACK reason code (0 when absent). */
async function publish1(c: RawClient, topic: string, payload: string, retain = false): Promise<number> {
  const packetId = nextId++;
  c.send({ type: 3, topic, payload: te(payload), qos: 1, packetId, retain, dup: false });
  const puback = await c.expect(4) as AckPacket;
  assert.equal(puback.packetId, packetId);
  return puback.reasonCode ?? 0;
}

/** Waits a little, acknowledges, and returns every PUBLISH received so far as "topic=payload". */
async function drainPublishes(c: RawClient, ms = 300): Promise<string[]> {
  await new Promise((resolve) => setTimeout(resolve, ms));
  const publishes = c.received.filter((p): p is PublishPacket => p.type === 3);
  c.received.splice(0, c.received.length, ...c.received.filter((p) => p.type !== 3));
  for (const p of publishes) {
    if (p.qos === 1) c.send({ type: 4, packetId: p.packetId! });
  }
  return publishes.map((p) => `${p.topic}=${td(p.payload)}`);
}

Deno.test("ACL: SUBSCRIBE is refused per filter, 0x80 in 3.1.1 and 0x87 in MQTT 5", async () => {
  await withAclBroker(async (b) => {
    const filters = ["sensors/#", "private/writer/#", "sensors/secret/x", "sensors/+/temp", "#"];
    const v4 = await connect(b, "reader-4", "reader", 4);
    assert.deepEqual(await subscribe(v4, filters), [1, 0x80, 0x80, 1, 0x80]);
    const v5 = await connect(b, "reader-5", "reader", 5);
    assert.deepEqual(await subscribe(v5, filters), [1, 0x87, 0x87, 1, 0x87]);
    // Only the granted filters exist.
    assert.deepEqual([...b.broker.sessions.get("reader-4")!.subscriptions.keys()], [
      "sensors/#",
      "sensors/+/temp",
    ]);
    const anon = await connect(b, "anon", undefined, 5);
    assert.deepEqual(await subscribe(anon, ["sensors/#", "users/anon/#"]), [0x87, 0x87]);
    await Promise.all([v4.close(), v5.close(), anon.close()]);
  });
});

Deno.test("ACL: a refused PUBLISH is dropped in 3.1.1 and answered 0x87 in MQTT 5", async () => {
  await withAclBroker(async (b) => {
    const reader = await connect(b, "reader", "reader");
    assert.deepEqual(await subscribe(reader, ["sensors/#"]), [1]);
    const writer = await connect(b, "writer", "writer", 4);
    const reader4 = await connect(b, "reader-pub-4", "reader", 4);
    const reader5 = await connect(b, "reader-pub-5", "reader", 5);
    // The reader may not write: 3.1.1 still gets PUBACK (it has no way to say no) and the message is dropped.
    assert.equal(await publish1(reader4, "sensors/a", "from reader 4"), 0);
    reader4.send({
      type: 3,
      topic: "sensors/a",
      payload: te("qos0 from reader"),
      qos: 0,
      retain: false,
      dup: false,
    });
    assert.equal(await publish1(reader5, "sensors/a", "from reader 5"), 0x87);
    assert.equal(await publish1(reader5, "$SYS/broker/fake", "spoof"), 0x87);
    assert.equal(await publish1(writer, "sensors/a", "from writer"), 0);
    assert.deepEqual(await drainPublishes(reader), ["sensors/a=from writer"]);
    assert.equal(b.broker.metrics.dropped.not_authorized, 4);
    // A refused retained message is not stored either.
    assert.equal(await publish1(reader5, "sensors/kept", "no", true), 0x87);
    assert.equal(b.broker.retained.get("sensors/kept"), undefined);
    await Promise.all([reader.close(), writer.close(), reader4.close(), reader5.close()]);
  });
});

Deno.test("ACL: a Will the client may not publish is refused at CONNECT (3.1.1 return code 5, MQTT 5 0x87)", async () => {
  await withAclBroker(async (b) => {
    const reader = await connect(b, "will-watch", "reader");
    assert.deepEqual(await subscribe(reader, ["sensors/#"]), [1]);
    for (const version of [4, 5] as const) {
      const c = await RawClient.open(b.port, version);
      c.send({
        type: 1,
        protocolName: "MQTT",
        protocolVersion: version,
        clean: true,
        keepAlive: 60,
        clientId: `will-reader-${version}`,
        username: "reader",
        will: { topic: "sensors/will", payload: te("reader gone"), qos: 0, retain: false },
      });
      assert.equal((await c.expect(2) as ConnackPacket).reasonCode, version === 5 ? 0x87 : 5);
      await c.expectClosed();
    }
    assert.ok(
      b.logs.some((l) =>
        /connection refused .*not authorized to publish the will to .*sensors\/will/.test(l)
      ),
    );
    // The writer may: its will is accepted and, on an abnormal close, delivered.
    const writer = await RawClient.connect(b.port, {
      clientId: "will-writer",
      username: "writer",
      will: { topic: "sensors/will", payload: te("writer gone"), qos: 0, retain: false },
    });
    await writer.close();
    assert.deepEqual(await drainPublishes(reader), ["sensors/will=writer gone"]);
    await reader.close();
  });
});

Deno.test("ACL: a reader gets only topics it may read: live, retained and queued messages", async () => {
  await withAclBroker(async (b) => {
    const writer = await connect(b, "writer", "writer", 5);
    for (const topic of ["sensors/open/r", "sensors/secret/r"]) {
      assert.equal(await publish1(writer, topic, `retained ${topic}`, true), 0x10); // no subscribers yet
    }
    assert.equal(b.broker.retained.size, 2);

    // Retained: the subscription to sensors/# is granted, the secret retained message is not delivered.
    const reader = await connect(b, "reader", "reader", 4, false);
    assert.deepEqual(await subscribe(reader, ["sensors/#"]), [1]);
    assert.deepEqual(await drainPublishes(reader), ["sensors/open/r=retained sensors/open/r"]);

    // Live.
    await publish1(writer, "sensors/open/live", "1");
    await publish1(writer, "sensors/secret/live", "2");
    assert.deepEqual(await drainPublishes(reader), ["sensors/open/live=1"]);

    // Queued while the persistent session is offline.
    await reader.close();
    await waitFor(() => !b.broker.clients.has("reader"), "the broker to see the reader go");
    await publish1(writer, "sensors/open/q", "3");
    await publish1(writer, "sensors/secret/q", "4");
    assert.equal(b.broker.sessions.get("reader")!.queuedCount, 1);
    const back = await connect(b, "reader", "reader", 4, false);
    const got = await drainPublishes(back);
    assert.deepEqual(got, ["sensors/open/q=3"]);
    await Promise.all([writer.close(), back.close()]);
  });
});

Deno.test("ACL: %u and %c patterns grant each client its own topics and nothing else", async () => {
  await withAclBroker(async (b) => {
    const alice = await connect(b, "alice-phone", "alice", 5);
    assert.deepEqual(await subscribe(alice, ["users/alice/#", "users/bob/#", "users/+/inbox"]), [
      1,
      0x87,
      0x87,
    ]);
    const bob = await connect(b, "bob-laptop", "bob", 5);
    assert.equal(await publish1(bob, "users/alice/inbox", "hi alice"), 0x87);
    assert.equal(await publish1(alice, "users/alice/inbox", "note to self"), 0);
    assert.deepEqual(await drainPublishes(alice), ["users/alice/inbox=note to self"]);

    const monitor = await connect(b, "monitor", "monitor", 5);
    assert.deepEqual(await subscribe(monitor, ["devices/#"]), [1]);
    const dev1 = await connect(b, "dev1", undefined, 5);
    assert.equal(await publish1(dev1, "devices/dev1/status", "up"), 0);
    assert.equal(await publish1(dev1, "devices/dev2/status", "spoofed"), 0x87);
    assert.deepEqual(
      await subscribe(dev1, ["devices/dev1/config", "devices/dev2/config", "devices/+/config"]),
      [
        1,
        0x87,
        0x87,
      ],
    );
    assert.deepEqual(await drainPublishes(monitor), ["devices/dev1/status=up"]);

    // A client id or username that is itself a wildcard never widens a pattern.
    const wild = await connect(b, "+", "#", 5);
    assert.equal(await publish1(wild, "devices/dev1/status", "x"), 0x87);
    assert.deepEqual(await subscribe(wild, ["devices/+/config", "users/#/x", "users/#"]), [0x87, 0x8f, 0x87]);
    await Promise.all([alice.close(), bob.close(), monitor.close(), dev1.close(), wild.close()]);
  });
});

Deno.test("ACL: with mutual TLS and use_cn_as_username, the certificate CN is the ACL identity", async () => {
  const pki = await sharedPki();
  const mtls: ListenerConfig = {
    type: "mqtts",
    host: "127.0.0.1",
    port: 0,
    cert_file: pki.serverCert,
    key_file: pki.serverKey,
    ca_file: pki.caCert,
    require_client_cert: true,
    use_cn_as_username: true,
  };
  await withAclBroker(async (b) => {
    const port = b.broker.addresses.find((a) => a.type === "mqtts")!.port;
    const c = await mqttConnect(`mqtts://127.0.0.1:${port}`, {
      clientId: "cn-acl",
      protocolVersion: 5,
      ca: pki.read(pki.caCert),
      cert: pki.read(pki.clientCert),
      key: pki.read(pki.clientKey),
      username: "alice", // claimed, but the certificate says otherwise
    });
    // MQTT.js rejects a SUBACK with any refusal; the packet it carries has every reason code.
    const codes = await c.subscribeAsync([`users/${CLIENT_CN}/#`, "users/alice/#"], { qos: 1 }).then(
      () => "all granted",
      (err: { packet?: { granted?: unknown } }) => err.packet?.granted,
    );
    assert.deepEqual(codes, [1, 0x87]);
    assert.equal(b.broker.clients.get("cn-acl")?.username, CLIENT_CN);
    await mqttEnd(c);
  }, [mtls]);
});

Deno.test("ACL: queued and in-flight messages are checked again when they go out (another user, a reloaded ACL)", async () => {
  await withAclBroker(async (b) => {
    // users/alice/# is alice's (pattern %u). Her offline session holds one queued and one in-flight message.
    const alice = await connect(b, "alice-device", "alice", 4, false);
    await subscribe(alice, ["users/alice/#"]);
    const writer = await connect(b, "alice-writer", "alice");
    writer.send({
      type: 3,
      topic: "users/alice/a",
      payload: te("in flight"),
      qos: 1,
      retain: false,
      dup: false,
      packetId: 1,
    });
    await writer.expect(4);
    await alice.expect(3); // not acknowledged
    await alice.close();
    writer.send({
      type: 3,
      topic: "users/alice/b",
      payload: te("queued"),
      qos: 1,
      retain: false,
      dup: false,
      packetId: 2,
    });
    await writer.expect(4);
    // Another user connects with alice's client id: the session's messages are not for mallory.
    const mallory = await connect(b, "alice-device", "mallory", 4, false);
    assert.deepEqual(await drainPublishes(mallory), []);
    assert.equal(b.broker.metrics.dropped.not_authorized, 2);
    await mallory.close();

    // A queued message whose reader lost the right by a reload is not delivered either.
    const reader = await connect(b, "reader-q", "reader", 4, false);
    await subscribe(reader, ["sensors/#"]);
    await reader.close();
    writer.send({
      type: 3,
      topic: "sensors/a",
      payload: te("before"),
      qos: 1,
      retain: false,
      dup: false,
      packetId: 3,
    });
    await writer.expect(4);
    const file = b.config.auth.acl_file;
    await Deno.writeTextFile(
      file,
      (await Deno.readTextFile(file)).replace("topic read sensors/#", "topic read other/#"),
    );
    await b.broker.reload(b.config);
    const back = await connect(b, "reader-q", "reader", 4, false);
    assert.deepEqual(await drainPublishes(back), []);
    await Promise.all([back.close(), writer.close()]);
  });
});

Deno.test("ACL: a queued shared-subscription message its member may no longer read goes to another member", async () => {
  await withAclBroker(async (b) => {
    const file = b.config.auth.acl_file;
    await Deno.writeTextFile(file, `${await Deno.readTextFile(file)}\nuser reader2\ntopic read sensors/#\n`);
    await b.broker.reload(b.config);
    // The only member is offline when the message comes: it is queued for it.
    const a = await connect(b, "share-a", "reader", 4, false);
    await subscribe(a, ["$share/g/sensors/#"]);
    await a.close();
    const writer = await connect(b, "share-writer", "writer");
    writer.send({
      type: 3,
      topic: "sensors/s",
      payload: te("shared"),
      qos: 1,
      retain: false,
      dup: false,
      packetId: 1,
    });
    await writer.expect(4);
    const other = await connect(b, "share-b", "reader2");
    await subscribe(other, ["$share/g/sensors/#"]);
    // reader loses sensors/#; when its session comes back, the message goes to the member that may read it.
    await Deno.writeTextFile(
      file,
      (await Deno.readTextFile(file)).replace("topic read sensors/#", "topic read other/#"),
    );
    await b.broker.reload(b.config);
    const back = await connect(b, "share-a", "reader", 4, false);
    assert.deepEqual(await drainPublishes(back), []);
    assert.deepEqual(await drainPublishes(other), ["sensors/s=shared"]);
    assert.equal(b.broker.metrics.dropped.not_authorized, 0);
    await Promise.all([back.close(), other.close(), writer.close()]);
  });
});
