import assert from "node:assert/strict";
import { encodeShared, type Message, shapeSlot } from "../../src/broker/message.ts";
import { decodePacket } from "../../src/mqtt/decode.ts";
import { encodePublish } from "../../src/mqtt/encode.ts";
import type { PublishPacket } from "../../src/mqtt/types.ts";

function message(): Message {
  const payload = new TextEncoder().encode("21.5");
  return { topic: "home/kitchen/temp", payload, qos: 1, retain: false, receivedAt: 0 };
}

function decoded(bytes: Uint8Array, version: 4 | 5): PublishPacket {
  const p = decodePacket(bytes.subarray(0), version) as PublishPacket;
  assert.equal(p.type, 3);
  return p;
}

Deno.test("encodeShared: each shape is encoded once and cached, the first without an array", () => {
  const msg = message();
  const v4qos1 = encodeShared(msg, 4, 1, false, 0);
  assert.equal(msg.encodedSlot, shapeSlot(4, 1, false));
  assert.equal(msg.encodedMore, undefined);
  const v4qos0 = encodeShared(msg, 4, 0, false, 0);
  const v5qos1 = encodeShared(msg, 5, 1, true, 0);
  const v3qos1 = encodeShared(msg, 3, 1, false, 0); // 3.1 and 3.1.1 share their PUBLISH bytes
  assert.equal(v3qos1, v4qos1);
  assert.equal(encodeShared(msg, 4, 0, false, 0), v4qos0);
  assert.equal(encodeShared(msg, 5, 1, true, 0), v5qos1);
  assert.equal(encodeShared(msg, 4, 1, false, 0), v4qos1);

  const a = decoded(v4qos1, 4);
  assert.deepEqual([a.topic, a.qos, a.retain, new TextDecoder().decode(a.payload)], [
    msg.topic,
    1,
    false,
    "21.5",
  ]);
  const b = decoded(v4qos0, 4);
  assert.deepEqual([b.qos, b.packetId, new TextDecoder().decode(b.payload)], [0, undefined, "21.5"]);
  const c = decoded(v5qos1, 5);
  assert.deepEqual([c.qos, c.retain, new TextDecoder().decode(c.payload)], [1, true, "21.5"]);
});

Deno.test("encodeShared: the PUBLISH as received serves its own shape and others are added beside it", () => {
  const msg = message();
  const received = encodePublish({
    type: 3,
    topic: msg.topic,
    payload: msg.payload,
    qos: 1,
    retain: false,
    dup: false,
    packetId: 7,
  }, 4);
  msg.encodedSlot = shapeSlot(4, 1, false);
  msg.encodedBytes = received;
  assert.equal(encodeShared(msg, 4, 1, false, 0), received);
  const v5 = encodeShared(msg, 5, 0, false, 0);
  assert.notEqual(v5, received);
  assert.equal(msg.encodedBytes, received);
  assert.equal(msg.encodedMore?.[shapeSlot(5, 0, false)], v5);
  assert.equal(decoded(v5, 5).topic, msg.topic);
});
