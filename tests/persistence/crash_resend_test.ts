/**
 * After a crash, a QoS 1 message that was in flight (sent from the queue, unacknowledged) is resent with DUP
 * and under the packet id it first had (MQTT-4.4.0-1), even when that id shares a slot of the in-flight table
 * with a restored QoS 2 message: the table of the restarted broker is smaller than the one the message was
 * sent from.
 */

import assert from "node:assert/strict";
import type { ConnackPacket, PublishPacket } from "../../src/mqtt/types.ts";
import { delay, RawClient, spawnBroker, td, te } from "../helpers.ts";

Deno.test("SIGKILL: an unacknowledged QoS 1 message from the queue comes back with DUP and its packet id", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mqtt-resend-" });
  const store = ["--storage.backend", "kv", "--storage.path", `${dir}/mqtt.db`, "--qos.max_qos", "2"];
  let broker = await spawnBroker(store);
  try {
    const sub = await RawClient.connect(broker.port, { clientId: "resend-sub", clean: false });
    await sub.subscribe("resend/#", 2);
    await sub.close();

    // Queued for the offline subscriber: one QoS 2 message, then eight QoS 1 ones (consecutive packet ids).
    const pub = await RawClient.connect(broker.port, { clientId: "resend-pub" });
    pub.send({
      type: 3,
      topic: "resend/a",
      payload: te("q2"),
      qos: 2,
      retain: false,
      dup: false,
      packetId: 1,
    });
    await pub.expect(5);
    pub.send({ type: 6, packetId: 1 });
    await pub.expect(7);
    for (let i = 1; i <= 8; i++) {
      pub.send({
        type: 3,
        topic: "resend/b",
        payload: te(`q1-${i}`),
        qos: 1,
        retain: false,
        dup: false,
        packetId: i + 1,
      });
      await pub.expect(4);
    }
    await pub.close();

    // The subscriber comes back and gets all nine from its queue; it acknowledges q1-1..q1-7 only.
    const again = await RawClient.connect(broker.port, { clientId: "resend-sub", clean: false });
    const first = new Map<string, PublishPacket>();
    for (let i = 0; i < 9; i++) {
      const p = await again.expect(3) as PublishPacket;
      first.set(td(p.payload), p);
      if (p.qos === 1 && td(p.payload) !== "q1-8") again.send({ type: 4, packetId: p.packetId! });
    }
    const q2 = first.get("q2")!;
    const last = first.get("q1-8")!;
    assert.equal(q2.qos, 2);
    await delay(300); // the PUBACKs are committed
    await broker.kill();
    await again.close();

    broker = await spawnBroker(store);
    const back = await RawClient.open(broker.port);
    back.send({
      type: 1,
      protocolName: "MQTT",
      protocolVersion: 4,
      clean: false,
      keepAlive: 30,
      clientId: "resend-sub",
    });
    assert.equal((await back.expect(2) as ConnackPacket).sessionPresent, true);
    const resent = new Map<string, PublishPacket>();
    for (let i = 0; i < 2; i++) {
      const p = await back.expect(3) as PublishPacket;
      resent.set(td(p.payload), p);
    }
    const r2 = resent.get("q2");
    const r1 = resent.get("q1-8");
    assert.ok(r2 !== undefined && r1 !== undefined, `resent: ${[...resent.keys()]}`);
    assert.deepEqual([r2.packetId, r2.dup], [q2.packetId, true], "the QoS 2 message");
    assert.deepEqual(
      [r1.packetId, r1.dup],
      [last.packetId, true],
      `q1-8 first went out under ${last.packetId} (the QoS 2 one under ${q2.packetId})`,
    );
    await back.close();
  } finally {
    await broker.kill();
    await Deno.remove(dir, { recursive: true });
  }
});
