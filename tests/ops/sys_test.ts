// The $SYS tree as a monitoring client sees it: retained values on subscribe, live updates every
// sys.interval, invisible to `#` subscribers, and read-only for clients.

import assert from "node:assert/strict";
import denoJson from "../../deno.json" with { type: "json" };
import type { AckPacket, PublishPacket } from "../../src/mqtt/types.ts";
import { collect, mqttConnect, mqttEnd, RawClient, startBroker, td, te, waitFor } from "../helpers.ts";

/** Every topic the broker publishes under `$SYS/broker/` (README's "$SYS topics" lists the same). */
const SYS_TOPICS = [
  "version",
  "uptime",
  "clients/connected",
  "clients/total",
  "clients/maximum",
  "messages/received",
  "messages/sent",
  "messages/inflight",
  "messages/queued",
  "messages/dropped",
  "bytes/received",
  "bytes/sent",
  "subscriptions/count",
  "retained messages/count",
  "connections/total",
];

Deno.test("$SYS: a subscriber gets retained values at once, then live updates every sys.interval", async () => {
  const b = await startBroker({ sys: { interval: 1 }, server: { max_clients: 77 } });
  try {
    // A `#` subscriber must never see $SYS (MQTT-4.7.2-1): it is watched for the whole test.
    const everything = await mqttConnect(b.url, { clientId: "all", protocolVersion: 4 });
    const all = collect(everything);
    await everything.subscribeAsync("#", { qos: 0 });

    const monitor = await mqttConnect(b.url, { clientId: "monitor", protocolVersion: 4 });
    const got = collect(monitor);
    await monitor.subscribeAsync("$SYS/broker/#", { qos: 0 });
    await waitFor(() => got.length >= SYS_TOPICS.length, "the retained $SYS values");

    // The new subscription gets every topic once, retained (MQTT-3.3.1-8).
    const first = got.slice(0, SYS_TOPICS.length);
    assert.deepEqual(first.map((m) => m.topic).sort(), SYS_TOPICS.map((t) => `$SYS/broker/${t}`).sort());
    assert.ok(first.every((m) => m.packet.retain), "values sent for a new subscription carry RETAIN 1");
    const value = (name: string) => first.find((m) => m.topic === `$SYS/broker/${name}`)!.payload;
    assert.equal(value("version"), `deno-mqtt ${denoJson.version}`);
    assert.match(value("uptime"), /^\d+ seconds$/);
    assert.equal(value("clients/maximum"), "77");
    for (const name of SYS_TOPICS.filter((t) => t !== "version" && t !== "uptime")) {
      assert.match(value(name), /^\d+$/, `$SYS/broker/${name} is a number`);
    }

    // A third client connects: within the next interval clients/connected says 3, as a live message.
    const third = await mqttConnect(b.url, { clientId: "third", protocolVersion: 5 });
    const live = (name: string, payload: string) =>
      got.slice(SYS_TOPICS.length).find((m) => m.topic === `$SYS/broker/${name}` && m.payload === payload);
    await waitFor(() => live("clients/connected", "3") !== undefined, "clients/connected = 3", 5000);
    assert.equal(
      live("clients/connected", "3")!.packet.retain,
      false,
      "MQTT-3.3.1-9: RETAIN 0 on live delivery",
    );
    // Uptime is republished as it changes.
    const uptimes = () =>
      got.filter((m) => m.topic === "$SYS/broker/uptime").map((m) => Number(m.payload.split(" ")[0]));
    await waitFor(() => uptimes().length >= 2, "a second uptime value", 5000);
    assert.ok(uptimes()[1] > uptimes()[0], `uptime grows: ${uptimes()}`);

    assert.deepEqual(all.filter((m) => m.topic.startsWith("$")), [], "# must not match $SYS topics");
    await Promise.all([mqttEnd(everything), mqttEnd(monitor), mqttEnd(third)]);
  } finally {
    await b.stop();
  }
});

Deno.test("$SYS: clients cannot publish there: MQTT 5 PUBACK 0x87, 3.1.1 dropped; values are not replaced", async () => {
  const b = await startBroker({ sys: { interval: 1 } });
  try {
    const watcher = await RawClient.connect(b.port, { clientId: "watcher", version: 4 });
    watcher.send({
      type: 8,
      packetId: 1,
      subscriptions: [{
        topicFilter: "$SYS/broker/version",
        qos: 0,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    await watcher.expect(9);
    const retained = await watcher.expect(3) as PublishPacket;
    const real = td(retained.payload);
    assert.equal(real, `deno-mqtt ${denoJson.version}`);

    const spoof = (packetId: number): PublishPacket => ({
      type: 3,
      topic: "$SYS/broker/version",
      payload: te("spoofed"),
      qos: 1,
      retain: true,
      dup: false,
      packetId,
    });
    // MQTT 5: refused with 0x87 Not authorized (§3.4.2.1).
    const v5 = await RawClient.connect(b.port, { clientId: "spoof-5", version: 5 });
    v5.send(spoof(10));
    assert.equal((await v5.expect(4) as AckPacket).reasonCode, 0x87);
    // 3.1.1 has no way to say no on PUBACK: it is acknowledged and dropped; QoS 0 is dropped silently.
    const v4 = await RawClient.connect(b.port, { clientId: "spoof-4", version: 4 });
    v4.send(spoof(11));
    assert.equal((await v4.expect(4) as AckPacket).reasonCode ?? 0, 0);
    v4.send({ ...spoof(0), qos: 0, packetId: undefined });
    v4.send({ type: 12 }); // PINGRESP comes after the QoS 0 PUBLISH was handled
    await v4.expect(13);

    await watcher.expectNone(3, 100);
    assert.equal(b.broker.metrics.dropped.not_authorized, 3);
    assert.equal(td(b.broker.retained.get("$SYS/broker/version")!.payload), real);
    // A new subscriber still gets the broker's own value.
    const late = await RawClient.connect(b.port, { clientId: "late", version: 4 });
    late.send({
      type: 8,
      packetId: 2,
      subscriptions: [{
        topicFilter: "$SYS/broker/version",
        qos: 0,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    assert.equal(td((await late.expect(3) as PublishPacket).payload), real);
    await Promise.all([watcher.close(), v5.close(), v4.close(), late.close()]);
  } finally {
    await b.stop();
  }
});

Deno.test("$SYS: sys.interval 0 publishes nothing", async () => {
  const b = await startBroker({ sys: { interval: 0 } });
  try {
    assert.equal(b.broker.retained.size, 0);
    const c = await RawClient.connect(b.port, { version: 4 });
    c.send({
      type: 8,
      packetId: 1,
      subscriptions: [{
        topicFilter: "$SYS/#",
        qos: 0,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    });
    await c.expect(9);
    await c.expectNone(3, 100);
    await c.close();
  } finally {
    await b.stop();
  }
});

Deno.test("README: the $SYS topics section lists every topic the broker publishes", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const start = readme.indexOf("\n## $SYS topics\n");
  assert.ok(start >= 0, "README has no '## $SYS topics' section");
  const end = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  const listed = [...section.matchAll(/`\$SYS\/broker\/([^`]+)`/g)].map((m) => m[1]).filter((t) => t !== "#");
  assert.deepEqual([...new Set(listed)].sort(), [...SYS_TOPICS].sort());
});
