/**
 * Walks the packet table: bytes -> object, object -> bytes, malformed bytes -> the expected reason code,
 * through both decodePacket and the streaming PacketDecoder. Plus the decoder's streaming rules and the
 * topic / UTF-8 helpers.
 */

import assert from "node:assert/strict";
import { decodePacket, PacketDecoder } from "../../src/mqtt/decode.ts";
import { encode, encodedLength, encodePublish, publishPacketIdOffset } from "../../src/mqtt/encode.ts";
import { MqttError } from "../../src/mqtt/errors.ts";
import { isValidReasonCode, REASON_CODES_BY_PACKET } from "../../src/mqtt/reason_codes.ts";
import { isValidTopicFilter, isValidTopicName, parseSharedFilter } from "../../src/mqtt/topic.ts";
import type { Packet, PublishPacket } from "../../src/mqtt/types.ts";
import { decodeUtf8, encodeUtf8 } from "../../src/mqtt/utf8.ts";
import { MALFORMED, PACKETS, pkt, s, u16 } from "./packet_table.ts";

function hex(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(" ");
}

function reasonOf(fn: () => unknown): number {
  try {
    fn();
  } catch (e) {
    if (e instanceof MqttError) return e.reasonCode;
    throw new Error(`expected an MqttError, got ${e}`);
  }
  throw new Error("expected an MqttError, but nothing was thrown");
}

function streamAll(bytes: Uint8Array, version: 3 | 4 | 5, chunk: number): Packet[] {
  const d = new PacketDecoder({ protocolVersion: version });
  const out: Packet[] = [];
  for (let i = 0; i < bytes.length; i += chunk) {
    // A reused read buffer: the decoder must have copied what it kept before the next push.
    const buf = bytes.slice(i, i + chunk);
    d.push(buf);
    for (let p = d.next(); p !== null; p = d.next()) out.push(p);
    buf.fill(0xee);
  }
  assert.equal(d.buffered, 0);
  return out;
}

Deno.test("table: decodePacket turns every table entry's bytes into its object", () => {
  for (const e of PACKETS) {
    assert.deepEqual(decodePacket(e.bytes, e.version), e.packet, e.name);
  }
});

Deno.test("table: encode writes every canonical entry's bytes; encodedLength agrees", () => {
  let n = 0;
  for (const e of PACKETS) {
    if (e.decodeOnly) continue;
    const out = encode(e.packet, e.version);
    assert.equal(hex(out), hex(e.bytes), e.name);
    assert.equal(encodedLength(e.packet, e.version), e.bytes.length, e.name);
    n++;
  }
  assert.ok(n > 60, `only ${n} canonical entries`);
});

Deno.test("table: every packet type is covered at every level (AUTH at level 5 only)", () => {
  for (const v of [3, 4, 5] as const) {
    const types = new Set(PACKETS.filter((e) => e.version === v).map((e) => e.packet.type));
    const expected = v === 5 ? 15 : 14;
    assert.equal(types.size, expected, `level ${v} covers types ${[...types].sort((a, b) => a - b)}`);
  }
});

Deno.test("table: the streaming decoder yields the same packets, one byte at a time and all at once", () => {
  for (const e of PACKETS) {
    assert.deepEqual(streamAll(e.bytes, e.version, 1), [e.packet], e.name);
    assert.deepEqual(streamAll(e.bytes, e.version, e.bytes.length), [e.packet], e.name);
  }
  // All entries of a level concatenated into one stream, in chunks of 7 bytes.
  for (const v of [3, 4, 5] as const) {
    const entries = PACKETS.filter((e) => e.version === v && e.packet.type !== 1);
    const all = new Uint8Array(entries.reduce((n, e) => n + e.bytes.length, 0));
    let at = 0;
    for (const e of entries) {
      all.set(e.bytes, at);
      at += e.bytes.length;
    }
    assert.deepEqual(streamAll(all, v, 7), entries.map((e) => e.packet));
  }
});

Deno.test("table: malformed entries fail with the listed reason code", () => {
  for (const e of MALFORMED) {
    const code = reasonOf(() => decodePacket(e.bytes, e.version));
    assert.equal(code, e.reasonCode, `${e.name}: got 0x${code.toString(16)}`);
    const d = new PacketDecoder({ protocolVersion: e.version });
    let streamed = -1;
    try {
      for (const byte of e.bytes) {
        d.push(new Uint8Array([byte]));
        d.next();
      }
    } catch (err) {
      assert.ok(err instanceof MqttError, `${e.name}: ${err}`);
      streamed = err.reasonCode;
    }
    if (e.incompleteStream) {
      assert.equal(streamed, -1, e.name);
      assert.equal(d.buffered, e.bytes.length, e.name);
    } else {
      assert.equal(streamed, e.reasonCode, `${e.name} (streamed): got ${streamed}`);
    }
  }
});

Deno.test("decodePacket rejects bytes that are not exactly one packet", () => {
  assert.equal(reasonOf(() => decodePacket(new Uint8Array([0xc0]), 4)), 0x81);
  assert.equal(reasonOf(() => decodePacket(new Uint8Array([0xc0, 0, 0]), 4)), 0x81);
  assert.equal(reasonOf(() => decodePacket(new Uint8Array([0x40, 2, 0]), 4)), 0x81);
});

Deno.test("PacketDecoder: CONNECT sets the protocol version for the following packets", () => {
  const connect5 = PACKETS.find((e) => e.name === "v5 CONNECT minimal")!;
  const puback5 = PACKETS.find((e) => e.name === "v5 PUBACK reason code without properties")!;
  const d = new PacketDecoder();
  assert.equal(d.protocolVersion, 4);
  d.push(new Uint8Array([...connect5.bytes, ...puback5.bytes]));
  assert.equal(d.next()?.type, 1);
  assert.equal(d.protocolVersion, 5);
  // Decoded as 3.1.1 this PUBACK (Remaining Length 3) would be malformed.
  assert.deepEqual(d.next(), puback5.packet);
  assert.equal(d.next(), null);
});

Deno.test("PacketDecoder: protocolVersion is settable (client side)", () => {
  const d = new PacketDecoder({ protocolVersion: 4 });
  d.protocolVersion = 5;
  d.push(new Uint8Array([0xe0, 1, 0x8e]));
  assert.deepEqual(d.next(), { type: 14, reasonCode: 0x8e });
});

Deno.test("PacketDecoder: rejects a too large packet from its header, before the body arrives", () => {
  const d = new PacketDecoder({ maxPacketSize: 100 });
  // PUBLISH announcing 200 bytes: only the fixed header is pushed.
  d.push(new Uint8Array([0x30, 0xc8, 0x01]));
  assert.equal(reasonOf(() => d.next()), 0x95);
  assert.equal(d.buffered, 0);
  // Exactly at the limit is fine: 1 + 1 + 98 = 100 bytes.
  const ok = new PacketDecoder({ maxPacketSize: 100 });
  const p: PublishPacket = {
    type: 3,
    topic: "t",
    payload: new Uint8Array(95),
    qos: 0,
    retain: false,
    dup: false,
  };
  const bytes = encode(p, 4);
  assert.equal(bytes.length, 100);
  ok.push(bytes);
  assert.deepEqual(ok.next(), p);
  // maxPacketSize is settable.
  ok.maxPacketSize = 99;
  ok.push(bytes.subarray(0, 2));
  assert.equal(reasonOf(() => ok.next()), 0x95);
});

Deno.test("PacketDecoder: header split across chunks, payload copied out of the reused chunk", () => {
  const payload = new Uint8Array(300).map((_, i) => i & 0xff);
  const p: PublishPacket = { type: 3, topic: "a/b", payload, qos: 1, retain: false, dup: false, packetId: 3 };
  const bytes = encode(p, 4);
  const d = new PacketDecoder();
  d.push(bytes.slice(0, 2)); // type byte and the first of two length bytes
  assert.equal(d.next(), null);
  assert.equal(d.buffered, 2);
  const rest = bytes.slice(2);
  d.push(rest);
  const got = d.next() as PublishPacket;
  rest.fill(0);
  assert.deepEqual(got, p);
  assert.equal(d.buffered, 0);
  // In-place decode: the payload is still a copy.
  const chunk = encode(p, 4);
  d.push(chunk);
  const inPlace = d.next() as PublishPacket;
  chunk.fill(0);
  assert.deepEqual(inPlace.payload, payload);
});

Deno.test("PacketDecoder: pushing without draining keeps the undecoded bytes in order", () => {
  const d = new PacketDecoder();
  d.push(new Uint8Array([0xc0, 0, 0xd0]));
  assert.deepEqual(d.next(), { type: 12 });
  d.push(new Uint8Array([0, 0xe0, 0]));
  assert.deepEqual(d.next(), { type: 13 });
  assert.deepEqual(d.next(), { type: 14 });
  assert.equal(d.next(), null);
});

Deno.test("PacketDecoder: after an error the decoder holds nothing", () => {
  const d = new PacketDecoder();
  d.push(new Uint8Array([0x30, 10, 0, 2]));
  assert.equal(d.next(), null);
  assert.equal(d.buffered, 4);
  d.push(new Uint8Array([0x61, 0xff, 0, 0, 0, 0, 0, 0]));
  assert.equal(reasonOf(() => d.next()), 0x81);
  assert.equal(d.buffered, 0);
});

Deno.test("encodePublish: the packet id can be patched per subscriber at publishPacketIdOffset", () => {
  for (const v of [3, 4, 5] as const) {
    const p: PublishPacket = {
      type: 3,
      topic: "x/€",
      payload: new Uint8Array(200),
      qos: 2,
      retain: false,
      dup: false,
      packetId: 1,
      properties: { userProperties: [["a", "b"]] },
    };
    const bytes = encodePublish(p, v);
    const at = publishPacketIdOffset(bytes);
    bytes[at] = 0xab;
    bytes[at + 1] = 0xcd;
    assert.equal((decodePacket(bytes, v) as PublishPacket).packetId, 0xabcd);
  }
  const qos0 = encodePublish({
    type: 3,
    topic: "t",
    payload: new Uint8Array(),
    qos: 0,
    retain: false,
    dup: false,
  }, 4);
  assert.equal(reasonOf(() => publishPacketIdOffset(qos0)), 0x81);
});

Deno.test("encode: MQTT 5 fields are dropped for levels 3 and 4", () => {
  const puback: Packet = { type: 4, packetId: 1, reasonCode: 0x10, properties: { reasonString: "x" } };
  assert.equal(hex(encode(puback, 4)), "40 02 00 01");
  const unsuback: Packet = { type: 11, packetId: 1, reasonCodes: [0x11] };
  assert.equal(hex(encode(unsuback, 4)), "b0 02 00 01");
  const disconnect: Packet = { type: 14, reasonCode: 0x8e };
  assert.equal(hex(encode(disconnect, 4)), "e0 00");
  const publish: Packet = {
    type: 3,
    topic: "t",
    payload: new Uint8Array([1]),
    qos: 0,
    retain: false,
    dup: false,
    properties: { topicAlias: 1 },
  };
  assert.equal(hex(encode(publish, 4)), "30 04 00 01 74 01");
  assert.equal(hex(encode({ type: 2, sessionPresent: true, reasonCode: 0 }, 3)), "20 02 00 00");
  assert.equal(reasonOf(() => encode({ type: 15, reasonCode: 0 }, 4)), 0x82);
});

Deno.test("encode: values that cannot go on the wire throw MqttError", () => {
  const base: PublishPacket = {
    type: 3,
    topic: "t",
    payload: new Uint8Array(),
    qos: 1,
    retain: false,
    dup: false,
  };
  assert.equal(reasonOf(() => encode(base, 4)), 0x81); // no packet id
  assert.equal(reasonOf(() => encode({ ...base, packetId: 0 }, 4)), 0x81);
  assert.equal(reasonOf(() => encode({ ...base, packetId: 65536 }, 4)), 0x81);
  assert.equal(reasonOf(() => encode({ ...base, qos: 0, topic: "a".repeat(65536) }, 4)), 0x81);
  assert.equal(reasonOf(() => encode({ ...base, qos: 0, topic: "a\u0000" }, 4)), 0x81);
  assert.equal(reasonOf(() => encode({ ...base, qos: 0, topic: "a\ud800" }, 4)), 0x81);
  assert.equal(reasonOf(() => encode({ ...base, packetId: 1, properties: { topicAlias: 0 } }, 5)), 0x81);
  assert.equal(reasonOf(() => encode({ type: 8, packetId: 1, subscriptions: [] }, 4)), 0x82);
  assert.equal(
    reasonOf(() =>
      encode({
        type: 1,
        protocolName: "MQTT",
        protocolVersion: 4,
        clean: true,
        keepAlive: 0,
        clientId: "",
        password: new Uint8Array(1),
      }, 4)
    ),
    0x81,
  );
  // A 268,435,456-byte Remaining Length is one byte too many: checked from lengths, nothing allocated.
  const huge = {
    ...base,
    qos: 0 as const,
    topic: "",
    payload: { length: 268435454 } as unknown as Uint8Array,
  };
  assert.equal(reasonOf(() => encodedLength(huge, 4)), 0x95);
});

Deno.test("reason codes: per-packet table matches isValidReasonCode", () => {
  for (let type = 0; type < 16; type++) {
    for (let code = 0; code < 256; code++) {
      assert.equal(isValidReasonCode(type, code), REASON_CODES_BY_PACKET[type].includes(code));
    }
  }
  assert.equal(isValidReasonCode(4, 0x10), true);
  assert.equal(isValidReasonCode(6, 0x10), false);
  assert.equal(isValidReasonCode(16, 0), false);
});

Deno.test("topic: names", () => {
  for (const ok of ["a", "a/b", "/", "//", "$SYS/x", "日本", "a b", "\ufeff"]) {
    assert.equal(isValidTopicName(ok), true, ok);
  }
  for (const bad of ["", "a/+", "#", "a/#", "+", "a\u0000b", "a\ud800", "x".repeat(65536)]) {
    assert.equal(isValidTopicName(bad), false, JSON.stringify(bad.slice(0, 10)));
  }
  assert.equal(isValidTopicName("€".repeat(21845)), true); // 65535 bytes
  assert.equal(isValidTopicName("€".repeat(21846)), false); // 65538 bytes
});

Deno.test("topic: filters (§4.7.1) and shared subscriptions (§4.8.2)", () => {
  const good = [
    "#",
    "+",
    "a/#",
    "a/+",
    "+/+",
    "/+",
    "+/",
    "a/+/b/#",
    "/",
    "sport/tennis/+",
    "$share/g/a/#",
    "$share/g/+",
  ];
  for (const f of good) assert.equal(isValidTopicFilter(f), true, f);
  const bad = [
    "",
    "a#",
    "a/#/b",
    "#/",
    "a+",
    "a/+b",
    "+a",
    "a/b#",
    "a\u0000",
    "$share/",
    "$share//a",
    "$share/g",
    "$share/g/",
    "$share/g+/a",
    "$share/#/a",
    "$share/g/a/#/b",
  ];
  for (const f of bad) assert.equal(isValidTopicFilter(f), false, f);
  assert.deepEqual(parseSharedFilter("$share/grp/a/b/#"), { group: "grp", filter: "a/b/#" });
  assert.deepEqual(parseSharedFilter("$share/grp//"), { group: "grp", filter: "/" });
  assert.equal(parseSharedFilter("a/b"), null);
  assert.equal(parseSharedFilter("$share/grp"), null);
  assert.equal(parseSharedFilter("$share//x"), null);
  assert.equal(parseSharedFilter("$share/g#/x"), null);
  assert.equal(parseSharedFilter("$SHARE/g/x"), null);
});

Deno.test("utf8: MQTT rules both ways", () => {
  assert.deepEqual(encodeUtf8("a€😀"), new Uint8Array([0x61, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80]));
  assert.equal(decodeUtf8(new Uint8Array([0x61, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80])), "a€😀");
  assert.equal(reasonOf(() => encodeUtf8("\u0000")), 0x81);
  assert.equal(reasonOf(() => encodeUtf8("\udc00x")), 0x81);
  assert.equal(reasonOf(() => decodeUtf8(new Uint8Array([0xed, 0xbf, 0xbf]))), 0x81);
  assert.equal(reasonOf(() => decodeUtf8(new Uint8Array([0xf4, 0x90, 0x80, 0x80]))), 0x81); // > U+10FFFF
  assert.equal(decodeUtf8(new Uint8Array([0x78, 0x79, 0x7a]), 1, 3), "yz");
  const long = "é".repeat(40);
  assert.equal(decodeUtf8(encodeUtf8(long)), long);
});

Deno.test("table helpers build what they claim", () => {
  // Guards the hand-written table: a 2-byte Remaining Length and a length-prefixed string.
  assert.equal(hex(pkt(0x30, s("t"), new Array(200).fill(0)).subarray(0, 5)), "30 cb 01 00 01");
  assert.equal(hex(new Uint8Array(u16(0x1234))), "12 34");
});

Deno.test("PacketDecoder: reserved type 0 and AUTH before MQTT 5 are refused from the first byte", () => {
  const d = new PacketDecoder({ maxPacketSize: 1 << 20 });
  d.push(new Uint8Array([0x00, 0xff, 0xff]));
  assert.equal(reasonOf(() => d.next()), 0x81);
  assert.equal(d.buffered, 0);
  const a = new PacketDecoder({ protocolVersion: 4 });
  a.push(new Uint8Array([0xf0]));
  assert.equal(reasonOf(() => a.next()), 0x81);
  const a5 = new PacketDecoder({ protocolVersion: 5 });
  a5.push(new Uint8Array([0xf0]));
  assert.equal(a5.next(), null);
  assert.equal(a5.buffered, 1);
});

Deno.test("PacketDecoder: a malformed MQTT 5 CONNECT still sets protocolVersion 5 (CONNACK format)", () => {
  // Level 5 CONNECT whose properties contain Topic Alias (not allowed on CONNECT).
  const bad = pkt(0x10, s("MQTT"), 5, 0x02, u16(0), [3, 0x23, 0, 1], s("c"));
  const d = new PacketDecoder();
  d.push(bad);
  assert.equal(reasonOf(() => d.next()), 0x81);
  assert.equal(d.protocolVersion, 5);
  // An unknown level leaves it alone.
  const unknown = new PacketDecoder();
  unknown.push(pkt(0x10, s("MQTT"), 9, 0x02, u16(0), s("c")));
  assert.equal(reasonOf(() => unknown.next()), 0x84);
  assert.equal(unknown.protocolVersion, 4);
});

Deno.test("decoder: publishBytes is the whole PUBLISH when it is exactly what encode writes, else undefined", () => {
  const payload = new Uint8Array([1, 2, 3, 4]);
  for (const version of [4, 5] as const) {
    for (const qos of [0, 1, 2] as const) {
      const p: PublishPacket = {
        type: 3,
        topic: "a/b",
        payload,
        qos,
        retain: false,
        dup: false,
        ...(qos > 0 ? { packetId: 7 } : {}),
      };
      const bytes = encode(p, version);
      const d = new PacketDecoder({ protocolVersion: version });
      d.push(bytes);
      const got = d.next() as PublishPacket;
      assert.deepEqual(d.publishBytes, bytes, `v${version} QoS ${qos}`);
      // The payload is a view into those bytes, not a second copy.
      assert.equal(got.payload.buffer, d.publishBytes!.buffer);
      assert.deepEqual(got.payload, payload);
    }
  }
  const d = new PacketDecoder({ protocolVersion: 5 });
  d.push(
    encode({
      type: 3,
      topic: "a",
      payload,
      qos: 0,
      retain: false,
      dup: false,
      properties: { contentType: "x" },
    }, 5),
  );
  assert.ok(d.next() !== null);
  assert.equal(d.publishBytes, undefined, "MQTT 5 with properties");
  // Remaining Length 7 written in two bytes (0x87 0x00): legal to decode, not canonical.
  const long = new Uint8Array([0x30, 0x87, 0x00, 0, 1, 0x61, 9, 9, 9, 9]);
  const d4 = new PacketDecoder();
  d4.push(long);
  const p = d4.next() as PublishPacket;
  assert.deepEqual([p.topic, [...p.payload]], ["a", [9, 9, 9, 9]]);
  assert.equal(d4.publishBytes, undefined, "non-minimal Remaining Length");
  d4.push(encode({ type: 12 } as Packet, 4));
  d4.next();
  assert.equal(d4.publishBytes, undefined, "reset by a packet that is not a PUBLISH");
});

Deno.test("decoder: cached topic names are exact for colliding and new bytes, and bad UTF-8 is refused every time", () => {
  const alphabet = "ab/ü€";
  let seed = 7;
  const rand = (n: number) => (seed = (seed * 1103515245 + 12345) >>> 0) % n;
  const topics: string[] = [];
  for (let i = 0; i < 3000; i++) {
    let t = "";
    const len = 1 + rand(30);
    for (let k = 0; k < len; k++) t += alphabet[rand(alphabet.length)];
    topics.push(t);
  }
  const d = new PacketDecoder();
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < topics.length; i++) {
      const t = topics[(i * 7 + round * 13) % topics.length];
      d.push(encode({ type: 3, topic: t, payload: new Uint8Array(1), qos: 0, retain: false, dup: false }, 4));
      assert.equal((d.next() as PublishPacket).topic, t);
    }
  }
  for (let i = 0; i < 2; i++) {
    const d2 = new PacketDecoder();
    d2.push(new Uint8Array([0x30, 5, 0, 2, 0x61, 0xff, 1])); // "a" then a byte that never occurs in UTF-8
    assert.throws(() => d2.next(), (e: unknown) => e instanceof MqttError && e.reasonCode === 0x81);
  }
});
