/**
 * Encoding MQTT control packets. Each packet is measured first, then written into one Uint8Array of exactly
 * its size: no intermediate arrays, strings written with the shared TextEncoder's `encodeInto` (or byte by
 * byte when short and ASCII).
 *
 * For protocol levels 3 and 4 the MQTT 5 fields are skipped: properties, the reason codes of
 * PUBACK..PUBCOMP, UNSUBACK and DISCONNECT. CONNACK's `reasonCode` is then the 3.1.1 return code byte.
 * For level 5 acknowledgements the shortest form is used (§3.4.2.1, §3.14.2.1, §3.15.2.1): no Reason Code
 * and no Property Length when the code is 0 and there are no properties.
 *
 * Values that cannot be put on the wire (a packet id of 0, a string over 65535 bytes, a packet over
 * 268,435,455 bytes of Remaining Length) throw MqttError rather than produce a packet the peer must reject.
 *
 * @module
 */

import { slabAlloc } from "./slab.ts";
import { malformed, MqttError, protocolError } from "./errors.ts";
import { propertiesLength, variableByteIntegerLength, writeProperties, writeVbi } from "./properties.ts";
import { ReasonCode } from "./reason_codes.ts";
import type {
  AckPacket,
  ConnackPacket,
  ConnectPacket,
  Packet,
  ProtocolVersion,
  PublishPacket,
  SubackPacket,
  SubscribePacket,
  UnsubackPacket,
  UnsubscribePacket,
} from "./types.ts";
import { MAX_STRING_BYTES, utf8Length, writeUtf8 } from "./utf8.ts";

/** Largest Remaining Length a Variable Byte Integer can express (§1.5.5, §2.1.4). */
export const MAX_REMAINING_LENGTH = 268435455;

/**
 * Lengths computed by a measure step and used by the following write step of the same packet. Encoding
 * is synchronous and never re-entrant, so module-level scratch saves recomputing them without allocating.
 */
let propsLen = 0;
let willPropsLen = 0;

function stringLength(s: string, what: string): number {
  const n = utf8Length(s);
  if (n > MAX_STRING_BYTES) throw malformed(`${what} is ${n} bytes, more than the MQTT limit of 65535`);
  return n;
}

function binaryLength(b: Uint8Array, what: string): number {
  if (b.length > MAX_STRING_BYTES) {
    throw malformed(`${what} is ${b.length} bytes, more than the MQTT limit of 65535`);
  }
  return b.length;
}

function checkPacketId(id: number | undefined, what: string): number {
  // §2.2.1: Packet Identifiers are 1..65535.
  if (id === undefined || !Number.isInteger(id) || id < 1 || id > 0xffff) {
    throw malformed(`${what} needs a Packet Identifier in 1..65535, got ${id}`);
  }
  return id;
}

function checkByte(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 0 || n > 0xff) throw malformed(`${what} must be a byte 0..255, got ${n}`);
  return n;
}

function checkRemaining(n: number, what: string): void {
  if (n > MAX_REMAINING_LENGTH) {
    throw new MqttError(
      ReasonCode.PacketTooLarge,
      `${what} needs a Remaining Length of ${n}, more than the maximum ${MAX_REMAINING_LENGTH}`,
    );
  }
}

/** Length of the property section including its Property Length prefix; sets `propsLen`. */
function propertySection(props: PublishPacket["properties"]): number {
  propsLen = propertiesLength(props);
  return variableByteIntegerLength(propsLen) + propsLen;
}

function writeU16(buf: Uint8Array, pos: number, n: number): number {
  buf[pos] = n >>> 8;
  buf[pos + 1] = n & 0xff;
  return pos + 2;
}

function writeBinary(buf: Uint8Array, pos: number, b: Uint8Array): number {
  pos = writeU16(buf, pos, b.length);
  buf.set(b, pos);
  return pos + b.length;
}

/** Allocates the packet and writes its fixed header; returns the buffer (the body starts after the header). */
function allocate(firstByte: number, remaining: number): Uint8Array {
  const buf = slabAlloc(1 + variableByteIntegerLength(remaining) + remaining);
  buf[0] = firstByte;
  writeVbi(buf, 1, remaining);
  return buf;
}

function headerLength(remaining: number): number {
  return 1 + variableByteIntegerLength(remaining);
}

// ---- PUBLISH (§3.3), the hot path ----

function publishRemaining(p: PublishPacket, version: ProtocolVersion, topicLen: number): number {
  let n = 2 + topicLen + p.payload.length;
  if (p.qos > 0) n += 2;
  if (version === 5) n += propertySection(p.properties);
  return n;
}

/**
 * Encodes a PUBLISH. For QoS > 0 the packet id is written at {@link publishPacketIdOffset}, so a broker can
 * encode once and patch the id per subscriber.
 */
export function encodePublish(p: PublishPacket, version: ProtocolVersion): Uint8Array {
  const qos = p.qos;
  if (qos !== 0 && qos !== 1 && qos !== 2) throw malformed(`PUBLISH QoS must be 0, 1 or 2, got ${qos}`);
  const topicLen = stringLength(p.topic, "PUBLISH Topic Name");
  const remaining = publishRemaining(p, version, topicLen);
  checkRemaining(remaining, "PUBLISH");
  const first = 0x30 | (p.dup ? 0x08 : 0) | (qos << 1) | (p.retain ? 0x01 : 0);
  const buf = allocate(first, remaining);
  let pos = writeUtf8(buf, headerLength(remaining), p.topic, topicLen);
  if (qos > 0) pos = writeU16(buf, pos, checkPacketId(p.packetId, "PUBLISH"));
  if (version === 5) pos = writeProperties(buf, pos, p.properties, propsLen);
  buf.set(p.payload, pos);
  return buf;
}

/**
 * Index of the two-byte Packet Identifier in an encoded PUBLISH of QoS 1 or 2 (right after the Topic Name,
 * §3.3.2). Throws MqttError 0x81 if `bytes` is not such a PUBLISH.
 */
export function publishPacketIdOffset(bytes: Uint8Array): number {
  if (bytes.length < 2 || (bytes[0] >>> 4) !== 3 || (bytes[0] & 0x06) === 0) {
    throw malformed("publishPacketIdOffset needs an encoded PUBLISH of QoS 1 or 2");
  }
  let pos = 1;
  while (pos < bytes.length && pos < 5 && (bytes[pos] & 0x80) !== 0) pos++;
  pos++; // past the last Remaining Length byte
  if (pos + 2 > bytes.length) throw malformed("encoded PUBLISH is cut off before its Topic Name");
  const offset = pos + 2 + ((bytes[pos] << 8) | bytes[pos + 1]);
  if (offset + 2 > bytes.length) throw malformed("encoded PUBLISH is cut off before its Packet Identifier");
  return offset;
}

// ---- every other packet: measure (Remaining Length), then write ----

function connectRemaining(p: ConnectPacket): number {
  const v = p.protocolVersion;
  if (v < 5 && p.password !== undefined && p.username === undefined) {
    throw malformed("CONNECT with a password needs a username before MQTT 5 (MQTT-3.1.2-22)");
  }
  let n = 2 + stringLength(p.protocolName, "Protocol Name") + 1 + 1 + 2;
  if (v === 5) n += propertySection(p.properties);
  n += 2 + stringLength(p.clientId, "Client Identifier");
  const will = p.will;
  if (will !== undefined) {
    if (will.qos !== 0 && will.qos !== 1 && will.qos !== 2) {
      throw malformed(`Will QoS must be 0..2, got ${will.qos}`);
    }
    if (v === 5) {
      willPropsLen = propertiesLength(will.properties);
      n += variableByteIntegerLength(willPropsLen) + willPropsLen;
    }
    n += 2 + stringLength(will.topic, "Will Topic") + 2 + binaryLength(will.payload, "Will Payload");
  }
  if (p.username !== undefined) n += 2 + stringLength(p.username, "User Name");
  if (p.password !== undefined) n += 2 + binaryLength(p.password, "Password");
  return n;
}

function writeConnect(buf: Uint8Array, pos: number, p: ConnectPacket): void {
  const v = p.protocolVersion;
  pos = writeUtf8(buf, pos, p.protocolName, utf8Length(p.protocolName));
  buf[pos++] = v;
  const will = p.will;
  buf[pos++] = (p.username !== undefined ? 0x80 : 0) | (p.password !== undefined ? 0x40 : 0) |
    (will !== undefined ? 0x04 | (will.qos << 3) | (will.retain ? 0x20 : 0) : 0) | (p.clean ? 0x02 : 0);
  pos = writeU16(buf, pos, p.keepAlive);
  if (v === 5) pos = writeProperties(buf, pos, p.properties, propsLen);
  pos = writeUtf8(buf, pos, p.clientId, utf8Length(p.clientId));
  if (will !== undefined) {
    if (v === 5) pos = writeProperties(buf, pos, will.properties, willPropsLen);
    pos = writeUtf8(buf, pos, will.topic, utf8Length(will.topic));
    pos = writeBinary(buf, pos, will.payload);
  }
  if (p.username !== undefined) pos = writeUtf8(buf, pos, p.username, utf8Length(p.username));
  if (p.password !== undefined) writeBinary(buf, pos, p.password);
}

function connackRemaining(p: ConnackPacket, version: ProtocolVersion): number {
  checkByte(p.reasonCode, "CONNACK reason code");
  return version === 5 ? 2 + propertySection(p.properties) : 2;
}

function writeConnack(buf: Uint8Array, pos: number, p: ConnackPacket, version: ProtocolVersion): void {
  // MQTT 3.1 has no Session Present flag: its first byte is reserved.
  buf[pos++] = version !== 3 && p.sessionPresent ? 1 : 0;
  buf[pos++] = p.reasonCode;
  if (version === 5) writeProperties(buf, pos, p.properties, propsLen);
}

/** Remaining Length of a v5 packet whose reason code and properties may be omitted (§3.4.2.1). */
function optionalReasonRemaining(
  fixed: number,
  code: number | undefined,
  props: AckPacket["properties"],
): number {
  const rc = checkByte(code ?? 0, "reason code");
  const section = propertySection(props);
  if (propsLen > 0) return fixed + 1 + section;
  return rc !== 0 ? fixed + 1 : fixed;
}

function ackRemaining(p: AckPacket, version: ProtocolVersion): number {
  checkPacketId(p.packetId, "acknowledgement");
  return version === 5 ? optionalReasonRemaining(2, p.reasonCode, p.properties) : 2;
}

function writeOptionalReason(
  buf: Uint8Array,
  pos: number,
  end: number,
  code: number | undefined,
  props: AckPacket["properties"],
): void {
  if (pos < end) buf[pos++] = code ?? 0;
  if (pos < end) writeProperties(buf, pos, props, propsLen);
}

function subscribeRemaining(p: SubscribePacket, version: ProtocolVersion): number {
  checkPacketId(p.packetId, "SUBSCRIBE");
  // MQTT-3.8.3-2: at least one subscription.
  if (p.subscriptions.length === 0) throw protocolError("SUBSCRIBE needs at least one topic filter");
  let n = 2;
  if (version === 5) n += propertySection(p.properties);
  for (let i = 0; i < p.subscriptions.length; i++) {
    const s = p.subscriptions[i];
    if (s.qos !== 0 && s.qos !== 1 && s.qos !== 2) {
      throw malformed(`subscription QoS must be 0..2, got ${s.qos}`);
    }
    if (s.retainHandling !== 0 && s.retainHandling !== 1 && s.retainHandling !== 2) {
      throw malformed(`Retain Handling must be 0..2, got ${s.retainHandling}`);
    }
    n += 3 + stringLength(s.topicFilter, "Topic Filter");
  }
  return n;
}

function writeSubscribe(buf: Uint8Array, pos: number, p: SubscribePacket, version: ProtocolVersion): void {
  pos = writeU16(buf, pos, p.packetId);
  if (version === 5) pos = writeProperties(buf, pos, p.properties, propsLen);
  for (let i = 0; i < p.subscriptions.length; i++) {
    const s = p.subscriptions[i];
    pos = writeUtf8(buf, pos, s.topicFilter, utf8Length(s.topicFilter));
    buf[pos++] = version === 5
      ? s.qos | (s.noLocal ? 0x04 : 0) | (s.retainAsPublished ? 0x08 : 0) | (s.retainHandling << 4)
      : s.qos;
  }
}

function subackRemaining(p: SubackPacket, version: ProtocolVersion): number {
  checkPacketId(p.packetId, "SUBACK");
  for (let i = 0; i < p.reasonCodes.length; i++) checkByte(p.reasonCodes[i], "SUBACK reason code");
  return 2 + (version === 5 ? propertySection(p.properties) : 0) + p.reasonCodes.length;
}

function writeCodes(buf: Uint8Array, pos: number, codes: readonly number[] | undefined): void {
  if (codes === undefined) return;
  for (let i = 0; i < codes.length; i++) buf[pos++] = codes[i];
}

function unsubscribeRemaining(p: UnsubscribePacket, version: ProtocolVersion): number {
  checkPacketId(p.packetId, "UNSUBSCRIBE");
  // MQTT-3.10.3-2: at least one topic filter.
  if (p.topicFilters.length === 0) throw protocolError("UNSUBSCRIBE needs at least one topic filter");
  let n = 2;
  if (version === 5) n += propertySection(p.properties);
  for (let i = 0; i < p.topicFilters.length; i++) n += 2 + stringLength(p.topicFilters[i], "Topic Filter");
  return n;
}

function writeUnsubscribe(
  buf: Uint8Array,
  pos: number,
  p: UnsubscribePacket,
  version: ProtocolVersion,
): void {
  pos = writeU16(buf, pos, p.packetId);
  if (version === 5) pos = writeProperties(buf, pos, p.properties, propsLen);
  for (let i = 0; i < p.topicFilters.length; i++) {
    pos = writeUtf8(buf, pos, p.topicFilters[i], utf8Length(p.topicFilters[i]));
  }
}

function unsubackRemaining(p: UnsubackPacket, version: ProtocolVersion): number {
  checkPacketId(p.packetId, "UNSUBACK");
  if (version !== 5) return 2;
  const codes = p.reasonCodes ?? [];
  for (let i = 0; i < codes.length; i++) checkByte(codes[i], "UNSUBACK reason code");
  return 2 + propertySection(p.properties) + codes.length;
}

/** Remaining Length of `packet` for `version`; leaves lengths of sub-parts in the module scratch. */
function measure(packet: Packet, version: ProtocolVersion): number {
  switch (packet.type) {
    case 1:
      return connectRemaining(packet);
    case 2:
      return connackRemaining(packet, version);
    case 3: {
      const topicLen = stringLength(packet.topic, "PUBLISH Topic Name");
      return publishRemaining(packet, version, topicLen);
    }
    case 4:
    case 5:
    case 6:
    case 7:
      return ackRemaining(packet, version);
    case 8:
      return subscribeRemaining(packet, version);
    case 9:
      return subackRemaining(packet, version);
    case 10:
      return unsubscribeRemaining(packet, version);
    case 11:
      return unsubackRemaining(packet, version);
    case 12:
    case 13:
      return 0;
    case 14:
      return version === 5 ? optionalReasonRemaining(0, packet.reasonCode, packet.properties) : 0;
    case 15:
      // §2.1.2: AUTH does not exist before MQTT 5.
      if (version !== 5) throw protocolError(`AUTH cannot be sent at protocol level ${version}`);
      return optionalReasonRemaining(0, packet.reasonCode, packet.properties);
    default:
      throw malformed(`unknown packet type ${(packet as { type: unknown }).type}`);
  }
}

/** First byte of the fixed header (§2.1.2, §2.1.3): type, and the required flags. */
function firstByte(packet: Packet): number {
  switch (packet.type) {
    case 6:
    case 8:
    case 10:
      // PUBREL, SUBSCRIBE, UNSUBSCRIBE carry flags 0b0010 (MQTT-3.6.1-1, MQTT-3.8.1-1, MQTT-3.10.1-1).
      return (packet.type << 4) | 0x02;
    default:
      return packet.type << 4;
  }
}

/** Encodes any packet for a peer of protocol level `version`, into one exactly sized Uint8Array. */
export function encode(packet: Packet, version: ProtocolVersion): Uint8Array {
  if (packet.type === 3) return encodePublish(packet, version);
  const remaining = measure(packet, version);
  checkRemaining(remaining, `packet type ${packet.type}`);
  const buf = allocate(firstByte(packet), remaining);
  const pos = headerLength(remaining);
  switch (packet.type) {
    case 1:
      writeConnect(buf, pos, packet);
      break;
    case 2:
      writeConnack(buf, pos, packet, version);
      break;
    case 4:
    case 5:
    case 6:
    case 7:
      writeU16(buf, pos, packet.packetId);
      if (version === 5) writeOptionalReason(buf, pos + 2, buf.length, packet.reasonCode, packet.properties);
      break;
    case 8:
      writeSubscribe(buf, pos, packet, version);
      break;
    case 9: {
      let p = writeU16(buf, pos, packet.packetId);
      if (version === 5) p = writeProperties(buf, p, packet.properties, propsLen);
      writeCodes(buf, p, packet.reasonCodes);
      break;
    }
    case 10:
      writeUnsubscribe(buf, pos, packet, version);
      break;
    case 11: {
      let p = writeU16(buf, pos, packet.packetId);
      if (version === 5) {
        p = writeProperties(buf, p, packet.properties, propsLen);
        writeCodes(buf, p, packet.reasonCodes);
      }
      break;
    }
    case 14:
    case 15:
      if (version === 5) writeOptionalReason(buf, pos, buf.length, packet.reasonCode, packet.properties);
      break;
  }
  return buf;
}

/** Total encoded size of `packet` in bytes (fixed header included), e.g. for Maximum Packet Size checks. */
export function encodedLength(packet: Packet, version: ProtocolVersion): number {
  const remaining = measure(packet, version);
  checkRemaining(remaining, `packet type ${packet.type}`);
  return headerLength(remaining) + remaining;
}
