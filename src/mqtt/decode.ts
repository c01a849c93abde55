/**
 * Decoding MQTT control packets: {@link decodePacket} for one whole packet and {@link PacketDecoder} for a
 * byte stream cut at arbitrary places.
 *
 * Every malformed input becomes an {@link MqttError} carrying the MQTT 5 reason code (0x81 malformed, 0x82
 * protocol error, 0x84 unsupported protocol version, 0x95 packet too large); hostile bytes never surface
 * as a RangeError or TypeError. Topic names and filters are not checked here (see topic.ts): the broker
 * answers those with specific reason codes.
 *
 * Shape of decoded packets (what `deepEqual(decode(encode(p)), p)` relies on):
 * - `properties` (and `will.properties`) is absent when the property section is empty, so a property-less
 *   MQTT 5 packet allocates nothing extra;
 * - at level 5, PUBACK..PUBCOMP, DISCONNECT and AUTH always carry `reasonCode` (0 when the short form omitted
 *   it), UNSUBACK always carries `reasonCodes`; at levels 3 and 4 these fields are absent;
 * - CONNACK `reasonCode` is the 3.1.1 return code at levels 3/4; at level 3 `sessionPresent` is always false;
 * - SUBSCRIBE options at levels 3/4 decode as noLocal false, retainAsPublished false, retainHandling 0;
 * - `payload`, `password`, `correlationData`, `authenticationData` are copies, never views of the input.
 *
 * @module
 */

import { malformed, MqttError, protocolError, quote } from "./errors.ts";
import { readProperties, variableByteIntegerLength, WILL_PROPERTIES } from "./properties.ts";
import { slabCopy } from "./slab.ts";
import { Reader } from "./reader.ts";
import { isValidReasonCode, ReasonCode } from "./reason_codes.ts";
import type {
  AckPacket,
  AuthPacket,
  ConnackPacket,
  ConnectPacket,
  DisconnectPacket,
  Packet,
  PingreqPacket,
  PingrespPacket,
  ProtocolVersion,
  PublishPacket,
  QoS,
  SubackPacket,
  SubscribePacket,
  SubscriptionRequest,
  UnsubackPacket,
  UnsubscribePacket,
  Will,
} from "./types.ts";
import { PACKET_TYPE_NAMES } from "./types.ts";

/** Largest possible MQTT packet: 1 header byte + 4 length bytes + 268,435,455 (§1.5.5, §2.1.4). */
export const MAX_PACKET_SIZE = 268435460;

/** Options for {@link PacketDecoder}. */
export interface DecoderOptions {
  /** Largest whole packet accepted, in bytes (MQTT 5 Maximum Packet Size); default 268435460. */
  maxPacketSize?: number;
  /** Protocol level of the peer until a CONNECT says otherwise; default 4 (3.1.1). */
  protocolVersion?: ProtocolVersion;
}

const PINGREQ: PingreqPacket = Object.freeze({ type: 12 });
const PINGRESP: PingrespPacket = Object.freeze({ type: 13 });

// Required low nibble of the fixed header per packet type (§2.1.3); PUBLISH (3) is checked separately.
const FIXED_FLAGS = [-1, 0, 0, -1, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0, 0];
const NAMES = PACKET_TYPE_NAMES;

/**
 * Decodes the body of one packet: `r` covers exactly the Remaining Length bytes, `header` is the first byte.
 * Fields must fill the body exactly (otherwise 0x81).
 */
function decodeBody(r: Reader, header: number, version: ProtocolVersion): Packet {
  const type = header >>> 4;
  const flags = header & 0x0f;
  if (type === 3) return decodePublish(r, flags, version);
  if (type === 0) throw malformed("packet type 0 is reserved (§2.1.2)");
  if (flags !== FIXED_FLAGS[type]) {
    // MQTT-2.1.3-1: reserved flag bits must be exactly as listed; anything else is malformed.
    throw malformed(
      `${NAMES[type]} has fixed header flags 0x${flags.toString(16)}, expected 0x${FIXED_FLAGS[type]}`,
    );
  }
  switch (type) {
    case 1:
      return decodeConnect(r);
    case 2:
      return decodeConnack(r, version);
    case 4:
    case 5:
    case 6:
    case 7:
      return decodeAck(r, type, version);
    case 8:
      return decodeSubscribe(r, version);
    case 9:
      return decodeSuback(r, version);
    case 10:
      return decodeUnsubscribe(r, version);
    case 11:
      return decodeUnsuback(r, version);
    case 12:
      r.done("PINGREQ");
      return PINGREQ;
    case 13:
      r.done("PINGRESP");
      return PINGRESP;
    case 14:
      return decodeDisconnect(r, version);
    default:
      return decodeAuth(r, version);
  }
}

function packetId(r: Reader, what: string): number {
  const id = r.u16(what);
  // §2.2.1: a Packet Identifier is non-zero where one is present.
  if (id === 0) throw malformed(`${what}: Packet Identifier must not be 0`);
  return id;
}

function reasonCode(r: Reader, type: number): number {
  const code = r.u8("Reason Code");
  if (!isValidReasonCode(type, code)) {
    throw protocolError(`reason code 0x${code.toString(16)} is not allowed on ${NAMES[type]} (§2.4)`);
  }
  return code;
}

function decodeConnect(r: Reader): ConnectPacket {
  const protocolName = r.utf8("Protocol Name");
  const level = r.u8("Protocol Level");
  // §3.1.2.1-2: "MQTT" with level 4 or 5; MQTT 3.1 used "MQIsdp" with level 3.
  if (
    !((level === 4 || level === 5) && protocolName === "MQTT") && !(level === 3 && protocolName === "MQIsdp")
  ) {
    throw new MqttError(
      ReasonCode.UnsupportedProtocolVersion,
      `unsupported protocol name ${quote(protocolName)} with level ${level}`,
    );
  }
  const version = level as ProtocolVersion;
  const flags = r.u8("Connect Flags");
  // MQTT-3.1.2-3: the reserved bit must be 0.
  if ((flags & 0x01) !== 0) throw malformed("CONNECT reserved flag (bit 0) is set");
  const willFlag = (flags & 0x04) !== 0;
  const willQoS = (flags >>> 3) & 0x03;
  const willRetain = (flags & 0x20) !== 0;
  const hasPassword = (flags & 0x40) !== 0;
  const hasUsername = (flags & 0x80) !== 0;
  if (willQoS === 3) throw malformed("CONNECT Will QoS is 3 (MQTT-3.1.2-14)");
  if (!willFlag && (willQoS !== 0 || willRetain)) {
    throw malformed(
      "CONNECT has Will QoS or Will Retain set without the Will Flag (MQTT-3.1.2-13, MQTT-3.1.2-15)",
    );
  }
  if (version < 5 && hasPassword && !hasUsername) {
    throw malformed("CONNECT has the Password Flag without the User Name Flag (MQTT-3.1.2-22)");
  }
  const keepAlive = r.u16("Keep Alive");
  const packet: ConnectPacket = {
    type: 1,
    protocolName,
    protocolVersion: version,
    clean: (flags & 0x02) !== 0,
    keepAlive,
    clientId: "",
  };
  if (version === 5) {
    const props = readProperties(r, 1);
    if (props !== undefined) {
      if (props.authenticationData !== undefined && props.authenticationMethod === undefined) {
        throw protocolError(
          "CONNECT has Authentication Data without an Authentication Method (§3.1.2.11.10)",
        );
      }
      packet.properties = props;
    }
  }
  packet.clientId = r.utf8("Client Identifier");
  if (willFlag) {
    const willProps = version === 5 ? readProperties(r, WILL_PROPERTIES) : undefined;
    const will: Will = {
      topic: r.utf8("Will Topic"),
      payload: r.binary("Will Payload"),
      qos: willQoS as QoS,
      retain: willRetain,
    };
    if (willProps !== undefined) will.properties = willProps;
    packet.will = will;
  }
  if (hasUsername) packet.username = r.utf8("User Name");
  if (hasPassword) packet.password = r.binary("Password");
  r.done("CONNECT");
  return packet;
}

function decodeConnack(r: Reader, version: ProtocolVersion): ConnackPacket {
  const ackFlags = r.u8("Connect Acknowledge Flags");
  const code = r.u8("Connect Return Code");
  let sessionPresent = false;
  if (version === 3) {
    // MQTT 3.1 has no Session Present: the first byte is reserved and ignored.
  } else {
    // MQTT-3.2.2-1 (5.0) / §3.2.2.1 (3.1.1): bits 7-1 are reserved and must be 0.
    if ((ackFlags & 0xfe) !== 0) {
      throw malformed(`CONNACK acknowledge flags 0x${ackFlags.toString(16)} use reserved bits`);
    }
    sessionPresent = ackFlags === 1;
  }
  const packet: ConnackPacket = { type: 2, sessionPresent, reasonCode: code };
  if (version === 5) {
    if (!isValidReasonCode(2, code)) {
      throw protocolError(`reason code 0x${code.toString(16)} is not allowed on CONNACK (§3.2.2.2)`);
    }
    const props = readProperties(r, 2);
    if (props !== undefined) packet.properties = props;
  } else if (code > 5) {
    throw malformed(`CONNACK return code ${code} is reserved (3.1.1 §3.2.2.3)`);
  }
  r.done("CONNACK");
  return packet;
}

function decodePublish(r: Reader, flags: number, version: ProtocolVersion): PublishPacket {
  const qos = (flags >>> 1) & 0x03;
  if (qos === 3) throw malformed("PUBLISH QoS is 3 (MQTT-3.3.1-4)");
  if (qos === 0 && (flags & 0x08) !== 0) {
    throw malformed("PUBLISH of QoS 0 has the DUP flag set (MQTT-3.3.1-2)");
  }
  const topic = r.topic();
  let id: number | undefined;
  if (qos > 0) id = packetId(r, "PUBLISH");
  const props = version === 5 ? readProperties(r, 3) : undefined;
  const packet: PublishPacket = {
    type: 3,
    topic,
    payload: r.rest(),
    qos: qos as QoS,
    retain: (flags & 0x01) !== 0,
    dup: (flags & 0x08) !== 0,
  };
  if (id !== undefined) packet.packetId = id;
  if (props !== undefined) packet.properties = props;
  return packet;
}

function decodeAck(r: Reader, type: 4 | 5 | 6 | 7, version: ProtocolVersion): AckPacket {
  const packet: AckPacket = { type, packetId: packetId(r, NAMES[type]) };
  if (version === 5) {
    // §3.4.2.1: Reason Code omitted means 0x00; Property Length omitted (Remaining Length < 4) means none.
    packet.reasonCode = r.remaining > 0 ? reasonCode(r, type) : 0;
    if (r.remaining > 0) {
      const props = readProperties(r, type);
      if (props !== undefined) packet.properties = props;
    }
  }
  r.done(NAMES[type]);
  return packet;
}

function decodeSubscribe(r: Reader, version: ProtocolVersion): SubscribePacket {
  const packet: SubscribePacket = { type: 8, packetId: packetId(r, "SUBSCRIBE"), subscriptions: [] };
  if (version === 5) {
    const props = readProperties(r, 8);
    if (props !== undefined) packet.properties = props;
  }
  // MQTT-3.8.3-2: at least one Topic Filter / Subscription Options pair.
  if (r.remaining === 0) throw protocolError("SUBSCRIBE contains no topic filter (MQTT-3.8.3-2)");
  while (r.remaining > 0) {
    const topicFilter = r.utf8("Topic Filter");
    const options = r.u8("Subscription Options");
    const qos = options & 0x03;
    const sub: SubscriptionRequest = {
      topicFilter,
      qos: qos as QoS,
      noLocal: false,
      retainAsPublished: false,
      retainHandling: 0,
    };
    if (version === 5) {
      // §3.8.3.1: bits 7-6 reserved (malformed, MQTT-3.8.3-5); QoS 3 and Retain Handling 3 are Protocol Errors.
      if ((options & 0xc0) !== 0) {
        throw malformed(`subscription options 0x${options.toString(16)} use reserved bits`);
      }
      if (qos === 3) throw protocolError(`subscription to ${quote(topicFilter)} requests QoS 3`);
      const rh = (options >>> 4) & 0x03;
      if (rh === 3) {
        throw protocolError(`subscription to ${quote(topicFilter)} has Retain Handling 3`);
      }
      sub.noLocal = (options & 0x04) !== 0;
      sub.retainAsPublished = (options & 0x08) !== 0;
      sub.retainHandling = rh as 0 | 1 | 2;
    } else if ((options & 0xfc) !== 0 || qos === 3) {
      // 3.1.1 MQTT-3-8.3-4: reserved bits non-zero or QoS 3 is malformed.
      throw malformed(`requested QoS byte 0x${options.toString(16)} is invalid (MQTT-3-8.3-4)`);
    }
    packet.subscriptions.push(sub);
  }
  return packet;
}

function decodeSuback(r: Reader, version: ProtocolVersion): SubackPacket {
  const packet: SubackPacket = { type: 9, packetId: packetId(r, "SUBACK"), reasonCodes: [] };
  if (version === 5) {
    const props = readProperties(r, 9);
    if (props !== undefined) packet.properties = props;
  }
  while (r.remaining > 0) {
    if (version === 5) {
      packet.reasonCodes.push(reasonCode(r, 9));
    } else {
      const code = r.u8("SUBACK return code");
      if (code > 2 && code !== 0x80) throw malformed(`SUBACK return code 0x${code.toString(16)} is reserved`);
      packet.reasonCodes.push(code);
    }
  }
  return packet;
}

function decodeUnsubscribe(r: Reader, version: ProtocolVersion): UnsubscribePacket {
  const packet: UnsubscribePacket = { type: 10, packetId: packetId(r, "UNSUBSCRIBE"), topicFilters: [] };
  if (version === 5) {
    const props = readProperties(r, 10);
    if (props !== undefined) packet.properties = props;
  }
  // MQTT-3.10.3-2: at least one Topic Filter.
  if (r.remaining === 0) throw protocolError("UNSUBSCRIBE contains no topic filter (MQTT-3.10.3-2)");
  while (r.remaining > 0) packet.topicFilters.push(r.utf8("Topic Filter"));
  return packet;
}

function decodeUnsuback(r: Reader, version: ProtocolVersion): UnsubackPacket {
  const packet: UnsubackPacket = { type: 11, packetId: packetId(r, "UNSUBACK") };
  if (version === 5) {
    const props = readProperties(r, 11);
    if (props !== undefined) packet.properties = props;
    const codes: number[] = [];
    while (r.remaining > 0) codes.push(reasonCode(r, 11));
    packet.reasonCodes = codes;
  }
  r.done("UNSUBACK");
  return packet;
}

function decodeDisconnect(r: Reader, version: ProtocolVersion): DisconnectPacket {
  const packet: DisconnectPacket = { type: 14 };
  if (version === 5) {
    // §3.14.2.1: Remaining Length 0 means Normal disconnection without properties.
    packet.reasonCode = r.remaining > 0 ? reasonCode(r, 14) : 0;
    if (r.remaining > 0) {
      const props = readProperties(r, 14);
      if (props !== undefined) packet.properties = props;
    }
  }
  r.done("DISCONNECT");
  return packet;
}

function decodeAuth(r: Reader, version: ProtocolVersion): AuthPacket {
  // §2.1.2: AUTH exists only in MQTT 5; for earlier levels type 15 is reserved.
  if (version !== 5) throw malformed(`AUTH packet is not defined for protocol level ${version}`);
  const packet: AuthPacket = { type: 15 };
  // §3.15.2.1: Remaining Length 0 means Success without properties.
  packet.reasonCode = r.remaining > 0 ? reasonCode(r, 15) : 0;
  if (r.remaining > 0) {
    const props = readProperties(r, 15);
    if (props !== undefined) packet.properties = props;
  }
  r.done("AUTH");
  return packet;
}

/**
 * Decodes exactly one whole packet (fixed header included) for a peer of level `version`. Throws MqttError
 * when the bytes are not exactly one well-formed packet.
 */
export function decodePacket(bytes: Uint8Array, version: ProtocolVersion): Packet {
  if (bytes.length < 2) throw malformed(`a packet needs at least 2 bytes, got ${bytes.length}`);
  let remaining = 0;
  let mult = 1;
  let pos = 1;
  for (;;) {
    if (pos >= bytes.length) throw malformed("Remaining Length is cut off");
    if (pos > 4) throw malformed("Remaining Length is longer than 4 bytes (§1.5.5)");
    const b = bytes[pos++];
    remaining += (b & 0x7f) * mult;
    if ((b & 0x80) === 0) break;
    mult *= 128;
  }
  if (pos + remaining !== bytes.length) {
    throw malformed(`Remaining Length ${remaining} does not match the ${bytes.length - pos} bytes given`);
  }
  return decodeBody(new Reader(bytes, pos, bytes.length), bytes[0], version);
}

/** Largest internal buffer kept between packets; bigger ones are dropped after use to bound memory. */
const KEEP_BUFFER = 64 * 1024;
const EMPTY = new Uint8Array(0);
/** Decoding is synchronous and never re-entered, so every decoder shares one Reader. */
const READER = new Reader(EMPTY);

/**
 * Streaming decoder for one connection. Push each chunk read from the socket, then call {@link next} until it
 * returns null. The pushed chunk may be reused by the reader after that, so the decoder copies what it keeps:
 * at most one partial packet, never more than {@link maxPacketSize} bytes.
 *
 * Packets lying whole inside a chunk are decoded in place (only the payload is copied).
 */
export class PacketDecoder {
  /**
   * Level used to decode packets; settable (client side). Set from the Protocol Level of each CONNECT as soon
   * as it is read, even when the rest of that CONNECT turns out malformed, so the server can still answer in
   * the client's format.
   */
  protocolVersion: ProtocolVersion;
  /** Largest accepted packet in bytes; checked as soon as the Remaining Length is known (0x95). */
  maxPacketSize: number;

  /** The last pushed chunk and the position of its first unconsumed byte. */
  #chunk: Uint8Array = EMPTY;
  #chunkPos = 0;
  /** Partial packet held between chunks: `#buf[0, #bufLen)`. */
  #buf: Uint8Array = EMPTY;
  #bufLen = 0;
  /** Total size of the partial packet once its Remaining Length is known, else -1. */
  #need = -1;
  /** Header length (type byte + length bytes) of the partial packet once known. */
  #headerLen = 0;
  /**
   * The whole PUBLISH that {@link next} returned last, when it carries no properties and is byte for byte
   * what `encode` writes for its fields (else undefined). The payload of that packet is a view into it.
   * It is the caller's to keep; it is replaced by the next call.
   */
  publishBytes: Uint8Array | undefined = undefined;

  constructor(opts: DecoderOptions = {}) {
    this.protocolVersion = opts.protocolVersion ?? 4;
    this.maxPacketSize = opts.maxPacketSize ?? MAX_PACKET_SIZE;
  }

  /** Bytes copied and held waiting for the rest of a packet. */
  get buffered(): number {
    return this.#bufLen;
  }

  /**
   * Adds bytes read from the connection. `chunk` must stay unchanged only until the next push: call
   * {@link next} until it returns null before pushing again.
   */
  push(chunk: Uint8Array): void {
    if (this.#chunkPos < this.#chunk.length) {
      // The caller pushed without draining: keep the undecoded bytes, in order, before the new chunk.
      const rest = this.#chunk.subarray(this.#chunkPos);
      const joined = new Uint8Array(rest.length + chunk.length);
      joined.set(rest);
      joined.set(chunk, rest.length);
      chunk = joined;
    }
    this.#chunk = chunk;
    this.#chunkPos = 0;
  }

  /**
   * The next complete packet, or null when more bytes are needed (the unconsumed bytes are then copied).
   * Throws MqttError for a malformed or too large packet; the connection must then be closed.
   */
  next(): Packet | null {
    try {
      const packet = this.#bufLen > 0 ? this.#nextBuffered() : this.#nextInPlace();
      // All of the chunk is consumed (decoded or copied): drop it, so an idle connection pins no chunk.
      if (packet === null) {
        this.#chunk = EMPTY;
        this.#chunkPos = 0;
      }
      return packet;
    } catch (e) {
      this.#clear();
      if (e instanceof MqttError) throw e;
      // Defence in depth: hostile bytes must never escape as anything but a protocol error.
      throw malformed(`undecodable packet: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  #clear(): void {
    this.#chunk = EMPTY;
    this.#chunkPos = 0;
    this.#bufLen = 0;
    this.#need = -1;
    if (this.#buf.length > KEEP_BUFFER) this.#buf = EMPTY;
  }

  /** Parses a fixed header at `bytes[pos, end)`: sets #need/#headerLen, or leaves #need -1 if cut off. */
  #header(bytes: Uint8Array, pos: number, end: number): void {
    // Refuse what can never decode before buffering its body: reserved type 0, AUTH before MQTT 5 (§2.1.2).
    const type = bytes[pos] >>> 4;
    if (type === 0) throw malformed("packet type 0 is reserved (§2.1.2)");
    if (type === 15 && this.protocolVersion !== 5) {
      throw malformed(`AUTH packet is not defined for protocol level ${this.protocolVersion}`);
    }
    let remaining = 0;
    let mult = 1;
    for (let i = 1; i <= 4; i++) {
      if (pos + i >= end) return;
      const b = bytes[pos + i];
      remaining += (b & 0x7f) * mult;
      if ((b & 0x80) === 0) {
        const total = 1 + i + remaining;
        if (total > this.maxPacketSize) {
          throw new MqttError(
            ReasonCode.PacketTooLarge,
            `packet of ${total} bytes exceeds the maximum packet size ${this.maxPacketSize}`,
          );
        }
        this.#headerLen = 1 + i;
        this.#need = total;
        return;
      }
      mult *= 128;
    }
    throw malformed("Remaining Length is longer than 4 bytes (§1.5.5)");
  }

  #decode(bytes: Uint8Array, start: number): Packet {
    const r = READER;
    const header = bytes[start];
    this.publishBytes = undefined;
    if (header >>> 4 === 3) return this.#decodePublish(bytes, start, header);
    r.reset(bytes, start + this.#headerLen, start + this.#need);
    if (header === 0x10) this.#peekConnectLevel(bytes, r.pos, r.end);
    const packet = decodeBody(r, header, this.protocolVersion);
    r.reset(EMPTY, 0, 0); // drop the reference to the caller's chunk
    if (packet.type === 1) this.protocolVersion = packet.protocolVersion;
    return packet;
  }

  /**
   * A PUBLISH is copied whole, once: its payload is a view into the copy, and when the copy is exactly what
   * our encoder would write for the same fields it becomes {@link publishBytes}, so a broker can forward
   * it without encoding it again.
   */
  #decodePublish(bytes: Uint8Array, start: number, header: number): PublishPacket {
    const r = READER;
    const total = this.#need;
    const headerLen = this.#headerLen;
    const raw = slabCopy(bytes, start, start + total);
    r.reset(raw, headerLen, total);
    r.owned = true;
    let packet: PublishPacket;
    try {
      packet = decodePublish(r, header & 0x0f, this.protocolVersion);
    } finally {
      r.owned = false;
      r.reset(EMPTY, 0, 0);
    }
    // Canonical: a minimal Remaining Length (§1.5.5 allows longer forms on the wire) and, in MQTT 5, no
    // properties behind a one-byte zero Property Length (a first byte of 0 ends the variable byte integer).
    if (packet.properties === undefined && headerLen === 1 + variableByteIntegerLength(total - headerLen)) {
      const lengthAt = headerLen + 2 + ((raw[headerLen] << 8) | raw[headerLen + 1]) +
        (packet.qos > 0 ? 2 : 0);
      if (this.protocolVersion !== 5 || raw[lengthAt] === 0) this.publishBytes = raw;
    }
    return packet;
  }

  /**
   * Takes the protocol level of a CONNECT before decoding the rest, so that when the rest is malformed the
   * server still knows whether to answer with an MQTT 5 CONNACK reason code (§3.1.4, §3.2.2.2).
   */
  #peekConnectLevel(bytes: Uint8Array, pos: number, end: number): void {
    if (pos + 2 > end) return;
    const at = pos + 2 + ((bytes[pos] << 8) | bytes[pos + 1]);
    if (at >= end) return;
    const level = bytes[at];
    if (level === 3 || level === 4 || level === 5) this.protocolVersion = level;
  }

  #nextInPlace(): Packet | null {
    const chunk = this.#chunk;
    const pos = this.#chunkPos;
    const end = chunk.length;
    if (pos >= end) return null;
    this.#need = -1;
    this.#header(chunk, pos, end);
    if (this.#need !== -1 && pos + this.#need <= end) {
      this.#chunkPos = pos + this.#need;
      const packet = this.#decode(chunk, pos);
      this.#need = -1;
      return packet;
    }
    // Partial packet: copy what there is and wait.
    this.#chunkPos = end;
    this.#stash(chunk, pos);
    return null;
  }

  /** Appends `bytes[from..]` to the partial packet buffer, growing it within the size limit. */
  #stash(bytes: Uint8Array, from: number): void {
    const n = bytes.length - from;
    if (n <= 0) return;
    const want = this.#bufLen + n;
    if (want > this.#buf.length) {
      // Room for what came, doubling (never beyond the packet's size once known, see #nextBuffered).
      const size = Math.max(want, 16, this.#need > 0 ? Math.min(this.#need, this.#buf.length * 2) : 0);
      const grown = new Uint8Array(size);
      grown.set(this.#buf.subarray(0, this.#bufLen));
      this.#buf = grown;
    }
    this.#buf.set(bytes.subarray(from), this.#bufLen);
    this.#bufLen = want;
  }

  #nextBuffered(): Packet | null {
    const chunk = this.#chunk;
    let pos = this.#chunkPos;
    const end = chunk.length;
    if (this.#need === -1) {
      // Complete the fixed header one byte at a time: it is at most 5 bytes.
      while (this.#need === -1) {
        this.#header(this.#buf, 0, this.#bufLen);
        if (this.#need !== -1) break;
        if (pos >= end) {
          this.#chunkPos = pos;
          return null;
        }
        this.#stashByte(chunk[pos++]);
      }
    }
    const missing = this.#need - this.#bufLen;
    const needed = this.#bufLen + Math.min(missing, end - pos);
    if (this.#buf.length < needed) {
      // Grown as the bytes come, not to the size the header announces: a peer that announces 256 MiB (with
      // max_message_size raised that far) and sends little must not be given 256 MiB for it.
      const grown = new Uint8Array(Math.min(this.#need, Math.max(needed, this.#buf.length * 2)));
      grown.set(this.#buf.subarray(0, this.#bufLen));
      this.#buf = grown;
    }
    const take = Math.min(missing, end - pos);
    if (take > 0) {
      this.#buf.set(chunk.subarray(pos, pos + take), this.#bufLen);
      this.#bufLen += take;
      pos += take;
    }
    this.#chunkPos = pos;
    if (this.#bufLen < this.#need) return null;
    const packet = this.#decode(this.#buf, 0);
    this.#bufLen = 0;
    this.#need = -1;
    if (this.#buf.length > KEEP_BUFFER) this.#buf = EMPTY;
    return packet;
  }

  #stashByte(b: number): void {
    if (this.#bufLen >= this.#buf.length) {
      const grown = new Uint8Array(Math.max(16, this.#buf.length * 2));
      grown.set(this.#buf.subarray(0, this.#bufLen));
      this.#buf = grown;
    }
    this.#buf[this.#bufLen++] = b;
  }
}
