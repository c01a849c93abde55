/**
 * MQTT 5 properties (§2.2.2): the table of every property (identifier, name, data type, the packets that
 * may carry it) and the functions that read and write a property section.
 *
 * The table is the single source of truth: the decoder rejects a property that is unknown or not allowed
 * on the packet (Malformed Packet, §2.2.2.2), a repeated non-repeatable one (Protocol Error, §2.2.2.2) and
 * values the spec forbids (0 where it must be > 0, bytes that must be 0 or 1: Protocol Error).
 *
 * @module
 */

import { malformed, MqttError, protocolError } from "./errors.ts";
import { ReasonCode } from "./reason_codes.ts";
import type { Reader } from "./reader.ts";
import { PACKET_TYPE_NAMES, type Properties, type UserProperty } from "./types.ts";
import { MAX_STRING_BYTES, utf8Length, writeUtf8 } from "./utf8.ts";

/** Data types of property values (§1.5, §2.2.2.2). */
export const PropertyType = {
  Byte: 1,
  TwoByteInteger: 2,
  FourByteInteger: 3,
  VariableByteInteger: 4,
  Utf8String: 5,
  BinaryData: 6,
  Utf8StringPair: 7,
} as const;

/** One of {@link PropertyType}. */
export type PropertyTypeValue = typeof PropertyType[keyof typeof PropertyType];

/**
 * Pseudo packet type for the Will Properties of a CONNECT payload (§3.1.3.2); real packet types are 1..15,
 * so 0 is free and lets one bit mask describe every place a property may appear.
 */
export const WILL_PROPERTIES = 0;

/** Description of one property. */
export interface PropertyDefinition {
  /** Identifier byte (§2.2.2.2). */
  readonly id: number;
  /** Field name in {@link Properties}. */
  readonly name: keyof Properties;
  /** Wire data type. */
  readonly type: PropertyTypeValue;
  /** Bit `1 << packetType` is set for every packet type allowed to carry it ({@link WILL_PROPERTIES} = bit 0). */
  readonly packets: number;
  /** Bit mask of the packet types on which it may appear more than once. */
  readonly repeatable: number;
  /** Smallest allowed value for numeric types (Protocol Error below it), e.g. 1 for Receive Maximum. */
  readonly min: number;
  /** Largest allowed value for numeric types (Protocol Error above it), e.g. 1 for the 0/1 bytes. */
  readonly max: number;
}

const T = PropertyType;
const bit = (...types: number[]): number => types.reduce((m, t) => m | (1 << t), 0);
const WILL = WILL_PROPERTIES;
const CONNECT = 1, CONNACK = 2, PUBLISH = 3, PUBACK = 4, PUBREC = 5, PUBREL = 6, PUBCOMP = 7;
const SUBSCRIBE = 8, SUBACK = 9, UNSUBSCRIBE = 10, UNSUBACK = 11, DISCONNECT = 14, AUTH = 15;
const ACKS = bit(PUBACK, PUBREC, PUBREL, PUBCOMP);
const ALL = bit(WILL, CONNECT, CONNACK, PUBLISH, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH) |
  ACKS;
const U8 = 0xff, U16 = 0xffff, U32 = 0xffffffff, VBI = 268435455;

function def(
  id: number,
  name: keyof Properties,
  type: PropertyTypeValue,
  packets: number,
  limits: { min?: number; max?: number; repeatable?: number } = {},
): PropertyDefinition {
  const max = limits.max ??
    (type === T.Byte ? U8 : type === T.TwoByteInteger ? U16 : type === T.FourByteInteger ? U32 : VBI);
  return { id, name, type, packets, repeatable: limits.repeatable ?? 0, min: limits.min ?? 0, max };
}

/** Every MQTT 5 property, in identifier order (§2.2.2.2). The encoder writes them in this order. */
export const PROPERTIES: readonly PropertyDefinition[] = [
  def(0x01, "payloadFormatIndicator", T.Byte, bit(PUBLISH, WILL), { max: 1 }),
  def(0x02, "messageExpiryInterval", T.FourByteInteger, bit(PUBLISH, WILL)),
  def(0x03, "contentType", T.Utf8String, bit(PUBLISH, WILL)),
  def(0x08, "responseTopic", T.Utf8String, bit(PUBLISH, WILL)),
  def(0x09, "correlationData", T.BinaryData, bit(PUBLISH, WILL)),
  // §3.3.2.3.8: several on a PUBLISH (one per matching subscription); once on SUBSCRIBE (§3.8.2.1.2).
  // 0 is a Protocol Error.
  def(0x0b, "subscriptionIdentifiers", T.VariableByteInteger, bit(PUBLISH, SUBSCRIBE), {
    min: 1,
    repeatable: bit(PUBLISH),
  }),
  def(0x11, "sessionExpiryInterval", T.FourByteInteger, bit(CONNECT, CONNACK, DISCONNECT)),
  def(0x12, "assignedClientIdentifier", T.Utf8String, bit(CONNACK)),
  def(0x13, "serverKeepAlive", T.TwoByteInteger, bit(CONNACK)),
  def(0x15, "authenticationMethod", T.Utf8String, bit(CONNECT, CONNACK, AUTH)),
  def(0x16, "authenticationData", T.BinaryData, bit(CONNECT, CONNACK, AUTH)),
  def(0x17, "requestProblemInformation", T.Byte, bit(CONNECT), { max: 1 }),
  def(0x18, "willDelayInterval", T.FourByteInteger, bit(WILL)),
  def(0x19, "requestResponseInformation", T.Byte, bit(CONNECT), { max: 1 }),
  def(0x1a, "responseInformation", T.Utf8String, bit(CONNACK)),
  def(0x1c, "serverReference", T.Utf8String, bit(CONNACK, DISCONNECT)),
  def(0x1f, "reasonString", T.Utf8String, bit(CONNACK, SUBACK, UNSUBACK, DISCONNECT, AUTH) | ACKS),
  def(0x21, "receiveMaximum", T.TwoByteInteger, bit(CONNECT, CONNACK), { min: 1 }),
  def(0x22, "topicAliasMaximum", T.TwoByteInteger, bit(CONNECT, CONNACK)),
  def(0x23, "topicAlias", T.TwoByteInteger, bit(PUBLISH), { min: 1 }),
  def(0x24, "maximumQoS", T.Byte, bit(CONNACK), { max: 1 }),
  def(0x25, "retainAvailable", T.Byte, bit(CONNACK), { max: 1 }),
  def(0x26, "userProperties", T.Utf8StringPair, ALL, { repeatable: ALL }),
  def(0x27, "maximumPacketSize", T.FourByteInteger, bit(CONNECT, CONNACK), { min: 1 }),
  def(0x28, "wildcardSubscriptionAvailable", T.Byte, bit(CONNACK), { max: 1 }),
  def(0x29, "subscriptionIdentifierAvailable", T.Byte, bit(CONNACK), { max: 1 }),
  def(0x2a, "sharedSubscriptionAvailable", T.Byte, bit(CONNACK), { max: 1 }),
];

/** {@link PROPERTIES} indexed by identifier; `undefined` for identifiers the spec does not define. */
export const PROPERTY_BY_ID: readonly (PropertyDefinition | undefined)[] = (() => {
  const table: (PropertyDefinition | undefined)[] = new Array(0x80).fill(undefined);
  for (const p of PROPERTIES) table[p.id] = p;
  return table;
})();

/** {@link PROPERTIES} by field name. */
export const PROPERTY_BY_NAME: ReadonlyMap<keyof Properties, PropertyDefinition> = new Map(
  PROPERTIES.map((p) => [p.name, p]),
);

/** True when property `id` may appear on `packetType` ({@link WILL_PROPERTIES} for Will Properties). */
export function isPropertyAllowed(id: number, packetType: number): boolean {
  const d = id < PROPERTY_BY_ID.length ? PROPERTY_BY_ID[id] : undefined;
  return d !== undefined && (d.packets & (1 << packetType)) !== 0;
}

/** Packet names for messages; index 0 stands for the Will Properties of CONNECT. */
const PACKET_NAMES = ["Will Properties", ...PACKET_TYPE_NAMES.slice(1)];

/**
 * Reads a property section (Property Length, then the properties) for `packetType`. Returns `undefined`
 * when the section is empty, so property-less packets allocate nothing.
 *
 * Throws MqttError 0x81 for an unknown identifier, a property not allowed on the packet (§2.2.2.2) or a
 * section that runs past the packet; 0x82 for a duplicate non-repeatable property or a forbidden value.
 */
export function readProperties(r: Reader, packetType: number): Properties | undefined {
  const len = r.vbi("Property Length");
  if (len === 0) return undefined;
  const end = r.pos + len;
  if (end > r.end) {
    throw malformed(`Property Length ${len} runs past the packet (${r.end - r.pos} bytes remain)`);
  }
  const props: Properties = {};
  // Bit i set: property id (index in a 64-bit range split in two 32-bit words) already seen.
  let seenLo = 0, seenHi = 0;
  const packetBit = 1 << packetType;
  const savedEnd = r.end;
  // Narrow the reader so a property value cannot run past the property section.
  r.end = end;
  while (r.pos < end) {
    const id = r.vbi("Property Identifier");
    const d = id < PROPERTY_BY_ID.length ? PROPERTY_BY_ID[id] : undefined;
    if (d === undefined) throw malformed(`unknown property identifier 0x${id.toString(16)}`);
    if ((d.packets & packetBit) === 0) {
      throw malformed(
        `property ${d.name} (0x${id.toString(16)}) is not allowed on ${PACKET_NAMES[packetType]}`,
      );
    }
    if ((d.repeatable & packetBit) === 0) {
      const seen = id < 32 ? seenLo & (1 << id) : seenHi & (1 << (id - 32));
      if (seen !== 0) {
        throw protocolError(`property ${d.name} (0x${id.toString(16)}) appears more than once`);
      }
      if (id < 32) seenLo |= 1 << id;
      else seenHi |= 1 << (id - 32);
    }
    readValue(r, d, props);
  }
  r.end = savedEnd;
  return props;
}

function readValue(r: Reader, d: PropertyDefinition, props: Properties): void {
  let n: number;
  switch (d.type) {
    case T.Byte:
      n = r.u8(d.name);
      break;
    case T.TwoByteInteger:
      n = r.u16(d.name);
      break;
    case T.FourByteInteger:
      n = r.u32(d.name);
      break;
    case T.VariableByteInteger:
      n = r.vbi(d.name);
      break;
    case T.Utf8String:
      (props as Record<string, unknown>)[d.name] = r.utf8(d.name);
      return;
    case T.BinaryData:
      (props as Record<string, unknown>)[d.name] = r.binary(d.name);
      return;
    default: {
      const pair: UserProperty = [r.utf8("User Property name"), r.utf8("User Property value")];
      (props.userProperties ??= []).push(pair);
      return;
    }
  }
  if (n < d.min || n > d.max) {
    const why = `property ${d.name} has value ${n}, allowed ${d.min}..${d.max}`;
    // §3.3.2.3.4: a Topic Alias of 0 is "Topic Alias invalid" (0x94), not a generic protocol error.
    throw d.id === 0x23 ? new MqttError(ReasonCode.TopicAliasInvalid, why) : protocolError(why);
  }
  if (d.id === 0x0b) (props.subscriptionIdentifiers ??= []).push(n);
  else (props as Record<string, unknown>)[d.name] = n;
}

function vbiSize(n: number): number {
  return n < 128 ? 1 : n < 16384 ? 2 : n < 2097152 ? 3 : 4;
}

function checkedUtf8Length(s: string, what: string): number {
  const n = utf8Length(s);
  if (n > MAX_STRING_BYTES) throw malformed(`${what} is ${n} bytes, more than the MQTT limit of 65535`);
  return n;
}

function checkedNumber(d: PropertyDefinition, v: number): void {
  if (!Number.isInteger(v) || v < d.min || v > d.max) {
    throw new MqttError(
      ReasonCode.MalformedPacket,
      `cannot encode property ${d.name} = ${v}: allowed ${d.min}..${d.max}`,
    );
  }
}

/**
 * Byte length of the properties (not counting the Property Length prefix). Validates values as it goes so
 * that {@link writeProperties} cannot fail half-way.
 */
export function propertiesLength(props: Properties | undefined): number {
  if (props === undefined) return 0;
  let size = 0;
  for (let i = 0; i < PROPERTIES.length; i++) {
    const d = PROPERTIES[i];
    const v = props[d.name];
    if (v === undefined) continue;
    switch (d.type) {
      case T.Byte:
        checkedNumber(d, v as number);
        size += 2;
        break;
      case T.TwoByteInteger:
        checkedNumber(d, v as number);
        size += 3;
        break;
      case T.FourByteInteger:
        checkedNumber(d, v as number);
        size += 5;
        break;
      case T.VariableByteInteger: {
        const ids = v as number[];
        for (let j = 0; j < ids.length; j++) {
          checkedNumber(d, ids[j]);
          size += 1 + vbiSize(ids[j]);
        }
        break;
      }
      case T.Utf8String:
        size += 3 + checkedUtf8Length(v as string, d.name);
        break;
      case T.BinaryData: {
        const b = v as Uint8Array;
        if (b.length > MAX_STRING_BYTES) throw malformed(`${d.name} is ${b.length} bytes, more than 65535`);
        size += 3 + b.length;
        break;
      }
      default: {
        const pairs = v as UserProperty[];
        for (let j = 0; j < pairs.length; j++) {
          size += 5 + checkedUtf8Length(pairs[j][0], "User Property name") +
            checkedUtf8Length(pairs[j][1], "User Property value");
        }
      }
    }
  }
  return size;
}

/** Writes a Variable Byte Integer at `pos` (minimum number of bytes, MQTT-1.5.5-1); returns the new position. */
export function writeVbi(buf: Uint8Array, pos: number, n: number): number {
  while (n >= 128) {
    buf[pos++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[pos++] = n;
  return pos;
}

/** Number of bytes of the Variable Byte Integer `n` (§1.5.5). */
export function variableByteIntegerLength(n: number): number {
  return vbiSize(n);
}

/**
 * Writes Property Length `len` (from {@link propertiesLength}) then the properties; returns the new position.
 */
export function writeProperties(
  buf: Uint8Array,
  pos: number,
  props: Properties | undefined,
  len: number,
): number {
  pos = writeVbi(buf, pos, len);
  if (props === undefined || len === 0) return pos;
  for (let i = 0; i < PROPERTIES.length; i++) {
    const d = PROPERTIES[i];
    const v = props[d.name];
    if (v === undefined) continue;
    switch (d.type) {
      case T.Byte:
        buf[pos++] = d.id;
        buf[pos++] = v as number;
        break;
      case T.TwoByteInteger:
        buf[pos++] = d.id;
        buf[pos++] = (v as number) >>> 8;
        buf[pos++] = (v as number) & 0xff;
        break;
      case T.FourByteInteger: {
        const n = v as number;
        buf[pos++] = d.id;
        buf[pos++] = n >>> 24;
        buf[pos++] = (n >>> 16) & 0xff;
        buf[pos++] = (n >>> 8) & 0xff;
        buf[pos++] = n & 0xff;
        break;
      }
      case T.VariableByteInteger: {
        const ids = v as number[];
        for (let j = 0; j < ids.length; j++) {
          buf[pos++] = d.id;
          pos = writeVbi(buf, pos, ids[j]);
        }
        break;
      }
      case T.Utf8String: {
        buf[pos++] = d.id;
        const s = v as string;
        pos = writeUtf8(buf, pos, s, utf8Length(s));
        break;
      }
      case T.BinaryData: {
        const b = v as Uint8Array;
        buf[pos++] = d.id;
        buf[pos++] = b.length >>> 8;
        buf[pos++] = b.length & 0xff;
        buf.set(b, pos);
        pos += b.length;
        break;
      }
      default: {
        const pairs = v as UserProperty[];
        for (let j = 0; j < pairs.length; j++) {
          buf[pos++] = d.id;
          pos = writeUtf8(buf, pos, pairs[j][0], utf8Length(pairs[j][0]));
          pos = writeUtf8(buf, pos, pairs[j][1], utf8Length(pairs[j][1]));
        }
      }
    }
  }
  return pos;
}
