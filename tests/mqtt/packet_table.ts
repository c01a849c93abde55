/**
 * The one table of test packets that the codec tests walk: raw bytes next to the decoded object, per
 * protocol level, for every packet type, MQTT 5 packets carrying every property, and malformed byte
 * sequences with the reason code the decoder must report.
 *
 * Bytes are spelled out by hand from the spec (§2, §3), with three tiny helpers: `s()` for a length-prefixed
 * UTF-8 string, `u16()` / `u32()` for big-endian integers, and `pkt()` which prepends the fixed header with
 * the Remaining Length as a Variable Byte Integer. They are deliberately independent of src/mqtt.
 *
 * @module
 */

import type { Packet, ProtocolVersion } from "../../src/mqtt/types.ts";

/** A well-formed packet: `bytes` decodes to `packet`, and `packet` encodes to `bytes` unless `decodeOnly`. */
export interface TableEntry {
  name: string;
  version: ProtocolVersion;
  bytes: Uint8Array;
  packet: Packet;
  /** The bytes are a valid but non-canonical form (the encoder writes the shortest form instead). */
  decodeOnly?: boolean;
}

/** A malformed or forbidden packet and the MQTT 5 reason code its decoding must fail with. */
export interface MalformedEntry {
  name: string;
  version: ProtocolVersion;
  bytes: Uint8Array;
  reasonCode: number;
  /** Only a whole-packet decode can tell it is cut short; a stream decoder keeps waiting for more bytes. */
  incompleteStream?: boolean;
}

type Part = number | number[];

/** Flattens numbers and byte arrays into one Uint8Array. */
export function b(...parts: Part[]): Uint8Array {
  const out: number[] = [];
  for (const p of parts) {
    if (typeof p === "number") out.push(p);
    else out.push(...p);
  }
  return new Uint8Array(out);
}

/** Raw UTF-8 bytes of `text`, no prefix. */
export function raw(text: string): number[] {
  return [...new TextEncoder().encode(text)];
}

/** MQTT UTF-8 string / binary: two-byte length then the bytes. */
export function s(text: string | number[]): number[] {
  const bytes = typeof text === "string" ? raw(text) : text;
  return [bytes.length >> 8, bytes.length & 0xff, ...bytes];
}

/** Big-endian two-byte integer. */
export function u16(n: number): number[] {
  return [n >> 8, n & 0xff];
}

/** Big-endian four-byte integer. */
export function u32(n: number): number[] {
  return [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}

/** Variable Byte Integer (§1.5.5), minimal form. */
export function vbi(n: number): number[] {
  const out: number[] = [];
  do {
    let d = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) d |= 0x80;
    out.push(d);
  } while (n > 0);
  return out;
}

/** A packet: first byte, Remaining Length, body. */
export function pkt(first: number, ...body: Part[]): Uint8Array {
  const inner = b(...body);
  return b(first, vbi(inner.length), [...inner]);
}

/** A property section: Property Length then the properties. */
export function props(...parts: Part[]): number[] {
  const inner = b(...parts);
  return [...vbi(inner.length), ...inner];
}

const bytes = (...n: number[]) => new Uint8Array(n);
const payload200 = new Uint8Array(200).map((_, i) => i & 0xff);

// ---------------------------------------------------------------- MQTT 3.1 (level 3)

const v3: TableEntry[] = [
  {
    name: "v3 CONNECT MQIsdp with username and password",
    version: 3,
    // 10 | rem | "MQIsdp" | level 3 | flags: user, pass, clean | keep alive 60 | client id | user | pass
    bytes: pkt(0x10, s("MQIsdp"), 3, 0xc2, u16(60), s("c1"), s("user"), s("pw")),
    packet: {
      type: 1,
      protocolName: "MQIsdp",
      protocolVersion: 3,
      clean: true,
      keepAlive: 60,
      clientId: "c1",
      username: "user",
      password: bytes(0x70, 0x77),
    },
  },
  {
    name: "v3 CONNECT literal bytes, no flags",
    version: 3,
    bytes: bytes(0x10, 0x0f, 0, 6, 0x4d, 0x51, 0x49, 0x73, 0x64, 0x70, 3, 0, 0, 10, 0, 1, 0x41),
    packet: {
      type: 1,
      protocolName: "MQIsdp",
      protocolVersion: 3,
      clean: false,
      keepAlive: 10,
      clientId: "A",
    },
  },
  {
    name: "v3 CONNACK accepted (first byte reserved in 3.1)",
    version: 3,
    bytes: bytes(0x20, 2, 0, 0),
    packet: { type: 2, sessionPresent: false, reasonCode: 0 },
  },
  {
    name: "v3 CONNACK identifier rejected",
    version: 3,
    bytes: bytes(0x20, 2, 0, 2),
    packet: { type: 2, sessionPresent: false, reasonCode: 2 },
  },
  {
    name: "v3 PUBLISH QoS 0",
    version: 3,
    bytes: bytes(0x30, 6, 0, 3, 0x61, 0x2f, 0x62, 0x78),
    packet: { type: 3, topic: "a/b", payload: bytes(0x78), qos: 0, retain: false, dup: false },
  },
  {
    name: "v3 PUBLISH QoS 1",
    version: 3,
    bytes: bytes(0x32, 7, 0, 1, 0x74, 0x12, 0x34, 0xaa, 0xbb),
    packet: {
      type: 3,
      topic: "t",
      payload: bytes(0xaa, 0xbb),
      qos: 1,
      retain: false,
      dup: false,
      packetId: 0x1234,
    },
  },
  {
    name: "v3 PUBACK",
    version: 3,
    bytes: bytes(0x40, 2, 0, 9),
    packet: { type: 4, packetId: 9 },
  },
  {
    name: "v3 PUBREC",
    version: 3,
    bytes: bytes(0x50, 2, 0xff, 0xff),
    packet: { type: 5, packetId: 65535 },
  },
  {
    name: "v3 PUBREL",
    version: 3,
    bytes: bytes(0x62, 2, 0, 1),
    packet: { type: 6, packetId: 1 },
  },
  {
    name: "v3 PUBCOMP",
    version: 3,
    bytes: bytes(0x70, 2, 1, 0),
    packet: { type: 7, packetId: 256 },
  },
  {
    name: "v3 SUBSCRIBE",
    version: 3,
    bytes: pkt(0x82, u16(3), s("a/+"), 1, s("#"), 2),
    packet: {
      type: 8,
      packetId: 3,
      subscriptions: [
        { topicFilter: "a/+", qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0 },
        { topicFilter: "#", qos: 2, noLocal: false, retainAsPublished: false, retainHandling: 0 },
      ],
    },
  },
  {
    name: "v3 SUBACK",
    version: 3,
    bytes: bytes(0x90, 6, 0, 3, 0, 1, 2, 0x80),
    packet: { type: 9, packetId: 3, reasonCodes: [0, 1, 2, 0x80] },
  },
  {
    name: "v3 UNSUBSCRIBE",
    version: 3,
    bytes: pkt(0xa2, u16(4), s("a/+"), s("b")),
    packet: { type: 10, packetId: 4, topicFilters: ["a/+", "b"] },
  },
  {
    name: "v3 UNSUBACK",
    version: 3,
    bytes: bytes(0xb0, 2, 0, 4),
    packet: { type: 11, packetId: 4 },
  },
  { name: "v3 PINGREQ", version: 3, bytes: bytes(0xc0, 0), packet: { type: 12 } },
  { name: "v3 PINGRESP", version: 3, bytes: bytes(0xd0, 0), packet: { type: 13 } },
  { name: "v3 DISCONNECT", version: 3, bytes: bytes(0xe0, 0), packet: { type: 14 } },
];

// ---------------------------------------------------------------- MQTT 3.1.1 (level 4)

const v4: TableEntry[] = [
  {
    name: "v4 CONNECT minimal, empty client id",
    version: 4,
    bytes: bytes(0x10, 12, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 2, 0, 60, 0, 0),
    packet: { type: 1, protocolName: "MQTT", protocolVersion: 4, clean: true, keepAlive: 60, clientId: "" },
  },
  {
    name: "v4 CONNECT with will QoS 2 retained, username, password",
    version: 4,
    // flags: user 0x80 | pass 0x40 | will retain 0x20 | will qos 2 (0x10) | will 0x04 | clean 0x02 = 0xf6
    bytes: pkt(0x10, s("MQTT"), 4, 0xf6, u16(0), s("client-1"), s("w/t"), s([1, 2, 3]), s("u"), s([0, 0xff])),
    packet: {
      type: 1,
      protocolName: "MQTT",
      protocolVersion: 4,
      clean: true,
      keepAlive: 0,
      clientId: "client-1",
      will: { topic: "w/t", payload: bytes(1, 2, 3), qos: 2, retain: true },
      username: "u",
      password: bytes(0, 0xff),
    },
  },
  {
    name: "v4 CONNECT with will QoS 1, no clean session, username only",
    version: 4,
    // flags: user 0x80 | will qos 1 (0x08) | will 0x04 = 0x8c
    bytes: pkt(0x10, s("MQTT"), 4, 0x8c, u16(65535), s("é"), s("will"), s([]), s("name")),
    packet: {
      type: 1,
      protocolName: "MQTT",
      protocolVersion: 4,
      clean: false,
      keepAlive: 65535,
      clientId: "é",
      will: { topic: "will", payload: bytes(), qos: 1, retain: false },
      username: "name",
    },
  },
  {
    name: "v4 CONNACK session present",
    version: 4,
    bytes: bytes(0x20, 2, 1, 0),
    packet: { type: 2, sessionPresent: true, reasonCode: 0 },
  },
  {
    name: "v4 CONNACK not authorized",
    version: 4,
    bytes: bytes(0x20, 2, 0, 5),
    packet: { type: 2, sessionPresent: false, reasonCode: 5 },
  },
  {
    name: "v4 PUBLISH QoS 0 retained, empty payload",
    version: 4,
    bytes: bytes(0x31, 5, 0, 3, 0x61, 0x2f, 0x62),
    packet: { type: 3, topic: "a/b", payload: bytes(), qos: 0, retain: true, dup: false },
  },
  {
    name: "v4 PUBLISH QoS 2 dup retain",
    version: 4,
    bytes: bytes(0x3d, 6, 0, 1, 0x78, 0, 10, 0x7a),
    packet: { type: 3, topic: "x", payload: bytes(0x7a), qos: 2, retain: true, dup: true, packetId: 10 },
  },
  {
    name: "v4 PUBLISH with a 2-byte Remaining Length (203)",
    version: 4,
    bytes: b(0x30, 0xcb, 0x01, 0, 1, 0x74, [...payload200]),
    packet: { type: 3, topic: "t", payload: payload200, qos: 0, retain: false, dup: false },
  },
  {
    name: "v4 PUBLISH with multi-byte UTF-8 topic",
    version: 4,
    bytes: pkt(0x32, s("日本/€/😀"), u16(77), 0x01),
    packet: {
      type: 3,
      topic: "日本/€/😀",
      payload: bytes(1),
      qos: 1,
      retain: false,
      dup: false,
      packetId: 77,
    },
  },
  {
    name: "v4 PUBLISH topic keeps a BOM (MQTT-1.5.4-3)",
    version: 4,
    bytes: pkt(0x30, s([0xef, 0xbb, 0xbf, 0x61])),
    packet: { type: 3, topic: "\ufeffa", payload: bytes(), qos: 0, retain: false, dup: false },
  },
  {
    name: "v4 PUBLISH wildcard topic is decoded (the broker rejects it)",
    version: 4,
    bytes: pkt(0x30, s("a/#")),
    packet: { type: 3, topic: "a/#", payload: bytes(), qos: 0, retain: false, dup: false },
  },
  { name: "v4 PUBACK", version: 4, bytes: bytes(0x40, 2, 0x12, 0x34), packet: { type: 4, packetId: 0x1234 } },
  { name: "v4 PUBREC", version: 4, bytes: bytes(0x50, 2, 0, 2), packet: { type: 5, packetId: 2 } },
  { name: "v4 PUBREL", version: 4, bytes: bytes(0x62, 2, 0, 2), packet: { type: 6, packetId: 2 } },
  { name: "v4 PUBCOMP", version: 4, bytes: bytes(0x70, 2, 0, 2), packet: { type: 7, packetId: 2 } },
  {
    name: "v4 SUBSCRIBE three filters",
    version: 4,
    bytes: pkt(0x82, u16(10), s("a/b"), 0, s("+/x/#"), 1, s("$share/g/t"), 2),
    packet: {
      type: 8,
      packetId: 10,
      subscriptions: [
        { topicFilter: "a/b", qos: 0, noLocal: false, retainAsPublished: false, retainHandling: 0 },
        { topicFilter: "+/x/#", qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0 },
        { topicFilter: "$share/g/t", qos: 2, noLocal: false, retainAsPublished: false, retainHandling: 0 },
      ],
    },
  },
  {
    name: "v4 SUBSCRIBE invalid filter is decoded (the broker answers 0x80)",
    version: 4,
    bytes: pkt(0x82, u16(11), s("a/#/b"), 0),
    packet: {
      type: 8,
      packetId: 11,
      subscriptions: [{
        topicFilter: "a/#/b",
        qos: 0,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
      }],
    },
  },
  {
    name: "v4 SUBACK",
    version: 4,
    bytes: bytes(0x90, 5, 0, 10, 0, 0x80, 2),
    packet: { type: 9, packetId: 10, reasonCodes: [0, 0x80, 2] },
  },
  {
    name: "v4 UNSUBSCRIBE",
    version: 4,
    bytes: pkt(0xa2, u16(12), s("a/b")),
    packet: { type: 10, packetId: 12, topicFilters: ["a/b"] },
  },
  { name: "v4 UNSUBACK", version: 4, bytes: bytes(0xb0, 2, 0, 12), packet: { type: 11, packetId: 12 } },
  { name: "v4 PINGREQ", version: 4, bytes: bytes(0xc0, 0), packet: { type: 12 } },
  { name: "v4 PINGRESP", version: 4, bytes: bytes(0xd0, 0), packet: { type: 13 } },
  { name: "v4 DISCONNECT", version: 4, bytes: bytes(0xe0, 0), packet: { type: 14 } },
  {
    name: "v4 PUBACK with a non-minimal Remaining Length (accepted, §1.5.5 binds the sender)",
    version: 4,
    bytes: bytes(0x40, 0x82, 0x00, 0, 7),
    packet: { type: 4, packetId: 7 },
    decodeOnly: true,
  },
];

// ---------------------------------------------------------------- MQTT 5.0 (level 5)

const corr = [0xc0, 0xff, 0xee];

const v5: TableEntry[] = [
  {
    name: "v5 CONNECT minimal",
    version: 5,
    bytes: bytes(0x10, 13, 0, 4, 0x4d, 0x51, 0x54, 0x54, 5, 2, 0, 30, 0, 0, 0),
    packet: { type: 1, protocolName: "MQTT", protocolVersion: 5, clean: true, keepAlive: 30, clientId: "" },
  },
  {
    name: "v5 CONNECT with every CONNECT property and every Will property",
    version: 5,
    bytes: pkt(
      0x10,
      s("MQTT"),
      5,
      0xee, // user, pass, will retain, will qos 1, will, clean
      u16(120),
      props(
        [0x11, ...u32(3600)], // Session Expiry Interval
        [0x15, ...s("SCRAM-SHA-1")], // Authentication Method
        [0x16, ...s([1, 2])], // Authentication Data
        [0x17, 0], // Request Problem Information
        [0x19, 1], // Request Response Information
        [0x21, ...u16(20)], // Receive Maximum
        [0x22, ...u16(10)], // Topic Alias Maximum
        [0x26, ...s("k"), ...s("v")], // User Property
        [0x26, ...s("k"), ...s("v2")], // User Property (repeated, order kept)
        [0x27, ...u32(1048576)], // Maximum Packet Size
      ),
      s("cid"),
      props(
        [0x01, 1], // Payload Format Indicator
        [0x02, ...u32(60)], // Message Expiry Interval
        [0x03, ...s("text/plain")], // Content Type
        [0x08, ...s("resp/t")], // Response Topic
        [0x09, ...s(corr)], // Correlation Data
        [0x18, ...u32(5)], // Will Delay Interval
        [0x26, ...s("wk"), ...s("wv")], // User Property
      ),
      s("will/t"),
      s(raw("bye")),
      s("alice"),
      s("secret"),
    ),
    packet: {
      type: 1,
      protocolName: "MQTT",
      protocolVersion: 5,
      clean: true,
      keepAlive: 120,
      clientId: "cid",
      properties: {
        sessionExpiryInterval: 3600,
        authenticationMethod: "SCRAM-SHA-1",
        authenticationData: bytes(1, 2),
        requestProblemInformation: 0,
        requestResponseInformation: 1,
        receiveMaximum: 20,
        topicAliasMaximum: 10,
        userProperties: [["k", "v"], ["k", "v2"]],
        maximumPacketSize: 1048576,
      },
      will: {
        topic: "will/t",
        payload: new Uint8Array(raw("bye")),
        qos: 1,
        retain: true,
        properties: {
          payloadFormatIndicator: 1,
          messageExpiryInterval: 60,
          contentType: "text/plain",
          responseTopic: "resp/t",
          correlationData: new Uint8Array(corr),
          willDelayInterval: 5,
          userProperties: [["wk", "wv"]],
        },
      },
      username: "alice",
      password: new Uint8Array(raw("secret")),
    },
  },
  {
    name: "v5 CONNECT password without username is allowed in MQTT 5",
    version: 5,
    bytes: pkt(0x10, s("MQTT"), 5, 0x40, u16(5), props(), s("p"), s([7])),
    packet: {
      type: 1,
      protocolName: "MQTT",
      protocolVersion: 5,
      clean: false,
      keepAlive: 5,
      clientId: "p",
      password: bytes(7),
    },
  },
  {
    name: "v5 CONNACK minimal",
    version: 5,
    bytes: bytes(0x20, 3, 0, 0, 0),
    packet: { type: 2, sessionPresent: false, reasonCode: 0 },
  },
  {
    name: "v5 CONNACK bad authentication method",
    version: 5,
    bytes: bytes(0x20, 3, 0, 0x8c, 0),
    packet: { type: 2, sessionPresent: false, reasonCode: 0x8c },
  },
  {
    name: "v5 CONNACK with every CONNACK property",
    version: 5,
    bytes: pkt(
      0x20,
      1,
      0,
      props(
        [0x11, ...u32(0xffffffff)], // Session Expiry Interval
        [0x12, ...s("auto-1")], // Assigned Client Identifier
        [0x13, ...u16(30)], // Server Keep Alive
        [0x15, ...s("m")], // Authentication Method
        [0x16, ...s([9])], // Authentication Data
        [0x1a, ...s("info")], // Response Information
        [0x1c, ...s("other:1883")], // Server Reference
        [0x1f, ...s("welcome")], // Reason String
        [0x21, ...u16(65535)], // Receive Maximum
        [0x22, ...u16(0)], // Topic Alias Maximum
        [0x24, 1], // Maximum QoS
        [0x25, 0], // Retain Available
        [0x26, ...s("a"), ...s("b")], // User Property
        [0x27, ...u32(268435460)], // Maximum Packet Size
        [0x28, 1], // Wildcard Subscription Available
        [0x29, 0], // Subscription Identifier Available
        [0x2a, 1], // Shared Subscription Available
      ),
    ),
    packet: {
      type: 2,
      sessionPresent: true,
      reasonCode: 0,
      properties: {
        sessionExpiryInterval: 0xffffffff,
        assignedClientIdentifier: "auto-1",
        serverKeepAlive: 30,
        authenticationMethod: "m",
        authenticationData: bytes(9),
        responseInformation: "info",
        serverReference: "other:1883",
        reasonString: "welcome",
        receiveMaximum: 65535,
        topicAliasMaximum: 0,
        maximumQoS: 1,
        retainAvailable: 0,
        userProperties: [["a", "b"]],
        maximumPacketSize: 268435460,
        wildcardSubscriptionAvailable: 1,
        subscriptionIdentifierAvailable: 0,
        sharedSubscriptionAvailable: 1,
      },
    },
  },
  {
    name: "v5 PUBLISH without properties",
    version: 5,
    bytes: bytes(0x30, 5, 0, 1, 0x74, 0, 0x21),
    packet: { type: 3, topic: "t", payload: bytes(0x21), qos: 0, retain: false, dup: false },
  },
  {
    name: "v5 PUBLISH with every PUBLISH property",
    version: 5,
    bytes: pkt(
      0x3b, // dup, qos 1, retain
      s("a/b"),
      u16(5),
      props(
        [0x01, 0], // Payload Format Indicator
        [0x02, ...u32(10)], // Message Expiry Interval
        [0x03, ...s("json")], // Content Type
        [0x08, ...s("r/1")], // Response Topic
        [0x09, ...s(corr)], // Correlation Data
        [0x0b, 1], // Subscription Identifier
        [0x0b, 0xff, 0xff, 0xff, 0x7f], // Subscription Identifier 268435455 (repeatable on PUBLISH)
        [0x23, ...u16(3)], // Topic Alias
        [0x26, ...s("x"), ...s("y")], // User Property
      ),
      raw("hello"),
    ),
    packet: {
      type: 3,
      topic: "a/b",
      payload: new Uint8Array(raw("hello")),
      qos: 1,
      retain: true,
      dup: true,
      packetId: 5,
      properties: {
        payloadFormatIndicator: 0,
        messageExpiryInterval: 10,
        contentType: "json",
        responseTopic: "r/1",
        correlationData: new Uint8Array(corr),
        subscriptionIdentifiers: [1, 268435455],
        topicAlias: 3,
        userProperties: [["x", "y"]],
      },
    },
  },
  {
    name: "v5 PUBLISH empty topic with Topic Alias",
    version: 5,
    bytes: pkt(0x34, s(""), u16(9), props([0x23, ...u16(1)]), 0x00),
    packet: {
      type: 3,
      topic: "",
      payload: bytes(0),
      qos: 2,
      retain: false,
      dup: false,
      packetId: 9,
      properties: { topicAlias: 1 },
    },
  },
  {
    name: "v5 PUBLISH properties in non-canonical order decode",
    version: 5,
    bytes: pkt(0x30, s("t"), props([0x23, ...u16(2)], [0x01, 1])),
    packet: {
      type: 3,
      topic: "t",
      payload: bytes(),
      qos: 0,
      retain: false,
      dup: false,
      properties: { topicAlias: 2, payloadFormatIndicator: 1 },
    },
    decodeOnly: true,
  },
  {
    name: "v5 PUBACK shortest form (§3.4.2.1)",
    version: 5,
    bytes: bytes(0x40, 2, 0, 1),
    packet: { type: 4, packetId: 1, reasonCode: 0 },
  },
  {
    name: "v5 PUBACK reason code without properties",
    version: 5,
    bytes: bytes(0x40, 3, 0, 1, 0x10),
    packet: { type: 4, packetId: 1, reasonCode: 0x10 },
  },
  {
    name: "v5 PUBACK success with an empty property section (decodes, encodes shorter)",
    version: 5,
    bytes: bytes(0x40, 4, 0, 1, 0, 0),
    packet: { type: 4, packetId: 1, reasonCode: 0 },
    decodeOnly: true,
  },
  {
    name: "v5 PUBACK with reason string and user property",
    version: 5,
    bytes: pkt(0x40, u16(2), 0x97, props([0x1f, ...s("quota")], [0x26, ...s("n"), ...s("v")])),
    packet: {
      type: 4,
      packetId: 2,
      reasonCode: 0x97,
      properties: { reasonString: "quota", userProperties: [["n", "v"]] },
    },
  },
  {
    name: "v5 PUBACK success with properties keeps the reason code byte",
    version: 5,
    bytes: pkt(0x40, u16(2), 0, props([0x1f, ...s("ok")])),
    packet: { type: 4, packetId: 2, reasonCode: 0, properties: { reasonString: "ok" } },
  },
  {
    name: "v5 PUBREC no matching subscribers",
    version: 5,
    bytes: bytes(0x50, 3, 0, 3, 0x10),
    packet: { type: 5, packetId: 3, reasonCode: 0x10 },
  },
  {
    name: "v5 PUBREL packet identifier not found",
    version: 5,
    bytes: bytes(0x62, 3, 0, 3, 0x92),
    packet: { type: 6, packetId: 3, reasonCode: 0x92 },
  },
  {
    name: "v5 PUBCOMP with reason string",
    version: 5,
    bytes: pkt(0x70, u16(3), 0x92, props([0x1f, ...s("gone")])),
    packet: { type: 7, packetId: 3, reasonCode: 0x92, properties: { reasonString: "gone" } },
  },
  {
    name: "v5 SUBSCRIBE with Subscription Identifier, user property and all options",
    version: 5,
    bytes: pkt(
      0x82,
      u16(20),
      props([0x0b, 0x80, 0x01], [0x26, ...s("u"), ...s("p")]), // Subscription Identifier 128 (2-byte VBI)
      s("a/+"),
      0x2e, // retain handling 2, retain as published, no local, qos 2
      s("$share/grp/x/#"),
      0x11, // retain handling 1, qos 1
      s("z"),
      0x00,
    ),
    packet: {
      type: 8,
      packetId: 20,
      properties: { subscriptionIdentifiers: [128], userProperties: [["u", "p"]] },
      subscriptions: [
        { topicFilter: "a/+", qos: 2, noLocal: true, retainAsPublished: true, retainHandling: 2 },
        {
          topicFilter: "$share/grp/x/#",
          qos: 1,
          noLocal: false,
          retainAsPublished: false,
          retainHandling: 1,
        },
        { topicFilter: "z", qos: 0, noLocal: false, retainAsPublished: false, retainHandling: 0 },
      ],
    },
  },
  {
    name: "v5 SUBACK with reason string and every kind of code",
    version: 5,
    bytes: pkt(
      0x90,
      u16(20),
      props([0x1f, ...s("r")], [0x26, ...s("a"), ...s("")]),
      0,
      1,
      2,
      0x80,
      0x83,
      0x87,
      0x8f,
      0x91,
      0x97,
      0x9e,
      0xa1,
      0xa2,
    ),
    packet: {
      type: 9,
      packetId: 20,
      properties: { reasonString: "r", userProperties: [["a", ""]] },
      reasonCodes: [0, 1, 2, 0x80, 0x83, 0x87, 0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2],
    },
  },
  {
    name: "v5 UNSUBSCRIBE with user property",
    version: 5,
    bytes: pkt(0xa2, u16(21), props([0x26, ...s("k"), ...s("v")]), s("a/+"), s("b")),
    packet: {
      type: 10,
      packetId: 21,
      properties: { userProperties: [["k", "v"]] },
      topicFilters: ["a/+", "b"],
    },
  },
  {
    name: "v5 UNSUBACK",
    version: 5,
    bytes: pkt(0xb0, u16(21), props(), 0x00, 0x11),
    packet: { type: 11, packetId: 21, reasonCodes: [0, 0x11] },
  },
  {
    name: "v5 UNSUBACK with reason string",
    version: 5,
    bytes: pkt(0xb0, u16(22), props([0x1f, ...s("no")]), 0x87, 0x8f, 0x91, 0x80, 0x83),
    packet: {
      type: 11,
      packetId: 22,
      properties: { reasonString: "no" },
      reasonCodes: [0x87, 0x8f, 0x91, 0x80, 0x83],
    },
  },
  { name: "v5 PINGREQ", version: 5, bytes: bytes(0xc0, 0), packet: { type: 12 } },
  { name: "v5 PINGRESP", version: 5, bytes: bytes(0xd0, 0), packet: { type: 13 } },
  {
    name: "v5 DISCONNECT shortest form",
    version: 5,
    bytes: bytes(0xe0, 0),
    packet: { type: 14, reasonCode: 0 },
  },
  {
    name: "v5 DISCONNECT with will message",
    version: 5,
    bytes: bytes(0xe0, 1, 0x04),
    packet: { type: 14, reasonCode: 4 },
  },
  {
    name: "v5 DISCONNECT server moved with every DISCONNECT property",
    version: 5,
    bytes: pkt(
      0xe0,
      0x9d,
      props(
        [0x11, ...u32(0)], // Session Expiry Interval
        [0x1c, ...s("b:1883")], // Server Reference
        [0x1f, ...s("moved")], // Reason String
        [0x26, ...s("k"), ...s("v")], // User Property
      ),
    ),
    packet: {
      type: 14,
      reasonCode: 0x9d,
      properties: {
        sessionExpiryInterval: 0,
        serverReference: "b:1883",
        reasonString: "moved",
        userProperties: [["k", "v"]],
      },
    },
  },
  {
    name: "v5 AUTH shortest form",
    version: 5,
    bytes: bytes(0xf0, 0),
    packet: { type: 15, reasonCode: 0 },
  },
  {
    name: "v5 AUTH continue with every AUTH property",
    version: 5,
    bytes: pkt(
      0xf0,
      0x18,
      props(
        [0x15, ...s("SCRAM")], // Authentication Method
        [0x16, ...s([1, 2, 3])], // Authentication Data
        [0x1f, ...s("more")], // Reason String
        [0x26, ...s("k"), ...s("v")], // User Property
      ),
    ),
    packet: {
      type: 15,
      reasonCode: 0x18,
      properties: {
        authenticationMethod: "SCRAM",
        authenticationData: bytes(1, 2, 3),
        reasonString: "more",
        userProperties: [["k", "v"]],
      },
    },
  },
  {
    name: "v5 AUTH re-authenticate without properties",
    version: 5,
    bytes: bytes(0xf0, 1, 0x19),
    packet: { type: 15, reasonCode: 0x19 },
  },
];

/** Every well-formed entry. */
export const PACKETS: readonly TableEntry[] = [...v3, ...v4, ...v5];

// ---------------------------------------------------------------- malformed and forbidden

const M = 0x81, P = 0x82, UNSUPPORTED = 0x84;
const connect4 = (flags: number, ...payload: Part[]) => pkt(0x10, s("MQTT"), 4, flags, u16(0), ...payload);

/** Every malformed entry, with the reason code the decoder must throw. */
export const MALFORMED: readonly MalformedEntry[] = [
  // Fixed header (§2.1)
  { name: "reserved packet type 0", version: 4, bytes: bytes(0x00, 0), reasonCode: M },
  { name: "PUBREL with flags 0", version: 4, bytes: bytes(0x60, 2, 0, 1), reasonCode: M },
  { name: "SUBSCRIBE with flags 0", version: 4, bytes: pkt(0x80, u16(1), s("a"), 0), reasonCode: M },
  { name: "UNSUBSCRIBE with flags 0", version: 4, bytes: pkt(0xa0, u16(1), s("a")), reasonCode: M },
  { name: "PUBACK with flags 2", version: 4, bytes: bytes(0x42, 2, 0, 1), reasonCode: M },
  {
    name: "CONNECT with flags 1",
    version: 4,
    bytes: connect4(0x02, s("c")).map((x, i) => i === 0 ? 0x11 : x),
    reasonCode: M,
  },
  { name: "PINGREQ with flags 8", version: 4, bytes: bytes(0xc8, 0), reasonCode: M },
  { name: "DISCONNECT with flags 1", version: 5, bytes: bytes(0xe1, 0), reasonCode: M },
  { name: "PUBLISH QoS 3", version: 4, bytes: pkt(0x36, s("t"), u16(1)), reasonCode: M },
  { name: "AUTH at level 4", version: 4, bytes: bytes(0xf0, 0), reasonCode: M },
  { name: "AUTH at level 3", version: 3, bytes: bytes(0xf0, 0), reasonCode: M },
  {
    name: "Remaining Length of 5 bytes",
    version: 4,
    bytes: bytes(0x30, 0xff, 0xff, 0xff, 0xff, 0x01),
    reasonCode: M,
  },
  {
    name: "Remaining Length cut off",
    version: 4,
    bytes: bytes(0x30, 0x80),
    reasonCode: M,
    incompleteStream: true,
  },

  // CONNECT (§3.1)
  { name: "CONNECT reserved flag set", version: 4, bytes: connect4(0x03, s("c")), reasonCode: M },
  { name: "CONNECT will QoS without will flag", version: 4, bytes: connect4(0x08, s("c")), reasonCode: M },
  { name: "CONNECT will retain without will flag", version: 4, bytes: connect4(0x20, s("c")), reasonCode: M },
  { name: "CONNECT will QoS 3", version: 4, bytes: connect4(0x1c, s("c"), s("w"), s([])), reasonCode: M },
  {
    name: "CONNECT password without username (3.1.1)",
    version: 4,
    bytes: connect4(0x40, s("c"), s([1])),
    reasonCode: M,
  },
  {
    name: "CONNECT password without username (3.1)",
    version: 3,
    bytes: pkt(0x10, s("MQIsdp"), 3, 0x40, u16(0), s("c"), s([1])),
    reasonCode: M,
  },
  {
    name: "CONNECT unknown protocol name",
    version: 4,
    bytes: pkt(0x10, s("MQTX"), 4, 0, u16(0), s("c")),
    reasonCode: UNSUPPORTED,
  },
  {
    name: "CONNECT unknown protocol level 6",
    version: 4,
    bytes: pkt(0x10, s("MQTT"), 6, 0, u16(0), s("c")),
    reasonCode: UNSUPPORTED,
  },
  {
    name: "CONNECT MQTT with level 3",
    version: 4,
    bytes: pkt(0x10, s("MQTT"), 3, 0, u16(0), s("c")),
    reasonCode: UNSUPPORTED,
  },
  {
    name: "CONNECT MQIsdp with level 4",
    version: 4,
    bytes: pkt(0x10, s("MQIsdp"), 4, 0, u16(0), s("c")),
    reasonCode: UNSUPPORTED,
  },
  { name: "CONNECT missing client id", version: 4, bytes: connect4(0x02), reasonCode: M },
  {
    name: "CONNECT will flag but no will payload",
    version: 4,
    bytes: connect4(0x06, s("c"), s("w")),
    reasonCode: M,
  },
  { name: "CONNECT username flag but no username", version: 4, bytes: connect4(0x82, s("c")), reasonCode: M },
  { name: "CONNECT trailing byte", version: 4, bytes: connect4(0x02, s("c"), 0), reasonCode: M },
  { name: "CONNECT cut inside protocol name", version: 4, bytes: bytes(0x10, 3, 0, 4, 0x4d), reasonCode: M },
  {
    name: "CONNECT v5 property not allowed (Topic Alias)",
    version: 5,
    bytes: pkt(0x10, s("MQTT"), 5, 0, u16(0), props([0x23, ...u16(1)]), s("c")),
    reasonCode: M,
  },
  {
    name: "CONNECT v5 Will property not allowed (Session Expiry)",
    version: 5,
    bytes: pkt(0x10, s("MQTT"), 5, 0x04, u16(0), props(), s("c"), props([0x11, ...u32(1)]), s("w"), s([])),
    reasonCode: M,
  },
  {
    name: "CONNECT v5 Receive Maximum 0",
    version: 5,
    bytes: pkt(0x10, s("MQTT"), 5, 0, u16(0), props([0x21, ...u16(0)]), s("c")),
    reasonCode: P,
  },
  {
    name: "CONNECT v5 Maximum Packet Size 0",
    version: 5,
    bytes: pkt(0x10, s("MQTT"), 5, 0, u16(0), props([0x27, ...u32(0)]), s("c")),
    reasonCode: P,
  },
  {
    name: "CONNECT v5 Request Problem Information 2",
    version: 5,
    bytes: pkt(0x10, s("MQTT"), 5, 0, u16(0), props([0x17, 2]), s("c")),
    reasonCode: P,
  },
  {
    name: "CONNECT v5 Request Response Information 2",
    version: 5,
    bytes: pkt(0x10, s("MQTT"), 5, 0, u16(0), props([0x19, 2]), s("c")),
    reasonCode: P,
  },
  {
    name: "CONNECT v5 duplicate Session Expiry Interval",
    version: 5,
    bytes: pkt(0x10, s("MQTT"), 5, 0, u16(0), props([0x11, ...u32(1)], [0x11, ...u32(2)]), s("c")),
    reasonCode: P,
  },
  {
    name: "CONNECT v5 Property Length past the packet",
    version: 5,
    bytes: pkt(0x10, s("MQTT"), 5, 0, u16(0), [20, 0x11, 0, 0, 0, 1]),
    reasonCode: M,
  },

  // CONNACK (§3.2)
  { name: "CONNACK v4 reserved acknowledge flag", version: 4, bytes: bytes(0x20, 2, 2, 0), reasonCode: M },
  { name: "CONNACK v4 return code 6", version: 4, bytes: bytes(0x20, 2, 0, 6), reasonCode: M },
  { name: "CONNACK v4 trailing byte", version: 4, bytes: bytes(0x20, 3, 0, 0, 0), reasonCode: M },
  { name: "CONNACK v5 without property length", version: 5, bytes: bytes(0x20, 2, 0, 0), reasonCode: M },
  {
    name: "CONNACK v5 reason code 0x04 not allowed",
    version: 5,
    bytes: bytes(0x20, 3, 0, 4, 0),
    reasonCode: P,
  },
  { name: "CONNACK v5 Maximum QoS 2", version: 5, bytes: pkt(0x20, 0, 0, props([0x24, 2])), reasonCode: P },
  {
    name: "CONNACK v5 Retain Available 2",
    version: 5,
    bytes: pkt(0x20, 0, 0, props([0x25, 2])),
    reasonCode: P,
  },
  {
    name: "CONNACK v5 Wildcard Subscription Available 3",
    version: 5,
    bytes: pkt(0x20, 0, 0, props([0x28, 3])),
    reasonCode: P,
  },
  {
    name: "CONNACK v5 Subscription Identifier Available 9",
    version: 5,
    bytes: pkt(0x20, 0, 0, props([0x29, 9])),
    reasonCode: P,
  },
  {
    name: "CONNACK v5 Shared Subscription Available 255",
    version: 5,
    bytes: pkt(0x20, 0, 0, props([0x2a, 0xff])),
    reasonCode: P,
  },
  {
    name: "CONNACK v5 Will Delay not allowed",
    version: 5,
    bytes: pkt(0x20, 0, 0, props([0x18, ...u32(1)])),
    reasonCode: M,
  },

  // PUBLISH (§3.3)
  { name: "PUBLISH QoS 1 packet id 0", version: 4, bytes: pkt(0x32, s("t"), u16(0)), reasonCode: M },
  { name: "PUBLISH QoS 1 without packet id", version: 4, bytes: pkt(0x32, s("t")), reasonCode: M },
  {
    name: "PUBLISH topic length past the packet",
    version: 4,
    bytes: bytes(0x30, 3, 0, 5, 0x61),
    reasonCode: M,
  },
  { name: "PUBLISH too short for topic length", version: 4, bytes: bytes(0x30, 1, 0), reasonCode: M },
  { name: "PUBLISH invalid UTF-8 (0xff)", version: 4, bytes: pkt(0x30, s([0x61, 0xff])), reasonCode: M },
  { name: "PUBLISH topic with U+0000", version: 4, bytes: pkt(0x30, s([0x61, 0x00])), reasonCode: M },
  {
    name: "PUBLISH UTF-8 surrogate (ED A0 80)",
    version: 4,
    bytes: pkt(0x30, s([0xed, 0xa0, 0x80])),
    reasonCode: M,
  },
  { name: "PUBLISH overlong UTF-8 (C0 AF)", version: 4, bytes: pkt(0x30, s([0xc0, 0xaf])), reasonCode: M },
  { name: "PUBLISH truncated UTF-8 sequence", version: 4, bytes: pkt(0x30, s([0xe2, 0x82])), reasonCode: M },
  {
    name: "PUBLISH long invalid UTF-8 (slow path)",
    version: 4,
    bytes: pkt(0x30, s([...raw("0123456789012345678901234567890123456789"), 0xfe])),
    reasonCode: M,
  },
  {
    name: "PUBLISH long topic with U+0000 (slow path)",
    version: 4,
    bytes: pkt(0x30, s([...raw("é0123456789012345678901234567890123456789"), 0])),
    reasonCode: M,
  },
  { name: "PUBLISH v5 without property length", version: 5, bytes: pkt(0x30, s("t")), reasonCode: M },
  {
    name: "PUBLISH v5 Topic Alias 0",
    version: 5,
    bytes: pkt(0x30, s("t"), props([0x23, ...u16(0)])),
    reasonCode: 0x94,
  },
  {
    name: "PUBLISH v5 Subscription Identifier 0",
    version: 5,
    bytes: pkt(0x30, s("t"), props([0x0b, 0])),
    reasonCode: P,
  },
  {
    name: "PUBLISH v5 Payload Format Indicator 2",
    version: 5,
    bytes: pkt(0x30, s("t"), props([0x01, 2])),
    reasonCode: P,
  },
  {
    name: "PUBLISH v5 duplicate Topic Alias",
    version: 5,
    bytes: pkt(0x30, s("t"), props([0x23, ...u16(1)], [0x23, ...u16(1)])),
    reasonCode: P,
  },
  {
    name: "PUBLISH v5 duplicate Content Type",
    version: 5,
    bytes: pkt(0x30, s("t"), props([0x03, ...s("a")], [0x03, ...s("a")])),
    reasonCode: P,
  },
  {
    name: "PUBLISH v5 Session Expiry not allowed",
    version: 5,
    bytes: pkt(0x30, s("t"), props([0x11, ...u32(1)])),
    reasonCode: M,
  },
  {
    name: "PUBLISH v5 unknown property 0x7f",
    version: 5,
    bytes: pkt(0x30, s("t"), props([0x7f, 0])),
    reasonCode: M,
  },
  {
    name: "PUBLISH v5 unknown property 0x00",
    version: 5,
    bytes: pkt(0x30, s("t"), props([0x00])),
    reasonCode: M,
  },
  {
    name: "PUBLISH v5 property value past the property section",
    version: 5,
    bytes: pkt(0x30, s("t"), [3, 0x02, 0, 0], 0, 0, 0),
    reasonCode: M,
  },
  {
    name: "PUBLISH v5 Subscription Identifier of 5 bytes",
    version: 5,
    bytes: pkt(0x30, s("t"), props([0x0b, 0x80, 0x80, 0x80, 0x80, 0x01])),
    reasonCode: M,
  },
  {
    name: "PUBLISH v5 User Property without value",
    version: 5,
    bytes: pkt(0x30, s("t"), props([0x26, ...s("k")])),
    reasonCode: M,
  },
  {
    name: "PUBLISH v5 invalid UTF-8 in User Property",
    version: 5,
    bytes: pkt(0x30, s("t"), props([0x26, ...s("k"), ...s([0xc3])])),
    reasonCode: M,
  },

  // Acknowledgements (§3.4-§3.7)
  { name: "PUBACK packet id 0", version: 4, bytes: bytes(0x40, 2, 0, 0), reasonCode: M },
  { name: "PUBACK v4 trailing byte", version: 4, bytes: bytes(0x40, 3, 0, 1, 0), reasonCode: M },
  { name: "PUBACK cut short", version: 4, bytes: bytes(0x40, 1, 0), reasonCode: M },
  {
    name: "PUBREC v5 reason code 0x05 not allowed",
    version: 5,
    bytes: bytes(0x50, 3, 0, 1, 0x05),
    reasonCode: P,
  },
  {
    name: "PUBREL v5 reason code 0x80 not allowed",
    version: 5,
    bytes: bytes(0x62, 3, 0, 1, 0x80),
    reasonCode: P,
  },
  {
    name: "PUBCOMP v5 Topic Alias not allowed",
    version: 5,
    bytes: pkt(0x70, u16(1), 0, props([0x23, ...u16(1)])),
    reasonCode: M,
  },
  {
    name: "PUBACK v5 duplicate Reason String",
    version: 5,
    bytes: pkt(0x40, u16(1), 0, props([0x1f, ...s("a")], [0x1f, ...s("b")])),
    reasonCode: P,
  },
  {
    name: "PUBACK v5 trailing byte after properties",
    version: 5,
    bytes: pkt(0x40, u16(1), 0, props(), 0),
    reasonCode: M,
  },

  // SUBSCRIBE / SUBACK (§3.8, §3.9)
  { name: "SUBSCRIBE v4 without filters", version: 4, bytes: pkt(0x82, u16(1)), reasonCode: P },
  { name: "SUBSCRIBE v5 without filters", version: 5, bytes: pkt(0x82, u16(1), props()), reasonCode: P },
  { name: "SUBSCRIBE packet id 0", version: 4, bytes: pkt(0x82, u16(0), s("a"), 0), reasonCode: M },
  {
    name: "SUBSCRIBE v4 reserved option bits",
    version: 4,
    bytes: pkt(0x82, u16(1), s("a"), 0x04),
    reasonCode: M,
  },
  { name: "SUBSCRIBE v4 QoS 3", version: 4, bytes: pkt(0x82, u16(1), s("a"), 0x03), reasonCode: M },
  {
    name: "SUBSCRIBE v4 filter without options byte",
    version: 4,
    bytes: pkt(0x82, u16(1), s("a")),
    reasonCode: M,
  },
  {
    name: "SUBSCRIBE v5 reserved option bits",
    version: 5,
    bytes: pkt(0x82, u16(1), props(), s("a"), 0x40),
    reasonCode: M,
  },
  {
    name: "SUBSCRIBE v5 Retain Handling 3",
    version: 5,
    bytes: pkt(0x82, u16(1), props(), s("a"), 0x30),
    reasonCode: P,
  },
  { name: "SUBSCRIBE v5 QoS 3", version: 5, bytes: pkt(0x82, u16(1), props(), s("a"), 0x03), reasonCode: P },
  {
    name: "SUBSCRIBE v5 Subscription Identifier 0",
    version: 5,
    bytes: pkt(0x82, u16(1), props([0x0b, 0]), s("a"), 0),
    reasonCode: P,
  },
  {
    name: "SUBSCRIBE v5 two Subscription Identifiers",
    version: 5,
    bytes: pkt(0x82, u16(1), props([0x0b, 1], [0x0b, 2]), s("a"), 0),
    reasonCode: P,
  },
  { name: "SUBACK v4 return code 3", version: 4, bytes: bytes(0x90, 3, 0, 1, 3), reasonCode: M },
  {
    name: "SUBACK v5 reason code 0x11 not allowed",
    version: 5,
    bytes: pkt(0x90, u16(1), props(), 0x11),
    reasonCode: P,
  },

  // UNSUBSCRIBE / UNSUBACK (§3.10, §3.11)
  { name: "UNSUBSCRIBE v4 without filters", version: 4, bytes: pkt(0xa2, u16(1)), reasonCode: P },
  { name: "UNSUBSCRIBE v5 without filters", version: 5, bytes: pkt(0xa2, u16(1), props()), reasonCode: P },
  { name: "UNSUBSCRIBE packet id 0", version: 4, bytes: pkt(0xa2, u16(0), s("a")), reasonCode: M },
  {
    name: "UNSUBSCRIBE filter length past the packet",
    version: 4,
    bytes: pkt(0xa2, u16(1), [0, 9, 0x61]),
    reasonCode: M,
  },
  { name: "UNSUBACK v4 trailing bytes", version: 4, bytes: bytes(0xb0, 3, 0, 1, 0), reasonCode: M },
  {
    name: "UNSUBACK v5 reason code 0x10 not allowed",
    version: 5,
    bytes: pkt(0xb0, u16(1), props(), 0x10),
    reasonCode: P,
  },

  // PINGREQ, PINGRESP, DISCONNECT, AUTH (§3.12-§3.15)
  { name: "PINGREQ with a body", version: 4, bytes: bytes(0xc0, 1, 0), reasonCode: M },
  { name: "PINGRESP with a body", version: 5, bytes: bytes(0xd0, 1, 0), reasonCode: M },
  { name: "DISCONNECT v4 with a body", version: 4, bytes: bytes(0xe0, 1, 0), reasonCode: M },
  {
    name: "DISCONNECT v5 reason code 0x01 not allowed",
    version: 5,
    bytes: bytes(0xe0, 1, 0x01),
    reasonCode: P,
  },
  {
    name: "DISCONNECT v5 Topic Alias not allowed",
    version: 5,
    bytes: pkt(0xe0, 0, props([0x23, ...u16(1)])),
    reasonCode: M,
  },
  {
    name: "DISCONNECT v5 duplicate Session Expiry",
    version: 5,
    bytes: pkt(0xe0, 0, props([0x11, ...u32(1)], [0x11, ...u32(1)])),
    reasonCode: P,
  },
  {
    name: "AUTH v5 reason code 0x00 with trailing byte",
    version: 5,
    bytes: pkt(0xf0, 0, props(), 0),
    reasonCode: M,
  },
  { name: "AUTH v5 reason code 0x80 not allowed", version: 5, bytes: bytes(0xf0, 1, 0x80), reasonCode: P },
  {
    name: "AUTH v5 Session Expiry not allowed",
    version: 5,
    bytes: pkt(0xf0, 0x18, props([0x11, ...u32(1)])),
    reasonCode: M,
  },
];
